"""hypercorn's HTTP/2 protocol, made to answer every request it lets the app take.

hypercorn 0.18's ``H2Protocol`` (``hypercorn/protocol/h2.py``) drops requests:

* Past ``keep_alive_max_requests`` streams on a connection (1,000: its defence
  against rapid reset, CVE-2023-44487) it sends GOAWAY at once, naming every
  stream received as processed, and can send nothing more: the streams in
  flight run on, their logins are logged, their answers are lost. Here the
  connection retires instead: the streams past the limit are refused with
  RST_STREAM REFUSED_STREAM (RFC 9113 §8.7: not processed, safe to retry),
  the streams taken are answered, and GOAWAY follows once they are, naming the
  last stream taken. A graceful stop refuses new streams the same way (hypercorn
  resets them with NO_ERROR, which tells the client nothing).
* A CONNECT request (no ``:path``) raises ``UnboundLocalError``, a ``:path`` or
  ``:method`` that is not ASCII ``UnicodeDecodeError``, before the app runs: no
  answer, a traceback. Here they are answered 400 with the reason, and so is a
  ``:method`` with lower-case letters, which hypercorn would upper-case.
* On a stop, at ``graceful_timeout``, hypercorn cancels the connection's
  tasks, its sender first: an answer still waiting for it (for the client's
  flow-control window) waited for ever, and the stop with it, before the drain
  began. And once the last stream closed, hypercorn restarted the idle timer in
  that task group being cancelled: ``RuntimeError``, a traceback per connection,
  exit status 1. A connection whose streams were all refused in the stop, or
  that never opened one, stayed open until ``graceful_timeout``, the latter
  past ``keep_alive_timeout`` too. Here a sender that ends releases what waits
  for it; in a stop, a connection closes once its last stream closes or it
  refuses streams with none running (GOAWAY naming the last stream taken), as
  hypercorn's HTTP/1.1 protocol closes an idle one; and a connection that has
  not opened a stream yet counts as idle.
* DATA for a stream already answered (a login refused 413 while its body still
  comes) raises ``KeyError``, which ends the connection and every other stream
  in flight on it. Here the data is acknowledged and the stream reset with
  NO_ERROR, which tells the client it may stop sending (RFC 9113 §8.1).

hypercorn has no hook for any of this, hence a subclass of its protocol class,
put in its place in ``hypercorn.protocol``, which builds one per connection.
It relies on private members of ``H2Protocol``: tests/test_hypercorn_pins.py
fails when the hypercorn code they come from changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import h2.errors
import h2.events
import h2.exceptions
import hypercorn.protocol as protocol
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.h2 import H2Protocol

_TEXT = (b"content-type", b"text/plain; charset=utf-8")


def refusal(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why hypercorn cannot take a request with these HTTP/2 headers, or None if it can."""
    pseudo = {name: value for name, value in headers if name[:1] == b":"}
    method = pseudo[b":method"]
    if not method.isascii():
        return "the method is not ASCII"
    if method.upper() != method:  # hypercorn upper-cases it: "get" would be taken as GET
        return "the method has lower-case letters: methods are case-sensitive"
    if (path := pseudo.get(b":path")) is None:  # h2 lets only CONNECT through without one
        return "CONNECT is not supported: this server is not a proxy"
    if not path.partition(b"?")[0].isascii():  # the query is the app's to check
        return "the path is not ASCII: percent-encode it"
    return None


class AnsweringH2Protocol(H2Protocol):
    """hypercorn's HTTP/2 protocol that answers or refuses every stream it is sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streams_counted = 0  # taken or answered here, against keep_alive_max_requests
        self.last_stream_taken = 0  # the highest stream id handed to the app
        self.retiring = False
        self.goaway_sent = False

    async def initiate(
        self, headers: list[tuple[bytes, bytes]] | None = None, settings: bytes | None = None
    ) -> None:
        """Start the connection, as hypercorn does; one without a stream yet counts as idle."""
        await super().initiate(headers, settings)
        if self.idle:
            # hypercorn's HTTP/1.1 side stopped the idle timer when it met the
            # HTTP/2 preface, and nothing restarted it: a connection that never
            # opened a stream was held past keep_alive_timeout and a stop's start.
            await self.send(Updated(idle=True))

    async def handle(self, event: Event) -> None:
        """Take what the connection brings, as hypercorn does, until this connection's GOAWAY."""
        # After it, h2 would answer a stream the client opened meanwhile with a
        # second GOAWAY naming that stream: as if it had been processed.
        if not (self.goaway_sent and isinstance(event, RawData)):
            await super().handle(event)

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        # One at a time: whether a stream is still open is known only once
        # hypercorn has handled the events before it (and its app may have answered).
        for event in events:
            if isinstance(event, h2.events.RequestReceived) and not self._take(event):
                continue
            if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                self._discard(event)
                continue
            await super()._handle_events([event])
        await self._flush()
        await self._goaway_when_done()
        await self._close_when_stopped_and_idle()

    async def send_task(self) -> None:
        """Send the streams' data, as hypercorn does; once it ends, no stream waits for it."""
        try:
            await super().send_task()
        finally:
            self.closed = True
            for buffer in list(self.stream_buffers.values()):
                await buffer.close()  # wakes a stream waiting for its data to go out

    async def stream_send(self, event: StreamEvent) -> None:
        """Send what a stream gives; GOAWAY once a retiring connection has answered all."""
        if isinstance(event, StreamClosed) and self.context.terminated.is_set():
            await self._close_stream(event.stream_id)
            await self._close_when_stopped_and_idle()
            return
        await super().stream_send(event)
        if isinstance(event, StreamClosed):
            await self._goaway_when_done()

    async def _close_when_stopped_and_idle(self) -> None:
        # In a stop, the last stream closed, or streams refused on a connection
        # with none running: close it, as hypercorn's HTTP/1.1 protocol closes
        # an idle connection, not at graceful_timeout.
        if self.context.terminated.is_set() and self.idle and not self.closed:
            self.closed = True
            self.connection.close_connection(last_stream_id=self.last_stream_taken)
            await self._flush()
            await self.send(Closed())

    def _take(self, event: h2.events.RequestReceived) -> bool:
        # True: hypercorn may create the stream; False: refused or answered here.
        stream_id = event.stream_id
        if self.retiring or self.context.terminated.is_set():
            self.connection.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return False
        self.streams_counted += 1
        # Equal, never above: hypercorn's own check (">") never closes the connection.
        self.retiring = self.streams_counted >= self.config.keep_alive_max_requests
        if (reason := refusal(event.headers)) is not None:
            self._answer(stream_id, 400, reason, request_ended=event.stream_ended is not None)
            return False
        self.last_stream_taken = stream_id
        return True

    def _answer(self, stream_id: int, status: int, reason: str, *, request_ended: bool) -> None:
        body = reason.encode()
        if self.connection.local_flow_control_window(stream_id) < len(body):
            body = b""  # a client that takes no data gets the status alone
        headers = [(b":status", b"%d" % status), _TEXT, (b"content-length", b"%d" % len(body))]
        self.connection.send_headers(stream_id, headers + self.config.response_headers("h2"))
        self.connection.send_data(stream_id, body, end_stream=True)
        if not request_ended:
            self._stop_sending(stream_id)

    def _discard(self, event: h2.events.DataReceived) -> None:
        # Data of a stream refused, answered here, or answered by the app.
        self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        if event.stream_id not in self.stream_buffers:  # else the app's answer is still going out
            self._stop_sending(event.stream_id)

    def _stop_sending(self, stream_id: int) -> None:
        # Closed already (reset, or ended by both sides): nothing to stop.
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.connection.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)

    async def _goaway_when_done(self) -> None:
        # On a stop hypercorn sends its own GOAWAY once the streams are done;
        # a connection closed already has no one to tell.
        if (
            self.retiring
            and not self.goaway_sent
            and not self.streams
            and not self.closed
            and not self.context.terminated.is_set()
        ):
            self.goaway_sent = True
            self.connection.close_connection(last_stream_id=self.last_stream_taken)
            await self._flush()


def answer_every_http2_stream() -> None:
    """Make hypercorn serve each HTTP/2 connection with :class:`AnsweringH2Protocol`."""
    protocol.H2Protocol = AnsweringH2Protocol  # type: ignore[misc]
