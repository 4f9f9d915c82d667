"""Build a notebook from a percent-format script (``# %%`` code cells, ``# %% [markdown]`` cells).

The first code cell is tagged ``parameters`` (papermill) and the notebook gets the project kernel,
so authors can write a notebook as plain text: ``python scripts/py2nb.py draft.py notebooks/NN_x.ipynb``.
Outputs are never stored: source notebooks are committed clean.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

KERNELSPEC = {"name": "fer-lib", "display_name": "Python (fer_lib)", "language": "python"}


def parse(text: str) -> list:
    cells, kind, buf = [], None, []

    def flush():
        if kind is None:
            return
        src = "\n".join(buf).strip("\n")
        if kind == "markdown":
            src = "\n".join(
                line[2:] if line.startswith("# ") else line.lstrip("#") for line in src.splitlines()
            )
            cells.append(nbformat.v4.new_markdown_cell(src))
        elif src.strip():
            cells.append(nbformat.v4.new_code_cell(src))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, buf = ("markdown" if "[markdown]" in line else "code"), []
        else:
            buf.append(line)
    flush()
    return cells


def build(src: Path, dst: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = parse(src.read_text(encoding="utf-8"))
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code:
        raise SystemExit(f"{src}: no code cell")
    code[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i:02d}"
    nbformat.validate(nb)
    nbformat.write(nb, str(dst))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python scripts/py2nb.py SOURCE.py NOTEBOOK.ipynb")
    build(Path(sys.argv[1]), Path(sys.argv[2]))
