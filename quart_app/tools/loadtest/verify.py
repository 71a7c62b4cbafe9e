"""Checking a run against the log: each acknowledged login logged, none more often than sent.

:class:`Tally` counts usernames, wherever they were read from (see
:mod:`.sources`); :func:`verify_log` feeds it from a source until every
acknowledged login has turned up or the wait is over.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sources import Logged, LoginSource, LogMissing, open_source

EXAMPLES = 5
"""How many usernames a result names per fault, to start looking from."""

SETTLE_S = 2.5
"""Seconds :func:`verify_log` reads on once every acknowledged login is in.

A line written again comes at most one batch (50 ms) and one retry later: the
server waits at most ``LogWriter.retry_max_delay`` (2 s) before retrying a
failed write. The rest is for that write and the reads' polling. Written
out, not computed: importing the writer would load prometheus_client into
the load-test tool.
"""


def of_stem(username: str, stem: str) -> bool:
    """Whether ``username`` is ``stem`` followed by a number: one of the run's usernames.

    Only digits may follow, or run "m1" (stem ``lt-m1-``) would claim the
    usernames of run "m1-1" (``lt-m1-1-0``, ...). An empty stem claims every username.
    """
    if not stem:
        return True
    number = username[len(stem) :]
    return username.startswith(stem) and number.isascii() and number.isdigit()


@dataclass(frozen=True, slots=True)
class Logins:
    """What a run sent, to check the log against.

    ``sent`` maps each username sent to how many times it left the client: the
    tool sends each request once, so more than once only when a caller's list
    of usernames repeats one, and the server may then rightly log it that often.
    ``acknowledged`` are the usernames answered 200. Log lines whose username
    is ``run_prefix`` followed by a number (see :func:`of_stem`) belong to the
    run even though it never sent them (a fault); ``""`` claims every line of
    the log, ``None`` only those sent.
    """

    sent: Mapping[str, int]
    acknowledged: Set[str]
    run_prefix: str | None = None

    @classmethod
    def sent_once(cls, acknowledged: Iterable[str], *, run_prefix: str | None = None) -> Logins:
        """Each of ``acknowledged`` sent once and answered 200."""
        names = frozenset(acknowledged)
        return cls(dict.fromkeys(names, 1), names, run_prefix)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """How the log matches the logins a run sent.

    Faults: ``missing`` (acknowledged, not logged), ``doubled`` (logged more
    often than sent), ``unsent_logged`` (the run's lines for usernames it
    never sent) and ``unreadable`` (lines that are no login record: torn or
    interleaved writes). No faults: ``unacknowledged_logged`` (a login whose answer was
    lost on the way back may well have been logged) and ``repeated_logged``
    (sent more than once, logged more than once but no more often than sent).
    ``waited_s``: seconds read until every acknowledged login was in (or until
    the wait was over); ``settled_s``: seconds read after that, every line
    counted.
    """

    acknowledged: int
    logged_once: int
    missing: int
    doubled: int
    unsent_logged: int
    unreadable: int
    unacknowledged_logged: int
    repeated_logged: int
    waited_s: float
    settled_s: float
    missing_examples: tuple[str, ...]
    doubled_examples: tuple[str, ...]
    unsent_examples: tuple[str, ...]
    unreadable_examples: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether logins were acknowledged and the log holds each as often as it should.

        Nothing acknowledged (server down, every login refused) is a failure:
        there was nothing to check, so nothing was shown to work.
        """
        faults = self.missing + self.doubled + self.unsent_logged + self.unreadable
        return self.acknowledged > 0 and faults == 0

    @property
    def reason(self) -> str | None:
        """Why the verification failed, in a few words; ``None`` if it passed."""
        if self.ok:
            return None
        if not self.acknowledged:
            return "nothing was acknowledged"
        faults = (
            (self.missing, "missing"),
            (self.doubled, "logged more often than sent"),
            (self.unsent_logged, "logged that this run never sent"),
            (self.unreadable, "lines that are no login record"),
        )
        return ", ".join(f"{count:,} {what}" for count, what in faults if count)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON-able values."""
        return {
            "ok": self.ok,
            "reason": self.reason,
            "acknowledged": self.acknowledged,
            "logged_once": self.logged_once,
            "missing": self.missing,
            "doubled": self.doubled,
            "unsent_logged": self.unsent_logged,
            "unreadable": self.unreadable,
            "unacknowledged_logged": self.unacknowledged_logged,
            "repeated_logged": self.repeated_logged,
            "waited_s": round(self.waited_s, 3),
            "settled_s": round(self.settled_s, 3),
            "missing_examples": list(self.missing_examples),
            "doubled_examples": list(self.doubled_examples),
            "unsent_examples": list(self.unsent_examples),
            "unreadable_examples": list(self.unreadable_examples),
        }


class Tally:
    """Counts logged usernames against :class:`Logins`, batch by batch."""

    def __init__(self, logins: Logins) -> None:
        self.logins = logins
        self.counts: Counter[str] = Counter()
        self.unreadable = 0
        self.unreadable_examples: list[str] = []
        self._present = 0  # acknowledged usernames logged at least once

    def add(self, logged: Logged) -> None:
        """Count one batch a source read; usernames not of the run are ignored."""
        self.unreadable += len(logged.unreadable)
        self.unreadable_examples += logged.unreadable[: EXAMPLES - len(self.unreadable_examples)]
        logins, counts = self.logins, self.counts
        sent, acknowledged, prefix = logins.sent, logins.acknowledged, logins.run_prefix
        for username in logged.usernames:
            if username in sent or (prefix is not None and of_stem(username, prefix)):
                counts[username] += 1
                if counts[username] == 1 and username in acknowledged:
                    self._present += 1

    @property
    def complete(self) -> bool:
        """Whether every acknowledged username has been logged at least once."""
        return self._present == len(self.logins.acknowledged)

    def result(self, waited_s: float, settled_s: float = 0.0) -> VerifyResult:
        """The verdict on what has been counted so far (times as in :class:`VerifyResult`)."""
        sent, acknowledged = self.logins.sent, self.logins.acknowledged
        doubled, unsent = [], []
        logged_once = unacknowledged = repeated = 0
        for username, count in self.counts.items():
            times = sent.get(username, 0)
            if times == 0:
                unsent.append(username)
            elif count > times:
                doubled.append(username)
            else:
                repeated += count > 1
                if username in acknowledged:
                    logged_once += count == 1
                else:
                    unacknowledged += 1
        missing = sorted(acknowledged - self.counts.keys())
        return VerifyResult(
            acknowledged=len(acknowledged),
            logged_once=logged_once,
            missing=len(missing),
            doubled=len(doubled),
            unsent_logged=len(unsent),
            unreadable=self.unreadable,
            unacknowledged_logged=unacknowledged,
            repeated_logged=repeated,
            waited_s=waited_s,
            settled_s=settled_s,
            missing_examples=tuple(missing[:EXAMPLES]),
            doubled_examples=tuple(sorted(doubled)[:EXAMPLES]),
            unsent_examples=tuple(sorted(unsent)[:EXAMPLES]),
            unreadable_examples=tuple(self.unreadable_examples),
        )


async def verify_log(
    log: str | Path | LoginSource,
    logins: Logins,
    *,
    max_wait: float = 10.0,
    settle: float = SETTLE_S,
    poll_interval: float = 0.05,
) -> VerifyResult:
    """Check the log (a path, or any :class:`~.sources.LoginSource`) against ``logins``.

    The log is read until every acknowledged username is in it or ``max_wait``
    seconds have passed, since the writer may lag behind the answers. Once
    every one is in, it is read on for ``settle`` seconds (default
    :data:`SETTLE_S`), and what comes meanwhile counts too: a login the server
    logs again later (a retried write) is found doubled. A caller whose server
    has stopped (nothing more can be written) passes ``settle=0``. The whole
    wait ends by ``max_wait + settle`` seconds, one read's own time aside.

    A source keeps its place, so one already read up to the run's start (see
    :func:`first_logged`) reads only the run's lines. A read that fails (a
    database restarting) is tried again within the wait; if the last one
    failed, its error is raised, since what was counted may be incomplete.
    If acknowledged logins are still missing because the log itself does not
    exist (a source whose ``missing`` says why), :class:`~.sources.LogMissing`
    is raised: the fault is where the log was looked for, not in the server.
    """
    source = open_source(log)
    tally = Tally(logins)
    started = time.monotonic()
    complete_by = started + max_wait
    deadline = complete_by + settle  # the whole wait, however late the last login came
    complete_at = None  # when every acknowledged login was in
    while True:
        failure = None
        try:
            tally.add(await source.read())
        except Exception as exc:  # anything a source raises: the next read may succeed
            failure = exc
        now = time.monotonic()
        if complete_at is None and tally.complete:
            if not logins.acknowledged:
                break  # a failed verdict whatever comes later: no wait for it
            complete_at = now
        if complete_at is None:
            if now >= complete_by:
                break
        elif (failure is None and now >= complete_at + settle) or now >= deadline:
            break
        await asyncio.sleep(poll_interval)
    ended = time.monotonic()
    if failure is not None:
        raise failure
    if not tally.complete and (missing := getattr(source, "missing", None)):
        raise LogMissing(f"{missing} (waited {ended - started:.1f} s)")
    if complete_at is None:
        return tally.result(ended - started)
    return tally.result(complete_at - started, ended - complete_at)


async def first_logged(source: LoginSource, prefix: str) -> str | None:
    """Read ``source`` to its end; return its first username of the stem ``prefix``, if any.

    Run before a run with the run's stem: a stem already logged would make
    the run's logins look doubled. A username is the stem's as :func:`of_stem` says.
    """
    found = None
    while (logged := await source.read()).usernames or logged.unreadable:
        if found is None:
            found = next((name for name in logged.usernames if of_stem(name, prefix)), None)
    return found
