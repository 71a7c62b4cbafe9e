"""What the README and docs promise, against the figures the code keeps the promise with."""

from __future__ import annotations

from quart_app.testing import ROOT
from quart_app.writer import LAG_BOUND, LINGER

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def flat(path) -> str:
    """The document's text with its line breaks and runs of spaces as single spaces."""
    return " ".join(path.read_text(encoding="utf-8").split())


def test_no_document_promises_the_line_is_there_when_the_answer_leaves() -> None:
    # Without durable mode a 200 means the record is queued, written within one
    # batching interval: right after 500 pipelined 200s, as few as 32 lines were
    # in the file (issue 15, item 4).
    for path in DOCUMENTS:
        text = flat(path)
        assert "200 means the line is in the log" not in text, path.name
        assert "200 means the row is in the table" not in text, path.name


def test_the_readme_states_what_a_200_means_with_the_writers_own_figures() -> None:
    readme = flat(ROOT / "README.md")
    assert "**200 means the login is recorded**" in readme
    assert "With `LOGIN_LOG_DURABLE` the line is on disk (fsynced), or the row committed" in readme
    assert f"written within one batching interval ({LINGER * 1000:g} ms)" in readme
    assert f"at most {LAG_BOUND:g} s of answered logins are ever only in memory" in readme
    assert f"loses at most {LAG_BOUND:g} s of acknowledged logins" in readme
