"""The paper profile beside the authors' settings: the doc cannot drift, and no difference is silent."""

from pathlib import Path

import pytest

from fer_lib import paper_settings as ps
from fer_lib.config import get_profile

DOC = Path(__file__).resolve().parent.parent / "docs" / "papers.md"


@pytest.fixture(scope="module")
def table():
    return ps.settings_table(get_profile("paper"))


def test_doc_section_equals_a_fresh_render(table):
    section = ps.doc_section(DOC.read_text(encoding="utf-8"))
    assert section == ps.render_markdown(table), (
        "docs/papers.md's paper-settings table is out of date: "
        "python -m fer_lib.paper_settings --write docs/papers.md"
    )


def test_no_difference_is_unexplained(table):
    bad = table[table.status == "UNEXPLAINED"]
    assert bad.empty, f"profile differs from the authors without a declared reason:\n{bad.to_string()}"
    assert list(table.columns) == ps.COLUMNS
    assert set(table.paper) == {"A", "B"}


def test_a_declared_reason_is_not_stale(table):
    # a reason on a row that now matches would describe a difference that no longer exists
    stale = [s.setting for s, st in zip(ps.SETTINGS, table.status) if s.reason and st == "match"]
    assert not stale, f"rows match the authors but still declare a reason: {stale}"


def test_every_row_reads_a_real_profile_key():
    paper = get_profile("paper")
    for s in ps.SETTINGS:
        assert s.repo in ps.REPOS and s.path, s
        if isinstance(s.key, str):
            ps.read_setting(paper, s.key)  # raises on a key the profile does not have
    with pytest.raises(KeyError, match="known here"):
        ps.read_setting(paper, "finetune.batch_sise")


def test_an_overridden_value_turns_its_row_unexplained():
    df = ps.settings_table(get_profile("paper", {"finetune.batch_size": 64})).set_index("setting")
    row = df.loc["AffectNet (B0): batch size"]
    assert (row.authors, row.profile, row.status) == ("32", "64", "UNEXPLAINED")


def test_rewrite_replaces_only_the_marked_section():
    text = f"intro\n{ps.BEGIN}\nold\n{ps.END}\noutro\n"
    out = ps.rewrite(text, "| new |\n")
    assert out == f"intro\n{ps.BEGIN}\n| new |\n{ps.END}\noutro\n"
    with pytest.raises(ValueError, match="paper-settings"):
        ps.rewrite("no markers", "x")
