import numpy as np
import pandas as pd
import pytest

from fer_lib import config, reporting
from fer_lib.published import published_table
from fer_lib.stages import report


def _metrics(tmp_results):
    path = tmp_results / "metrics.csv"
    kw = dict(profile="default", seed=1, path=path)
    reporting.record_metrics(
        "pretrain",
        "utkface",
        "balanced_test_2000",
        "mnv2",
        {"gender_accuracy": 0.9, "age_mae": 5.5, "race_accuracy": 0.7},
        train_seconds=100,
        **kw,
    )
    reporting.record_metrics("finetune", "synthetic_affectnet", "val", "b0", {"accuracy_8cls": 0.5}, **kw)
    reporting.record_metrics(
        "finetune", "synthetic_affectnet", "val", "b0_va", {"accuracy_8cls": 0.625}, **kw
    )
    reporting.record_metrics(
        "finetune", "fer2013", "test", "small", {"accuracy": 0.6}, train_seconds=50, **kw
    )
    reporting.record_metrics("finetune", "fer2013", "test", "other", {"accuracy": 0.66}, **kw)
    reporting.record_metrics(
        "finetune", "fer2013", "test", "smoke_model", {"accuracy": 0.99}, profile="smoke", seed=0, path=path
    )
    return reporting.load_metrics(path)


def test_comparison_pairs_real_synthetic_and_missing(tmp_results):
    m = _metrics(tmp_results)
    pub = published_table()
    t = report.comparison_table(m, pub, profile="default", real_available={"utkface": True, "fer2013": True})
    assert len(t) == len(pub) and (t.source != "").all()
    # real UTKFace: fraction -> %, split difference spelled out
    g = t[(t.model == "mobilenet_v1_multitask") & (t.metric == "gender_accuracy")].iloc[0]
    assert g.reproduced == pytest.approx(90.0) and g.reproduced_on == "utkface"
    assert "balanced_test_2000" in g.status and "full" in g.status
    # age MAE is in years, not scaled
    a = t[(t.model == "mobilenet_v1_multitask") & (t.metric == "age_mae")].iloc[0]
    assert a.reproduced == pytest.approx(5.5)
    # FER2013 peers: the best default-profile model (the smoke row is ignored)
    f = t[(t.dataset == "fer2013")].iloc[0]
    assert f.reproduced == pytest.approx(66.0) and f.reproduced_model == "other"
    # AffectNet only synthetic: shown as a stand-in with the best of the two models, clearly labelled
    s = t[(t.dataset == "affectnet") & (t.metric == "accuracy_8cls")].iloc[0]
    assert s.reproduced == pytest.approx(62.5) and s.reproduced_on == "synthetic_affectnet"
    assert "not available" in s.status and "not comparable" in s.status
    # VGAF never recorded: the row says why instead of a silent blank
    v = t[t.dataset == "vgaf"].iloc[0]
    assert np.isnan(v.reproduced) and v.status == "not reproduced: vgaf not found under FER_DATA_ROOT"
    assert t[t.dataset == "device"].status.str.startswith("not reproducible").all()


def test_headline_folds_published_models(tmp_results):
    m = _metrics(tmp_results)
    t = report.comparison_table(m, profile="default", real_available={"utkface": True, "fer2013": True})
    h = report.headline_table(t).set_index(["dataset", "split", "metric"])
    a8 = h.loc[("affectnet", "val", "accuracy_8cls")]
    assert a8.published_best == pytest.approx(63.125) and a8.published_model == "enet_b2_8_best"
    assert a8.published_models == 5 and a8.reproduced == pytest.approx(62.5)
    mae = h.loc[("utkface", "balanced_test_2000", "age_mae")]  # lower is better: the best peer is 4.22
    assert mae.published_best == pytest.approx(4.22) and mae.reproduced == pytest.approx(5.5)
    assert "device" not in h.index.get_level_values(0)


def test_best_follows_the_declared_direction():
    rows = pd.DataFrame({"value": [6.0, 4.5, 7.0], "model": list("abc")})
    assert report._best(rows, "age_mae").model == "b"
    assert report._best(rows, "accuracy").model == "c"
    assert report._best(rows, "age_cs5").model == "c"  # contains no "mae" but an age metric: higher
    assert (
        report._best(rows, "size_mb").model == "b"
    )  # a suffix guess ("mae", "_ms", "loss") took the largest
    with pytest.raises(ValueError, match="unknown metric name 'gender_acc'"):
        report._best(rows, "gender_acc")


def test_headline_picks_the_smallest_published_file(tmp_results):
    pub = published_table()
    pub = pub[pub.metric == "size_mb"].assign(dataset="file_sizes")  # a dataset the headline keeps
    h = report.headline_table(report.comparison_table(reporting.load_metrics(), pub))
    assert h.published_best.item() == pub.value.min() == 14 and h.published_model.item() == "mobilenet_7"


def test_reproduced_and_bars_tables(tmp_results):
    m = _metrics(tmp_results)
    wide = report.reproduced_table(m, profile="default")
    row = wide[wide.model == "mnv2"].iloc[0]
    assert row.gender_accuracy == pytest.approx(0.9) and row.train_seconds == 100
    assert "smoke_model" not in set(wide.model)
    bars = report.real_data_table(m, profile="default").set_index(["metric", "model"])
    assert bars.loc[("gender_accuracy", "mnv2"), "met"] and bars.loc[("age_mae", "mnv2"), "met"]
    assert not bars.loc[("race_accuracy", "mnv2"), "met"]
    assert bars.loc[("accuracy", "other"), "met"] and not bars.loc[("accuracy", "small"), "met"]


def test_write_all_writes_csv_and_markdown(tmp_results):
    _metrics(tmp_results)
    paths = config.get_paths()
    tables = report.write_all(config.get_profile("default"), paths)
    for name, df in tables.items():
        back = pd.read_csv(paths.tables / f"{name}.csv")
        assert len(back) == len(df)
        assert (paths.tables / f"{name}.md").read_text().startswith("# ")
