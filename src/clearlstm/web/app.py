"""The explorer's ASGI application (Starlette): the page, the JSON API and their limits.

``/`` and ``/static/<file>`` answer with the page shipped in ``clearlstm/web/static`` (read
once; a request can only choose among those names); ``/api/...`` with JSON from
:mod:`clearlstm.web.api`. The model computations are synchronous torch code, so they run on a
small thread pool of their own and the event loop stays free for other clients. Every
request has a deadline, a body limit and a Host check (a web page reaching the server through
DNS rebinding sends its own name). Every refusal is a JSON ``{"error": message}``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from clearlstm.web.api import ROUTES, ApiError, Context, Handler

LOG = logging.getLogger("clearlstm.web")
JSON_TYPE = "application/json; charset=utf-8"
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARDS = ("0.0.0.0", "::", "")


def static_files() -> dict[str, bytes]:
    """The page's files, read once: requests choose among these names and nothing else."""
    folder = resources.files("clearlstm.web") / "static"
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if Path(entry.name).suffix in STATIC_TYPES
    }


def allowed_hosts(host: str, port: int) -> tuple[str, ...]:
    """The Host headers the server answers to: the loopback names and the bound ``host``, each
    with the port (and also without it on port 80), lower case."""
    bound = f"[{host}]" if ":" in host else host
    names = dict.fromkeys([*LOOPBACK_NAMES, bound.lower()])
    with_port = tuple(f"{name}:{port}" for name in names)
    return with_port + tuple(names) if port == 80 else with_port


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


class Explorer:
    """What one server answers with, and its limits; :meth:`app` is the ASGI application."""

    def __init__(
        self,
        context: Context,
        *,
        host: str,
        port: int,
        deadline: float,
        workers: int,
        max_body_bytes: int,
    ) -> None:
        self.context = context
        self.static = static_files()
        self.hosts = allowed_hosts(host, port)
        # Bound to every address (0.0.0.0): also any IP address with the port, which DNS
        # rebinding cannot produce (a page there is the server's own origin).
        self.any_ip_port = port if host in WILDCARDS else None
        self.deadline = deadline
        self.max_body_bytes = max_body_bytes
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clearlstm-api")

    def app(self) -> Starlette:
        # One route for every path and method: the refusals below are the API's own.
        return Starlette(routes=[Route("/{path:path}", self)])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def host_refusal(self, host: str | None) -> str | None:
        """Why a request with this Host header is refused, or None when it is not."""
        expected = f"one of {', '.join(self.hosts)}"
        if host is None:
            return f"the request has no Host header; send {expected}"
        name = host.strip().lower()
        if name in self.hosts:
            return None
        if self.any_ip_port is not None:
            address, _, port = name.rpartition(":")
            if port == str(self.any_ip_port) and _is_ip_literal(address):
                return None
        return (
            f"Host {host!r} is not a name of this server; it answers to {expected} "
            "(start it with --host NAME to answer to NAME too)"
        )

    async def endpoint(self, request: Request) -> Response:
        refusal = self.host_refusal(request.headers.get("host"))
        if refusal is not None:
            return error(421, refusal)
        reading = [False]  # set while the body is being received
        try:
            return await asyncio.wait_for(self.answer(request, reading), self.deadline)
        except asyncio.TimeoutError:
            if reading[0]:
                return error(408, f"the request's body did not arrive within {self.deadline:g} s")
            return error(
                503,
                f"the answer took longer than {self.deadline:g} s; ask for less (a shorter "
                "sequence) or try again when the server is less busy",
            )

    async def answer(self, request: Request, reading: list[bool]) -> Response:
        method, path = request.method, request.scope["path"]
        try:
            if method in ("GET", "HEAD") and not path.startswith("/api/"):
                return self._static(path)
            if method not in ("GET", "HEAD", "POST"):
                raise ApiError(405, f"method {method} is not allowed; use GET or POST")
            method = "GET" if method == "HEAD" else method
            handler = ROUTES.get((method, path))
            if handler is None:
                allowed = [m for (m, p) in ROUTES if p == path]
                if allowed:
                    raise ApiError(405, f"{path} takes {' or '.join(allowed)}, not {method}")
                raise ApiError(404, f"no such endpoint: {path}")
            body = None
            if method == "POST":
                reading[0] = True
                body = await self._read_body(request)
                reading[0] = False
            loop = asyncio.get_running_loop()
            payload = await loop.run_in_executor(self.pool, self._compute, handler, body)
            return Response(payload, 200, HEADERS, JSON_TYPE)
        except ApiError as refused:
            return error(refused.status, refused.message)
        except ClientDisconnect:  # the client hung up mid-body: nobody left to tell
            return error(400, "the client closed the connection before the body ended")
        except Exception:  # a bug must not take the server down; say so and log it
            LOG.exception("internal error answering %s %s", method, path)
            return error(500, "internal error while answering this request (see the server log)")

    def _compute(self, handler: Handler, body: bytes | None) -> bytes:
        """On a pool thread: decode the body, compute, encode the answer."""
        decoded = None if body is None else _decode_json(body)
        answer = handler(decoded, self.context)
        return json.dumps(answer, allow_nan=False).encode("utf-8")

    async def _read_body(self, request: Request) -> bytes:
        """The body, after its size and type are checked: a body over the limit is refused
        before any of it is read (so ``Expect: 100-continue`` clients never send it)."""
        headers = request.headers
        if "transfer-encoding" in headers:
            raise ApiError(411, "send the body with a Content-Length, not chunked")
        length_text = headers.get("content-length")
        if length_text is None:
            raise ApiError(411, "a POST needs a Content-Length header")
        try:
            length = int(length_text)
        except ValueError:
            raise ApiError(400, f"Content-Length must be a number; got {length_text!r}") from None
        if length > self.max_body_bytes:
            raise ApiError(
                413, f"the body has {length} bytes; at most {self.max_body_bytes} are accepted"
            )
        kind = headers.get("content-type", "application/json").split(";")[0].strip()
        if kind != "application/json":
            raise ApiError(415, f"send JSON (Content-Type: application/json); got {kind!r}")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > length:  # h11 frames the body by its length; never more
                raise ApiError(400, f"the body is longer than its Content-Length {length}")
        if len(data) < length:
            raise ApiError(400, f"the body ended after {len(data)} of {length} bytes")
        return bytes(data)

    def _static(self, path: str) -> Response:
        name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
        content = self.static.get(name) if name != path else None
        if content is None:
            raise ApiError(404, f"no such page: {path}")
        return Response(content, 200, HEADERS, STATIC_TYPES[Path(name).suffix])


def error(status: int, message: str) -> Response:
    """A refusal; the connection closes after it (a refused body may still be in the socket)."""
    body = json.dumps({"error": message}).encode("utf-8")
    return Response(body, status, HEADERS | {"Connection": "close"}, JSON_TYPE)


def _decode_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as failure:  # bad UTF-8, bad JSON, 5000-digit ints
        raise ApiError(400, f"the body is not valid JSON: {failure}") from None


def _refuse_constant(name: str) -> Any:
    raise ApiError(422, f"{name} is not a number the explorer accepts; send finite numbers")
