"""A served process's stop: signals, the metrics directory, answers before the cancel, the exit.

hypercorn has no hooks for any of this, hence this module:
* Signals. In single-process mode hypercorn stops gracefully on SIGINT and
  SIGTERM only; SIGHUP (the terminal closing) would kill it at once, so it is
  turned into SIGTERM. With ``-w N`` the parent handles signals and a worker
  keeps the default actions, dying at once with its queued records: here a
  worker stops gracefully on SIGTERM and SIGHUP (the parent, if alive, starts
  a new one, as it does after ``max_requests``), and when its parent dies.
* The metrics directory that ``prometheus_client`` needs with several workers.
* Logins still waiting for their record when hypercorn, ``graceful_timeout``
  into a stop, cancels the requests still running: it would answer them 500,
  or not at all. They are refused (503) just before.
* The exit: when a stop could not confirm every record, the process exits
  with :data:`EXIT_UNCONFIRMED` at once, because a thread stuck in ``write(2)``
  cannot be interrupted and Python would wait for it for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from ..config import ConfigError
from ..processes import alive

EXIT_UNCONFIRMED = 3
"""Exit status of a process that stopped with login records not confirmed written."""

METRICS_DIR_PREFIX = "quart_app-metrics-"

ANSWER_MARGIN = 0.5
"""Seconds before hypercorn's graceful_timeout at which logins still waiting are refused."""

DRAIN_MARGIN = 2.0
"""Seconds hypercorn's shutdown_timeout must leave after the drain: for logging what is left."""

if TYPE_CHECKING:
    from ..writer import LogWriter

logger = logging.getLogger(__name__)


def worker_parent() -> Any:
    """The parent of this hypercorn worker process; None when hypercorn serves in-process."""
    # hypercorn starts its workers with multiprocessing's spawn method; its
    # own process (workers = 0) has no multiprocessing parent.
    return multiprocessing.parent_process()


def use_shared_metrics_directory() -> None:
    """In a hypercorn worker, set ``PROMETHEUS_MULTIPROC_DIR`` to one directory per server.

    Must run before ``prometheus_client`` is imported. Every worker of one
    server derives the same name from the parent's pid and multiprocessing
    authentication key (random per parent), so a restarted server starts
    afresh; directories of servers whose parent is gone are removed. A
    directory set by the operator is left as it is.
    """
    parent = worker_parent()
    if parent is None or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    key = hashlib.sha256(bytes(multiprocessing.current_process().authkey)).hexdigest()[:16]
    root = tempfile.gettempdir()
    _remove_directories_of_dead_servers(root)
    path = os.path.join(root, f"{METRICS_DIR_PREFIX}{parent.pid}-{key}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def _remove_directories_of_dead_servers(root: str) -> None:
    for name in os.listdir(root):
        if not name.startswith(METRICS_DIR_PREFIX):
            continue
        pid = name.removeprefix(METRICS_DIR_PREFIX).partition("-")[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def stop_gracefully_on_signals() -> None:
    """Make SIGHUP (and, in a worker, SIGTERM and the parent's death) stop gracefully.

    Call from the serving process's event loop, once it runs.
    """
    loop = asyncio.get_running_loop()
    parent = worker_parent()
    if parent is None:
        # hypercorn's own handler for SIGTERM does the graceful stop.
        loop.add_signal_handler(signal.SIGHUP, os.kill, os.getpid(), signal.SIGTERM)
        return

    def parent_gone() -> None:
        loop.remove_reader(parent.sentinel)
        logger.warning("hypercorn's parent process is gone: this worker stops")
        _stop_this_worker()

    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, _stop_this_worker)
    # The sentinel becomes readable when the parent exits, however it died.
    loop.add_reader(parent.sentinel, parent_gone)
    if not alive(parent.pid):  # gone before the reader was in place
        parent_gone()


_stopping: set[asyncio.Task[None]] = set()


def _stop_this_worker(attempt: int = 0) -> None:
    # hypercorn stops a worker gracefully when its WorkerContext's terminate
    # event is set (that is how max_requests works); the context is a local
    # of the worker_serve coroutine, the only way to reach it. It exists once
    # start-up is over: until then, look again shortly.
    loop = asyncio.get_running_loop()
    context = _worker_serve_local("context")
    if not hasattr(context, "terminate"):
        if attempt == 200:  # 10 s: hypercorn may have changed; say so once, keep trying
            logger.error("hypercorn's worker context is still missing: cannot stop yet")
        loop.call_later(0.05, _stop_this_worker, attempt + 1)
        return
    task = loop.create_task(context.terminate.set())
    _stopping.add(task)  # a reference, so the task is not collected before it runs
    task.add_done_callback(_stopping.discard)


def refuse_waiting_logins_before_cancel(writer: LogWriter) -> None:
    """On a stop, refuse (503) the logins still waiting just before hypercorn cancels them.

    Call from the serving process's event loop, during start-up.
    """
    task = asyncio.get_running_loop().create_task(_refuse_at_graceful_timeout(writer))
    _stopping.add(task)  # a reference, so the task is not collected while it waits
    task.add_done_callback(_stopping.discard)


async def _refuse_at_graceful_timeout(writer: LogWriter) -> None:
    # The worker context, whose event tells that a stop began, exists once
    # start-up is over.
    for _ in range(200):  # 10 s, then say so: hypercorn may have changed
        context = _worker_serve_local("context")
        if hasattr(context, "terminated"):
            break
        await asyncio.sleep(0.05)
    else:
        logger.error("hypercorn's worker context is missing: a stop may answer logins 500")
        return
    await context.terminated.wait()
    graceful = getattr(_worker_serve_local("config"), "graceful_timeout", 0.0)
    await asyncio.sleep(max(0.0, graceful - ANSWER_MARGIN))
    writer.refuse_waiting("the server is stopping")


def _worker_serve_local(name: str) -> Any:
    # hypercorn's command runs worker_serve as a task; Quart's app.run() awaits
    # it from hypercorn's serve(): look along each task's chain of awaits.
    for task in asyncio.all_tasks():
        coroutine = task.get_coro()
        while coroutine is not None:
            frame = getattr(coroutine, "cr_frame", None)
            if frame is not None and frame.f_code.co_name == "worker_serve":
                return frame.f_locals.get(name)
            coroutine = getattr(coroutine, "cr_await", None)
    return None


def served_by_hypercorn() -> bool:
    """Whether hypercorn serves this event loop (its command, or ``app.run()``), not a test
    client (``app.test_app()``). Call from the serving process's event loop."""
    return _worker_serve_local("config") is not None


def check_stop_bounds(drain_timeout: float) -> None:
    """Refuse to serve when hypercorn's stop bounds leave no time to answer or to drain.

    hypercorn cancels the requests still running after ``graceful_timeout``,
    which must leave time to refuse waiting logins first, and the app's
    shutdown after ``shutdown_timeout``: a drain still running then is cut
    short and its records are lost to the log. Call from the serving
    process's event loop, during start-up.
    """
    config = _worker_serve_local("config")
    if config is None:  # not served by hypercorn's worker_serve: nothing to check
        return
    graceful = _seconds(config, "graceful_timeout")
    if graceful < 2 * ANSWER_MARGIN:
        raise ConfigError(
            f"hypercorn's graceful_timeout ({graceful:g} s) must be at least "
            f"{2 * ANSWER_MARGIN:g} s: logins still waiting at a stop are answered 503 "
            f"{ANSWER_MARGIN:g} s before it ends, or hypercorn cancels them unanswered"
        )
    bound = _seconds(config, "shutdown_timeout")
    if drain_timeout + DRAIN_MARGIN > bound:
        raise ConfigError(
            f"LOGIN_LOG_DRAIN_TIMEOUT ({drain_timeout:g} s) must stay at least "
            f"{DRAIN_MARGIN:g} s below hypercorn's shutdown_timeout ({bound:g} s), "
            "or hypercorn cancels the drain"
        )


def _seconds(config: Any, name: str) -> float:
    # hypercorn.toml takes any value: a string or nan there breaks the stop itself.
    value = getattr(config, name, None)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"hypercorn's {name} must be a finite number of seconds, not {value!r}")
    return float(value)


def finish(unconfirmed: int) -> None:
    """The last step of a served process's stop.

    Removes this process's live gauges from the shared metrics directory, and
    exits at once with :data:`EXIT_UNCONFIRMED` when ``unconfirmed`` records
    were given up.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
    if unconfirmed:
        logger.error(
            "login log: %d records not confirmed written (logged above); exit status %d",
            unconfirmed,
            EXIT_UNCONFIRMED,
        )
        logging.shutdown()
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os._exit(EXIT_UNCONFIRMED)
