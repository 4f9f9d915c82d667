"""What a new user sees: a run writes nothing to stderr, exploratory runs never touch the published
results, nothing appears under notebooks/, progress bars are widgets in a notebook and one line in a
terminal, and the Lab server offers only the project kernel."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
KERNEL = "fer-lib"
# stderr outputs a normal run may show, each with the reason it is allowed (none today).
ALLOWED_STDERR: dict[str, str] = {}


def _tree(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _published_files() -> list[str]:
    """The committed files under results/ (a local run may have left big git-ignored checkpoints there)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "results"], cwd=REPO, capture_output=True, check=True
        ).stdout
        files = [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
    return files or [p.relative_to(REPO).as_posix() for p in (REPO / "results").rglob("*") if p.is_file()]


def _kernel_installed() -> bool:
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL in KernelSpecManager().find_kernel_specs()


@pytest.fixture(scope="module")
def smoke_copy(tmp_path_factory):
    """A copy of the repository (library, notebooks, published results) where the smoke chain runs with
    no FER_RESULTS_DIR / FER_PUBLISH, i.e. where a user's `python -m fer_lib reproduce` would write."""
    if not _kernel_installed():
        pytest.skip(f"the {KERNEL} kernel is not registered (make install registers it)")
    root = tmp_path_factory.mktemp("repo")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("fer_lib", "notebooks"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    for rel in _published_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FER_RESULTS_DIR", "FER_PUBLISH", "FER_PROGRESS", "FER_PROFILE")
    }
    # the copy's fer_lib wins over the editable install, in the CLI and in the kernels it starts
    env.update(PYTHONPATH=str(root), FER_DATA_DIR=os.environ.get("FER_DATA_DIR") or str(root / "data"))
    before = {"results": _tree(root / "results"), "notebooks": _tree(root / "notebooks")}
    proc = subprocess.run(
        [sys.executable, "-m", "fer_lib", "reproduce", "--profile", "smoke"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, env, before, proc


@pytest.mark.notebooks
@pytest.mark.slow
def test_smoke_run_leaves_published_results_and_notebooks_untouched(smoke_copy):
    root, _, before, proc = smoke_copy
    run = root / "runs" / "smoke"
    assert f"writing to {run}" in proc.stdout, proc.stdout[:2000]
    assert (run / "metrics.csv").is_file() and len(list((run / "notebooks").glob("*.ipynb"))) == 7
    assert _tree(root / "results") == before["results"], "the exploratory run changed the published results"
    assert _tree(root / "notebooks") == before["notebooks"], "the run wrote into notebooks/"


@pytest.mark.notebooks
@pytest.mark.slow
def test_smoke_run_writes_nothing_to_stderr(smoke_copy):
    """No stderr output (warnings included) in any executed notebook, no progress widgets in them, and
    the terminal log is the runner's own lines (no kernel warnings, no papermill bar off a terminal)."""
    root, _, _, proc = smoke_copy
    found = []
    for path in sorted((root / "runs" / "smoke" / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        for i, cell in enumerate(nb.cells):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stderr":
                    text = "".join(out.get("text", ""))
                    if not any(re.search(p, text) for p in ALLOWED_STDERR):
                        found.append(f"{path.name} cell {i}: {text[:300]}")
                if any("widget" in k for k in out.get("data", {})):
                    found.append(f"{path.name} cell {i}: a progress widget in a headless run")
    assert not found, "\n".join(found)
    assert proc.stderr.strip() == "", proc.stderr[-3000:]
    assert all(line.startswith("[fer_lib]") for line in proc.stdout.splitlines() if line.strip()), (
        proc.stdout[-2000:]
    )


@pytest.mark.notebooks
@pytest.mark.slow
def test_notebook_run_directly_with_papermill_writes_to_the_profile_run(smoke_copy):
    """As from Lab or a bare papermill call: the notebook finds its folder from its profile parameter."""
    import papermill as pm

    root, env, before, _ = smoke_copy
    out = root / "runs" / "direct_05.ipynb"
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        pm.execute_notebook(
            str(root / "notebooks" / "05_result_tables.ipynb"),
            str(out),
            parameters={"profile": "smoke"},
            kernel_name=KERNEL,
            cwd=str(root / "notebooks"),
            progress_bar=False,
        )
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert (root / "runs" / "smoke" / "tables" / "05_headline.md").is_file()
    assert _tree(root / "results") == before["results"]


def _run_cells(code: str, env: dict[str, str]) -> list[dict]:
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    old = dict(os.environ)
    os.environ.update(env)
    try:
        NotebookClient(nb, kernel_name=KERNEL, timeout=300).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return nb.cells[0].outputs


NESTED = (
    "from fer_lib.progress import tqdm\n"
    "for i in tqdm(range(3), desc='outer'):\n"
    "    for j in tqdm(range(50), desc='inner', leave=False):\n"
    "        pass\n"
)


@pytest.mark.notebooks
def test_progress_is_a_widget_in_a_notebook_and_off_in_headless_runs():
    if not _kernel_installed():
        pytest.skip(f"the {KERNEL} kernel is not registered (make install registers it)")
    shown = _run_cells(NESTED, {"FER_PROGRESS": "1"})
    assert not [o for o in shown if o.get("name") == "stderr"], shown
    widgets = [o for o in shown if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) == 4, shown  # the outer bar and one per inner loop (closed when done)
    assert _run_cells(NESTED, {"FER_PROGRESS": "0"}) == []


def _screen(text: str) -> list[str]:
    """What a terminal shows after ``text``: carriage returns, newlines and cursor-up (how tqdm nests)."""
    rows, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[A|\r|\n|[^\r\n\x1b]+", text):
        if token == "\x1b[A":
            row = max(0, row - 1)
        elif token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            rows += [""] * (row + 1 - len(rows))
        else:
            line = rows[row].ljust(col)
            rows[row] = line[:col] + token + line[col + len(token) :]
            col += len(token)
    return [r.rstrip() for r in rows]


def test_progress_in_a_terminal_is_one_line_without_leftover_inner_bars():
    env = {k: v for k, v in os.environ.items() if k != "FER_PROGRESS"}
    # bytes, not text=True: universal newlines would turn tqdm's carriage returns into line breaks
    proc = subprocess.run([sys.executable, "-c", NESTED], capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout == b""
    shown = [line for line in _screen(proc.stderr.decode()) if line]
    assert len(shown) == 1 and shown[0].startswith("outer: 100%"), shown


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _execute(port: int, token: str, code: str) -> str:
    """Start the server's default kernel and run ``code`` over the websocket, as Lab does; its stdout."""
    import uuid

    import websocket

    base = f"127.0.0.1:{port}/api/kernels"
    req = urllib.request.Request(f"http://{base}?token={token}", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=120) as r:
        kernel = json.loads(r.read())
    assert kernel["name"] == KERNEL
    ws = websocket.create_connection(f"ws://{base}/{kernel['id']}/channels?token={token}", timeout=120)
    try:
        header = {
            "msg_id": uuid.uuid4().hex,
            "username": "test",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
            "date": "",
        }
        ws.send(
            json.dumps(
                {
                    "header": header,
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "content": {"code": code, "silent": False},
                    "buffers": [],
                }
            )
        )
        while True:
            msg = json.loads(ws.recv())
            if msg.get("msg_type") == "stream" and msg["parent_header"].get("msg_id") == header["msg_id"]:
                return msg["content"]["text"]
    finally:
        ws.close()
        urllib.request.urlopen(
            urllib.request.Request(f"http://{base}/{kernel['id']}?token={token}", method="DELETE"), timeout=60
        ).close()


@pytest.mark.notebooks
def test_lab_server_offers_only_the_project_kernel_and_saves_notebooks_clean(tmp_path):
    """`make lab`'s server config: the Launcher lists fer-lib and not the venv's generic python3, and a
    committed notebook saved through the server with outputs (as Lab's autosave does after a run) ends
    up byte-identical to the committed file."""
    if not _kernel_installed():
        pytest.skip(f"the {KERNEL} kernel is not registered (make install registers it)")
    listing = sorted(os.listdir(REPO / "notebooks"))
    log = tmp_path / "server.log"
    port, token = _free_port(), "t" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:16]
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    jupyter = Path(sys.executable).with_name("jupyter")
    proc = subprocess.Popen(
        [
            str(jupyter),
            "lab",
            f"--config={REPO / 'jupyter_server_config.py'}",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={REPO / 'notebooks'}",
            # checkpoints of the save below go to tmp, not to notebooks/.ipynb_checkpoints
            f"--FileCheckpoints.checkpoint_dir={tmp_path / 'checkpoints'}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    try:
        specs, deadline = None, time.time() + 120
        while specs is None and time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/kernelspecs?token={token}", timeout=5
                ) as r:
                    specs = json.loads(r.read())
            except OSError:
                time.sleep(0.5)
        assert specs is not None, "the Lab server did not answer: " + log.read_text()
        assert _execute(port, token, "print(6 * 7)") == "42\n"  # the Launcher's kernel runs code
        nb_path = REPO / "notebooks" / "06_demo.ipynb"
        committed = nb_path.read_bytes()
        url = f"http://127.0.0.1:{port}/api/contents/{nb_path.name}?token={token}"
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                model = json.loads(r.read())
            code = next(c for c in model["content"]["cells"] if c["cell_type"] == "code")
            code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "ran\n"}]
            code["execution_count"] = 1
            body = json.dumps({"type": "notebook", "format": "json", "content": model["content"]}).encode()
            req = urllib.request.Request(
                url, data=body, method="PUT", headers={"Content-Type": "application/json"}
            )
            urllib.request.urlopen(req, timeout=30).close()
            saved = nb_path.read_bytes()
        finally:
            nb_path.write_bytes(committed)
        assert saved == committed, "saving through the Lab server changed the committed notebook"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert specs["default"] == KERNEL
    assert set(specs["kernelspecs"]) == {KERNEL}, list(specs["kernelspecs"])
    assert sorted(os.listdir(REPO / "notebooks")) == listing, "the server left files in notebooks/"
    assert "WARNING" not in log.read_text(), log.read_text()[-2000:]
