"""The HTTP client: one pooled aiohttp session that sends each request once.

aiohttp resends an idempotent request (a GET) once when its connection drops
before the answer (RFC 9112, 9.3.1.1), and has no public switch for it. The
server may well have taken the first one, so a resend can be a second login for
one request of the tool, and the verdict would be about the client. A client
middleware, which aiohttp calls once per attempt, lets the first attempt
through and fails any further one with the first attempt's error.
"""

from __future__ import annotations

from contextvars import ContextVar

import aiohttp


class Attempts:
    """One worker's view of its current request; set it with :func:`track_attempts`.

    The worker sets ``started`` to False before each request; ``refused``
    counts the resends this worker's requests were spared.
    """

    __slots__ = ("error", "refused", "started")

    def __init__(self) -> None:
        self.started = False
        self.error: BaseException | None = None
        self.refused = 0


_ATTEMPTS: ContextVar[Attempts] = ContextVar("quart_app_loadtest_attempts")


def track_attempts() -> Attempts:
    """A fresh :class:`Attempts` for the calling task's requests (each worker is a task)."""
    attempts = Attempts()
    _ATTEMPTS.set(attempts)
    return attempts


async def _send_once(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    attempts = _ATTEMPTS.get()
    if attempts.started:
        attempts.refused += 1
        raise attempts.error or aiohttp.ClientConnectionError("resend refused")
    attempts.started = True
    try:
        return await handler(request)
    except BaseException as exc:
        attempts.error = exc
        raise


def open_session(concurrency: int, timeout: float) -> aiohttp.ClientSession:
    """A session of at most ``concurrency`` connections that sends each request once.

    Only tasks that called :func:`track_attempts` may send requests with it.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=timeout),
        middlewares=(_send_once,),
        # Neither is wanted here, and both cost time on every response.
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )
