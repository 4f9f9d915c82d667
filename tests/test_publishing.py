"""Published reproduction: no publishing from a dirty tree, provenance in every metrics row, no licensed
face images in what is committed, an index whose every link resolves."""

import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest
from PIL import Image

from fer_lib import cli, config, provenance, reporting, runner
from fer_lib import paths as run_paths
from fer_lib.datasets import ValidationReport
from fer_lib.datasets.sources import DataSource
from fer_lib.stages import prepare as stage

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"


# ------------------------------------------------------------------------------------------- helpers
def _chain(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("00_data_prep", "01_b"):
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell("profile = None\noverrides = {}")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell("x = 1")]
        nbformat.write(nb, str(folder / f"{name}.ipynb"))
    return folder


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
    """A repository root in tmp (so a publishing run can never touch the real results/), papermill
    replaced by a copy (no kernels), and a list of the notebooks it was asked to run."""
    root = (tmp_path / "repo").resolve()
    root.mkdir()
    monkeypatch.setattr(run_paths, "repo_root", lambda: root)  # where results_dir and get_paths look
    monkeypatch.setenv("FER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("FER_RESULTS_DIR", raising=False)
    monkeypatch.delenv("FER_PUBLISH", raising=False)
    monkeypatch.delenv("FER_DATA_ROOT", raising=False)
    ran = []

    def execute(src, out, **kw):
        ran.append(Path(src).name)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, out)

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    return root, _chain(tmp_path / "nbs"), ran


def _git_state(monkeypatch, commit: str) -> None:
    monkeypatch.setattr(provenance, "git_commit", lambda: commit)


# ------------------------------------------------------------------------------- 1. dirty-tree guard
def test_publishing_from_a_dirty_tree_is_refused_before_anything_is_written(fake_repo, monkeypatch):
    root, nbs, ran = fake_repo
    _git_state(monkeypatch, "abc1234567-dirty")
    with pytest.raises(provenance.DirtyTreeError, match="--allow-dirty") as err:
        runner.run_chain("smoke", folder=nbs, kernel="python3", progress=False, publish=True)
    assert "uncommitted changes" in str(err.value) and "abc1234567-dirty" in str(err.value)
    assert ran == [] and not (root / "results").exists()


def test_allow_dirty_publishes_anyway_and_says_so(fake_repo, monkeypatch):
    root, nbs, ran = fake_repo
    _git_state(monkeypatch, "abc1234567-dirty")
    steps = runner.run_chain(
        "smoke", folder=nbs, kernel="python3", progress=False, publish=True, allow_dirty=True
    )
    assert [s.notebook for s in steps] == ran == ["00_data_prep.ipynb", "01_b.ipynb"]
    info = json.loads((root / "results" / "run_info.json").read_text())
    assert info["git_commit"] == "abc1234567-dirty" and info["clean"] is False
    assert (root / "results" / "notebooks" / "01_b.ipynb").is_file()


def test_a_clean_tree_publishes(fake_repo, monkeypatch):
    root, nbs, ran = fake_repo
    _git_state(monkeypatch, "abc1234567")
    runner.run_chain("smoke", folder=nbs, kernel="python3", progress=False, publish=True)
    assert ran == ["00_data_prep.ipynb", "01_b.ipynb"]
    assert json.loads((root / "results" / "run_info.json").read_text())["clean"] is True


def test_a_full_published_run_leaves_earlier_runs_metrics_to_git(fake_repo, monkeypatch, capsys):
    """A full published run drops its profile's rows of other commits before its notebooks run (a model
    renamed between runs kept its old rows in the tables); partial and exploratory runs keep them."""
    from fer_lib import reporting

    root, nbs, ran = fake_repo
    csv = root / "results" / "metrics.csv"

    def record(commit, model, profile="smoke", where=csv):
        _git_state(monkeypatch, commit)
        reporting.record_metrics(
            "s", "d", "test", model, {"accuracy": 0.5}, profile=profile, seed=0, path=where
        )

    record("old1111111", "cnn_5ep")
    record("abc1234567", "cnn_6ep")
    record("old1111111", "cnn_5ep", profile="default")
    _git_state(monkeypatch, "abc1234567")
    runner.run_chain("smoke", folder=nbs, kernel="python3", progress=False, publish=True)
    kept = reporting.load_metrics(csv)
    assert sorted(zip(kept["model"], kept["profile"])) == [("cnn_5ep", "default"), ("cnn_6ep", "smoke")]
    assert "1 rows of earlier runs (old1111111)" in capsys.readouterr().out
    record("old1111111", "cnn_5ep")  # a partial run (--from) at another commit keeps them
    _git_state(monkeypatch, "new2222222")
    runner.run_chain("smoke", folder=nbs, kernel="python3", progress=False, publish=True, start_from="01_b")
    assert len(reporting.load_metrics(csv)) == 3 and ran[-1] == "01_b.ipynb"
    explore = runner.get_paths(runner.get_profile("smoke")).metrics_csv  # and so does an exploratory run
    assert explore == root / "runs" / "smoke" / "metrics.csv"
    record("old1111111", "cnn_5ep", where=explore)
    _git_state(monkeypatch, "new2222222")
    runner.run_chain("smoke", folder=nbs, kernel="python3", progress=False)
    assert len(reporting.load_metrics(explore)) == 1


def test_exploratory_runs_never_check_the_tree(fake_repo, monkeypatch):
    root, nbs, ran = fake_repo
    _git_state(monkeypatch, "abc1234567-dirty")

    def refuse(**kw):
        raise AssertionError("an exploratory run checked the tree")

    monkeypatch.setattr(provenance, "check_publishable", refuse)
    runner.run_chain("smoke", folder=nbs, kernel="python3", progress=False)
    assert ran == ["00_data_prep.ipynb", "01_b.ipynb"]
    assert (root / "runs" / "smoke" / "README.md").is_file() and not (root / "results").exists()


def test_outside_a_git_checkout_publishing_warns_and_goes_ahead(fake_repo, monkeypatch):
    root, nbs, ran = fake_repo
    _git_state(monkeypatch, "unknown")
    with pytest.warns(UserWarning, match="not a git checkout"):
        runner.run_chain("smoke", folder=nbs, kernel="python3", progress=False, publish=True)
    assert ran == ["00_data_prep.ipynb", "01_b.ipynb"]


def test_cli_refuses_publish_on_a_dirty_tree_and_names_the_override(fake_repo, monkeypatch, capsys):
    root, nbs, ran = fake_repo
    _git_state(monkeypatch, "abc1234567-dirty")
    monkeypatch.setattr(runner, "notebooks_dir", lambda: nbs)
    assert cli.main(["reproduce", "--profile", "smoke", "--kernel", "python3", "--publish"]) == 2
    err = capsys.readouterr().err
    assert "refusing to publish from a dirty tree" in err and "--allow-dirty" in err
    assert cli.main(["prepare", "--profile", "smoke", "--kernel", "python3", "--publish"]) == 2
    assert ran == [] and not (root / "results").exists()
    args = ["reproduce", "--profile", "smoke", "--kernel", "python3", "--publish", "--allow-dirty"]
    assert cli.main(args) == 0
    assert ran == ["00_data_prep.ipynb", "01_b.ipynb"] and (root / "results" / "README.md").is_file()


def test_cli_passes_allow_dirty(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "run_chain", lambda *a, **kw: calls.append(kw) or [])
    assert cli.main(["reproduce", "--profile", "smoke", "--publish", "--allow-dirty"]) == 0
    assert cli.main(["finetune", "--profile", "smoke", "--publish"]) == 0
    assert [(c["publish"], c["allow_dirty"]) for c in calls] == [(True, True), (True, False)]


def test_make_reproduce_passes_allow_dirty():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")

    def line(*extra):
        out = subprocess.run(
            ["make", "-n", "reproduce", *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return next(ln for ln in out.splitlines() if "fer_lib reproduce" in ln)

    assert "--allow-dirty" not in line("PUBLISH=1")
    assert re.search(r"--publish\s+--allow-dirty", line("PUBLISH=1", "ALLOW_DIRTY=1"))


@pytest.fixture
def committed_repo(tmp_path, monkeypatch):
    """A one-commit git repository (``code.py``, ``results/metrics.csv``) that provenance reads as the
    project's root; the cached commit is cleared before and after."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "r"
    (repo / "results").mkdir(parents=True)
    (repo / "code.py").write_text("a = 1\n")
    (repo / "results" / "metrics.csv").write_text("x\n")
    for args in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "i"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    monkeypatch.setattr(provenance, "repo_root", lambda: repo)
    provenance.git_commit.cache_clear()
    yield repo
    provenance.git_commit.cache_clear()


def test_dirty_means_tracked_changes_outside_the_published_outputs(committed_repo):
    """A publishing run rewrites results/ itself: that must not make its own later rows 'dirty'."""
    repo = committed_repo
    assert provenance.check_publishable() == provenance.git_commit()
    assert provenance.is_clean() is True
    (repo / "results" / "metrics.csv").write_text("x\ny\n")
    (repo / "untracked.py").write_text("")
    assert provenance.check_publishable() == provenance.git_commit()  # still clean
    (repo / "code.py").write_text("a = 2\n")
    with pytest.raises(provenance.DirtyTreeError):
        provenance.check_publishable()  # read afresh, not the cached clean state
    assert provenance.git_commit().endswith("-dirty") and provenance.is_clean() is False
    assert provenance.check_publishable(allow_dirty=True).endswith("-dirty")


def test_a_tree_git_status_cannot_check_is_dirty_not_unknown(committed_repo, monkeypatch):
    """git status timed out in a fresh worktree (the notebooks' clean filter): the commit is still known,
    and the tree, not checked, must not pass as clean, nor make the rows untraceable ('unknown')."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short=10", "HEAD"],
        cwd=committed_repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    monkeypatch.setattr(provenance, "STATUS_TIMEOUT", 1e-9)
    with pytest.warns(UserWarning, match="could not be checked"):
        assert provenance.git_commit() == f"{sha}-dirty"
    with pytest.raises(provenance.DirtyTreeError), pytest.warns(UserWarning):
        provenance.check_publishable()
    monkeypatch.setattr(provenance, "STATUS_TIMEOUT", 300)
    provenance.git_commit.cache_clear()
    assert provenance.git_commit() == sha and provenance.is_clean() is True


# ------------------------------------------------------------------------- 2. commit + clean per row
@pytest.mark.parametrize(("commit", "clean"), [("1234abcd99", True), ("1234abcd99-dirty", False)])
def test_recorded_rows_carry_the_commit_and_whether_the_tree_was_clean(
    tmp_results, monkeypatch, commit, clean
):
    _git_state(monkeypatch, commit)
    rows = reporting.record_metrics(
        "prepare", "afew", "test", "mtcnn", {"face_detection_rate": 0.5}, profile="smoke", seed=0
    )
    assert rows.git_commit.tolist() == [commit] and rows.clean.tolist() == [clean]
    df = reporting.load_metrics()
    assert list(df.columns) == reporting.METRICS_COLUMNS
    assert df.git_commit.tolist() == [commit] and df.clean.tolist() == [clean]
    raw = pd.read_csv(tmp_results / "metrics.csv", dtype=str)
    assert raw.clean.tolist() == [str(clean)]


def test_rows_without_a_clean_column_get_it_from_the_commit_suffix(tmp_results, monkeypatch):
    old = pd.DataFrame(
        {
            "stage": ["s"] * 3,
            "dataset": ["d"] * 3,
            "split": ["test"] * 3,
            "model": ["m1", "m2", "m3"],
            "metric": ["accuracy"] * 3,
            "value": [0.5, 0.6, 0.7],
            "profile": ["smoke"] * 3,
            "train_seconds": [None, 1.0, None],
            "seed": [0, 0, 0],
            "git_commit": ["aaaa111111", "bbbb222222-dirty", "unknown"],
            "timestamp": ["2026-01-01T00:00:00+00:00"] * 3,
        }
    )
    tmp_results.mkdir(parents=True)
    old.to_csv(tmp_results / "metrics.csv", index=False)
    df = reporting.load_metrics()
    assert list(df.columns) == reporting.METRICS_COLUMNS
    assert df.clean.tolist() == [True, False, ""]  # "" : not known (no git checkout)
    # a new row rewrites the file with the column filled in for the old rows too
    _git_state(monkeypatch, "cccc333333-dirty")
    reporting.record_metrics("s", "d", "test", "m4", {"accuracy": 0.8}, profile="smoke", seed=0)
    raw = pd.read_csv(tmp_results / "metrics.csv", dtype=str, keep_default_na=False)
    assert raw.clean.tolist() == ["True", "False", "", "False"]
    assert reporting.load_metrics().clean.tolist() == [True, False, "", False]


def test_committed_metrics_rows_all_say_whether_their_tree_was_clean():
    df = reporting.load_metrics(RESULTS / "metrics.csv")
    assert len(df) and "clean" in df
    for r in df.itertuples():
        assert r.clean == provenance.is_clean(r.git_commit) or (
            r.clean == "" and r.git_commit == "unknown"
        ), r


# ----------------------------------------------------------------------- 3. no licensed faces published
def _real_utkface(root: Path, n: int) -> Path:
    img = root / "utkface" / "images"
    img.mkdir(parents=True)
    for i in range(n):  # magenta squares: nothing the synthetic generator draws
        Image.fromarray(np.full((40, 40, 3), (255, 0, 255), np.uint8)).save(
            img / f"{30 + i}_{i % 2}_{i % 5}_20170101{i:04d}.jpg.chip.jpg"
        )
    return root / "utkface"


def _prepared_real(tmp_path, monkeypatch):
    real_root = tmp_path / "real"
    _real_utkface(real_root, 12)
    monkeypatch.setenv("FER_DATA_ROOT", str(real_root))
    cfg = config.get_profile("smoke", {"data.real_limit": None})
    prepared = stage.prepare(cfg, datasets=("utkface",), progress=False)["utkface"]
    assert prepared.source.real
    return prepared, real_root


def _paths(tmp_path, publish: bool) -> config.Paths:
    repo = (tmp_path / "repo").resolve()
    results = repo / "results" if publish else repo / "runs" / "smoke"
    return config.Paths(repo=repo, data=tmp_path / "data", results=results, real_root=tmp_path / "real")


def test_published_sample_crops_of_a_real_dataset_are_synthetic(tmp_path, monkeypatch, tmp_results):
    prepared, real_root = _prepared_real(tmp_path, monkeypatch)
    from fer_lib import data

    read = []
    real_read = data.read_image

    def spy(path, *a, **kw):
        read.append(Path(path).resolve())
        return real_read(path, *a, **kw)

    monkeypatch.setattr(data, "read_image", spy)
    paths = _paths(tmp_path, publish=True)
    assert paths.published
    stale = paths.figures / "00_samples_utkface.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's figure")
    shown = stage.samples_to_show("utkface", prepared, paths, n=4, seed=0, size=32)
    assert shown.kind == "synthetic stand-in" and shown.figure == "00_samples_utkface_synthetic_stand_in"
    assert "licensed" in shown.note and "synthetic" in shown.line
    assert len(shown.images) == 4 and not stale.exists()
    assert read and not any(real_root.resolve() in p.parents for p in read)
    assert all((tmp_path / "data").resolve() in p.parents for p in read)
    for im in shown.images:  # none of them is a real (magenta) image
        assert not np.all(np.abs(im.astype(int) - (255, 0, 255)).max(axis=-1) < 40)
    # an exploratory run shows the real crops under the real figure name
    read.clear()
    real = stage.samples_to_show("utkface", prepared, _paths(tmp_path, publish=False), n=4, size=32)
    assert real.kind == "real" and real.figure == "00_samples_utkface" and real.note == ""
    assert read and all(real_root.resolve() in p.parents for p in read)
    assert np.all(np.abs(real.images[0].astype(int) - (255, 0, 255)).max(axis=-1) < 40)


def test_synthetic_datasets_keep_their_own_sample_crops_when_publishing(tmp_path):
    df = pd.DataFrame(columns=["path", "split", "race"])
    p = stage.Prepared(df, ValidationReport("utkface", str(tmp_path)), DataSource("utkface", tmp_path, False))
    shown = stage.samples_to_show("utkface", p, _paths(tmp_path, publish=True))
    assert shown.kind == "synthetic" and shown.figure == "00_samples_utkface" and shown.images == []


def real_sample_figures(results: Path) -> list[str]:
    """Sample-crop figures of a results folder that show (or may show) a real dataset's own images.

    ``00_samples_<name>.png`` is a dataset's own crops: publishable only when the run's
    ``tables/00_datasets.csv`` says ``<name>`` was synthetic (stand-ins are named ``..._synthetic_stand_in``).
    """
    table = results / "tables" / "00_datasets.csv"
    sources = dict(pd.read_csv(table)[["dataset", "source"]].values) if table.exists() else {}
    bad = []
    for f in sorted((results / "figures").glob("00_samples_*.png")):
        if f.stem.endswith("_synthetic_stand_in"):
            continue
        name = f.stem.removeprefix("00_samples_")
        if sources.get(name) != "synthetic":
            bad.append(f"{f.name} ({sources.get(name, 'source unknown')})")
    return bad


def test_the_sample_figure_check_catches_real_crops(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "tables").mkdir()
    for name in ("utkface", "afew", "fer2013_synthetic_stand_in", "vgaf"):
        (tmp_path / "figures" / f"00_samples_{name}.png").write_bytes(b"")
    pd.DataFrame({"dataset": ["utkface", "afew", "fer2013"], "source": ["real", "synthetic", "real"]}).to_csv(
        tmp_path / "tables" / "00_datasets.csv", index=False
    )
    assert real_sample_figures(tmp_path) == [
        "00_samples_utkface.png (real)",
        "00_samples_vgaf.png (source unknown)",
    ]


def test_committed_figures_hold_no_sample_crops_of_a_real_dataset():
    assert (RESULTS / "figures").is_dir()
    assert real_sample_figures(RESULTS) == []


_SAMPLE_LINE = re.compile(r"^(00_samples_\S+): sample crops \(([^)]*)\)", re.M)


def sample_cell_problems(nb) -> list[str]:
    """Image outputs of a notebook-00 sample-crop cell that are (or may be) a real dataset's faces."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not re.search(r"sample_faces|samples_to_show", cell.source):
            continue
        kind = None  # what the grids after the latest printed line show
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                for m in _SAMPLE_LINE.finditer(out.get("text", "")):
                    kind = m.group(2)
            elif any(k.startswith("image/") for k in out.get("data", {})):
                if kind is None:
                    problems.append(f"cell {i}: an image with no line saying what it shows")
                elif kind == "real":
                    problems.append(f"cell {i}: sample crops of a real dataset")
    return problems


def test_the_sample_cell_check_catches_real_crops():
    cell = nbformat.v4.new_code_cell("stage.samples_to_show(...)")
    png = nbformat.v4.new_output("display_data", data={"image/png": "iVBOR"})

    def text(t):
        return nbformat.v4.new_output("stream", name="stdout", text=t)

    nb = nbformat.v4.new_notebook(cells=[cell])
    cell.outputs = [text("00_samples_afew: sample crops (synthetic)\n"), png]
    assert sample_cell_problems(nb) == []
    cell.outputs = [
        text("00_samples_utkface_synthetic_stand_in: sample crops (synthetic stand-in). x\n"),
        png,
    ]
    assert sample_cell_problems(nb) == []
    cell.outputs = [
        text("00_samples_a: sample crops (synthetic)\n"),
        png,
        text("00_samples_b: sample crops (real)\n"),
        png,
    ]
    assert sample_cell_problems(nb) == ["cell 0: sample crops of a real dataset"]
    cell.outputs = [png]
    assert sample_cell_problems(nb) == ["cell 0: an image with no line saying what it shows"]


def test_committed_executed_notebooks_show_no_real_sample_crops():
    folder = RESULTS / "notebooks"
    for f in sorted(folder.glob("*.ipynb")) if folder.is_dir() else []:
        nb = nbformat.read(str(f), as_version=4)
        assert sample_cell_problems(nb) == [], f.relative_to(REPO)


def test_executed_notebooks_are_not_git_ignored():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "--no-index", "results/notebooks/00_data_prep.ipynb"], cwd=REPO
    ).returncode
    assert ignored == 1, "results/notebooks/ is git-ignored: published executed notebooks cannot be committed"
    assert (
        subprocess.run(["git", "check-ignore", "-q", "--no-index", "runs/smoke/x.ipynb"], cwd=REPO).returncode
        == 0
    )


# --------------------------------------------------------------------------------- 4. results/README.md
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def dead_links(readme: Path) -> list[str]:
    """Relative links of a Markdown file that do not reach a file (http(s) and #anchors skipped)."""
    dead = []
    for target in _LINK.findall(readme.read_text()):
        if re.match(r"^(https?:|mailto:|#)", target):
            continue
        if not (readme.parent / target.split("#")[0]).is_file():
            dead.append(target)
    return dead


def test_every_link_of_the_committed_results_index_resolves():
    readme = RESULTS / "README.md"
    links = _LINK.findall(readme.read_text())
    assert "metrics.csv" in links
    assert dead_links(readme) == []
    if shutil.which("git") and (REPO / ".git").exists():  # and the target is committable, not ignored
        targets = [str((readme.parent / t).relative_to(REPO)) for t in links if not t.startswith("http")]
        ignored = subprocess.run(
            ["git", "check-ignore", "--no-index", *targets], cwd=REPO, capture_output=True, text=True
        ).stdout.split()
        assert ignored == []


def test_the_link_check_finds_a_dead_link(tmp_path):
    (tmp_path / "a.md").write_text("x")
    (tmp_path / "README.md").write_text("[a](a.md) [b](b.md) [w](https://example.org/x.md)\n")
    assert dead_links(tmp_path / "README.md") == ["b.md"]


def test_index_lists_only_existing_files_and_keeps_its_intro(tmp_results):
    res = tmp_results
    (res / "tables").mkdir(parents=True)
    (res / "tables" / "t.md").write_text("|a|\n")
    for name in ("metrics.csv", "run_times.csv", "versions.json"):
        (res / name).write_text("x\n")
    (res / "README.md").write_text(
        "# Results index\n\nGenerated then.\n\nHand-written intro.\n\n## Metrics\n"
    )
    text = reporting.write_index().read_text()
    assert "Hand-written intro." in text and text.count("Hand-written intro.") == 1
    assert "[run_times.csv](run_times.csv)" in text and "[versions.json](versions.json)" in text
    assert "[tables/t.md](tables/t.md)" in text and dead_links(res / "README.md") == []
    (res / "versions.json").unlink()
    text = reporting.write_index(extra="").read_text()
    assert "versions.json" not in text and "Hand-written intro." not in text
    assert reporting.write_index(extra="New intro.").read_text().count("New intro.") == 1


def test_a_partial_run_rewrites_the_index(fake_repo, monkeypatch):
    root, nbs, ran = fake_repo
    runner.run_chain("smoke", folder=nbs, kernel="python3", progress=False, start_from="01")
    assert ran == ["01_b.ipynb"]
    readme = root / "runs" / "smoke" / "README.md"
    text = readme.read_text()
    assert "[notebooks/01_b.ipynb](notebooks/01_b.ipynb)" in text and "00_data_prep" not in text
    assert "[run_times.csv](run_times.csv)" in text and dead_links(readme) == []


def test_a_failed_run_rewrites_the_index_too(fake_repo, monkeypatch):
    root, nbs, ran = fake_repo

    def fail(src, out, **kw):
        shutil.copy(src, out)
        raise RuntimeError("deliberate")

    monkeypatch.setattr(papermill, "execute_notebook", fail)
    with pytest.raises(runner.ChainFailed):
        runner.run_chain("smoke", folder=nbs, kernel="python3", progress=False, only=["00"])
    assert (
        "[notebooks/00_data_prep.ipynb](notebooks/00_data_prep.ipynb)"
        in (root / "runs" / "smoke" / "README.md").read_text()
    )


def test_no_warning_leaks_from_a_clean_publish(fake_repo, monkeypatch):
    root, nbs, ran = fake_repo
    _git_state(monkeypatch, "abc1234567")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runner.run_chain("smoke", folder=nbs, kernel="python3", progress=False, publish=True, only=["00"])
    assert ran == ["00_data_prep.ipynb"]
