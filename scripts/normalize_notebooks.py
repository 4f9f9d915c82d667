#!/usr/bin/env python
"""Rewrite notebooks in the exact form JupyterLab saves them, without outputs.

JupyterLab marks a notebook modified on open when its metadata differs from what the kernel reports
(``kernelspec``, ``language_info``), and the server writes JSON with nbformat (indent 1, sorted keys,
trailing newline). A notebook already in that form stays byte-identical when opened and saved. This
script puts it there: outputs and execution counts removed, run-time metadata (papermill, timings,
widget state) dropped, cell ids kept (missing ones made from the notebook name and position), the
project kernel's spec and language_info set.

    python scripts/normalize_notebooks.py                 # every notebooks/*.ipynb, in place
    python scripts/normalize_notebooks.py --check [FILES] # exit 1 and list the files git would not store
                                                          # in that form
    python scripts/normalize_notebooks.py --stdin [NAME]  # a git clean filter: stdin -> canonical stdout
    python scripts/normalize_notebooks.py --install-filter  # register that filter in this checkout

Also the pre-commit hook (.pre-commit-config.yaml) and ``make notebooks``. Notebooks keep their outputs in
the working copy (JupyterLab saves them); git stores them without, through the clean filter
:data:`FILTER` that ``.gitattributes`` names for ``notebooks/*.ipynb`` and ``make install`` registers
(``--install-filter``: ``git config filter.fer-nbstrip.clean "<venv python> scripts/normalize_notebooks.py
--stdin %f"`` and ``smudge cat``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KERNEL_NAME = "fer-lib"
KERNEL_DISPLAY_NAME = "Python (fer_lib)"
# Run-time notebook / cell metadata written by papermill, nbclient, Lab's widget manager or older frontends.
DROP_NB_METADATA = ("papermill", "widgets", "signature", "orig_nbformat", "orig_nbformat_minor")
DROP_CELL_METADATA = ("papermill", "execution", "ExecuteTime", "trusted", "collapsed", "scrolled")
#: The git filter driver that .gitattributes names for notebooks/*.ipynb.
FILTER = "fer-nbstrip"


def strip_outputs(nb: dict[str, Any]) -> dict[str, Any]:
    """Remove outputs, execution counts and run-time metadata, in place; returns ``nb``."""
    for key in DROP_NB_METADATA:
        nb.get("metadata", {}).pop(key, None)
    for cell in nb.get("cells", []):
        for key in DROP_CELL_METADATA:
            cell.get("metadata", {}).pop(key, None)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


def kernel_metadata(kernel: str = KERNEL_NAME) -> tuple[dict[str, str], dict[str, Any]]:
    """(kernelspec, language_info) as JupyterLab writes them after connecting to ``kernel``.

    Lab sets ``kernelspec`` to the spec's name / display_name / language and ``language_info`` to the
    kernel's reply; the reply of ipykernel depends only on the interpreter, so it is read from the
    kernel's own Python without starting a kernel.
    """
    spec_argv, display, language = [sys.executable], KERNEL_DISPLAY_NAME, "python"
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec(kernel)
        spec_argv, display, language = spec.argv, spec.display_name, spec.language
    except Exception:  # noqa: BLE001 - kernel not registered yet (make install does it): this interpreter's
        pass
    code = (
        "import json; from ipykernel.ipkernel import IPythonKernel as K; print(json.dumps(K.language_info))"
    )
    python = spec_argv[0] if spec_argv and Path(spec_argv[0]).exists() else sys.executable
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    return {"display_name": display, "language": language, "name": kernel}, json.loads(out)


def normalize(text: str, name: str, kernelspec: dict, language_info: dict) -> str:
    """The canonical text of one notebook (``name`` seeds ids of cells that have none)."""
    import nbformat

    nb = json.loads(text)
    strip_outputs(nb)
    nb["nbformat"], nb["nbformat_minor"] = 4, max(5, int(nb.get("nbformat_minor", 5)))
    nb.setdefault("metadata", {})
    nb["metadata"]["kernelspec"] = dict(kernelspec)
    nb["metadata"]["language_info"] = dict(language_info)
    for i, cell in enumerate(nb.get("cells", [])):
        if not cell.get("id"):
            cell["id"] = hashlib.sha1(f"{name}:{i}".encode()).hexdigest()[:8]
        cell.setdefault("metadata", {})
        if cell.get("cell_type") == "markdown" and not cell.get("attachments"):
            cell.pop("attachments", None)
    node = nbformat.from_dict(nb)
    nbformat.validate(node)
    # What jupyter_server's FileContentsManager writes: nbformat.writes plus a final newline.
    out = nbformat.writes(node, version=nbformat.NO_CONVERT)
    return out if out.endswith("\n") else out + "\n"


def _git(*args: str, cwd: Path) -> str:
    """stdout of a git command ("" where git or the repository is missing, or the command fails)."""
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except OSError:
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def filter_command(python: str | None = None, top: Path | None = None) -> str:
    """The clean command of :data:`FILTER`: this script on stdin, run by ``python`` (default: this
    interpreter); paths inside the checkout are relative to its top (git runs filters there), so moving
    the checkout keeps the filter working."""
    top = Path(top or REPO).resolve()
    python = python or sys.executable
    script = Path(__file__).resolve()

    def rel(p: str | Path) -> str:
        p = Path(os.path.abspath(p))
        return p.relative_to(top).as_posix() if p.is_relative_to(top) else str(p)

    return f"{shlex.quote(rel(python))} {shlex.quote(rel(script))} --stdin %f"


def install_filter(cwd: Path | None = None) -> str:
    """Register :data:`FILTER` in the git checkout around ``cwd`` (``make install`` runs this); returns
    the clean command, or "" outside a git checkout."""
    cwd = Path(cwd or Path.cwd())
    top = _git("rev-parse", "--show-toplevel", cwd=cwd)
    if not top:
        return ""
    command = filter_command(top=Path(top))
    subprocess.run(["git", "config", f"filter.{FILTER}.clean", command], cwd=top, check=True)
    subprocess.run(["git", "config", f"filter.{FILTER}.smudge", "cat"], cwd=top, check=True)
    return command


def committed_text(path: Path) -> str:
    """What git stores for a notebook: the working file through this checkout's clean filter where
    .gitattributes applies it and ``make install`` registered it, else the file as it is."""
    path = Path(path).resolve()
    text = path.read_text(encoding="utf-8")
    top = _git("rev-parse", "--show-toplevel", cwd=path.parent)
    command = _git("config", "--get", f"filter.{FILTER}.clean", cwd=path.parent)
    if not top or not command:
        return text
    rel = path.relative_to(Path(top).resolve()).as_posix()
    if _git("check-attr", "filter", "--", rel, cwd=Path(top)) != f"{rel}: filter: {FILTER}":
        return text
    proc = subprocess.run(
        command.replace("%f", shlex.quote(rel)),
        shell=True,
        cwd=top,
        input=text.encode("utf-8"),
        capture_output=True,
        check=True,
    )
    return proc.stdout.decode("utf-8")


def refresh_index(path: Path) -> bool:
    """After a save that changed only what git does not store (outputs), let git's index agree.

    ``git status`` takes a file whose size changed for modified without reading it, so a notebook saved
    with new outputs reads as modified (and the tree as dirty) although ``git diff`` is empty, until its
    index entry is refreshed. ``git update-index`` refreshes it, storing the same blob; it runs only for
    a tracked, unconflicted file whose committed form equals the staged blob. True when refreshed.
    """
    path = Path(path).resolve()
    top = _git("rev-parse", "--show-toplevel", cwd=path.parent)
    if not top:
        return False
    rel = path.relative_to(Path(top).resolve()).as_posix()
    entries = _git("ls-files", "--stage", "--", rel, cwd=Path(top)).splitlines()
    if len(entries) != 1 or entries[0].split()[2] != "0":  # untracked, or in a merge conflict
        return False
    text = committed_text(path)
    blob = (
        subprocess.run(
            ["git", "hash-object", "--no-filters", "--stdin"],
            cwd=top,
            input=text.encode("utf-8"),
            capture_output=True,
        )
        .stdout.decode()
        .strip()
    )
    if blob != entries[0].split()[1]:  # a change git would commit: left for the user to see
        return False
    return (
        subprocess.run(["git", "update-index", "-q", "--", rel], cwd=top, capture_output=True).returncode == 0
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    ap.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 if a file, as git would store it, is not canonical",
    )
    ap.add_argument(
        "--stdin",
        action="store_true",
        help="git clean filter: read one notebook from stdin, write its canonical form to stdout "
        "(FILES: at most its name, which seeds missing cell ids)",
    )
    ap.add_argument(
        "--install-filter",
        action="store_true",
        help=f"register the clean filter {FILTER!r} in this git checkout (make install)",
    )
    args = ap.parse_args(argv)
    if args.install_filter:
        command = install_filter()
        print(f"git filter {FILTER}: {command}" if command else "not a git checkout: no filter registered")
        return 0
    kernelspec, language_info = kernel_metadata()
    if args.stdin:
        name = args.files[0].name if args.files else "stdin.ipynb"
        text = sys.stdin.buffer.read().decode("utf-8")  # bytes: no locale, no newline translation
        sys.stdout.buffer.write(normalize(text, name, kernelspec, language_info).encode("utf-8"))
        return 0
    files = args.files or sorted((REPO / "notebooks").glob("*.ipynb"))
    changed = []
    for f in files:
        text = committed_text(f) if args.check else f.read_text(encoding="utf-8")
        new = normalize(text, f.name, kernelspec, language_info)
        if new != text:
            changed.append(f)
            if not args.check:
                f.write_text(new, encoding="utf-8")
    for f in changed:
        print(f"{'not canonical' if args.check else 'rewrote'}: {f}")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
