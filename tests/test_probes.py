"""/livez, /readyz and /healthz: health that tells the truth."""

from __future__ import annotations

import asyncio
import math
import os
import re
from pathlib import Path

import aiohttp

from helpers.logs import wait_for_records
from helpers.server import ROOT, run_server, send_logins
from helpers.stores import ControlledStore, store_of, writer_of


def documented_health_fields() -> set[str]:
    """The fields docs/probes.md says a ``/healthz`` body has: the names its bullet quotes."""
    text = (ROOT / "docs" / "probes.md").read_text(encoding="utf-8")
    bullet = text[text.index("- `GET /healthz`") :].split("\n- ", 1)[0]
    return set(re.findall(r"`([a-z_]+)`", bullet))


async def test_all_probes_are_green_when_all_is_well(client, log_path: Path) -> None:
    for path in ("/livez", "/readyz"):
        response = await client.get(path)
        assert (response.status_code, await response.get_data(as_text=True)) == (200, "ok")
    health = await client.get("/healthz")
    body = await health.get_json()
    assert health.status_code == 200
    # A dashboard reads these by name: every one the docs list, and no other.
    assert set(body) == documented_health_fields()
    assert body["status"] == "ok" and body["reasons"] == []
    assert body["state"] == "running" and body["store"] == "file"
    assert body["pending"] == 0 and body["oldest_pending_age_s"] == 0
    assert str(log_path) not in await health.get_data(as_text=True)


async def test_a_stalled_disk_turns_readiness_red_not_liveness(make_app, log_path: Path) -> None:
    app = make_app(store=ControlledStore, LOGIN_LOG_STALL_SECONDS=0.3)
    store = store_of(app)
    store.gate.clear()
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/login/?username=stuck")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200  # not stalled yet
        await asyncio.sleep(0.4)
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "a record has waited over 0.3 s" in await ready.get_data(as_text=True)
        body = await (await client.get("/healthz")).get_json()
        assert body["status"] == "unavailable" and body["oldest_pending_age_s"] >= 0.3
        assert (await client.get("/livez")).status_code == 200
        store.gate.set()
        await wait_for_records(log_path, 1)
        assert (await client.get("/readyz")).status_code == 200


async def test_a_queue_above_the_high_water_mark_is_not_ready(make_app, log_path: Path) -> None:
    app = make_app(store=ControlledStore, LOGIN_LOG_MAX_PENDING=10, LOGIN_LOG_HIGH_WATER=0.5)
    writer_of(app).lag_bound = math.inf  # the queue's bound alone, however slow the machine
    store = store_of(app)
    store.gate.clear()
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for i in range(5):
            assert (await client.get(f"/login/?username=h{i}")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200  # 5 of 10: at the mark
        assert (await client.get("/login/?username=h5")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "over 50% of the queue is full" in await ready.get_data(as_text=True)
        store.gate.set()


async def test_a_draining_app_is_not_ready(make_app) -> None:
    app = make_app(store=ControlledStore)
    store = store_of(app)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        store.gate.clear()
        assert (await client.get("/login/?username=last")).status_code == 200
        stopping = asyncio.create_task(writer_of(app).stop())
        await asyncio.sleep(0.05)
        ready = await client.get("/readyz")
        assert (ready.status_code, await ready.get_data(as_text=True)) == (
            503,
            "the login log is draining",
        )
        assert (await client.get("/livez")).status_code == 200
        assert (await client.get("/login/?username=late")).status_code == 503
        store.gate.set()
        assert await stopping


async def test_an_app_before_its_start_and_after_its_stop_is_not_ready(app) -> None:
    # docs/probes.md: not ready while starting or stopping, when the writer takes no record.
    async def readiness() -> tuple[int, str]:
        ready = await app.test_client().get("/readyz")
        return ready.status_code, await ready.get_data(as_text=True)

    assert await readiness() == (503, "the login log is stopped")
    async with app.test_app() as test_app:
        assert (await test_app.test_client().get("/readyz")).status_code == 200
    assert await readiness() == (503, "the login log is stopped")


async def test_a_real_server_on_a_hung_disk_says_it_is_not_ready(tmp_path: Path) -> None:
    # A FIFO nobody reads: writes hang once its 64 KiB are full.
    log_path = tmp_path / "login_log.txt"
    os.mkfifo(log_path)
    reader = os.open(log_path, os.O_RDONLY | os.O_NONBLOCK)
    env = {"QUART_LOGIN_LOG_PATH": str(log_path), "QUART_LOGIN_LOG_STALL_SECONDS": "0.5"}
    try:
        with run_server(tmp_path, env) as server:
            names = [f"hang-{i:04d}-" + "x" * 240 for i in range(400)]
            await send_logins(server.url, names, concurrency=50)
            async with aiohttp.ClientSession() as session:
                async with asyncio.timeout(10):  # until the stall shows
                    while True:
                        async with session.get(server.url + "/healthz") as response:
                            status, body = response.status, await response.json()
                        if status != 200:
                            break
                        await asyncio.sleep(0.05)
                assert status == 503, body
                assert body["pending"] > 0 and body["oldest_pending_age_s"] > 0.5
                async with session.get(server.url + "/readyz") as response:
                    assert response.status == 503
                async with session.get(server.url + "/livez") as response:
                    assert response.status == 200
    finally:
        os.close(reader)
