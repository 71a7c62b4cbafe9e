"""What the benchmark measures, and the goals: declared once, everything else derives from them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerSpec:
    """One hypercorn to start: which app, with which settings and how many workers.

    ``workers`` None serves as ``make run`` does (``hypercorn.toml``: one process).
    With ``database`` it logs into a table of the benchmark's throwaway PostgreSQL.
    With ``sealed`` its log is sealed (``LOGIN_LOG_SEAL_KEY``), each server with a
    key of its own made by ``quart-app-log keygen``. With ``spool`` (and
    ``database``) the table is wrapped in a spool (``LOGIN_LOG_SPOOL_DIR``, a
    directory of its own per server), the database up: the spool stays empty.
    """

    key: str
    app: str = "quart_app.asgi:app"
    env: dict[str, str] = field(default_factory=dict)
    workers: int | None = None
    database: bool = False
    sealed: bool = False
    spool: bool = False


@dataclass(frozen=True)
class Target:
    """One thing to load: a server, and what login.lua requests of it.

    ``mode`` ``login`` is ``/login/?username=...``, ``root`` the same query
    to ``/`` (which logs nothing), ``bare`` plain ``/``.
    """

    name: str
    server: str
    mode: str
    what: str

    @property
    def login(self) -> bool:
        """Whether each request logs a login."""
        return self.mode == "login"


@dataclass(frozen=True)
class Goal:
    """``metric`` of ``target`` against ``reference``: median of the per-round ratios.

    ``metric`` is ``rps``, ``cpu`` (server CPU per request), ``p99`` or
    ``writer`` (records per second). ``at_least``: the ratio must be at least
    ``threshold``; otherwise at most.
    """

    label: str
    metric: str
    target: str
    reference: str
    threshold: float
    at_least: bool

    @property
    def comparison(self) -> str:
        """``>=`` or ``<=``."""
        return ">=" if self.at_least else "<="

    def passed(self, ratio: float) -> bool:
        """Whether ``ratio`` meets the goal."""
        return ratio >= self.threshold if self.at_least else ratio <= self.threshold


SERVERS = [
    ServerSpec("app"),
    ServerSpec("durable", env={"QUART_LOGIN_LOG_DURABLE": "true"}),
    ServerSpec("app-w2", workers=2),
    ServerSpec("sealed", sealed=True),
    ServerSpec("pg", database=True),
    ServerSpec("pg-durable", env={"QUART_LOGIN_LOG_DURABLE": "true"}, database=True),
    ServerSpec("pg-spool", database=True, spool=True),
    ServerSpec("pg-sealed", database=True, sealed=True),
    ServerSpec("naive", app="bench.baselines.naive:app"),
    ServerSpec("background", app="bench.baselines.background:app"),
]

TARGETS = [
    Target("/", "app", "root", "`GET /?username=…`: the same request, no logging: the ceiling"),
    Target("/ bare", "app", "bare", "`GET /`: no query string either"),
    Target("login", "app", "login", "`GET /login/?username=…`, default mode"),
    Target("durable", "durable", "login", "`GET /login/?username=…`, `LOGIN_LOG_DURABLE=true`"),
    Target("sealed", "sealed", "login", "`GET /login/?username=…`, sealed (`LOGIN_LOG_SEAL_KEY`)"),
    Target("/ -w 2", "app-w2", "root", "`GET /?username=…` with `-w 2`"),
    Target("login -w 2", "app-w2", "login", "`GET /login/?username=…` with `-w 2`"),
    Target("pg", "pg", "login", "`GET /login/?username=…`, PostgreSQL store"),
    Target("pg durable", "pg-durable", "login", "PostgreSQL store, `LOGIN_LOG_DURABLE=true`"),
    Target(
        "pg spool",
        "pg-spool",
        "login",
        "PostgreSQL store with a spool (`LOGIN_LOG_SPOOL_DIR`), the database up: nothing spooled",
    ),
    Target(
        "pg sealed",
        "pg-sealed",
        "login",
        "PostgreSQL store, sealed (`LOGIN_LOG_SEAL_KEY`): a stream per process, its notes",
    ),
    Target("naive", "naive", "login", "baseline: aiofiles open/append/close awaited per login"),
    Target("background", "background", "login", "baseline: `add_background_task`, one append"),
]

WRITERS = {
    "LogWriter": "`LogWriter` + `FileStore`: submit each record, `stop()` drains",
    "os.write": "one synchronous `os.write` per line, `O_APPEND` (the ceiling)",
    "aiofiles": "one `await f.write(line)` per line, aiofiles file opened once, unbuffered",
    "LogWriter pg": "`LogWriter` + `PostgresStore`: submit each record, `stop()` drains",
    "unnest insert": "the same statement on the same batches, on one asyncpg connection",
}

GOALS = [
    Goal(
        "sealed PostgreSQL `/login/` server CPU per request vs PostgreSQL",
        "cpu",
        "pg sealed",
        "pg",
        1.03,
        False,
    ),
    Goal("`/login/` req/s vs `/`", "rps", "login", "/", 0.95, True),
    Goal("`/login/` server CPU per request vs `/`", "cpu", "login", "/", 1.05, False),
    Goal("`/login/` req/s vs bare `/`", "rps", "login", "/ bare", 0.95, True),
    Goal("`/login/` server CPU per request vs bare `/`", "cpu", "login", "/ bare", 1.05, False),
    Goal("durable `/login/` req/s vs `/`", "rps", "durable", "/", 0.90, True),
    Goal("`/login/` p99 vs `/` p99", "p99", "login", "/", 1.2, False),
    Goal(
        "sealed `/login/` server CPU per request vs `/login/`",
        "cpu",
        "sealed",
        "login",
        1.03,
        False,
    ),
    Goal("`-w 2`: `/login/` req/s vs `/`", "rps", "login -w 2", "/ -w 2", 0.95, True),
    Goal("`/login/` req/s vs the naive port", "rps", "login", "naive", 1.4, True),
    Goal("writer vs `os.write` per line", "writer", "LogWriter", "os.write", 0.6, True),
    Goal("writer vs aiofiles per line", "writer", "LogWriter", "aiofiles", 50, True),
    Goal("PostgreSQL `/login/` req/s vs `/`", "rps", "pg", "/", 0.90, True),
    Goal("PostgreSQL durable `/login/` req/s vs `/`", "rps", "pg durable", "/", 0.80, True),
    Goal("spooled PostgreSQL `/login/` req/s vs PostgreSQL", "rps", "pg spool", "pg", 0.97, True),
    Goal(
        "spooled PostgreSQL `/login/` server CPU per request vs PostgreSQL",
        "cpu",
        "pg spool",
        "pg",
        1.03,
        False,
    ),
    Goal(
        "writer into PostgreSQL vs a plain insert",
        "writer",
        "LogWriter pg",
        "unnest insert",
        0.8,
        True,
    ),
]


HTTP_METRICS = ("rps", "cpu", "p99")

MIN_ROUNDS = 5
"""A goal gets a verdict from the median of at least this many per-round ratios."""


def measured_pairs(names: set[str]) -> list[tuple[str, str]]:
    """The (reference, target) pairs the HTTP goals compare, among the targets ``names``."""
    pairs: list[tuple[str, str]] = []
    for goal in GOALS:
        pair = (goal.reference, goal.target)
        if goal.metric in HTTP_METRICS and set(pair) <= names and pair not in pairs:
            pairs.append(pair)
    return pairs
