"""The explorer's HTTP/1.1 connections: uvicorn's h11 protocol with a deadline and a cap.

uvicorn arms no timer before a connection's first answer and restarts its keep-alive timer on
every byte received, so a client that sends nothing, or a byte a second, would hold its
connection for ever. Here each request has one deadline, from its first byte (or the previous
answer) to its answer; past it the connection is closed, with a JSON 408 when part of a
request came. Connections over the cap are refused as they arrive, and requests h11 cannot
parse get a JSON 400, 414 or 431 instead of uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def raw_answer(status: int, message: str) -> bytes:
    """A whole ``Connection: close`` answer with a JSON ``{"error": message}`` body, as bytes:
    for refusals written before (or instead of) a parsed request."""
    body = json.dumps({"error": message}).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Connection(h11.Connection):
    """h11's connection, keeping its last parse error for the refusal's message."""

    parse_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as error:
            self.parse_error = error
            raise


class BoundedH11Protocol(H11Protocol):
    """One connection; :func:`bounded_protocol` sets the class attributes per server."""

    deadline: float = 16.0  # seconds from a request's first byte to the end of its answer
    max_connections: int = 256
    max_head_bytes: int = 16 * 1024  # what h11 buffers of a request line and headers
    _deadline_timer: asyncio.TimerHandle | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _Connection(h11.SERVER, max_incomplete_event_size=self.max_head_bytes)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            message = (
                f"the explorer already has {self.max_connections} connections open, its "
                "limit; try again in a moment"
            )
            transport.write(raw_answer(503, message))
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._head_too_long(self._pending() + data):
            return
        super().data_received(data)

    def _head_too_long(self, buffered: bytes) -> bool:
        """h11 limits only an unfinished head; a finished one is held to the same size here."""
        limit = self.max_head_bytes
        end = buffered.find(b"\r\n\r\n")
        if (end == -1 and len(buffered) <= limit) or 0 <= end <= limit:
            return False
        if not 0 <= buffered.find(b"\r\n") <= limit:
            self._refuse(414, f"the request line is longer than {limit} bytes")
        else:
            self._refuse(431, f"the request's line and headers exceed {limit} bytes")
        return True

    def eof_received(self) -> bool:
        """The client half-closed: answer what it sent; a body cut short is refused as such."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return False  # nothing to answer: close
        if cycle.more_body:
            cycle.more_body = False
            cycle.message_event.set()
        return True  # keep the connection open to write the answer

    def on_response_complete(self) -> None:
        self._disarm()
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets a deadline of its own

    def _arm(self) -> None:
        self._disarm()
        self._deadline_timer = self.loop.call_later(self.deadline, self._expired)

    def _disarm(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    def _expired(self) -> None:
        self._deadline_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete
        if answering:
            cycle.disconnected = True  # an answer that comes later goes nowhere
        if (answering and not cycle.response_started) or (not answering and self._pending()):
            message = f"the request did not arrive and get its answer within {self.deadline:g} s"
            self.transport.write(raw_answer(408, message))
        self.transport.close()  # an idle connection is simply closed

    def _pending(self) -> bytes:
        return self.conn.trailing_data[0]

    def send_400_response(self, msg: str) -> None:
        """Replaces uvicorn's plain-text 400 for requests h11 could not parse."""
        error = self.conn.parse_error
        status = error.error_status_hint if error is not None else 400
        if status == 431:
            self._refuse(431, f"the request's line and headers exceed {self.max_head_bytes} bytes")
        else:
            reason = f" ({error})" if error is not None else ""
            self._refuse(status, f"Bad request{reason}: the explorer reads HTTP/1.1 requests")

    def _refuse(self, status: int, message: str) -> None:
        self._disarm()
        self.transport.write(raw_answer(status, message))
        self.transport.close()


def bounded_protocol(
    deadline: float, max_connections: int, max_head_bytes: int
) -> type[BoundedH11Protocol]:
    """The protocol class for one server's limits (uvicorn builds one per connection)."""
    limits = {
        "deadline": deadline,
        "max_connections": max_connections,
        "max_head_bytes": max_head_bytes,
    }
    return type("BoundedH11Protocol", (BoundedH11Protocol,), limits)
