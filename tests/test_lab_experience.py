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


def _execute(port: int, token: str, code: str, notebook: str) -> list[dict]:
    """Open ``notebook`` (a server path) on the server's default kernel and run ``code`` over the
    websocket, as Lab does (a session for the notebook, a session id on the socket); its outputs, in the
    notebook's form."""
    import uuid

    import websocket

    body = json.dumps({"path": notebook, "name": Path(notebook).name, "type": "notebook"}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/sessions?token={token}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        kernel = json.loads(r.read())["kernel"]
    assert kernel["name"] == KERNEL
    base = f"127.0.0.1:{port}/api/kernels"
    session = uuid.uuid4().hex
    ws = websocket.create_connection(
        f"ws://{base}/{kernel['id']}/channels?session_id={session}&token={token}", timeout=300
    )
    try:
        header = {
            "msg_id": uuid.uuid4().hex,
            "username": "test",
            "session": session,
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
        outputs = []
        while True:
            msg = json.loads(ws.recv())
            if msg["parent_header"].get("msg_id") != header["msg_id"] or msg.get("channel") != "iopub":
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                outputs.append(nbformat.v4.new_output("stream", name=content["name"], text=content["text"]))
            elif kind in ("display_data", "error"):
                outputs.append(nbformat.v4.output_from_msg(msg))
            elif kind == "status" and content["execution_state"] == "idle":
                return outputs
    finally:
        ws.close()
        urllib.request.urlopen(
            urllib.request.Request(f"http://{base}/{kernel['id']}?token={token}", method="DELETE"), timeout=60
        ).close()


def _get(port: int, token: str, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}?token={token}", timeout=30) as r:
        return r.read()


@pytest.mark.notebooks
def test_lab_at_the_repository_root_keeps_outputs_and_files_the_run(tmp_path):
    """`make lab`'s server on a copy of the repository: its root is the repository (notebooks/ and the
    run folders can be browsed) and the file browser opens notebooks/; the Launcher lists fer-lib and not
    the venv's generic python3; a notebook saved after running its setup cell keeps its outputs and is
    filed into the run folder the kernel wrote to (executed copy, run_times.csv); the log has no warning."""
    if not _kernel_installed():
        pytest.skip(f"the {KERNEL} kernel is not registered (make install registers it)")
    root = tmp_path / "repo"
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    (root / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "normalize_notebooks.py", root / "scripts")
    shutil.copy(REPO / "jupyter_server_config.py", root)
    listing = sorted(os.listdir(root / "notebooks"))
    results = tmp_path / "results"
    log = tmp_path / "server.log"
    port, token = _free_port(), "t" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:16]
    env = dict(
        {k: v for k, v in os.environ.items() if k not in ("FER_PROFILE", "FER_PUBLISH")},
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_DATA_DIR=str(tmp_path / "data_dir"),  # the notary's signatures of the save below
        FER_RESULTS_DIR=str(results),
        FER_DATA_DIR=str(tmp_path / "data"),
    )
    jupyter = Path(sys.executable).with_name("jupyter")
    proc = subprocess.Popen(
        [
            str(jupyter),
            "lab",
            f"--config={root / 'jupyter_server_config.py'}",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",  # as `make lab`: --ServerApp.root_dir=$(CURDIR)
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
                specs = json.loads(_get(port, token, "api/kernelspecs"))
            except OSError:
                time.sleep(0.5)
        assert specs is not None, "the Lab server did not answer: " + log.read_text()
        top = {item["name"] for item in json.loads(_get(port, token, "api/contents/"))["content"]}
        assert {"notebooks", "scripts", "jupyter_server_config.py"} <= top, top
        page = _get(port, token, "lab").decode()
        config = json.loads(
            page.split('id="jupyter-config-data" type="application/json">')[1].split("</script>")[0]
        )
        assert config["preferredPath"] == "notebooks"
        # the setup cell of 06 as Lab runs it: its kernel starts in notebooks/
        nb_path = root / "notebooks" / "06_demo.ipynb"
        nb = nbformat.read(str(nb_path), as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        outputs = _execute(
            port,
            token,
            "import os\nfrom fer_lib.notebook import setup\n"
            "cfg, paths = setup('smoke', seed=False)\nprint(os.path.basename(os.getcwd()))",
            f"notebooks/{nb_path.name}",
        )
        assert [o.get("text") for o in outputs if o["output_type"] == "stream"] == ["notebooks\n"], outputs
        code[1].outputs, code[1].execution_count = outputs, 1
        for cell in code:  # Lab marks the cells it ran or loaded trusted; the server then signs the notebook
            cell.metadata["trusted"] = True
        body = json.dumps({"type": "notebook", "format": "json", "content": nb}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/contents/notebooks/{nb_path.name}?token={token}",
            data=body,
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=30).close()
        saved = nbformat.read(str(nb_path), as_version=4)
        assert [c for c in saved.cells if c.cell_type == "code"][1].outputs == outputs  # kept on save
        copy, deadline = results / "notebooks" / nb_path.name, time.time() + 120
        while not (results / "run_times.csv").exists() and time.time() < deadline:
            time.sleep(0.5)  # filed by the post-save hook's background thread
        assert copy.read_bytes() == nb_path.read_bytes()
        assert "06_demo,smoke," in (results / "run_times.csv").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert specs["default"] == KERNEL
    assert set(specs["kernelspecs"]) == {KERNEL}, list(specs["kernelspecs"])
    assert sorted(os.listdir(root / "notebooks")) == listing, "the server left files in notebooks/"
    warnings = [line for line in log.read_text().splitlines() if line.startswith("[W") or "WARNING" in line]
    assert not warnings, log.read_text()[-3000:]
