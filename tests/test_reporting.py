import json
import os
import signal
from importlib import metadata
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from fer_lib import io, reporting
from fer_lib.metrics import metric_spec

matplotlib.use("Agg")


def test_record_metrics_upserts_by_key(tmp_results):
    reporting.record_metrics(
        "pretrain",
        "utkface",
        "test",
        "mnv2",
        {"age_mae": 7.0, "gender_accuracy": 0.8},
        profile="smoke",
        seed=0,
        train_seconds=12.34,
    )
    reporting.record_metrics(
        "finetune", "fer2013", "test", "mnv2", {"accuracy": 0.5}, profile="smoke", seed=0
    )
    reporting.record_metrics("pretrain", "utkface", "test", "mnv2", {"age_mae": 6.0}, profile="smoke", seed=0)
    df = reporting.load_metrics()
    assert list(df.columns) == reporting.METRICS_COLUMNS
    assert len(df) == 3
    age = df[df.metric == "age_mae"]
    assert len(age) == 1 and age.value.iloc[0] == 6.0  # the same run recorded again replaces its row
    # another seed is another run (a spread over seeds): kept beside
    reporting.record_metrics("pretrain", "utkface", "test", "mnv2", {"age_mae": 6.5}, profile="smoke", seed=1)
    assert sorted(reporting.load_metrics().query("metric == 'age_mae'").seed) == [0, 1]
    reporting.record_metrics("pretrain", "utkface", "test", "mnv2", {"age_mae": 6.0}, profile="smoke", seed=1)
    assert df[df.metric == "gender_accuracy"].train_seconds.iloc[0] == pytest.approx(12.3)
    # another profile is a different key: kept beside
    reporting.record_metrics(
        "pretrain", "utkface", "test", "mnv2", {"age_mae": 9.0}, profile="default", seed=0
    )
    assert len(reporting.load_metrics()) == 5
    assert df.git_commit.notna().all() and (df.timestamp.str.len() > 10).all()
    info = json.loads((tmp_results / "versions.json").read_text())
    assert info["versions"]["torch"] == metadata.version("torch")
    assert info["git_commit"] == df.git_commit.iloc[0]


def test_record_metrics_needs_values(tmp_results):
    with pytest.raises(ValueError):
        reporting.record_metrics("s", "d", "x", "m", {}, profile="smoke", seed=0)


def test_record_metrics_refuses_unknown_names_and_lists_the_known_ones(tmp_results):
    with pytest.raises(ValueError, match="unknown metric name 'gender_acc'") as err:
        reporting.record_metrics(
            "pretrain", "utkface", "test", "m", {"age_mae": 6.0, "gender_acc": 0.8}, profile="smoke", seed=0
        )
    assert {"gender_accuracy", "age_mae", "valence_ccc", "accuracy_stride<N>"} <= set(
        str(err.value).split(": ")[-1].split(", ")
    )
    assert not (tmp_results / "metrics.csv").exists()  # nothing written, not even the known name


def test_committed_metrics_use_the_declared_names():
    committed = reporting.load_metrics(Path(__file__).parents[1] / "results" / "metrics.csv")
    assert len(committed) and all(metric_spec(name) for name in committed.metric.unique())


def test_markdown_table():
    md = reporting.to_markdown(pd.DataFrame({"a": [1, 2], "b": [0.123456, float("nan")], "c": ["x|y", "z"]}))
    lines = md.strip().splitlines()
    assert lines[0] == "| a | b | c |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| 1 | 0.1235 | x\\|y |" and lines[3] == "| 2 |  | z |"


def test_write_table_figure_and_index(tmp_results):
    import matplotlib.pyplot as plt

    reporting.write_table(pd.DataFrame({"m": ["x"], "v": [1.0]}), "demo", title="Demo")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    png = reporting.save_figure(fig, "demo_plot")
    plt.close(fig)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pd.read_csv(tmp_results / "tables" / "demo.csv").v.iloc[0] == 1.0
    idx = reporting.write_index().read_text()
    assert (
        "[tables/demo.md](tables/demo.md)" in idx and "[figures/demo_plot.png](figures/demo_plot.png)" in idx
    )


def test_atomic_write_keeps_old_file_when_writer_dies(tmp_path):
    target = tmp_path / "table.csv"
    io.atomic_write_text(target, "old\n")
    pid = os.fork()
    if pid == 0:  # child: start writing, then get killed before the rename
        with io.atomic_open(target, "w") as fh:
            fh.write("new, half written")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    assert target.read_text() == "old\n"


def test_atomic_write_exception_leaves_no_temp(tmp_path):
    target = tmp_path / "x.txt"
    with pytest.raises(RuntimeError):
        with io.atomic_open(target, "w") as fh:
            fh.write("partial")
            raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_write_benchmark_writes_csv_and_markdown(tmp_results, capsys):
    df = pd.DataFrame({"variant": ["naive", "fast"], "speedup": [1.0, 2.5]})
    md = reporting.write_benchmark(df, "demo", "# Demo\n\n", "\nCommand: `x`.\n")
    assert md == tmp_results / "benchmarks" / "demo.md"
    assert md.read_text() == "# Demo\n\n" + reporting.to_markdown(df) + "\nCommand: `x`.\n"
    assert pd.read_csv(tmp_results / "benchmarks" / "demo.csv").speedup.tolist() == [1.0, 2.5]
    assert "| fast | 2.5 |" in capsys.readouterr().out
