"""/metrics: Prometheus figures of one app, and of every worker of a real server."""

from __future__ import annotations

import asyncio
import json
import math
import re
import signal
import tempfile
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from test_http1 import exchange

from quart_app.metrics import REFUSAL_REASONS
from quart_app.serving import METRICS_DIR_PREFIX

from conftest import ControlledStore, store_of, until, wait_for_records, writer_of
from server import ROOT, Server, run_server, send_logins
from test_http2 import h2_request


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape[(name, tuple(sorted(labels.items())))]


def probes_table_rows() -> list[list[str]]:
    """The cells of each row of docs/probes.md's tables, the header and rule rows left out."""
    rows = []
    for line in (ROOT / "docs" / "probes.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith("`"):
            rows.append(cells)
    return rows


async def test_every_metric_and_refusal_reason_the_docs_list_is_scraped(client) -> None:
    # Dashboards and alerts are written from the docs' tables: a name that differs
    # would read as no data, never as an error.
    documented: dict[str, str] = {}
    reasons: set[str] = set()
    for first, second, *_ in probes_table_rows():
        names = re.findall(r"`([a-z_]+)", first)
        if second in ("counter", "gauge", "histogram"):
            [name] = names
            # The text format's counter family is named without its samples' _total.
            documented[name.removesuffix("_total") if second == "counter" else name] = second
        else:
            reasons.update(names)
    scrape = await (await client.get("/metrics")).get_data(as_text=True)
    families = {
        family.name: family.type
        for family in text_string_to_metric_families(scrape)
        if family.name.startswith("quart_app_")
    }
    # prometheus_client's own series of when each counter and histogram was created.
    created = {n for n in families if n.endswith("_created") and n[: -len("_created")] in families}
    assert {name: kind for name, kind in families.items() if name not in created} == documented
    assert reasons == set(REFUSAL_REASONS)
    for reason in reasons:  # shown at 0 before the first refusal, so that a rate works
        assert value(samples(scrape), "quart_app_logins_refused_total", reason=reason) == 0


async def test_metrics_count_logins_writes_and_refusals(make_app, log_path: Path) -> None:
    app = make_app(store=ControlledStore, LOGIN_LOG_MAX_PENDING=2, LOGIN_LOG_FULL_TIMEOUT=0.1)
    writer_of(app).lag_bound = math.inf  # the queue's bound alone, however slow the machine
    store = store_of(app)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for i in range(2):
            assert (await client.get(f"/login/?username=m{i}")).status_code == 200
        await wait_for_records(log_path, 2)
        assert (await client.get("/login/")).status_code == 400
        assert (
            await client.post("/login/", data=b"x", headers={"Content-Type": "a/b"})
        ).status_code == 415
        store.gate.clear()
        # The first is taken by a write that hangs, the second waits, the third finds
        # the queue full.
        statuses = [(await client.get(f"/login/?username=f{i}")).status_code for i in range(3)]
        assert statuses == [200, 200, 503]

        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.content_type.startswith("text/plain")
        scrape = samples(await response.get_data(as_text=True))
        store.gate.set()
    assert value(scrape, "quart_app_logins_taken_total") == 4
    assert value(scrape, "quart_app_login_records_written_total") == 2
    assert value(scrape, "quart_app_logins_refused_total", reason="bad_request") == 1
    assert value(scrape, "quart_app_logins_refused_total", reason="unsupported_type") == 1
    assert value(scrape, "quart_app_logins_refused_total", reason="log_full") == 1
    assert value(scrape, "quart_app_logins_refused_total", reason="too_large") == 0
    assert value(scrape, "quart_app_login_records_pending") == 2
    assert value(scrape, "quart_app_login_oldest_pending_age_seconds") > 0
    assert value(scrape, "quart_app_login_write_errors_total") == 0
    assert value(scrape, "quart_app_login_batch_records_count") >= 1
    assert value(scrape, "quart_app_login_write_duration_seconds_count") >= 1


async def test_write_errors_and_a_failing_store_show(make_app, log_path: Path) -> None:
    import errno

    app = make_app(store=ControlledStore)
    store = store_of(app)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        store.error = OSError(errno.ENOSPC, "No space left on device")
        assert (await client.get("/login/?username=e")).status_code == 200
        while store.failures < 2:
            await asyncio.sleep(0.01)
        scrape = samples(await (await client.get("/metrics")).get_data(as_text=True))
        store.error = None
        await wait_for_records(log_path, 1)
    assert value(scrape, "quart_app_login_write_errors_total") >= 2
    assert value(scrape, "quart_app_login_records_pending") == 1


async def until_published(server: Server, logins: int, timeout: float = 10) -> None:
    """Wait until every worker of ``server``, live or gone, has published its figures since
    its last login: the ledgers they share add up to ``logins`` taken and written.

    Each worker replaces its ledger file at every publish and a file never runs ahead of
    its worker, so only once all are current do they add up.
    """
    directories = f"{METRICS_DIR_PREFIX}{server.process.pid}-*"

    def published() -> bool:
        ledgers = []
        for path in Path(tempfile.gettempdir()).glob(f"{directories}/ledger_*.json"):
            try:
                ledgers.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):  # replaced meanwhile: read them all again
                return False
        taken, written = (sum(ledger[key] for ledger in ledgers) for key in ("taken", "written"))
        return taken == written == logins and all(ledger["pending"] == 0 for ledger in ledgers)

    await until(published, f"every worker published {logins} logins written", timeout)


async def scrape_server(url: str) -> dict:
    # A new connection each time: with -w 2 any worker may answer.
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        return samples(await response.text())


async def test_every_scrape_of_two_workers_reports_them_all(tmp_path: Path) -> None:
    log_path = tmp_path / "login_log.txt"
    env = {"QUART_LOGIN_LOG_PATH": str(log_path)}
    names = [f"fleet-{i}" for i in range(1000)]
    with run_server(tmp_path, env, workers=2) as server:
        await send_logins(server.url, names)
        await wait_for_records(log_path, len(names))
        await until_published(server, len(names))
        scrapes = [await scrape_server(server.url) for _ in range(6)]
        for scrape in scrapes:
            assert value(scrape, "quart_app_logins_taken_total") == len(names)
            assert value(scrape, "quart_app_login_records_written_total") == len(names)
            assert value(scrape, "quart_app_login_records_pending") == 0

        # A reload replaces the workers: the counters carry on.
        server.process.send_signal(signal.SIGHUP)
        await asyncio.sleep(3)
        await send_logins(server.url, ["after-reload"])
        await wait_for_records(log_path, len(names) + 1)
        await until_published(server, len(names) + 1)
        scrape = await scrape_server(server.url)
        assert value(scrape, "quart_app_logins_taken_total") == len(names) + 1
        assert server.stop() == 0, server.stderr

    # A restarted server starts from zero: no file of the last one survives.
    with run_server(tmp_path, env, workers=2) as server:
        await send_logins(server.url, ["restarted"])
        await wait_for_records(log_path, len(names) + 2)
        await until_published(server, 1)
        scrape = await scrape_server(server.url)
        assert value(scrape, "quart_app_logins_taken_total") == 1
        assert server.stop() == 0


async def test_a_trusted_header_without_a_valid_address_is_counted(
    make_app, log_path: Path
) -> None:
    app = make_app(PROXY_TRUSTED_HOPS=1)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for forwarded_for in ("garbage", "203.0.113.9"):
            response = await client.get(
                "/login/?username=proxied", headers={"X-Forwarded-For": forwarded_for}
            )
            assert response.status_code == 200
        scrape = samples(await (await client.get("/metrics")).get_data(as_text=True))
        records = await wait_for_records(log_path, 2)
    assert [r.ip for r in records] == ["-", "203.0.113.9"]
    assert value(scrape, "quart_app_login_client_address_unknown_total") == 1


def unaccounted(scrape: dict) -> float:
    """What an alert subtracts: logins taken and neither written, pending, set aside nor
    given up. Never negative: otherwise more was written than taken."""
    return (
        value(scrape, "quart_app_logins_taken_total")
        - value(scrape, "quart_app_login_records_written_total")
        - value(scrape, "quart_app_login_records_pending")
        - value(scrape, "quart_app_login_records_set_aside_total")
        - value(scrape, "quart_app_login_records_unconfirmed_total")
    )


async def test_two_workers_under_load_publish_figures_that_add_up_on_every_scrape(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "login_log.txt"
    names = [f"ledger-{i}" for i in range(8000)]
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(log_path)}, workers=2) as server:
        load = asyncio.create_task(send_logins(server.url, names, concurrency=64))
        scrapes = []
        while not load.done():
            scrapes.append(await scrape_server(server.url))
            await asyncio.sleep(0.01)
        await load
        await wait_for_records(log_path, len(names))
        await until_published(server, len(names))
        scrapes.append(await scrape_server(server.url))
        assert server.stop() == 0, server.stderr
    during = [s for s in scrapes if value(s, "quart_app_logins_taken_total") < len(names)]
    assert len(during) >= 10, "too few scrapes under load to tell"
    assert [unaccounted(s) for s in scrapes if unaccounted(s) < 0] == []
    assert unaccounted(scrapes[-1]) == 0
    assert value(scrapes[-1], "quart_app_login_records_written_total") == len(names)


async def test_every_refusal_of_a_login_the_app_answers_is_counted(tmp_path: Path) -> None:
    # The guard's 400s, the 405s and Quart's 408 were answered and not counted.
    env = {"QUART_LOGIN_LOG_PATH": str(tmp_path / "login_log.txt"), "QUART_BODY_TIMEOUT": "1"}
    with run_server(tmp_path, env) as server:
        port = int(server.url.rsplit(":", 1)[1])
        # Over HTTP/2, as h11 refuses these targets before the app sees them.
        assert h2_request(port, b"/login/?username=\xff") == (
            400,
            "the query string is not valid UTF-8",
        )
        assert h2_request(port, b"?username=x") == (400, "the request target has no path")
        assert h2_request(port, b"/healthz?\xff")[0] == 400  # not a login: not counted
        assert h2_request(port, b"/login/?username=h", method=b"HEAD") == (405, "")
        put = b"PUT /login/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        status, headers, body = exchange(port, put)
        assert (status, headers["allow"], body) == (
            405,
            "GET, POST",
            "PUT does not log in: use GET or POST",
        )
        assert exchange(port, b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")[0] == 405
        slow = b"POST /login/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        slow += b'Content-Length: 30\r\n\r\n{"username": '
        status, _, body = exchange(port, slow)
        assert (status, body) == (408, "the body did not arrive within 1 s")
        scrape = await scrape_server(server.url)
    refused = {
        reason: value(scrape, "quart_app_logins_refused_total", reason=reason)
        for reason in REFUSAL_REASONS
    }
    assert refused == {
        **dict.fromkeys(REFUSAL_REASONS, 0),
        "bad_request": 1,
        "unreadable_target": 1,
        "method_not_allowed": 2,
        "timeout": 1,
    }
