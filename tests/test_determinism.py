"""Two runs of the smoke chain with the same seed give identical result tables (issue 9 item 3).

Each run gets its own results and data folder, so the synthetic data is generated twice too. Values
that measure time (columns with seconds / fps / timestamps) and the runs' own folder names are the
only things allowed to differ.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from fer_lib import runner
from fer_lib.metrics import metric_spec

VOLATILE = re.compile(
    r"(seconds|_s$|fps|per_s|timestamp|finished|started|git_commit|latency|elapsed|time)", re.IGNORECASE
)


def _run(tmp_path, name, monkeypatch):
    root = tmp_path / name
    monkeypatch.setenv("FER_RESULTS_DIR", str(root / "results"))
    monkeypatch.setenv("FER_DATA_DIR", str(root / "data"))
    monkeypatch.delenv("FER_DATA_ROOT", raising=False)
    runner.run_chain("smoke", progress=False)
    return root


def _tables(root):
    out = {}
    for f in sorted((root / "results" / "tables").glob("*.csv")):
        text = f.read_text().replace(str(root), "<RUN>")
        df = pd.read_csv(pd.io.common.StringIO(text))
        out[f.name] = df[[c for c in df.columns if not VOLATILE.search(str(c))]]
    return out


@pytest.mark.slow
@pytest.mark.notebooks
def test_smoke_chain_twice_gives_identical_tables(tmp_path, monkeypatch):
    a = _run(tmp_path, "a", monkeypatch)
    b = _run(tmp_path, "b", monkeypatch)
    ta, tb = _tables(a), _tables(b)
    assert len(ta) >= 10 and ta.keys() == tb.keys()
    for name in ta:
        pd.testing.assert_frame_equal(ta[name], tb[name], check_exact=True, obj=name)
    ma = pd.read_csv(a / "results" / "metrics.csv")
    mb = pd.read_csv(b / "results" / "metrics.csv")
    keys = ["stage", "dataset", "split", "model", "metric", "profile", "seed", "value"]
    pd.testing.assert_frame_equal(
        ma[keys].sort_values(keys[:5]).reset_index(drop=True),
        mb[keys].sort_values(keys[:5]).reset_index(drop=True),
        check_exact=True,
    )
    # every name the chain recorded is declared in the one metric vocabulary
    assert all(metric_spec(name) for name in ma.metric.unique())
    # the seed and every package version sit next to the results
    assert (ma.seed == 0).all()
    versions = json.loads((a / "results" / "versions.json").read_text())["versions"]
    assert {"torch", "timm", "numpy"} <= set(versions)
