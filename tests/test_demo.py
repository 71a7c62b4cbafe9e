"""``make demo-hosts``: it runs, and says every acknowledged login is stored once, a host
stopped and then the database stopped, no login failing while the database is away."""

from __future__ import annotations

import pytest

from quart_app.tools.demo import main


def test_the_demo_passes_its_checks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--duration", "1", "--rate", "50", "--outage", "2"]) == 0
    out = capsys.readouterr().out
    assert "role login_writer may only INSERT into it" in out
    assert "every acknowledged login is in the table exactly once, with its host" in out
    assert "no login failed while the database was stopped" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("host-")]
    lines = [row for row in rows if row[1].startswith("127.0.0.")]  # the tables' rows
    assert [line[0] for line in lines] == ["host-a", "host-b", "host-c", "host-a", "host-c"]
    for _, _, sent, acknowledged, stored, missing, doubled, status in lines[:3]:
        assert int(acknowledged) <= int(stored) <= int(sent)
        assert (missing, doubled, status) == ("0", "0", "0")
    # The database stopped: every login answered 200, some of them through the spool.
    for line in lines[3:]:
        _, _, sent, acknowledged, failed, via_spool, stored, missing, doubled, status = line
        assert int(sent) == int(acknowledged) == int(stored) > 0
        assert int(via_spool) > 0
        assert (failed, missing, doubled, status) == ("0", "0", "0", "0")
