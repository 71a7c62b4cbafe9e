"""The PostgreSQL store in process: the rows, the table, the checks at start, data errors."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import traceback
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quart.testing.app import LifespanError

from quart_app import create_app
from quart_app.config import ConfigError
from quart_app.records import LoginRecord
from quart_app.stores.postgres import DatabaseError, PostgresStore
from quart_app.tools.server import free_port

from helpers.payloads import TEXT_PATHS, text_login
from helpers.pg import Database, changed_url, connected, password_of

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UNICODE = [
    "张三",
    "o'brien",
    'robert"); DROP TABLE login_log; --',
    "back\\slash, comma",
    "Zoë Ελένη محمد",
    "👩‍💻 dev",
    "tag\U000e0041\U000e007f",
    "bidi\u202egnp.exe",
    "zero\u200bwidth",
    "line\u2028sep\u2029",
    "e\u0301",
    "登录日志:用户名:admin,登录时间:2020-01-01",
]


async def login(client, path: str, username: str, ip: str = "203.0.113.7") -> int:
    """Send ``username`` on input ``path`` from ``ip``; the status."""
    request = text_login(path, username)
    headers = {"content-type": request.content_type} if request.content_type else {}
    response = await client.open(
        "/login/",
        method=request.method,
        data=request.body,
        headers=headers,
        scope_base={"query_string": request.query, "client": (ip, 50000)},
    )
    return response.status_code


async def test_every_input_path_writes_the_right_row(database: Database) -> None:
    app = create_app(database.config(LOGIN_LOG_HOST="web-1"))
    sent = []
    before = datetime.now(UTC)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for path in TEXT_PATHS:
            for ip in ("203.0.113.7", "2001:db8::1"):
                assert await login(client, path, f" {path} {ip} 张三 ", ip) == 200
                sent.append((f"{path} {ip} 张三", ip))
        rows = await database.wait_for_rows(len(sent))
    after = datetime.now(UTC)

    assert {(row["username"], str(row["ip"])) for row in rows} == set(sent)
    assert {row["host"] for row in rows} == {"web-1"}
    assert all(before <= row["logged_in_at"] <= after for row in rows)
    assert [row["logged_in_at"] for row in rows] == sorted(row["logged_in_at"] for row in rows)
    # docs/postgres.md: each id a UUIDv7 (RFC 9562), made once the login was taken.
    for row in rows:
        assert (row["id"].version, row["id"].variant) == (7, uuid.RFC_4122)
        made = EPOCH + timedelta(milliseconds=row["id"].int >> 80)
        taken = row["logged_in_at"]
        assert taken - timedelta(microseconds=taken.microsecond % 1000) <= made <= after


async def test_an_unknown_address_is_null_and_the_host_defaults_to_the_host_name(
    database: Database,
) -> None:
    # Behind a trusted proxy whose header holds no valid address, the IP is "-".
    app = create_app(database.config(PROXY_TRUSTED_HOPS=1))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        response = await client.get(
            "/login/?username=behind", headers={"X-Forwarded-For": "not-an-address"}
        )
        assert response.status_code == 200
        [row] = await database.wait_for_rows(1)
    assert (row["username"], row["ip"], row["host"]) == ("behind", None, socket.gethostname())


async def test_unicode_usernames_round_trip_exactly(database: Database) -> None:
    app = create_app(database.config())
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for name in UNICODE:
            assert await login(client, "json", name) == 200
        rows = await database.wait_for_rows(len(UNICODE))
    # Exactly what was sent, surrounding whitespace stripped (U+2029 is some).
    assert sorted(row["username"] for row in rows) == sorted(name.strip() for name in UNICODE)


# Every username the input contract takes: no NUL, no lone surrogate.
accepted = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=st.lists(accepted, min_size=1, max_size=20))
async def test_any_accepted_username_round_trips_through_the_store(
    database: Database, names: list[str]
) -> None:
    store = PostgresStore(database.url, table=database.table)
    await store.open()
    now = datetime.now(UTC)
    records = [LoginRecord(name, now, "192.0.2.1") for name in names]
    try:
        assert await store.write(store.prepare(records)) == []
        async with connected(database.url) as connection:
            stored = await connection.fetch(
                f"DELETE FROM {database.table} RETURNING username, logged_in_at"
            )
    finally:
        await store.close()
    assert sorted(row["username"] for row in stored) == sorted(names)
    assert {row["logged_in_at"] for row in stored} == {now}


async def test_the_table_is_created_with_its_columns_and_indexes(database: Database) -> None:
    async with create_app(database.config()).test_app():
        pass
    async with connected(database.url) as connection:
        columns = await connection.fetch(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_name = $1 ORDER BY ordinal_position",
            database.table,
        )
        indexes = await connection.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename = $1 ORDER BY indexname",
            database.table,
        )
    assert [tuple(row) for row in columns] == [
        ("id", "uuid", "NO"),
        ("username", "text", "NO"),
        ("logged_in_at", "timestamp with time zone", "NO"),
        ("ip", "inet", "YES"),
        ("host", "text", "NO"),
    ]
    definitions = [row["indexdef"].split(" USING ")[1] for row in indexes]
    assert definitions == [
        "btree (ip, logged_in_at)",
        "btree (logged_in_at)",
        "btree (id)",
        "btree (username, logged_in_at)",
    ]


async def test_a_table_renamed_away_leaves_room_for_a_new_one(database: Database) -> None:
    # Archiving last year's logins must not keep every host from starting again.
    async with create_app(database.config()).test_app():
        pass
    archive = f"{database.table}_2025"
    database.cleanup.append(f"DROP TABLE IF EXISTS {archive}")
    await database.execute(f"ALTER TABLE {database.table} RENAME TO {archive}")
    async with create_app(database.config()).test_app() as test_app:
        assert await login(test_app.test_client(), "query", "after the rename") == 200
        [row] = await database.wait_for_rows(1)
    assert row["username"] == "after the rename"


async def test_a_table_named_with_its_schema_is_created_and_filled_there(
    database: Database,
) -> None:
    # The README's LOGIN_LOG_TABLE takes schema.table too: beside a table of the
    # same name in public, which must stay as it is.
    schema = f"{database.table}_audit"
    database.cleanup.append(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    await database.execute(f"CREATE SCHEMA {schema}")
    await database.create_table()
    in_schema = dataclasses.replace(database, table=f"{schema}.{database.table}")
    async with create_app(in_schema.config()).test_app() as test_app:
        assert await login(test_app.test_client(), "query", "in a schema") == 200
        [row] = await in_schema.wait_for_rows(1)
    assert row["username"] == "in a schema"
    assert await database.rows() == []


async def test_several_stores_opening_at_once_on_a_missing_table_all_open(
    database: Database,
) -> None:
    stores = [PostgresStore(database.url, table=database.table) for _ in range(8)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
    finally:
        await asyncio.gather(*(store.close() for store in stores))
    assert await database.rows() == []


async def test_a_role_that_may_only_insert_works_on_an_existing_table(database: Database) -> None:
    await database.create_table()
    writer_url = await database.insert_only_role()
    app = create_app(database.config(LOGIN_LOG_DATABASE_URL=writer_url))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for name in ("first", "second"):
            assert await login(client, "form", name) == 200
        rows = await database.wait_for_rows(2)
    assert sorted(row["username"] for row in rows) == ["first", "second"]
    async with connected(writer_url) as connection:  # it is really insert-only
        for statement in ("SELECT * FROM {}", "DELETE FROM {}", "UPDATE {} SET host = 'x'"):
            with pytest.raises(Exception, match="permission denied"):
                await connection.execute(statement.format(database.table))


async def test_a_missing_table_and_a_role_that_may_not_create_it_are_refused(
    database: Database,
) -> None:
    await database.create_table()
    writer_url = await database.insert_only_role()
    app = create_app(database.config(LOGIN_LOG_DATABASE_URL=writer_url, LOGIN_LOG_TABLE="absent"))
    with pytest.raises(LifespanError) as error:
        async with app.test_app():
            pass
    message = str(error.value)
    assert "the table absent: it does not exist, and this role may not create it" in message
    assert password_of(writer_url) not in message


async def test_a_table_of_another_shape_is_refused_saying_what_differs(
    database: Database,
) -> None:
    await database.execute(
        f"CREATE TABLE {database.table} (id uuid, username varchar(64), logged_in_at timestamptz,"
        " host text, tenant int NOT NULL)"
    )
    with pytest.raises(LifespanError) as error:
        async with create_app(database.config()).test_app():
            pass
    message = str(error.value)
    assert f"the table {database.table}: it does not fit: " in message
    for difference in (
        "column username is character varying(64), not text",
        "column ip is missing",
        "column tenant is NOT NULL without a default",
        "no primary key or unique index on id: a resent batch would be doubled",
    ):
        assert difference in message


COLUMNS = "id uuid PRIMARY KEY, username text NOT NULL, logged_in_at timestamptz NOT NULL, "
BY_TIME = "(id uuid, username text, logged_in_at timestamptz, ip inet, host text, "


@pytest.mark.parametrize(
    ("definition", "difference"),
    [
        # A crash of PostgreSQL empties an unlogged table: every committed login gone.
        (
            f"CREATE UNLOGGED TABLE {{table}} ({COLUMNS} ip inet, host text)",
            "it is UNLOGGED: a crash of PostgreSQL empties it",
        ),
        (
            f"CREATE TABLE {{table}} {BY_TIME} PRIMARY KEY (id, logged_in_at)) "
            "PARTITION BY RANGE (logged_in_at); "
            "CREATE UNLOGGED TABLE {table}_any PARTITION OF {table} DEFAULT",
            "partition {table}_any is UNLOGGED: a crash of PostgreSQL empties it",
        ),
        # ON CONFLICT DO NOTHING, with no conflict target, skips a row that any
        # unique index or exclusion constraint refuses: alice's second login here.
        (
            f"CREATE TABLE {{table}} ({COLUMNS} ip inet, host text, UNIQUE (username, host))",
            "unique index {table}_username_host_key (btree (username, host)) could skip a new "
            "login or store a resent one twice",
        ),
        (
            f"CREATE TABLE {{table}} ({COLUMNS} ip inet, host text, "
            "EXCLUDE USING btree (username WITH =))",
            "exclusion constraint {table}_username_excl (btree (username)) could skip",
        ),
        # Unique on id and ip: a resend whose ip is NULL is no conflict, so it is stored twice.
        (
            f"CREATE TABLE {{table}} {BY_TIME} UNIQUE (id, ip))",
            "unique index {table}_id_ip_key (btree (id, ip)) could skip",
        ),
        # A login whose address is unknown would be answered 200, then set aside.
        (
            f"CREATE TABLE {{table}} ({COLUMNS} ip inet NOT NULL, host text)",
            "column ip is NOT NULL: a login whose address is unknown could not be stored",
        ),
        # NOT NULL by its type: no insert could succeed.
        (
            "CREATE DOMAIN {table}_tenant AS int NOT NULL; "
            f"CREATE TABLE {{table}} ({COLUMNS} ip inet, host text, tenant {{table}}_tenant)",
            "column tenant is NOT NULL without a default",
        ),
    ],
    ids=[
        "unlogged",
        "unlogged-partition",
        "unique-username",
        "exclusion",
        "unique-id-ip",
        "ip-not-null",
        "not-null-domain",
    ],
)
async def test_a_table_that_could_lose_or_refuse_acknowledged_logins_is_refused(
    database: Database, definition: str, difference: str
) -> None:
    database.cleanup.append(f"DROP DOMAIN IF EXISTS {database.table}_tenant CASCADE")
    await database.execute(definition.format(table=database.table))
    with pytest.raises(LifespanError) as error:
        async with create_app(database.config()).test_app():
            pass
    assert f"the table {database.table}: it does not fit: " in str(error.value)
    assert difference.format(table=database.table) in str(error.value)


async def test_a_table_partitioned_by_time_with_a_key_on_id_and_time_is_used(
    database: Database,
) -> None:
    # A partitioned table's unique keys must hold its partition key: (id, logged_in_at)
    # tells a resend as well as (id), since a resend repeats the time.
    await database.execute(
        f"CREATE TABLE {database.table} {BY_TIME} PRIMARY KEY (id, logged_in_at)) "
        f"PARTITION BY RANGE (logged_in_at); "
        f"CREATE TABLE {database.table}_any PARTITION OF {database.table} DEFAULT"
    )
    async with create_app(database.config()).test_app() as test_app:
        assert await login(test_app.test_client(), "query", "partitioned") == 200
        [row] = await database.wait_for_rows(1)
    assert row["username"] == "partitioned"


async def test_a_table_with_nullable_columns_defaults_checks_and_plain_indexes_is_used(
    database: Database,
) -> None:
    # What docs/postgres.md says a DBA may add: none of it can skip or double a login.
    await database.execute(
        f"CREATE TABLE {database.table} ({COLUMNS} ip inet, host text, note text, "
        "tenant int NOT NULL DEFAULT 0, CHECK (username <> '')); "
        f"CREATE INDEX ON {database.table} (host, logged_in_at)"
    )
    async with create_app(database.config()).test_app() as test_app:
        assert await login(test_app.test_client(), "query", "extended") == 200
        [row] = await database.wait_for_rows(1)
    assert (row["username"], row["note"], row["tenant"]) == ("extended", None, 0)


async def test_a_database_not_in_utf8_is_refused(throwaway_database: Database) -> None:
    # 张三 would be answered 200, then set aside: LATIN1 cannot hold it.
    database = throwaway_database
    name = f"{database.table}_latin1"
    await database.execute(
        f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    )
    try:
        url = changed_url(database.url, database=name)
        with pytest.raises(LifespanError) as error:
            async with create_app(database.config(LOGIN_LOG_DATABASE_URL=url)).test_app():
                pass
    finally:
        await database.execute(f"DROP DATABASE {name}")
    assert f"/{name}: its encoding is LATIN1, not UTF8" in str(error.value)


@pytest.mark.parametrize("fault", ["unreachable", "wrong password", "no such database"])
async def test_a_database_that_cannot_be_used_is_refused_naming_host_database_and_reason(
    database: Database, fault: str
) -> None:
    if fault == "unreachable":
        url = changed_url(database.url, port=free_port())
        reason = "ConnectionRefusedError"
    elif fault == "wrong password":
        url = changed_url(database.url, password="Wrong-Pa55word")
        reason = "InvalidPasswordError: password authentication failed"
    else:
        url = changed_url(database.url, database="no_such_db")
        reason = 'InvalidCatalogNameError: database "no_such_db" does not exist'
    app = create_app(database.config(LOGIN_LOG_DATABASE_URL=url))
    with pytest.raises(LifespanError) as error:
        async with app.test_app():
            pass
    message = str(error.value)
    assert "cannot use the login log database " in message
    assert reason in message
    host, database_name = url.split("@")[1].split("/")
    assert f"@{host}/{database_name}" in message
    assert password_of(url) not in message


# Passwords with an unencoded '@' or '[': asyncpg ends the password at the
# first '@', Python's urlsplit at the last, and urlsplit takes '[' for IPv6.
TWO_WAYS = "LOGIN_LOG_DATABASE_URL has an '@', '[' or ']' in its user name or password"


@pytest.mark.parametrize(
    ("userinfo", "rest", "message"),
    [
        ("w1:p@ss:Sekr3tPw", "127.0.0.1:{port}/postgres", TWO_WAYS),
        ("w1:Se@kr3tPw", "127.0.0.1:{port}/postgres", TWO_WAYS),
        ("w1:Sekr3t[Pw", "127.0.0.1:{port}/postgres", TWO_WAYS),
        # One host for urlsplit, a list of two for asyncpg.
        ("w1:Sekr3tPw", "db1,db2:{port}/postgres", "LOGIN_LOG_DATABASE_URL must name one host"),
        # Read by urlsplit, refused by asyncpg's strict parsing, quoting it.
        ("w1:Sekr3tPw", "127.0.0.1:{port}/postgres?Sekr3t", "has a query that is not name=value"),
    ],
)
def test_a_url_read_two_ways_is_refused_naming_the_key_not_the_url(
    userinfo: str, rest: str, message: str
) -> None:
    url = f"postgresql://{userinfo}@{rest.format(port=free_port())}"
    with pytest.raises(ConfigError) as error:
        create_app({"LOGIN_LOG_DATABASE_URL": url})
    assert message in str(error.value)
    assert "Sekr3t" not in str(error.value) and "kr3t" not in str(error.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://w1:p@ss:Sekr3tPw@127.0.0.1:{port}/postgres",  # int('Sekr3tPw@127…')
        "postgresql://w1:Sekr3t[Pw@127.0.0.1:{port}/postgres",  # "Invalid IPv6 URL"
        "postgresql://w1:pw@127.0.0.1:{port}/postgres?Sekr3tPw",  # "bad query field: …"
    ],
)
async def test_the_store_tells_no_url_text_when_asyncpg_cannot_read_it(url: str) -> None:
    store = PostgresStore(url.format(port=free_port()))
    with pytest.raises(DatabaseError) as error:
        await store.open()
    shown = "".join(traceback.format_exception(error.value)) + str(error.value.strerror)
    assert "cannot use the login log database " in shown
    assert "Sekr3t" not in shown and "kr3t" not in shown


async def test_a_data_error_sets_that_row_aside_and_stores_the_rest(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await database.create_table()
    await database.execute(
        f"ALTER TABLE {database.table} ADD CHECK (username <> 'refused\nby the table')"
    )
    await refuse_in_trigger(database, "refused by a trigger")
    store = PostgresStore(database.url, table=database.table)
    await store.open()
    now = datetime.now(UTC)
    names = [f"ok-{i}" for i in range(7)]
    records = [LoginRecord(name, now, "192.0.2.1") for name in names]
    bad = [
        LoginRecord("refused\nby the table", now, "192.0.2.1"),  # the table's CHECK
        LoginRecord("refused by a trigger", now, "192.0.2.1"),  # RAISE EXCEPTION
        LoginRecord("not-an-address", now, "<local>"),  # not an inet
    ]
    try:
        batch = store.prepare([*records[:3], bad[0], *records[3:5], bad[1], *records[5:], bad[2]])
        set_aside = await store.write(batch)
    finally:
        await store.close()
    assert set_aside == bad
    assert sorted(row["username"] for row in await database.rows()) == names
    # Each reason on one line: the server's message may quote the username.
    refusals = [r.getMessage() for r in caplog.records if "refuses a record" in r.getMessage()]
    assert len(refusals) == 3 and all("\n" not in message for message in refusals)
    assert "CheckViolationError" in refusals[0] and "RaiseError" in refusals[1]
    assert "DataError" in refusals[2]


async def refuse_in_trigger(database: Database, refused: str) -> None:
    """A trigger that raises (SQLSTATE P0001) for the username ``refused``."""
    function = f"{database.table}_refuse"
    database.cleanup.append(f"DROP FUNCTION IF EXISTS {function}() CASCADE")
    await database.execute(
        f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.username = '{refused}' THEN RAISE EXCEPTION 'no such login'; END IF; "
        f"RETURN NEW; END $$;"
        f"CREATE TRIGGER refuse BEFORE INSERT ON {database.table} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()"
    )


REFUSALS = {
    "check": "ALTER TABLE {table} ADD CHECK (username <> 'refused')",
    # Applies to the insert-only role, not to the table's owner: SQLSTATE 42501,
    # as "permission denied" is.
    "policy": "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; "
    "CREATE POLICY refuse ON {table} FOR INSERT WITH CHECK (username <> 'refused')",
}


@pytest.mark.parametrize("durable", [False, True], ids=["default", "durable"])
@pytest.mark.parametrize("refusal", ["check", "trigger", "policy"])
async def test_a_login_the_table_refuses_is_set_aside_and_counted(
    database: Database, caplog: pytest.LogCaptureFixture, refusal: str, durable: bool
) -> None:
    await database.create_table()
    if refusal == "trigger":
        await refuse_in_trigger(database, "refused")
    else:
        await database.execute(REFUSALS[refusal].format(table=database.table))
    writer_url = await database.insert_only_role()
    app = create_app(database.config(LOGIN_LOG_DATABASE_URL=writer_url, LOGIN_LOG_DURABLE=durable))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        statuses = [await login(client, "query", name) for name in ("before", "refused", "after")]
        await database.wait_for_rows(2)
        health = await (await client.get("/healthz")).get_json()
        metrics = await (await client.get("/metrics")).get_data(as_text=True)
    assert statuses == [200, 503 if durable else 200, 200]
    assert sorted(row["username"] for row in await database.rows()) == ["after", "before"]
    assert health["set_aside"] == 1
    assert 'quart_app_login_records_set_aside_total{app="quart_app.app"} 1.0' in metrics
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("record set aside" in line and "用户名:refused," in line for line in logged)


async def test_durable_answers_only_after_the_commit(database: Database) -> None:
    # A lock held by another session keeps the INSERT from committing: the
    # durable login must wait for it, the default one need not.
    await database.create_table()
    for durable in (False, True):
        app = create_app(database.config(LOGIN_LOG_DURABLE=durable))
        async with app.test_app() as test_app, connected(database.url) as locker:
            client = test_app.test_client()
            name = f"durable-{durable}"
            async with locker.transaction():
                await locker.execute(f"LOCK TABLE {database.table} IN EXCLUSIVE MODE")
                answer = asyncio.create_task(login(client, "query", name))
                await asyncio.sleep(0.5)
                answered_while_locked = answer.done()
                assert [row["username"] for row in await database.rows()].count(name) == 0
            status = await answer
            # Read at once: in durable mode the row must be there when the answer is.
            stored = [row["username"] for row in await database.rows()].count(name)
        assert status == 200
        if durable:
            assert (answered_while_locked, stored) == (False, 1)
        else:
            assert answered_while_locked
