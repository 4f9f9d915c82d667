import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from fer_lib import runner


def _nb(path, code):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = None\noverrides = {}")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def chain(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    log = tmp_path / "log.txt"
    _nb(folder / "00_first.ipynb", f"open({str(log)!r}, 'a').write('00 ' + profile + '\\n')")
    _nb(
        folder / "01_broken.ipynb",
        "import os\nif not os.path.exists('FIXED'): raise ValueError('deliberate failure')\n"
        f"open({str(log)!r}, 'a').write('01\\n')",
    )
    _nb(folder / "02_last.ipynb", f"open({str(log)!r}, 'a').write('02\\n')")
    return folder, log


@pytest.mark.notebooks
def test_chain_stops_at_first_failure_keeps_copy_and_resumes(chain, tmp_results):
    folder, log = chain
    out = tmp_results / "notebooks"
    with pytest.raises(runner.ChainFailed) as err:
        runner.run_chain("smoke", folder=folder, kernel="python3", progress=False)
    assert err.value.notebook.name == "01_broken.ipynb"
    assert log.read_text() == "00 smoke\n"  # 02 never ran
    failed = nbformat.read(str(out / "01_broken.ipynb"), as_version=4)
    text = json.dumps(failed)
    assert "deliberate failure" in text and "ValueError" in text
    assert not (out / "02_last.ipynb").exists()
    # after a fix, resume at the failed notebook: 00 does not run again
    (folder / "FIXED").write_text("")
    steps = runner.run_chain("smoke", folder=folder, kernel="python3", progress=False, start_from="01")
    assert [s.notebook for s in steps] == ["01_broken.ipynb", "02_last.ipynb"]
    assert log.read_text() == "00 smoke\n01\n02\n"
    assert json.loads((tmp_results / "run_info.json").read_text())["profile"]["name"] == "smoke"
    assert (tmp_results / "README.md").exists()
    times = pd.read_csv(tmp_results / "run_times.csv")
    # one row per notebook that finished (the failed run of 01 leaves none), upserted on the rerun
    assert sorted(times.notebook) == ["00_first", "01_broken", "02_last"]
    assert (times.profile == "smoke").all() and (times.seconds > 0).all()


def test_select_by_prefix_stem_and_stage(tmp_path):
    nbs = [tmp_path / f"{n}.ipynb" for n in runner.STAGES.values()]
    assert [p.stem for p in runner.select(nbs, start_from="04")] == [
        "04_video_features",
        "05_result_tables",
        "06_demo",
    ]
    assert [p.stem for p in runner.select(nbs, only=["gcn"])] == ["03_emotion_gcn"]
    with pytest.raises(ValueError, match="no notebook named"):
        runner.select(nbs, start_from="99")


def test_repository_chain_is_ordered_and_parameterised():
    """... and committed without outputs (what git stores: a Lab run's outputs stay in the working copy)."""
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "scripts" / "normalize_notebooks.py"
    spec = importlib.util.spec_from_file_location("normalize_notebooks", script)
    normalize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(normalize)
    nbs = runner.list_notebooks()
    assert [p.stem for p in nbs] == list(runner.STAGES.values())
    for p in nbs:
        nb = nbformat.reads(normalize.committed_text(p), as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), p.name
        assert nb.metadata["kernelspec"]["name"] == runner.KERNEL_NAME, p.name
        assert all(not c.get("outputs") for c in code), f"{p.name} is committed with outputs"


def test_cli_help_lists_stage_commands():
    out = subprocess.run(
        [sys.executable, "-m", "fer_lib", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in (*runner.STAGES, "reproduce"):
        assert cmd in out


def test_cli_rejects_bad_override_with_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "fer_lib", "profile", "--profile", "smoke", "--set", "x.y=1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "unknown config" in proc.stderr


def test_cli_profile_json():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fer_lib",
            "profile",
            "--profile",
            "paper",
            "--json",
            "--set",
            "finetune.full_epochs=2",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out)["finetune"]["full_epochs"] == 2


# ------------------------------------------------------------------------------- where results go
def test_exploratory_runs_and_published_results_live_apart(monkeypatch):
    """Default: runs/<profile>/; results/ only when publishing; an explicit FER_RESULTS_DIR wins over
    $FER_PUBLISH (not over publish=True, which --publish passes)."""
    from fer_lib import config

    repo = config.repo_root()
    for var in ("FER_RESULTS_DIR", "FER_PUBLISH", "FER_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    assert config.get_paths().results == repo / "runs" / "default"
    assert config.get_paths("smoke").results == repo / "runs" / "smoke"
    assert config.get_paths(config.get_profile("paper")).results == repo / "runs" / "paper"
    assert not config.get_paths("smoke").published
    published = config.get_paths("smoke", publish=True)
    assert published.results == repo / "results" and published.published
    monkeypatch.setenv("FER_PROFILE", "smoke")
    assert config.get_paths().results == repo / "runs" / "smoke"
    monkeypatch.setenv("FER_PUBLISH", "1")
    assert config.get_paths().results == repo / "results"
    assert config.get_paths(publish=False).results == repo / "runs" / "smoke"
    monkeypatch.setenv("FER_RESULTS_DIR", "/tmp/elsewhere")
    assert config.get_paths().results == Path("/tmp/elsewhere").resolve()
    assert config.get_paths(publish=True).results == repo / "results"


def test_relative_env_paths_resolve_against_the_repository_not_the_cwd(tmp_path):
    """nbval / papermill kernels run in notebooks/: a relative FER_RESULTS_DIR must not land there."""
    from fer_lib import config

    repo = config.repo_root()
    code = "from fer_lib import config; p = config.get_paths(); print(p.results); print(p.data)"
    env = dict(os.environ, FER_RESULTS_DIR="build/x-results", FER_DATA_DIR="build/x-data")
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo / "notebooks",
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(repo / "build" / "x-results"), str(repo / "build" / "x-data")]


def test_make_test_writes_only_under_build():
    """`make test` gives the nbval kernels absolute folders under build/ and cleans them."""
    from fer_lib import config

    repo = config.repo_root()
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "test"], cwd=repo, capture_output=True, text=True, check=True).stdout
    line = " ".join(out.split("\\\n"))
    build = repo / "build"
    for var in ("FER_RESULTS_DIR", "FER_DATA_DIR"):
        m = re.search(rf"{var}=(\S+)", line)
        assert m, f"make test does not set {var}"
        value = Path(m.group(1))
        assert value.is_absolute() and build in value.parents, f"{var}={value} is not under {build}"
    assert re.search(rf"rm -rf {re.escape(str(build))}\S*", out), "make test does not clean build/"


def test_chain_kernels_get_absolute_folders_and_no_progress_bars(tmp_path, tmp_results):
    folder = tmp_path / "nbs"
    folder.mkdir()
    log = tmp_path / "env.json"
    _nb(
        folder / "00_env.ipynb",
        "import json, os\nfrom ipykernel.kernelapp import IPKernelApp\nfrom fer_lib import config\n"
        f"json.dump({{k: os.environ.get(k) for k in ('FER_RESULTS_DIR', 'FER_PROGRESS')}} | "
        f"{{'paths': str(config.get_paths(profile).results), 'log': IPKernelApp.instance().log_level}}, "
        f"open({str(log)!r}, 'w'))",
    )
    before = os.environ.get("FER_PROGRESS")
    runner.run_chain("smoke", folder=folder, kernel="python3", progress=False)
    env = json.loads(log.read_text())
    # log 50: the kernel's shutdown chatter (see runner.KERNEL_ARGS) stays out of the terminal
    assert env == {
        "FER_RESULTS_DIR": str(tmp_results.resolve()),
        "FER_PROGRESS": "0",
        "paths": str(tmp_results.resolve()),
        "log": 50,
    }
    assert os.environ.get("FER_PROGRESS") == before  # restored after the chain


def test_cli_publishes_only_when_asked(monkeypatch):
    from fer_lib import cli

    calls = []
    monkeypatch.setattr(cli, "run_chain", lambda *a, **kw: calls.append(kw) or [])
    assert cli.main(["reproduce", "--profile", "smoke"]) == 0
    assert cli.main(["reproduce", "--profile", "smoke", "--publish"]) == 0
    assert cli.main(["demo", "--profile", "smoke"]) == 0
    assert [c["publish"] for c in calls] == [None, True, None]
    assert calls[2]["only"] == ["demo"]


def test_cli_override_paths_are_taken_from_where_the_command_runs(tmp_path, monkeypatch):
    """The notebooks run in notebooks/: a relative --set path that exists here reaches them absolute;
    other values (numbers, keywords, paths that do not exist) pass unchanged."""
    from fer_lib.cli import paths_from_here

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "expr.pt").write_bytes(b"x")
    (tmp_path / "glove.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    got = paths_from_here(
        {
            "video.checkpoint": "models/expr.pt",
            "gcn.embedding": "glove.txt",
            "gcn.tau": "0.1",
            "video.strides": "1,2",
            "pretrain_attributes.pretrained_file": "missing/w.pt",
            "finetune.pretrained_file": str(tmp_path / "glove.txt"),
        }
    )
    assert got == {
        "video.checkpoint": str(tmp_path / "models" / "expr.pt"),
        "gcn.embedding": str(tmp_path / "glove.txt"),
        "gcn.tau": "0.1",
        "video.strides": "1,2",
        "pretrain_attributes.pretrained_file": "missing/w.pt",
        "finetune.pretrained_file": str(tmp_path / "glove.txt"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "fer_lib", "profile", "--json", "--set", "video.checkpoint=models/expr.pt"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    ).stdout
    assert json.loads(out)["video"]["checkpoint"] == str(tmp_path / "models" / "expr.pt")
