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
        "finetune",
        "fer2013",
        "test",
        "small",
        {"accuracy": 0.6, "accuracy_predict": 0.58},
        train_seconds=50,
        **kw,
    )
    reporting.record_metrics(
        "finetune", "fer2013", "test", "other", {"accuracy": 0.66, "accuracy_predict": 0.6}, **kw
    )
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
    pub = pub[pub.metric == "size_mb"].assign(dataset="file_sizes")  # kept when named a headline task
    tasks = {("file_sizes", "size_mb"): "model file size"}
    h = report.headline_table(report.comparison_table(reporting.load_metrics(), pub), tasks=tasks)
    assert h.task.item() == "model file size"
    assert h.published_best.item() == pub.value.min() == 14 and h.published_model.item() == "mobilenet_7"


def test_reproduced_and_bars_tables(tmp_results):
    m = _metrics(tmp_results)
    wide = report.reproduced_table(m, profile="default")
    row = wide[wide.model == "mnv2"].iloc[0]
    assert row.gender_accuracy == pytest.approx(0.9) and row.train_seconds == 100
    assert "smoke_model" not in set(wide.model)
    bars = report.real_data_table(m, profile="default").set_index(["metric", "model"])
    assert bars.loc[("gender_accuracy", "mnv2"), "met"]  # 0.9 >= 0.90
    assert not bars.loc[("age_mae", "mnv2"), "met"] and not bars.loc[("race_accuracy", "mnv2"), "met"]
    assert (
        not bars.loc[("accuracy", "other"), "met"] and bars.loc[("accuracy", "other"), "target"] == ">= 0.68"
    )
    # the predict path within 5 points of the same model's trainer evaluation: 0.58 vs 0.60 yes, 0.60 vs 0.66 no
    assert (
        bars.loc[("accuracy_predict", "small"), "met"] and not bars.loc[("accuracy_predict", "other"), "met"]
    )
    assert bars.loc[("accuracy_predict", "other"), "target"] == ">= accuracy -0.05 (0.610)"
    assert bars.loc[("race_min_recall", ""), "profile"].startswith("not run")


def test_write_all_writes_csv_and_markdown(tmp_results):
    _metrics(tmp_results)
    paths = config.get_paths()
    tables = report.write_all(config.get_profile("default"), paths)
    for name, df in tables.items():
        back = pd.read_csv(paths.tables / f"{name}.csv")
        assert len(back) == len(df)
        assert (paths.tables / f"{name}.md").read_text().startswith("# ")
    assert (paths.figures / "05_headline.png").stat().st_size > 0
    assert list(tables["05_headline"].columns) == report.HEADLINE_COLUMNS


def _headline(tmp_results):
    m = _metrics(tmp_results)
    t = report.comparison_table(m, profile="default", real_available={"utkface": True, "fer2013": True})
    return report.headline_table(t)


def test_headline_keeps_the_reader_tasks_in_order(tmp_results):
    h = _headline(tmp_results)
    assert list(zip(h.task, h.published_by, h.split)) == [
        ("UTKFace age", "paper A", "full"),
        ("UTKFace age", "peer models", "balanced_test_2000"),
        ("UTKFace gender", "paper A", "full"),
        ("UTKFace gender", "peer models", "balanced_test_2000"),
        ("UTKFace ethnicity", "peer models", "balanced_test_2000"),
        ("FER2013 expression", "peer models", "test"),
        ("AffectNet 8 expressions", "paper A", "val"),
        ("AffectNet 7 expressions", "paper A", "val"),
        ("AFEW video emotion", "paper A", "val"),
        ("VGAF group emotion", "paper A", "val"),
    ]
    # the stride study, AFEW "complete", CCC and the device rows stay in the full comparison
    assert not h.metric.str.startswith("accuracy_stride").any()
    assert {"valence_ccc", "arousal_ccc", "accuracy_complete", "latency_ms"}.isdisjoint(h.metric)


def test_headline_differs_names_data_backbone_and_budget(tmp_results):
    h = _headline(tmp_results).set_index(["task", "split"]).differs
    # real data, the paper's split differs: both splits, both backbones, 100 s of training -> 2 min
    assert h[("UTKFace gender", "full")] == (
        "data: split balanced_test_2000 here, full published; "
        "backbone: mnv2 here, mobilenet_v1_multitask published; "
        "budget: 2 min on CPU here vs the paper's full schedule on GPU"
    )
    # real data on the peers' own test split: same split, the peer's off-the-shelf weights
    assert h[("UTKFace age", "balanced_test_2000")] == (
        "data: same split (balanced_test_2000); "
        "backbone: mnv2 here, face-api age/gender published; "
        "budget: 2 min on CPU here vs off-the-shelf weights trained by their authors"
    )
    # the best FER2013 model ('other') was recorded without a training time
    assert h[("FER2013 expression", "test")].endswith(
        "backbone: other here, fer (mini-Xception) published; "
        "budget: training time not recorded here vs off-the-shelf weights trained by their authors"
    )
    # only the synthetic stand-in ran: said first, with the stand-in's best model
    assert h[("AffectNet 8 expressions", "val")].startswith(
        "data: synthetic stand-in for affectnet, not comparable; backbone: b0_va here, enet_b2_8_best published"
    )
    # nothing recorded: the row is marked, with the reason
    assert (
        h[("AffectNet 7 expressions", "val")]
        == "data: not run here (affectnet not found under FER_DATA_ROOT)"
    )
    assert h[("VGAF group emotion", "val")] == "data: not run here (vgaf not found under FER_DATA_ROOT)"


def test_differs_from_a_hand_made_row():
    row = {
        "paper": "B",
        "model": "resnet",
        "dataset": "fer2013",
        "split": "test",
        "reproduced_on": "fer2013",
        "reproduced_model": "resnet",
        "reproduced_split": "test",
        "reproduced_seconds": 45.0,
        "status": "reproduced on the real dataset",
    }
    assert report.differs(row, trained_on="cuda") == (
        "data: same split (test); backbone: same (resnet); "
        "budget: under a minute on cuda here vs the paper's full schedule on GPU"
    )
    # the dataset was found but no stage recorded the metric: no reason about FER_DATA_ROOT
    missing = {**row, "reproduced_on": "", "status": "not reproduced: fer2013 not run"}
    assert report.differs(missing) == "data: not run here"


def test_headline_figure_has_one_bar_per_number(tmp_results):
    import matplotlib.pyplot as plt

    from fer_lib import plots

    h = _headline(tmp_results)
    fig = plots.plot_headline(h)
    try:
        years, percent = fig.axes  # MAE (lower is better) gets its own panel
        assert "years" in years.get_xlabel() and "lower is better" in years.get_xlabel()
        assert "%" in percent.get_xlabel() and "higher is better" in percent.get_xlabel()
        # 2 MAE rows, both reproduced on UTKFace: 2 published + 2 reproduced bars
        assert len(years.patches) == 4 and len(years.get_yticks()) == 2
        assert [round(p.get_width(), 2) for p in years.patches] == [6.0, 4.22, 5.5, 5.5]
        # 8 accuracy rows; reproduced on real data: gender x2, ethnicity, FER2013 -> 8 + 4 bars
        assert len(percent.patches) == 12 and len(percent.get_yticks()) == 8
        assert sorted(round(p.get_width(), 1) for p in percent.patches[8:]) == [66.0, 70.0, 90.0, 90.0]
        notes = [t.get_text() for t in percent.texts if not t.get_text().strip()[0].isdigit()]
        assert notes == ["synthetic stand-in only (not comparable)"] + ["not run here"] * 3
    finally:
        plt.close(fig)
    empty = plots.plot_headline(h.iloc[:0])
    assert empty.axes[0].texts[0].get_text() == "no published numbers to show"
    plt.close(empty)
