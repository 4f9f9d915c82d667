#!/usr/bin/env python
"""Rewrite notebooks in the exact form JupyterLab saves them, without outputs.

JupyterLab marks a notebook modified on open when its metadata differs from what the kernel reports
(``kernelspec``, ``language_info``), and the server writes JSON with nbformat (indent 1, sorted keys,
trailing newline). A notebook already in that form stays byte-identical when opened and saved. This
script puts it there: outputs and execution counts removed, run-time metadata (papermill, timings,
widget state) dropped, cell ids kept (missing ones made from the notebook name and position), the
project kernel's spec and language_info set.

    python scripts/normalize_notebooks.py                 # every notebooks/*.ipynb, in place
    python scripts/normalize_notebooks.py --check [FILES] # exit 1 and list the files that would change

Also the pre-commit hook (.pre-commit-config.yaml) and ``make notebooks``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is not canonical")
    args = ap.parse_args(argv)
    files = args.files or sorted((REPO / "notebooks").glob("*.ipynb"))
    kernelspec, language_info = kernel_metadata()
    changed = []
    for f in files:
        text = f.read_text(encoding="utf-8")
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
