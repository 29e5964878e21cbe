"""``clearlstm serve``: the explorer's local HTTP server (standard library only).

A :class:`~http.server.ThreadingHTTPServer` answers ``/`` and ``/static/<file>`` with the
page shipped in ``clearlstm/web`` and ``/api/...`` with JSON from :mod:`clearlstm.explorer`.
Every refusal is a JSON ``{"error": message}`` with a 4xx status: unknown paths, wrong
methods, bodies that are too large, not JSON or not what the endpoint expects. A request
can only ever read the page's own files (a fixed list) and the models folder's models.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from clearlstm import __version__
from clearlstm.viz.saved_models import ModelFolder
from clearlstm.web.api import ROUTES, ApiError, Context

MAX_BODY_BYTES = 256 * 1024
REQUEST_TIMEOUT_SECONDS = 15  # a client that stops sending mid-request frees its thread
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def _static_files() -> dict[str, bytes]:
    """The page's files, read once: requests choose among these names and nothing else."""
    folder = resources.files("clearlstm.web") / "static"
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if Path(entry.name).suffix in STATIC_TYPES
    }


class ExplorerHandler(BaseHTTPRequestHandler):
    server: ExplorerServer
    server_version = f"clearlstm/{__version__}"
    timeout = REQUEST_TIMEOUT_SECONDS
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """The standard library's own refusals (bad request line, ...) as JSON too."""
        self.close_connection = True
        try:
            text = message or HTTPStatus(code).phrase
        except ValueError:
            text = str(code)
        if getattr(self, "command", None) is None:
            self.command = "GET"
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # an unparsable request line: answer with headers
        self._json(code, {"error": text})

    def _error(self, status: int, message: str) -> None:
        self.close_connection = True  # the rest of a refused body may still be in the socket
        self._json(status, {"error": message})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _other(self) -> None:
        self._error(405, f"method {self.command} is not allowed; use GET or POST")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        try:
            if method == "GET" and not path.startswith("/api/"):
                self._static(path)
                return
            handler = ROUTES.get((method, path))
            if handler is None:
                allowed = [m for (m, p) in ROUTES if p == path]
                if allowed:
                    raise ApiError(405, f"{path} takes {' or '.join(allowed)}, not {method}")
                raise ApiError(404, f"no such endpoint: {path}")
            body = self._read_json() if method == "POST" else None
            self._json(200, handler(body, self.server.context))
        except ApiError as error:
            self._error(error.status, error.message)
        except ConnectionError:  # the client hung up mid-answer: nobody left to tell
            self.close_connection = True
        except Exception:  # a bug must not take the server down; say so and log it
            traceback.print_exc()
            self._error(500, "internal error while answering this request (see the server log)")

    def _read_json(self) -> Any:
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "send the body with a Content-Length, not chunked")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise ApiError(411, "a POST needs a Content-Length header")
        try:
            length = int(length_text)
        except ValueError:
            raise ApiError(400, f"Content-Length must be a number; got {length_text!r}") from None
        if length < 0:
            raise ApiError(400, f"Content-Length must not be negative; got {length}")
        if length > MAX_BODY_BYTES:
            raise ApiError(
                413, f"the body has {length} bytes; at most {MAX_BODY_BYTES} are accepted"
            )
        kind = self.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if kind != "application/json":
            raise ApiError(415, f"send JSON (Content-Type: application/json); got {kind!r}")
        data = self.rfile.read(length)
        if len(data) < length:
            raise ApiError(400, f"the body ended after {len(data)} of {length} bytes")
        try:
            return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as error:  # bad UTF-8, bad JSON, 5000-digit ints
            raise ApiError(400, f"the body is not valid JSON: {error}") from None

    def _static(self, path: str) -> None:
        name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
        content = self.server.static.get(name) if name != path else None
        if content is None:
            raise ApiError(404, f"no such page: {path}")
        self._send(200, content, STATIC_TYPES[Path(name).suffix])


def _refuse_constant(name: str) -> Any:
    raise ApiError(422, f"{name} is not a number the explorer accepts; send finite numbers")


class ExplorerServer(ThreadingHTTPServer):
    """One thread per connection; threads are daemons, so Ctrl-C never waits on a client."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self, host: str, port: int, models: str | Path | None = None, *, verbose: bool = False
    ) -> None:
        self.context = Context(ModelFolder(models) if models is not None else None)
        self.static = _static_files()
        self.verbose = verbose
        if ":" in host:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__((host, port), ExplorerHandler)

    def handle_error(self, request, client_address) -> None:
        """A client that hung up (closed a kept-alive connection, reset it) is no error;
        anything else is printed as before."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"


def start_in_thread(host: str = "127.0.0.1", port: int = 0, models=None) -> ExplorerServer:
    """A running server on a background thread (for tests and notebooks); ``shutdown()`` it."""
    server = ExplorerServer(host, port, models)
    threading.Thread(target=server.serve_forever, name="clearlstm-serve", daemon=True).start()
    return server
