"""What the README and docs promise, against the figures the code keeps the promise with."""

from __future__ import annotations

import tomllib

from quart_app.config import Settings
from quart_app.serving import DRAIN_MARGIN
from quart_app.tools.server import ROOT
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


def test_the_stop_and_bind_figures_are_hypercorn_tomls_and_the_settings() -> None:
    # test_stop checks that the bounds fit; this, that a change of them reaches the docs,
    # whose sums people size grace periods by.
    toml = tomllib.loads((ROOT / "hypercorn.toml").read_text(encoding="utf-8"))
    grace, bound = toml["graceful_timeout"], toml["shutdown_timeout"]
    drain = Settings().login_log_drain_timeout
    readme, deploying = flat(ROOT / "README.md"), flat(ROOT / "docs" / "deploying.md")
    assert f"serves it with hypercorn on {toml['bind'][0]}" in readme
    assert (
        f"`graceful_timeout` {grace:g} s + drain {drain:g} s + under 1 s to log what is left "
        f"= about {grace + drain + 1:g} s"
    ) in readme
    assert f"(`shutdown_timeout` {bound:g} s > drain + {DRAIN_MARGIN:g} s)" in readme
    assert f"`graceful_timeout` ({grace:g} s in `hypercorn.toml`)" in deploying
    assert f"`LOGIN_LOG_DRAIN_TIMEOUT` ({drain:g} s)" in deploying
    assert f"the {DRAIN_MARGIN:g} s that `shutdown_timeout` must leave after the drain" in deploying
    assert f"its own `shutdown_timeout` ({bound:g} s)" in deploying
    assert f"| requests in flight (`graceful_timeout`) | {grace:g} |" in deploying
    assert f"| drain (`LOGIN_LOG_DRAIN_TIMEOUT`) | {drain:g} |" in deploying
    assert f"| worst case | about {grace + drain + 1:g} |" in deploying
