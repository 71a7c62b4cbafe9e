"""``make demo-hosts``: it runs, and says every acknowledged login is stored once."""

from __future__ import annotations

import pytest

from quart_app.tools.demo import main


def test_the_demo_passes_its_checks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--duration", "1", "--rate", "50"]) == 0
    out = capsys.readouterr().out
    assert "role login_writer may only INSERT into it" in out
    assert "every acknowledged login is in the table exactly once, with its host" in out
    lines = [line.split() for line in out.splitlines() if line.startswith("host-")][:3]
    assert [line[0] for line in lines] == ["host-a", "host-b", "host-c"]
    for _, _, sent, acknowledged, stored, missing, doubled, status in lines:
        assert int(acknowledged) <= int(stored) <= int(sent)
        assert (missing, doubled, status) == ("0", "0", "0")
