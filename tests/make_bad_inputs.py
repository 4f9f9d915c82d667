"""Generate (never download) a corpus of bad, odd and huge inputs for the loaders' reliability tests.

Usage: ``python tests/make_bad_inputs.py OUT_DIR`` writes the corpus below OUT_DIR and an index
``OUT_DIR/corpus.json`` (case name -> path relative to OUT_DIR). Needs only numpy and Pillow, and
runs in about a second; the largest step holds one 10,000 x 10,000 RGB image (~400 MB) in memory,
which is why the tests run this script in a child process. Nothing it writes is committed.

Cases (the expected handling is asserted in tests/test_bad_inputs.py):
- images/: zero-byte, truncated and text-as-.jpg files; grey (L), RGBA, 16-bit (I;16), CMYK,
  palette (P) images with known colours; a 10,000 x 10,000 JPEG; a 20,000 x 20,000 PNG bomb
  (a ~60 kB file); JPEGs whose EXIF orientation tag rotates an asymmetric pattern;
- affectnet_*: csvs with a missing column, NaNs and out-of-range values, paths escaping the root;
- utkface/: malformed chip names and a test list with escaping entries;
- fer2013_csv/: pixel strings of the wrong length or content.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# Quadrant colours of the asymmetric pattern (as stored, before any EXIF rotation).
RED, GREEN, BLUE, WHITE = (230, 20, 20), (20, 200, 20), (20, 20, 230), (245, 245, 245)
HUGE_SIDE = 10_000
HUGE_GREY, HUGE_RED = (90, 90, 90), (220, 20, 20)
HUGE_RED_BOX = (6000, 2000, 2000, 2000)  # x, y, w, h of the red square in the huge JPEG
BOMB_SIDE = 20_000
AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)
UTK_GOOD = ("25_0_0_20170116174525125.jpg.chip.jpg", "40_1_2_20170109150557335.jpg.chip.jpg")
UTK_BAD = {
    "missing_field": "25_0_20170116174525125.jpg.chip.jpg",
    "age_not_number": "abc_0_0_20170116174525125.jpg.chip.jpg",
    "age_200": "200_0_0_20170116174525125.jpg.chip.jpg",
}


def quadrants(width: int, height: int) -> np.ndarray:
    """RGB array: top-left red, top-right green, bottom-left blue, bottom-right white."""
    arr = np.zeros((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    arr[:h2, :w2], arr[:h2, w2:], arr[h2:, :w2], arr[h2:, w2:] = RED, GREEN, BLUE, WHITE
    return arr


def noisy_jpeg(path: Path, side: int = 96, seed: int = 0) -> bytes:
    """A JPEG of random noise (so most of the file is scan data); returns its bytes."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path, quality=90)
    return path.read_bytes()


def png_bomb(path: Path, side: int = BOMB_SIDE) -> None:
    """A 1-bit grey PNG of side x side zeros written row block by row block: a tiny file that would
    decode to side**2 pixels (400 M for 20,000)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    block = row * 1000
    body = b"".join(comp.compress(block) for _ in range(side // 1000))
    body += comp.compress(row * (side % 1000)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def make_images(folder: Path) -> dict[str, Path]:
    """Bad, odd-mode, huge and EXIF-rotated image files."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def save(name: str, image: Image.Image, **kw) -> None:
        out[name.split(".")[0]] = folder / name
        image.save(folder / name, **kw)

    save("good_jpg.jpg", Image.fromarray(quadrants(64, 32)), quality=95)
    save("good_png.png", Image.fromarray(quadrants(64, 32)))
    out["zero"] = folder / "zero.jpg"
    out["zero"].write_bytes(b"")
    full = noisy_jpeg(folder / "whole.jpg")
    out["truncated"] = folder / "truncated.jpg"
    out["truncated"].write_bytes(full[: len(full) // 2])
    (folder / "whole.jpg").unlink()
    out["text"] = folder / "text.jpg"
    out["text"].write_text("this is a text file, not a JPEG\n" * 4, encoding="utf-8")

    save("grey.png", Image.new("L", (32, 32), 77))
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :16] = (200, 100, 50, 255)  # opaque left half
    rgba[:, 16:] = (200, 100, 50, 128)  # half-transparent right half
    save("rgba.png", Image.fromarray(rgba, mode="RGBA"))
    deep = np.zeros((32, 32), np.uint16)
    deep[:, :16], deep[:, 16:] = 40000, 1000
    save("deep16.png", Image.fromarray(deep))
    save("deep16_dark.png", Image.fromarray(np.full((32, 32), 200, np.uint16)))
    cmyk = Image.new("CMYK", (32, 32), (255, 0, 0, 0))  # right half cyan
    cmyk.paste((0, 255, 255, 0), (0, 0, 16, 32))  # left half red
    save("cmyk.jpg", cmyk, quality=95)
    save(
        "palette.png",
        Image.fromarray(quadrants(32, 32)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4),
    )

    for tag in (3, 6, 8):
        image = Image.fromarray(quadrants(64, 32))
        exif = image.getexif()
        exif[0x0112] = tag
        save(f"exif{tag}.jpg", image, exif=exif, quality=95)

    huge = Image.new("RGB", (HUGE_SIDE, HUGE_SIDE), HUGE_GREY)
    x, y, w, h = HUGE_RED_BOX
    huge.paste(HUGE_RED, (x, y, x + w, y + h))
    save("huge.jpg", huge, quality=70)
    del huge
    out["bomb"] = folder / "bomb.png"
    png_bomb(out["bomb"])
    return out


def _affectnet_images(root: Path, n: int) -> None:
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (48, 48), (10 * i, 100, 100)).save(root / "imgs" / f"img{i}.png")


def make_affectnet(folder: Path) -> dict[str, Path]:
    """AffectNet roots: a missing column, a first column misspelt, bad values, escaping paths."""
    out = {}
    missing = folder / "affectnet_missing_column"
    missing.mkdir(parents=True, exist_ok=True)
    header = AFFECTNET_HEADER.replace(",valence", "")
    (missing / "training.csv").write_text(f"{header}\nimgs/img0.png,0,0,20,20,,3,0.4\n", encoding="utf-8")
    out["affectnet_missing_column"] = missing

    typo = folder / "affectnet_header_typo"
    typo.mkdir(parents=True, exist_ok=True)
    (typo / "training.csv").write_text(
        AFFECTNET_HEADER.replace("subDirectory_filePath", "subDirectory_FilePath")
        + "\nimgs/img0.png,0,0,20,20,,3,0.4,0.1\n",
        encoding="utf-8",
    )
    out["affectnet_header_typo"] = typo

    bad = folder / "affectnet_bad_values"
    rows = [  # path, x, y, w, h, expression, valence, arousal (csv rows 2..11)
        ("imgs/img0.png", "0", "0", "20", "20", "3", "0.5", "-0.25"),  # 2 valid
        ("imgs/img1.png", "0", "0", "20", "20", "", "0.1", "0.2"),  # 3 expression missing, VA ok
        ("imgs/img2.png", "0", "0", "20", "20", "NaN", "NaN", "0.2"),  # 4 nothing usable -> dropped
        ("imgs/img3.png", "0", "0", "20", "20", "2", "nan", "0.3"),  # 5 valence NaN
        ("imgs/img4.png", "nan", "0", "20", "20", "1", "0.1", "0.1"),  # 6 box NaN
        ("imgs/img5.png", "0", "0", "20", "20", "12", "0.1", "0.1"),  # 7 expression 12
        ("imgs/img6.png", "0", "0", "20", "20", "4", "3.0", "0.1"),  # 8 valence 3.0
        ("imgs/img7.png", "-5", "3", "20", "20", "5", "0.1", "0.1"),  # 9 negative box
        ("imgs/img8.png", "0", "0", "inf", "20", "6", "0.1", "0.1"),  # 10 infinite box
        ("imgs/img9.png", "0", "0", "20", "20", "12", "3.0", "9"),  # 11 nothing usable -> dropped
    ]
    _affectnet_images(bad, len(rows))
    lines = [AFFECTNET_HEADER] + [",".join([p, x, y, w, h, "", e, v, a]) for p, x, y, w, h, e, v, a in rows]
    (bad / "training.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out["affectnet_bad_values"] = bad

    escape = folder / "affectnet_escape" / "root"
    _affectnet_images(escape, 1)
    secret = folder / "affectnet_escape" / "secret.png"
    Image.new("RGB", (48, 48), (1, 2, 3)).save(secret)
    paths = ["imgs/img0.png", "../secret.png", "../../etc/passwd", str(secret), "imgs/../../secret.png"]
    lines = [AFFECTNET_HEADER] + [f"{p},0,0,20,20,,1,0.1,0.1" for p in paths]
    (escape / "training.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out["affectnet_escape"] = escape
    out["affectnet_secret"] = secret
    return out


def make_utkface(folder: Path) -> dict[str, Path]:
    """UTKFace images with good and malformed names; a test list with escaping entries."""
    images = folder / "utkface" / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name in UTK_GOOD + tuple(UTK_BAD.values()):
        Image.new("RGB", (16, 16), (120, 80, 60)).save(images / name)
    (folder / "utkface" / "balanced_test_2000.txt").write_text(
        f"{UTK_GOOD[1]}\n../../etc/passwd\n/etc/passwd\n", encoding="utf-8"
    )
    return {"utkface": folder / "utkface"}


def make_fer2013(folder: Path) -> dict[str, Path]:
    """fer2013.csv with good rows and pixel strings of the wrong length or content (rows 2..9)."""
    root = folder / "fer2013_csv"
    root.mkdir(parents=True, exist_ok=True)
    good = " ".join(str(v) for v in np.arange(48 * 48) % 256)
    rows = [
        ("3", good, "Training"),  # 2 valid
        ("0", good, "PublicTest"),  # 3 valid
        ("3", " ".join(good.split()[:-1]), "Training"),  # 4 2,303 values
        ("3", good + " 7", "Training"),  # 5 2,305 values
        ("3", "", "PrivateTest"),  # 6 no values
        ("3", " ".join(["x"] * 2304), "Training"),  # 7 not integers
        ("3", " ".join(["256"] * 2304), "Training"),  # 8 outside 0..255
        ("3", " ".join(["99999999999999999999"] * 2304), "Training"),  # 9 beyond int64
    ]
    text = "emotion,pixels,Usage\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows)
    (root / "fer2013.csv").write_text(text, encoding="utf-8")
    return {"fer2013_csv": root}


def make_corpus(out: str | Path) -> dict[str, Path]:
    """Write every case below ``out``; returns (and saves as corpus.json) case name -> path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Path] = {}
    cases.update(make_images(out / "images"))
    cases.update(make_affectnet(out))
    cases.update(make_utkface(out))
    cases.update(make_fer2013(out))
    index = {name: str(path.relative_to(out)) for name, path in cases.items()}
    (out / "corpus.json").write_text(json.dumps(index, indent=1, sort_keys=True), encoding="utf-8")
    return cases


def load_corpus(out: str | Path) -> dict[str, Path]:
    """The case name -> absolute path index written by :func:`make_corpus`."""
    out = Path(out)
    index = json.loads((out / "corpus.json").read_text(encoding="utf-8"))
    return {name: out / rel for name, rel in index.items()}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/make_bad_inputs.py OUT_DIR")
    made = make_corpus(sys.argv[1])
    print(f"wrote {len(made)} cases below {sys.argv[1]}")
