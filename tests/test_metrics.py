"""/metrics: Prometheus figures of one app, and of every worker of a real server."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from quart_app.metrics import (
    DEFAULT_APP,
    REFUSAL_REASONS,
    Ledger,
    Metrics,
    ledger_file_name,
    write_ledger,
)
from quart_app.processes import alive
from quart_app.records import LoginRecord
from quart_app.serving import METRICS_DIR_PREFIX
from quart_app.stores.file import FileStore
from quart_app.writer import LogWriter

from helpers.http1 import exchange
from helpers.http2 import h2_request
from helpers.logs import wait_for_records
from helpers.server import ROOT, Server, run_server, send_logins
from helpers.stores import ControlledStore, store_of, writer_of
from helpers.waiting import until


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


APP = "quart_app.app"
"""create_app()'s app label: Quart names an app after the module that builds it."""


def value(scrape: dict, name: str, **labels: str) -> float:
    """The sample of ``name`` with ``labels``, of the app ``APP`` unless ``app`` is given."""
    return scrape[(name, tuple(sorted({"app": APP, **labels}.items())))]


def apps_of(scrape: dict) -> set[str]:
    """The app labels of a scrape's series (every series has one)."""
    return {dict(labels)["app"] for _, labels in scrape}


def probes_table_rows() -> list[list[str]]:
    """The cells of each row of docs/probes.md's tables, the header and rule rows left out."""
    rows = []
    for line in (ROOT / "docs" / "probes.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith("`"):
            rows.append(cells)
    return rows


async def test_every_metric_and_refusal_reason_the_docs_list_is_scraped(app, client) -> None:
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
    assert apps_of(samples(scrape)) == {app.name}  # every series, under its app's name


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
        await until(lambda: store.failures >= 2, "two failed writes")
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


def unaccounted(scrape: dict, app: str = APP) -> float:
    """What an alert subtracts: logins taken and neither written, pending, set aside nor
    given up. Never negative: otherwise more was written than taken."""
    return (
        value(scrape, "quart_app_logins_taken_total", app=app)
        - value(scrape, "quart_app_login_records_written_total", app=app)
        - value(scrape, "quart_app_login_records_pending", app=app)
        - value(scrape, "quart_app_login_records_set_aside_total", app=app)
        - value(scrape, "quart_app_login_records_unconfirmed_total", app=app)
    )


async def test_two_workers_under_load_publish_figures_that_add_up_on_every_scrape(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "login_log.txt"
    names = [f"ledger-{i}" for i in range(8000)]
    with run_server(tmp_path, {"QUART_LOGIN_LOG_PATH": str(log_path)}, workers=2) as server:
        load = asyncio.create_task(send_logins(server.url, names, concurrency=64))
        scrapes = []
        async with asyncio.timeout(120):  # the load's own requests time out sooner
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


async def test_two_apps_in_one_process_each_scrape_their_own_figures(tmp_path: Path) -> None:
    writers = {
        app: LogWriter(FileStore(str(tmp_path / f"{app}.txt")), metrics=Metrics(app))
        for app in ("shop", "admin")
    }
    for writer in writers.values():
        await writer.start()
    try:
        for i, app in enumerate(["shop"] * 3 + ["admin"]):
            await writers[app].submit(LoginRecord(f"{app}{i}", datetime.now(UTC), "192.0.2.1"))
        writers["admin"].metrics.logins_refused.labels("too_large").inc()
        writers["shop"].metrics.client_address_unknown.inc()
    finally:
        for writer in writers.values():
            assert await writer.stop()
    shop, admin = (samples(writers[app].metrics.exposition().decode()) for app in writers)
    assert (apps_of(shop), apps_of(admin)) == ({"shop"}, {"admin"})
    for scrape, app, logins in ((shop, "shop", 3), (admin, "admin", 1)):
        assert value(scrape, "quart_app_logins_taken_total", app=app) == logins
        assert value(scrape, "quart_app_login_records_written_total", app=app) == logins
        assert value(scrape, "quart_app_login_records_pending", app=app) == 0
        assert value(scrape, "quart_app_login_batch_records_sum", app=app) == logins
    assert value(admin, "quart_app_logins_refused_total", app="admin", reason="too_large") == 1
    assert value(shop, "quart_app_logins_refused_total", app="shop", reason="too_large") == 0
    assert value(shop, "quart_app_login_client_address_unknown_total", app="shop") == 1
    assert value(admin, "quart_app_login_client_address_unknown_total", app="admin") == 0


def test_metrics_built_alone_have_the_default_label_and_an_empty_one_is_refused() -> None:
    assert apps_of(samples(Metrics().exposition().decode())) == {DEFAULT_APP}
    with pytest.raises(ValueError, match="app label"):
        Metrics("")


def test_ledger_file_names_are_plain_and_distinct_for_any_app_name() -> None:
    apps = ["quart_app.app", "../../etc/passwd", "a b/ü%2F", "a+b", "x" * 1000, "x" * 999 + "y"]
    names = [ledger_file_name(app, 4242) for app in apps]
    assert ledger_file_name("quart_app.app", 4242) == "ledger_4242_quart_app.app.json"
    assert len(set(names)) == len(names)
    for name in names:
        assert re.fullmatch(r"ledger_4242_[A-Za-z0-9_.~%+-]+\.json", name), name
        assert len(name) < 200  # and its ".tmp" too, under the 255 bytes of a file name


def a_dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait(timeout=30)
    assert not alive(child.pid)
    return child.pid


def test_a_shared_directory_sums_each_apps_workers_and_keeps_apps_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two apps in this process and in another live worker, and one dead worker:
    # prometheus_client's files and the ledgers of every app in one directory.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    shop, odd = "shop", "admin ü/../%2F+x"  # any character may be in an app's name
    worker, dead = os.getppid(), a_dead_pid()

    def apps_in(pid: int) -> dict[str, Metrics]:
        # prometheus_client picks its value class at import: multiprocess mode, as in a worker.
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: pid))
        return {app: Metrics(app) for app in (shop, odd)}

    try:
        theirs, ours = apps_in(worker), apps_in(os.getpid())
        ours[shop].ledger = lambda: Ledger(taken=10, written=7, pending=3, oldest_pending_age=0.5)
        ours[odd].ledger = lambda: Ledger(taken=1, written=1)
        write_ledger(str(tmp_path), shop, worker, Ledger(5, 4, 1, oldest_pending_age=2.0))
        write_ledger(str(tmp_path), odd, worker, Ledger(100, 90, 10, oldest_pending_age=9.0))
        write_ledger(str(tmp_path), shop, dead, Ledger(2, 0, 2, oldest_pending_age=60.0))
        for metrics in ours.values():
            metrics.publish()  # read by the other workers only: a scrape reads its own live
        for metrics in (ours[shop], theirs[shop], theirs[shop]):
            metrics.write_errors.inc()
            metrics.batch_records.observe(4)
        for metrics in (ours[odd], theirs[odd]):
            metrics.logins_refused.labels("log_full").inc()
        scrapes = {app: samples(metrics.exposition().decode()) for app, metrics in ours.items()}
    finally:
        values.close_all_multiprocess_files()

    assert {app: apps_of(scrape) for app, scrape in scrapes.items()} == {shop: {shop}, odd: {odd}}
    expected = {
        shop: {  # the dead worker's counters count; its pending records no longer do
            "quart_app_logins_taken_total": 10 + 5 + 2,
            "quart_app_login_records_written_total": 7 + 4 + 0,
            "quart_app_login_records_pending": 3 + 1,
            "quart_app_login_oldest_pending_age_seconds": 2.0,
            "quart_app_login_write_errors_total": 3,
            "quart_app_login_batch_records_count": 3,
        },
        odd: {
            "quart_app_logins_taken_total": 101,
            "quart_app_login_records_written_total": 91,
            "quart_app_login_records_pending": 10,
            "quart_app_login_oldest_pending_age_seconds": 9.0,
            "quart_app_login_write_errors_total": 0,
            "quart_app_login_batch_records_count": 0,
        },
    }
    for app, figures in expected.items():
        assert {name: value(scrapes[app], name, app=app) for name in figures} == figures
        assert unaccounted(scrapes[app], app) >= 0
    refused = "quart_app_logins_refused_total"
    assert value(scrapes[odd], refused, app=odd, reason="log_full") == 2
    assert value(scrapes[shop], refused, app=shop, reason="log_full") == 0
    # What this process published, for the other workers' scrapes.
    published = json.loads((tmp_path / ledger_file_name(odd, os.getpid())).read_text())
    assert published == {"app": odd, **Ledger(taken=1, written=1)._asdict()}
