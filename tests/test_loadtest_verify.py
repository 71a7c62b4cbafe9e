"""The verifier's counting, fed from a file or any other source of logged usernames."""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quart_app.records import LoginRecord, format_text
from quart_app.tools.loadtest import LogFile, Logged, Logins, Tally, first_logged, verify_log
from quart_app.tools.loadtest.summary import SentByStem
from quart_app.tools.loadtest.verify import SETTLE_S
from quart_app.writer import LogWriter


class ListSource:
    """Another store of logged usernames: batches handed out one per call.

    A batch is its usernames, or a :class:`Logged` to hand out unreadable records too.
    """

    def __init__(self, *batches: list[str] | Logged) -> None:
        self.batches = list(batches)

    async def read(self) -> Logged:
        batch = self.batches.pop(0) if self.batches else []
        return batch if isinstance(batch, Logged) else Logged(batch, [])


def tally(logins: Logins, logged: list[str]) -> Tally:
    result = Tally(logins)
    result.add(Logged(logged, []))
    return result


def test_a_username_sent_twice_may_be_logged_twice_but_not_three_times() -> None:
    logins = Logins(Counter(["a", "a", "b"]), acknowledged={"a", "b"})

    twice = tally(logins, ["a", "b", "a"]).result(0.0)
    assert twice.ok
    assert (twice.logged_once, twice.repeated_logged, twice.doubled) == (1, 1, 0)

    thrice = tally(logins, ["a", "b", "a", "a"]).result(0.0)
    assert not thrice.ok
    assert (thrice.doubled, thrice.doubled_examples) == (1, ("a",))


def test_lines_the_run_never_sent_are_a_fault_only_when_the_run_claims_them() -> None:
    sent = Logins.sent_once(["a"])
    logged = ["a", "someone-else"]
    assert tally(sent, logged).result(0.0).ok  # not the run's line: ignored

    every_line = Logins(sent.sent, sent.acknowledged, run_prefix="")
    result = tally(every_line, logged).result(0.0)
    assert not result.ok
    assert (result.unsent_logged, result.unsent_examples) == (1, ("someone-else",))


def test_unacknowledged_logins_in_the_log_are_no_fault() -> None:
    logins = Logins({"a": 1, "b": 1}, acknowledged={"a"})
    result = tally(logins, ["a", "b"]).result(0.0)
    assert result.ok
    assert (result.logged_once, result.unacknowledged_logged) == (1, 1)


def test_sent_by_stem_holds_exactly_the_usernames_sent() -> None:
    sent = SentByStem("lt-x-", issued=12)
    assert len(sent) == 12
    assert list(sent)[:2] == ["lt-x-0", "lt-x-1"]
    assert (sent["lt-x-0"], sent["lt-x-11"]) == (1, 1)
    for never in ["lt-x-12", "lt-x-01", "lt-x-", "lt-x-1a", "lt-x-\u0661", "lt-y-1", "x"]:
        assert never not in sent

    dropped = SentByStem("lt-x-", issued=5, unsent=frozenset({3}))
    assert (len(dropped), "lt-x-3" in dropped, list(dropped)[-1]) == (4, False, "lt-x-4")


async def test_verify_reads_any_source_until_every_acknowledged_login_is_in() -> None:
    source = ListSource(["a"], [], ["b", "other"], ["b"])
    result = await verify_log(source, Logins.sent_once(["a", "b"]), settle=0, poll_interval=0)
    assert result.ok
    assert source.batches == [["b"]], "read on after every acknowledged login was in"


async def test_verify_counts_what_comes_while_it_settles() -> None:
    # What comes after every acknowledged login is in counts as the rest: a
    # login logged again later (a retried write) is doubled all the same.
    # (Read next, however soon the settle time is over: at least one read follows.)
    source = ListSource(["a"], ["b"], Logged(["b", "never-sent"], ["torn"]))
    logins = Logins.sent_once(["a", "b"], run_prefix="")
    result = await verify_log(source, logins, settle=0.05, poll_interval=0)
    assert not result.ok
    assert (result.logged_once, result.doubled_examples) == (1, ("b",))
    assert (result.unsent_examples, result.unreadable_examples) == (("never-sent",), ("torn",))
    assert source.batches == []


def test_the_default_settle_time_covers_a_batch_and_a_retry_of_the_writer() -> None:
    # SETTLE_S is written out (the load-test tool does not import the writer):
    # a writer that batches or waits to retry for longer must raise it too.
    linger = inspect.signature(LogWriter).parameters["linger"].default
    assert linger + LogWriter.retry_max_delay < SETTLE_S


async def test_a_source_that_fails_while_verify_settles_fails_it() -> None:
    # The settle time cannot be vouched for: the error is raised, and the
    # retries end with the whole wait (max_wait + settle), not never.
    class GoneOnceRead(ListSource):
        async def read(self) -> Logged:
            if not self.batches:
                raise ConnectionRefusedError("the table went away")
            return await super().read()

    with pytest.raises(ConnectionRefusedError):
        async with asyncio.timeout(30):  # the test's own bound: no hang
            await verify_log(GoneOnceRead(["a"]), Logins.sent_once(["a"]), max_wait=0.2, settle=0.2)


async def test_first_logged_reads_to_the_end_and_leaves_only_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "login_log.txt"
    at = datetime.now(UTC)
    log.write_bytes(b"".join(format_text(LoginRecord(n, at, "::1")) for n in ["a", "lt-x-3", "b"]))
    source = LogFile(log)

    assert await first_logged(source, "lt-x-") == "lt-x-3"
    assert await first_logged(LogFile(log), "lt-y-") is None
    with log.open("ab") as file:
        file.write(format_text(LoginRecord("c", at, "::1")))
    assert await source.read() == Logged(["c"], [])


def test_a_run_id_that_extends_another_is_not_that_runs() -> None:
    # Run "m1" has stem "lt-m1-"; run "m1-1"'s usernames "lt-m1-1-n" start with it too.
    logins = Logins(SentByStem("lt-m1-", issued=3), {"lt-m1-0", "lt-m1-1", "lt-m1-2"}, "lt-m1-")
    other_run = ["lt-m1-1-0", "lt-m1-1-1", "lt-m1-x", "lt-m1-"]
    result = tally(logins, ["lt-m1-0", "lt-m1-1", "lt-m1-2", *other_run]).result(0.0)
    assert result.ok, result
    assert result.unsent_logged == 0

    # A number the run never sent is still the run's, and a fault.
    result = tally(logins, ["lt-m1-0", "lt-m1-1", "lt-m1-2", "lt-m1-7"]).result(0.0)
    assert (result.ok, result.unsent_examples) == (False, ("lt-m1-7",))


async def test_first_logged_finds_only_the_runs_own_usernames(tmp_path: Path) -> None:
    log = tmp_path / "login_log.txt"
    at = datetime.now(UTC)
    log.write_bytes(b"".join(format_text(LoginRecord(n, at, "::1")) for n in ["lt-m1-1-0", "b"]))
    assert await first_logged(LogFile(log), "lt-m1-") is None
    assert await first_logged(LogFile(log), "lt-m1-1-") == "lt-m1-1-0"


def test_a_failed_verification_says_why_in_json() -> None:
    nothing = tally(Logins({"a": 1}, acknowledged=set()), []).result(0.0).to_dict()
    assert (nothing["ok"], nothing["reason"]) == (False, "nothing was acknowledged")
    missing = tally(Logins.sent_once(["a", "b"]), ["a", "c"]).result(0.0).to_dict()
    assert (missing["ok"], missing["reason"]) == (False, "1 missing")
    assert tally(Logins.sent_once(["a"]), ["a"]).result(0.0).to_dict()["reason"] is None
