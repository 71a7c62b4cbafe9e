"""The PostgreSQL table: its definition, its creation, and the check that an existing one fits.

The table is created when missing, under an advisory lock so that hosts
starting at once on an empty database take turns (``CREATE TABLE IF NOT
EXISTS`` alone can fail one of them). A table that exists is used as it is,
if it fits: the five columns with their types; a unique index on ``id`` that
makes a resent batch harmless, and no other unique index or exclusion
constraint (it would skip new logins); no other column that an insert would
have to fill; INSERT allowed; and logged (a crash empties an unlogged table).
Nothing else is needed, so a role that may only insert works (see
docs/postgres.md for its grants).

A sealed table (``LOGIN_LOG_SEAL_KEY``) has two more columns, ``stream`` and
``position``, unique together, and a checkpoints table beside it
(``TABLE_checkpoints``) for the signed notes; both are created when missing.
"""

from __future__ import annotations

from typing import Any

import asyncpg

COLUMNS = {
    "id": "uuid",
    "username": "text",
    "logged_in_at": "timestamp with time zone",
    "ip": "inet",
    "host": "text",
}
"""The columns the store fills, with their types as PostgreSQL's ``format_type`` names them."""

SEAL_COLUMNS = {"stream": "text", "position": "bigint"}
"""The columns a sealed table's rows fill too: where each row's leaf is."""

CHECKPOINT_COLUMNS = {
    "stream": "text",
    "seq": "bigint",
    "size": "bigint",
    "note": "text",
    "hashes": "bytea",
    "roots": "bytea",
}
"""The checkpoints table's columns (see docs/postgres.md)."""


class TableError(Exception):
    """The table is missing and cannot be created, or does not fit; the message says why."""


def quoted(table: str) -> str:
    """``audit.login_log`` as ``"audit"."login_log"`` (the name is checked at start)."""
    return ".".join(f'"{part}"' for part in table.split("."))


def checkpoints_table(table: str) -> str:
    """The checkpoints table of the sealed ``table``: ``audit.login_log_checkpoints``."""
    return f"{table}_checkpoints"


def create_table_sql(table: str, *, sealed: bool = False) -> str:
    """The table and its indexes, for the questions asked of an audit trail.

    The indexes are unnamed: PostgreSQL chooses names no other relation has,
    where names made from the table's could be those of an older table
    renamed away (``login_log_2025`` keeps its indexes' names).
    """
    name = quoted(table)
    seal = ""
    if sealed:
        seal = ",\n    stream text,\n    position bigint,\n    UNIQUE (stream, position)"
    return f"""\
CREATE TABLE {name} (
    id uuid PRIMARY KEY,
    username text NOT NULL,
    logged_in_at timestamptz NOT NULL,
    ip inet,
    host text NOT NULL{seal}
);
CREATE INDEX ON {name} (username, logged_in_at);
CREATE INDEX ON {name} (ip, logged_in_at);
CREATE INDEX ON {name} (logged_in_at);
"""


def create_checkpoints_sql(table: str) -> str:
    """The checkpoints table: one row per signed note, a stream's in order (``seq``)."""
    return f"""\
CREATE TABLE {quoted(checkpoints_table(table))} (
    stream text NOT NULL,
    seq bigint NOT NULL,
    size bigint NOT NULL,
    note text NOT NULL,
    hashes bytea,
    roots bytea,
    PRIMARY KEY (stream, seq)
);
"""


def insert_checkpoints_sql(table: str) -> str:
    """Notes, a row per element of the arrays; a note sent again is skipped (its key)."""
    return (
        f"INSERT INTO {quoted(checkpoints_table(table))} (stream, seq, size, note, hashes, roots) "
        "SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::bytea[], "
        "$6::bytea[]) ON CONFLICT DO NOTHING"
    )


def insert_sql(table: str, *, sealed: bool = False) -> str:
    """One statement per batch: a row per element of the arrays; ids already stored are skipped.

    No conflict target: ``ON CONFLICT (id)`` needs SELECT on the table, which
    an insert-only role lacks, as does ``RETURNING id``: the store counts the
    rows taken from the command tag. A sealed table's rows also get a stream
    (``$6``, one per batch) and positions (``$7``).
    """
    if sealed:
        return (
            f"INSERT INTO {quoted(table)} "
            "(id, username, logged_in_at, ip, host, stream, position) "
            "SELECT id, username, logged_in_at, ip, $5::text, $6::text, position "
            "FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::inet[], $7::int8[]) "
            "AS r(id, username, logged_in_at, ip, position) "
            "ON CONFLICT DO NOTHING"
        )
    return (
        f"INSERT INTO {quoted(table)} (id, username, logged_in_at, ip, host) "
        "SELECT id, username, logged_in_at, ip, $5::text "
        "FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::inet[]) "
        "AS r(id, username, logged_in_at, ip) "
        "ON CONFLICT DO NOTHING"
    )


# NOT NULL and a default may come from the column or from its type (a domain).
_COLUMNS_SQL = """\
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull OR t.typnotnull AS not_null,
       a.atthasdef OR a.attidentity <> '' OR t.typdefaultbin IS NOT NULL AS has_default,
       has_column_privilege(a.attrelid, a.attnum, 'INSERT') AS insertable
FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# The table and its partitions, at every level.
_TREE_SQL = """\
SELECT oid = $1::regclass AS is_table, oid::regclass::text AS name,
       relkind::text AS kind, relpersistence::text AS persistence
FROM pg_class
WHERE oid = $1::regclass OR oid IN (SELECT relid FROM pg_partition_tree($1::regclass))
ORDER BY oid <> $1::regclass, oid::regclass::text
"""
# What an unlogged or temporary table loses: every login in it, acknowledged or not.
_LOST = {
    "u": "is UNLOGGED: a crash of PostgreSQL empties it",
    "t": "is temporary: it ends with the session that made it",
}

# Every index that can make ON CONFLICT DO NOTHING skip a row, on the table or a partition.
_UNIQUE_SQL = """\
SELECT i.indexrelid::regclass::text AS name, i.indisexclusion AS exclusion,
       i.indrelid = $1::regclass AS on_table,
       i.indimmediate AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL AS plain,
       ARRAY(SELECT attname FROM pg_attribute WHERE attrelid = i.indrelid
             AND attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1])) AS keys,
       split_part(pg_get_indexdef(i.indexrelid), ' USING ', 2) AS definition
FROM pg_index AS i
WHERE (i.indisunique OR i.indisexclusion)
  AND (i.indrelid = $1::regclass
       OR i.indrelid IN (SELECT relid FROM pg_partition_tree($1::regclass)))
ORDER BY 1
"""
REPEATED = frozenset({"id", "username", "logged_in_at", "host"})
"""The columns a resend fills again with the same value, never NULL."""


async def ensure_table(connection: Any, table: str, *, sealed: bool = False) -> None:
    """Create ``table`` if it is missing, then check that it fits; raise :class:`TableError`.

    ``sealed``: with the sealing columns, and the checkpoints table beside it.
    """
    await _create_missing(connection, table, create_table_sql(table, sealed=sealed))
    problems = await table_problems(connection, table, sealed=sealed)
    if problems:
        raise TableError("it does not fit: " + "; ".join(problems))
    if sealed:
        checkpoints = checkpoints_table(table)
        await _create_missing(connection, checkpoints, create_checkpoints_sql(table))
        problems = await checkpoints_problems(connection, checkpoints)
        if problems:
            why = "; ".join(problems)
            raise TableError(f"its checkpoints table {checkpoints} does not fit: {why}")


async def _create_missing(connection: Any, table: str, sql: str) -> None:
    name = quoted(table)
    if await connection.fetchval("SELECT to_regclass($1)", name) is None:
        # A session lock, and the check after it in a transaction of its own:
        # only a new transaction sees a table another host has just created.
        lock = f"quart_app {name}"
        await connection.execute("SELECT pg_advisory_lock(hashtext($1))", lock)
        try:
            if await connection.fetchval("SELECT to_regclass($1)", name) is None:
                # The indexes with the table or not at all: a table made by a
                # host that failed before its indexes would never get them.
                async with connection.transaction():
                    await connection.execute(sql)
        except asyncpg.InsufficientPrivilegeError as exc:
            reason = f"it does not exist, and this role may not create it ({exc})"
            raise TableError(reason) from None
        finally:
            await connection.execute("SELECT pg_advisory_unlock(hashtext($1))", lock)


async def checkpoints_problems(connection: Any, table: str) -> list[str]:
    """What keeps the existing checkpoints ``table`` from taking the notes; empty when it fits."""
    name = quoted(table)
    tree = await connection.fetch(_TREE_SQL, name)
    if tree[0]["kind"] not in ("r", "p"):
        return ["it is not a table"]
    problems = [
        f"it {_LOST[relation['persistence']]}"
        for relation in tree
        if relation["persistence"] in _LOST
    ]
    by_name = {column["attname"]: column for column in await connection.fetch(_COLUMNS_SQL, name)}
    problems += _column_problems(by_name, CHECKPOINT_COLUMNS)
    keys = [set(index["keys"]) for index in await connection.fetch(_UNIQUE_SQL, name)]
    if {"stream", "seq"} not in keys:
        problems.append("no primary key on (stream, seq): a note sent again would be doubled")
    return problems


def _column_problems(by_name: dict[str, Any], wanted: dict[str, str]) -> list[str]:
    problems = []
    for column, type_ in wanted.items():
        found = by_name.get(column)
        if found is None:
            problems.append(f"column {column} is missing")
        elif found["type"] != type_:
            problems.append(f"column {column} is {found['type']}, not {type_}")
        elif not found["insertable"]:
            problems.append(f"this role may not insert into column {column}")
    return problems


SEAL_KEY = frozenset(SEAL_COLUMNS)


async def table_problems(connection: Any, table: str, *, sealed: bool = False) -> list[str]:
    """What keeps the existing ``table`` from taking the store's rows; empty when it fits.

    ``sealed``: it must have the sealing columns, unique together.
    """
    name = quoted(table)
    tree = await connection.fetch(_TREE_SQL, name)
    if tree[0]["kind"] not in ("r", "p"):  # a table, or a partitioned one
        return ["it is not a table"]
    problems = []
    # A durable login is answered once committed: a commit that a crash undoes is no use.
    for relation in tree:
        if relation["persistence"] in _LOST:
            what = "it" if relation["is_table"] else f"partition {relation['name']}"
            problems.append(f"{what} {_LOST[relation['persistence']]}")
    columns = await connection.fetch(_COLUMNS_SQL, name)
    by_name = {column["attname"]: column for column in columns}
    problems += _column_problems(by_name, COLUMNS)
    ip = by_name.get("ip")
    if ip is not None and ip["type"] == COLUMNS["ip"] and ip["insertable"] and ip["not_null"]:
        # Answered 200 (queued), then set aside: the store sends NULL for "-".
        problems.append(
            "column ip is NOT NULL: a login whose address is unknown could not be stored"
        )
    if sealed:
        problems += [
            f"{problem} (a sealed table's: docs/postgres.md)"
            for problem in _column_problems(by_name, SEAL_COLUMNS)
        ]
    for column in columns:
        if column["attname"] not in COLUMNS and column["not_null"] and not column["has_default"]:
            problems.append(f"column {column['attname']} is NOT NULL without a default")
    # With no conflict target, ON CONFLICT DO NOTHING skips a row that any unique
    # index or exclusion constraint refuses. Only a plain key on id skips just a
    # resend, and every resend: beside id it may hold the other columns a resend
    # repeats (a partitioned table's keys must hold its partition key), not ip
    # (NULLs never conflict) nor a column filled by its default.
    # A sealed table's key on (stream, position) skips only a resend too (or a row
    # put there by hand, which verify names); rows of no stream never conflict.
    has_key = has_seal_key = False
    for index in await connection.fetch(_UNIQUE_SQL, name):
        keys = set(index["keys"])
        if index["plain"] and not index["exclusion"] and "id" in keys and keys <= REPEATED:
            has_key = has_key or index["on_table"]
            continue
        if index["plain"] and not index["exclusion"] and SEAL_KEY <= keys <= REPEATED | SEAL_KEY:
            has_seal_key = has_seal_key or index["on_table"]
            continue
        what = "exclusion constraint" if index["exclusion"] else "unique index"
        problems.append(
            f"{what} {index['name']} ({index['definition']}) could skip a new login or store "
            "a resent one twice: only id, alone or with username, logged_in_at or host, may "
            "be unique"
        )
    if not has_key:
        problems.append("no primary key or unique index on id: a resent batch would be doubled")
    if sealed and not has_seal_key:
        problems.append(
            "no unique index on (stream, position): two rows could claim one place in a stream "
            "(docs/postgres.md)"
        )
    return problems
