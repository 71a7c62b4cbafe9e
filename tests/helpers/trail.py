"""Reading the trail in tests: ``quart-app-log`` run as a user runs it, and logins it must find.

:func:`send_as_clients` logs hostile usernames in from addresses a trusted
proxy gives, one at a time, and keeps what each login must read back as.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from .payloads import FRAGMENTS, HOSTILE_CHARS, MAX_LENGTH, is_acceptable

COMMAND = str(Path(sys.executable).with_name("quart-app-log"))

FORMULA_NAMES = ["=1+1", "+1", "-2+3", "@SUM(A1)", "'quoted", '=HYPERLINK("x")']

ADDRESSES = [
    ("203.0.113.7", "203.0.113.7"),
    ("198.51.100.1", "198.51.100.1"),
    ("2001:db8::1", "2001:db8::1"),
    ("203.0.113.200", "203.0.113.200"),
    ("::ffff:203.0.113.9", "203.0.113.9"),  # IPv4-mapped: logged as IPv4
    ("2001:db8:0:1::5", "2001:db8:0:1::5"),
]
"""What a trusted proxy says (``X-Forwarded-For``) and the address the log holds for it."""


def hostile_usernames() -> list[str]:
    """Usernames the server takes (as it stores them) built of :mod:`.payloads`' hostile
    characters and fragments, each once; and names a spreadsheet would run."""
    names = [f"a{char}b" for char in HOSTILE_CHARS]
    names += [*FRAGMENTS, FRAGMENTS[0] + "admin" + FRAGMENTS[1] + "x", "张" * MAX_LENGTH]
    names += [*FORMULA_NAMES, "o'brien", "tab\tinside", "-"]
    taken = [name for name in names if is_acceptable(name) and name == name.strip()]
    return list(dict.fromkeys(taken))


@dataclass(frozen=True)
class Sent:
    """A login answered 200, and the window in which the server took its time."""

    username: str
    ip: str
    after: datetime
    before: datetime


async def send_as_clients(url: str, names: list[str]) -> list[Sent]:
    """Log each name in, one at a time, from the :data:`ADDRESSES` in turn."""
    sent = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for number, name in enumerate(names):
            forwarded, logged = ADDRESSES[number % len(ADDRESSES)]
            after = datetime.now(UTC)
            async with session.post(
                url + "/login/", data={"username": name}, headers={"X-Forwarded-For": forwarded}
            ) as response:
                assert response.status == 200, (name, response.status, await response.text())
            sent.append(Sent(name, logged, after, datetime.now(UTC)))
    return sent


@dataclass(frozen=True)
class Ran:
    """What ``quart-app-log`` did: its exit status and its output."""

    status: int
    out: str
    err: str

    def jsonl(self) -> list[dict]:
        """Standard output as JSON Lines."""
        return [json.loads(line) for line in self.out.splitlines()]

    def csv(self) -> list[dict[str, str]]:
        """Standard output as CSV, read by Python's own reader."""
        return list(csv.DictReader(io.StringIO(self.out, newline="")))


def run_log(*argv: str | Path, timeout: float = 60, **kwargs: object) -> Ran:
    """Run ``quart-app-log ARGV...`` and wait for it (at most ``timeout`` seconds)."""
    done = subprocess.run(
        [COMMAND, *map(str, argv)],
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,  # type: ignore[arg-type]
    )
    return Ran(done.returncode, done.stdout.decode(), done.stderr.decode())


def assert_read_back(found: list[dict], sent: list[Sent]) -> None:
    """``search --format jsonl``'s records are exactly the logins sent, in order."""
    assert [(item["username"], item["ip"]) for item in found] == [
        (login.username, login.ip) for login in sent
    ]
    for item, login in zip(found, sent, strict=True):
        time = datetime.fromisoformat(item["time"])
        assert item["time"].endswith("+00:00")
        assert login.after <= time <= login.before, (item, login)
