"""Property-based tests (hypothesis) of the name and csv/text parsers: they never raise on any input,
round-trip valid values, and clear or report every invalid one."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fer_lib.datasets import ValidationReport, affectnet, affwild2, fer2013, utkface
from fer_lib.labels import EXPRESSIONS_8, canonical_expression

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Parsed as numbers by both float() and pandas: the reference for exact round trips below.
DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=20)
SCRATCH = Path(tempfile.mkdtemp(prefix="fer-hypothesis-"))


# ------------------------------------------------------------------------------------------ UTKFace
@FAST
@given(
    age=st.integers(0, utkface.MAX_AGE),
    gender=st.integers(0, 1),
    race=st.integers(0, 4),
    taken=DIGITS,
    chip=st.booleans(),
)
def test_utkface_name_round_trip(age, gender, race, taken, chip):
    name = utkface.format_name(age, gender, race, taken)
    if not chip:
        name = name.replace(".jpg.chip.jpg", ".jpg")
    assert utkface.parse_fields(name) == (age, gender, race, taken)
    assert utkface.parse_name(name) == (age, gender, race)


# Field-like tokens, including digits that str.isdigit() accepts but int() rejects ('²').
UTK_TOKENS = st.sampled_from(
    [
        "25",
        "0",
        "1",
        "4",
        "116",
        "117",
        "200",
        "-3",
        "2.5",
        "abc",
        "",
        "²",
        "1²",
        "٣",
        "20170116174525125",
        " 7",
    ]
)
UTK_NAMES = st.builds(
    lambda fields, suffix: "_".join(fields) + suffix,
    st.lists(UTK_TOKENS, min_size=3, max_size=5),
    st.sampled_from(["", ".jpg", ".jpg.chip.jpg", ".chip.jpg", ".png"]),
)


@FAST
@given(st.text(max_size=60) | UTK_NAMES)
def test_utkface_any_text_parses_or_is_reported(text):
    got = utkface.parse_fields(text)  # never raises
    if isinstance(got, str):
        assert got  # a reason to report
        return
    age, gender, race, taken = got
    assert 0 <= age <= utkface.MAX_AGE and gender in (0, 1) and 0 <= race <= 4
    assert utkface.parse_fields(utkface.format_name(age, gender, race, taken)) == got


@FAST
@given(age=st.integers(utkface.MAX_AGE + 1, 10**30), field=st.sampled_from(["age", "gender", "race"]))
def test_utkface_out_of_range_fields_are_reported(age, field):
    values = {"age": 30, "gender": 1, "race": 2, field: age}
    got = utkface.parse_name(f"{values['age']}_{values['gender']}_{values['race']}_2017.jpg.chip.jpg")
    assert isinstance(got, str) and got.startswith(field)


# ---------------------------------------------------------------------------------------- AffectNet
def _number_text(draw_value) -> str:
    return repr(draw_value) if isinstance(draw_value, float) else str(draw_value)


NUMBERS = st.one_of(
    st.integers(-20, 20),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([-2, -2.0, 8, 9, 10, 12, 1.0, -1.0, 0.0, 1e300]),
).map(_number_text)
JUNK = st.text(max_size=8).map(lambda t: t.replace(",", "").replace('"', ""))
CELLS = NUMBERS | st.just("") | JUNK
SPECIAL = (
    st.sampled_from(
        ["inf", "-inf", "nan", "NaN", "", "-2", "12", "8", "3.0", "3.5", "-1e-9", "1e300", " 2 ", "0"]
    )
    | NUMBERS
    | JUNK
)
VALID_ROW = st.tuples(
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(1, 99),
    st.integers(1, 99),
    st.integers(0, 7),
    st.floats(-1, 1),
    st.floats(-1, 1),
).map(lambda r: tuple(map(repr, r)))


@st.composite
def affectnet_rows(draw) -> tuple[str, ...]:
    """A random row, or a valid row with one or two cells replaced by a special value."""
    if draw(st.booleans()):
        return draw(st.tuples(*[CELLS] * 7))
    row = list(draw(VALID_ROW))
    for col in draw(st.lists(st.integers(0, 6), min_size=1, max_size=2)):
        row[col] = draw(SPECIAL)
    return tuple(row)


def _strict(text: str) -> float | None:
    """The number in ``text`` (surrounding white space ignored, as the loaders strip it), else None.

    ASCII only and no '_' digit separators: Python's float() reads '١' and '1_0', pandas does not."""
    text = text.strip()
    if not text.isascii() or "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(affectnet_rows(), min_size=1, max_size=8))
def test_affectnet_rows_never_crash_and_invalid_values_are_cleared_and_reported(rows):
    cols = ["face_x", "face_y", "face_width", "face_height", "expression", "valence", "arousal"]
    table = pd.DataFrame(rows, columns=cols, dtype=str)
    table.insert(0, "subDirectory_filePath", [f"img{i}.jpg" for i in range(len(rows))])
    table.insert(5, "facial_landmarks", "")
    report = ValidationReport("affectnet", str(SCRATCH))
    out = affectnet._parse_table(
        table, Path("training.csv"), SCRATCH, "train", check_files=False, keep_landmarks=False, report=report
    )
    assert len(out) + report.n_dropped == len(rows)
    issues = report.to_frame()
    reasons = issues.groupby("file")["reason"].apply(" | ".join).to_dict()
    kept = {Path(p).name: r for p, r in zip(out["path"], out.to_dict("records"))}
    for i, row in enumerate(rows):
        raw = dict(zip(cols, row))
        why = reasons.get(f"training.csv row {i + 2}", "")
        values = {c: _strict(raw[c]) for c in cols}
        e, v, a = values["expression"], values["valence"], values["arousal"]
        valid_e = e is not None and e in range(8) and float(e).is_integer()
        valid_va = all(x is not None and -1 <= x <= 1 for x in (v, a))
        if f"img{i}.jpg" not in kept:
            assert "no valid valence/arousal" in why, (i, raw, why)
            assert not valid_e and not valid_va
            continue
        got = kept[f"img{i}.jpg"]
        # expression: a valid code is kept exactly, anything else is NaN and reported
        if valid_e:
            assert got["expression"] == e
        else:
            assert math.isnan(got["expression"]) and "expression" in why
        for name, x in (("valence", v), ("arousal", a)):
            if x is not None and -1 <= x <= 1 and x != -2:
                assert got[name] == x
            else:
                assert math.isnan(got[name]) and name in why, (name, raw[name], why)
        box = [got[c] for c in ("face_x", "face_y", "face_w", "face_h")]
        raw_box = [values[c] for c in cols[:4]]
        box_ok = (
            all(b is not None and math.isfinite(b) for b in raw_box)
            and raw_box[0] >= 0
            and raw_box[1] >= 0
            and raw_box[2] > 0
            and raw_box[3] > 0
        )
        if box_ok:
            assert box == raw_box
        else:
            assert all(math.isnan(b) for b in box) and "invalid face box" in why, (raw_box, box, why)


# ----------------------------------------------------------------------------------------- FER2013
N_PIXELS = fer2013.SIDE * fer2013.SIDE


@FAST
@given(seed=st.integers(0, 2**32 - 1), sep=st.sampled_from([" ", "  ", "\t", " \n"]))
def test_fer2013_pixels_round_trip(seed, sep):
    image = np.random.default_rng(seed).integers(0, 256, (fer2013.SIDE, fer2013.SIDE), dtype=np.uint8)
    got = fer2013.parse_pixels(sep.join(str(v) for v in image.ravel()))
    assert isinstance(got, np.ndarray) and got.dtype == np.uint8 and np.array_equal(got, image)


@FAST
@given(
    length=st.sampled_from([0, 1, N_PIXELS - 1, N_PIXELS, N_PIXELS + 1]),
    changes=st.lists(
        st.tuples(
            st.integers(0, N_PIXELS),
            st.integers(-(10**25), 10**25)
            | st.sampled_from([256, -1, 2**63, -(2**63) - 1, 10**20, 255, 0])
            | st.text(
                alphabet=st.characters(blacklist_categories=["Zs", "Cc", "Zl", "Zp"]), min_size=1, max_size=6
            ),
        ),
        max_size=4,
    ),
)
def test_fer2013_bad_pixel_strings_are_reported(length, changes):
    values: list = [7] * length
    for index, value in changes:
        if index < length:
            values[index] = value
    got = fer2013.parse_pixels(" ".join(map(str, values)))
    valid = length == N_PIXELS and all(isinstance(v, int) and 0 <= v <= 255 for v in values)
    if valid:
        assert isinstance(got, np.ndarray) and got.ravel().tolist() == values
    elif length != N_PIXELS:
        assert got == f"{length} pixel values, expected {N_PIXELS}"
    else:
        # a non-ASCII digit string may still be an integer to numpy (e.g. '٣' == 3): then it is
        # a valid image; otherwise a reason is returned
        assert isinstance(got, str) or (got.shape == (48, 48) and got.dtype == np.uint8)


@FAST
@given(st.text(max_size=200))
def test_fer2013_any_text_never_raises(text):
    got = fer2013.parse_pixels(text)
    assert isinstance(got, str) or (got.shape == (48, 48) and got.dtype == np.uint8)


# -------------------------------------------------------------------------------------- Aff-Wild2
# Line text: numbers, junk and characters str.splitlines() would split at (form feed, U+2028...),
# never a real newline.
LINE_JUNK = st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=8)
EXPR_LINES = st.lists(
    st.integers(-3, 9).map(str)
    | st.floats(-2, 8).map(repr)
    | LINE_JUNK
    | st.sampled_from(["\x0c3", "4\u2028", "5\x1c"]),
    max_size=40,
)


def _write(name: str, lines: list[str], header: str) -> Path:
    path = SCRATCH / name
    path.write_bytes(("\n".join([header] + lines) + "\n").encode("utf-8", errors="surrogatepass"))
    return path


def _as_int(text: str) -> int | None:
    value = _strict(text.strip())
    return int(value) if value is not None and math.isfinite(value) and value.is_integer() else None


@FAST
@given(lines=EXPR_LINES)
def test_affwild2_expr_lines_keep_frame_numbers_and_count_every_line(lines):
    header = ",".join(affwild2.AFFWILD2_ORDER)
    report = ValidationReport("affwild2", str(SCRATCH))
    out = affwild2.read_expr_file(_write("expr.txt", lines, header), report)
    dropped = report.counts[("dropped", "EXPR line -1 (invalid frame)")]
    bad = report.counts[("dropped", "EXPR line not in 0..6")]
    assert len(out) + dropped + bad == len(lines)
    got = dict(zip(out["frame"].astype(int), out["expression"]))
    for frame, text in enumerate(lines, start=1):
        code = _as_int(text)
        if code is not None and 0 <= code <= 6:
            want = EXPRESSIONS_8.index(canonical_expression(affwild2.AFFWILD2_ORDER[code]))
            assert got.get(frame) == want, (frame, text)
        elif frame in got:  # only pandas-readable variants (e.g. ' 3', '3.') may parse as well
            assert 0 <= got[frame] < 8


@FAST
@given(header=st.text(max_size=80), lines=st.lists(st.integers(-2, 8).map(str), max_size=10))
def test_affwild2_any_header_never_crashes(header, lines):
    report = ValidationReport("affwild2", str(SCRATCH))
    out = affwild2.read_expr_file(
        _write("expr_h.txt", lines, header.replace("\n", " ").replace("\r", " ")), report
    )
    assert set(out["expression"]).issubset(range(8)) and len(out) <= len(lines)


VA_VALUE = (
    st.floats(-6, 6).map(repr)
    | st.sampled_from(["-5", "nan", "inf"])
    | LINE_JUNK.map(lambda t: t.replace(",", ""))
)


@FAST
@given(
    pairs=st.lists(
        st.tuples(VA_VALUE, VA_VALUE) | LINE_JUNK.map(lambda t: (t.replace(",", ""),)), max_size=30
    )
)
def test_affwild2_va_lines_valid_values_kept_invalid_cleared_and_counted(pairs):
    lines = [",".join(p) for p in pairs]
    report = ValidationReport("affwild2", str(SCRATCH))
    out = affwild2.read_va_file(_write("va.txt", lines, "valence,arousal"), report)
    both_bad = report.counts[("dropped", "VA line invalid (-5 or outside [-1, 1])")]
    assert len(out) + both_bad == len(lines)
    got = {int(f): (v, a) for f, v, a in zip(out["frame"], out["valence"], out["arousal"])}
    for frame, pair in enumerate(pairs, start=1):
        vals = [_strict(x.strip()) for x in pair] + [None] * (2 - len(pair))
        ok = [x is not None and -1 <= x <= 1 for x in vals]
        if not any(ok):
            assert frame not in got or all(math.isnan(x) or -1 <= x <= 1 for x in got[frame])
            continue
        assert frame in got, (frame, pair)
        for want, is_ok, value in zip(vals, ok, got[frame]):
            if is_ok:
                assert value == want
            else:
                assert math.isnan(value) or -1 <= value <= 1
    cleared = report.by_reason("value cleared")
    n_one_bad = sum(1 for v, a in zip(out["valence"], out["arousal"]) if math.isnan(v) != math.isnan(a))
    assert sum(cleared.values()) == n_one_bad
