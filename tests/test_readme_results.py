"""The README's real-data numbers are the committed metrics.csv's, by construction."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from fer_lib import reporting

REPO = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("readme_results", REPO / "scripts" / "readme_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_readme_table_is_generated_from_the_committed_metrics():
    mod = _script()
    readme = (REPO / "README.md").read_text()
    expected = mod.render(readme, reporting.load_metrics(REPO / "results" / "metrics.csv"))
    assert readme == expected, (
        "README.md's real-data table differs from results/metrics.csv: run scripts/readme_results.py"
    )


def test_the_generated_table_follows_the_metrics(tmp_path):
    mod = _script()
    path = tmp_path / "metrics.csv"
    kw = dict(profile="default", seed=3, path=path, train_seconds=600)
    reporting.record_metrics(
        "pretrain", "utkface", "balanced_test_2000", "m@64", {"gender_accuracy": 0.912}, **kw
    )
    reporting.record_metrics(
        "finetune", "fer2013", "test", "f", {"accuracy": 0.6, "accuracy_predict": 0.52}, **kw
    )
    text = mod.block(reporting.load_metrics(path))
    assert "| utkface | gender_accuracy | `m@64` | 3 | **0.912** | >= 0.9 | yes | 10 min |" in text
    assert "| fer2013 | accuracy_predict | `f` | 3 | **0.520** | >= accuracy -0.05 (0.550) | no |" in text
    assert "| utkface | age_mae | not run |" in text
    readme = f"intro\n{mod.BEGIN}\nold numbers\n{mod.END}\noutro\n"
    out = mod.render(readme, reporting.load_metrics(path))
    assert out.startswith("intro\n") and out.endswith("\noutro\n") and "old numbers" not in out
    with pytest.raises(ValueError, match="markers"):
        mod.render("no markers here", pd.DataFrame())
