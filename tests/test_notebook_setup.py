"""``fer_lib.notebook.setup``: the one setup call of every notebook (profile, paths, seed, summary), and
the run marker its output carries for the Lab server's post-save hook."""

from __future__ import annotations

import random
from pathlib import Path

import nbformat
import numpy as np
import pytest

from fer_lib import config, runner
from fer_lib.notebook import setup

REPO = Path(__file__).resolve().parent.parent


def test_setup_is_get_profile_get_paths_and_seed(tmp_results, capsys, monkeypatch):
    monkeypatch.delenv("FER_DATA_ROOT", raising=False)  # CI sets it: this checks the synthetic default
    cfg, paths = setup("smoke", {"seed": 7})
    assert cfg == config.get_profile("smoke", {"seed": 7})
    assert paths == config.get_paths(cfg) and paths.results == tmp_results.resolve()
    drawn = (random.random(), np.random.rand())  # noqa: NPY002 - setup seeds the global state
    config.seed_everything(7)
    assert drawn == (random.random(), np.random.rand())  # noqa: NPY002
    out = capsys.readouterr().out  # outside a kernel the summary is printed
    assert out.startswith("profile 'smoke' (seed 7") and "real datasets: none (FER_DATA_ROOT unset)" in out
    assert f"results: {paths.results} (exploratory run;" in out


def test_setup_takes_the_profile_from_the_environment_and_rejects_bad_names(tmp_results, monkeypatch):
    monkeypatch.setenv("FER_PROFILE", "smoke")
    assert setup(None, seed=False)[0].name == "smoke"
    with pytest.raises(ValueError, match="unknown profile"):
        setup("nope")
    with pytest.raises(KeyError, match="unknown config"):
        setup("smoke", {"no.such_key": 1})


@pytest.mark.notebooks
def test_setup_output_in_a_kernel_carries_the_run(tmp_results):
    """In a kernel the summary is one plain-text output whose metadata names the run (what the Lab
    server's post-save hook reads)."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from fer_lib.notebook import setup\ncfg, paths = setup('smoke')")]
    NotebookClient(nb, kernel_name=runner._kernel_name(), timeout=300).execute()
    (out,) = nb.cells[0].outputs
    assert out.output_type == "display_data" and out.data["text/plain"].startswith("profile 'smoke'")
    marker = runner.run_marker(nb)
    assert marker["profile"] == "smoke" and marker["overrides"] == {}
    assert marker["results"] == str(tmp_results.resolve())


@pytest.mark.parametrize("path", runner.list_notebooks(), ids=lambda p: p.stem)
def test_every_notebook_sets_up_with_the_one_call(path):
    """The cell after `parameters` calls setup(profile, overrides); no notebook rebuilds it by hand."""
    code = [c for c in nbformat.read(str(path), as_version=4).cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert "profile = None" in code[0].source and "overrides = {}" in code[0].source
    assert "cfg, paths = setup(profile, overrides" in code[1].source, path.name
    text = "\n".join(c.source for c in code)
    assert "get_profile(" not in text and "get_paths(" not in text and "seed_everything(" not in text
