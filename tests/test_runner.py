import json
import subprocess
import sys

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
    _nb(folder / "01_broken.ipynb", "import os\nif not os.path.exists('FIXED'): raise ValueError('deliberate failure')\n"
                                    f"open({str(log)!r}, 'a').write('01\\n')")
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
    assert [p.stem for p in runner.select(nbs, start_from="04")] == ["04_video_features", "05_result_tables"]
    assert [p.stem for p in runner.select(nbs, only=["gcn"])] == ["03_emotion_gcn"]
    with pytest.raises(ValueError, match="no notebook named"):
        runner.select(nbs, start_from="99")


def test_repository_chain_is_ordered_and_parameterised():
    nbs = runner.list_notebooks()
    assert [p.stem for p in nbs] == list(runner.STAGES.values())
    for p in nbs:
        nb = nbformat.read(str(p), as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), p.name
        assert nb.metadata["kernelspec"]["name"] == runner.KERNEL_NAME, p.name
        assert all(not c.get("outputs") for c in code), f"{p.name} is committed with outputs"


def test_cli_help_lists_stage_commands():
    out = subprocess.run([sys.executable, "-m", "fer_lib", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in (*runner.STAGES, "reproduce"):
        assert cmd in out


def test_cli_rejects_bad_override_with_exit_2():
    proc = subprocess.run([sys.executable, "-m", "fer_lib", "profile", "--profile", "smoke", "--set", "x.y=1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown config" in proc.stderr


def test_cli_profile_json():
    out = subprocess.run([sys.executable, "-m", "fer_lib", "profile", "--profile", "paper", "--json",
                          "--set", "finetune.full_epochs=2"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["finetune"]["full_epochs"] == 2
