"""What saving a notebook in JupyterLab does: the working copy keeps its outputs, git stores it without
them (the clean filter that .gitattributes names and ``make install`` registers), and a chain notebook
run from Lab is filed into its run folder as the runner files it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from fer_lib import runner
from fer_lib.config import get_paths, get_profile
from fer_lib.notebook import run_marker

REPO = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/normalize_notebooks.py"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _executed(path: Path, results: Path | None = None) -> dict:
    """``path`` as Lab saves it after a run: outputs, counts, cell timings, the setup output's marker."""
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        cell.execution_count = i + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"cell {i}\n")]
        cell.metadata["execution"] = {
            "iopub.execute_input": f"2026-01-01T10:00:{2 * i:02d}.000Z",
            "shell.execute_reply": f"2026-01-01T10:00:{2 * i + 1:02d}.500Z",
        }
    if results is not None:
        cfg = get_profile("smoke")
        paths = get_paths(cfg)
        marker = run_marker(cfg, paths, {}) | {"results": str(results)}
        code[1].outputs = [
            nbformat.v4.new_output(
                "display_data", data={"text/plain": "summary"}, metadata={runner.RUN_MARKER: marker}
            )
        ]
    return nb


def test_make_install_registers_the_filter_that_gitattributes_names():
    text = (REPO / "Makefile").read_text()
    install = text[text.index("\ninstall:") :].split("\n\n")[0]
    assert f"{SCRIPT} --install-filter" in install
    assert "notebooks/*.ipynb filter=fer-nbstrip" in (REPO / ".gitattributes").read_text().splitlines()
    lab = text[text.index("\nlab:") :].split("\n\n")[0]
    assert lab.startswith("\nlab: install")  # a checkout installed before the filter existed gets it too


def test_git_stores_notebooks_without_outputs_and_the_working_copy_keeps_them(tmp_path):
    """A notebook saved with outputs, added in a repository configured as `make install` does: the
    staged blob is the committed (canonical, output-free) form, the working file keeps its outputs, and
    git status is clean after the commit; another save with other outputs leaves git diff empty."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "scripts").mkdir()
    _git(repo, "init", "-q")
    shutil.copy(REPO / ".gitattributes", repo / ".gitattributes")
    shutil.copy(REPO / SCRIPT, repo / SCRIPT)
    source = REPO / "notebooks" / "06_demo.ipynb"
    canonical = subprocess.run(
        [sys.executable, SCRIPT, "--stdin", source.name],
        cwd=REPO,
        input=source.read_bytes(),
        capture_output=True,
        check=True,
    ).stdout
    work = repo / "notebooks" / source.name
    nbformat.write(_executed(source), str(work))
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--install-filter"], cwd=repo, capture_output=True, text=True, check=True
    )
    assert "--stdin %f" in proc.stdout
    assert _git(repo, "config", "--get", "filter.fer-nbstrip.smudge").strip() == "cat"
    _git(repo, "add", "-A")
    assert _git(repo, "show", f":notebooks/{source.name}").encode() == canonical
    assert "cell 0" in work.read_text()  # outputs stay in the working copy
    staged = _git(repo, "status", "--porcelain").splitlines()
    assert f"A  notebooks/{source.name}" in staged and all(line.startswith("A  ") for line in staged), staged
    _git(repo, "commit", "-qm", "notebook")
    assert _git(repo, "status", "--porcelain") == ""
    nb = _executed(source)
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="another run\n")]
    nbformat.write(nb, str(work))  # Lab saves again after another run: nothing to commit
    assert _git(repo, "diff") == "" and "another run" in work.read_text()  # (status: see below)


def test_a_lab_run_is_filed_into_its_run_folder(tmp_path, tmp_results):
    """record_lab_run (the server's post-save hook): the executed copy, run_times.csv with Lab's cell
    timings, run_info.json and the README.md index, in the folder the kernel's setup output names."""
    saved = tmp_path / "notebooks" / "05_result_tables.ipynb"
    saved.parent.mkdir()
    nbformat.write(_executed(REPO / "notebooks" / saved.name, results=tmp_results), str(saved))
    copy = runner.record_lab_run(saved)
    assert copy == tmp_results / "notebooks" / saved.name
    assert copy.read_bytes() == saved.read_bytes()
    times = pd.read_csv(tmp_results / "run_times.csv")
    n_code = sum(c.cell_type == "code" for c in nbformat.read(str(saved), as_version=4).cells)
    assert times.to_dict("records")[0] | {"finished": None} == {
        "notebook": "05_result_tables",
        "profile": "smoke",
        "seconds": 1.5 * n_code,
        "finished": None,
    }
    info = json.loads((tmp_results / "run_info.json").read_text())
    assert info["profile"]["name"] == "smoke" and info["argv"] == ["jupyter lab", str(saved)]
    assert f"[notebooks/{saved.name}](notebooks/{saved.name})" in (tmp_results / "README.md").read_text()
    # saved again (autosave) after a rerun: one row per notebook, upserted
    runner.record_lab_run(saved)
    assert len(pd.read_csv(tmp_results / "run_times.csv")) == 1


def test_a_notebook_without_a_setup_output_is_not_filed(tmp_path, tmp_results):
    saved = tmp_path / "06_demo.ipynb"
    nbformat.write(_executed(REPO / "notebooks" / "06_demo.ipynb"), str(saved))
    assert runner.record_lab_run(saved) is None
    assert not tmp_results.exists()
    nb = nbformat.read(str(saved), as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    assert runner.cell_seconds(nb) is None  # Lab without "Recording timing": no seconds


def test_the_server_config_files_chain_notebooks_only(tmp_path, monkeypatch):
    """jupyter_server_config.py's post-save hook files notebooks/NN_*.ipynb of this repository (and
    refreshes git's index for every notebook there), off the request path; its contents manager opens
    the file browser on notebooks/."""
    from traitlets.config.loader import PyFileConfigLoader

    cfg = PyFileConfigLoader("jupyter_server_config.py", path=str(REPO)).load_config()
    manager = cfg.ServerApp.contents_manager_class
    cm = manager(root_dir=str(REPO), config=cfg)
    assert cm.preferred_dir == "notebooks"
    assert manager(root_dir=str(tmp_path), config=cfg).preferred_dir == ""
    filed, refreshed = [], []
    monkeypatch.setattr(runner, "record_lab_run", filed.append)
    monkeypatch.setitem(manager.__init__.__globals__, "refresh_index", refreshed.append)
    nbs = REPO / "notebooks"
    for where in (nbs / "06_demo.ipynb", nbs / "scratch.ipynb", tmp_path / "01_x.ipynb"):
        cm.run_post_save_hooks({"type": "notebook"}, str(where))
    cm.run_post_save_hooks({"type": "file"}, str(nbs / "07_notes.ipynb"))
    cm.after_save.shutdown(wait=True)
    assert filed == [nbs / "06_demo.ipynb"]
    assert refreshed == [nbs / "06_demo.ipynb", nbs / "scratch.ipynb"]


def test_a_save_that_changed_only_outputs_leaves_git_status_clean(tmp_path):
    """git status takes a size change for a modification without reading the file; the hook's
    refresh_index makes it agree with git diff (empty), and never touches a real change."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from normalize_notebooks import refresh_index
    finally:
        sys.path.remove(str(REPO / "scripts"))
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "scripts").mkdir()
    _git(repo, "init", "-q")
    shutil.copy(REPO / ".gitattributes", repo / ".gitattributes")
    shutil.copy(REPO / SCRIPT, repo / SCRIPT)
    subprocess.run([sys.executable, SCRIPT, "--install-filter"], cwd=repo, check=True, capture_output=True)
    work = repo / "notebooks" / "06_demo.ipynb"
    shutil.copy(REPO / "notebooks" / work.name, work)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "notebook")
    nbformat.write(_executed(work), str(work))  # a Lab save after a run: bigger file, same committed form
    assert _git(repo, "status", "--porcelain") == f" M notebooks/{work.name}\n" and _git(repo, "diff") == ""
    assert refresh_index(work) is True
    assert _git(repo, "status", "--porcelain") == ""
    nb = nbformat.read(str(work), as_version=4)
    nb.cells[0].source += "\nedited"
    nbformat.write(nb, str(work))  # a real change stays visible
    assert refresh_index(work) is False
    assert _git(repo, "status", "--porcelain") == f" M notebooks/{work.name}\n"
    assert _git(repo, "diff", "--cached") == ""  # and nothing was staged
