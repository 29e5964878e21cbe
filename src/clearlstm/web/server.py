"""``clearlstm serve``: the explorer's local HTTP server (uvicorn running a Starlette app).

The application (:mod:`clearlstm.web.app`) answers the page and the JSON API; this module
binds the socket, sets the limits and runs uvicorn on it. The limits: at most
``max_connections`` connections (more are refused as they arrive) and ``BACKLOG`` waiting to
be accepted; one deadline per request, from its first byte to its answer, whatever the
client trickles (:mod:`clearlstm.web.protocol`); request heads of at most ``MAX_HEAD_BYTES``
and bodies of at most ``MAX_BODY_BYTES``; ``workers`` threads for the model computations.
Idle connections cost a socket and no thread.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from clearlstm import __version__
from clearlstm.viz.saved_models import ModelFolder
from clearlstm.web.api import Context
from clearlstm.web.app import Explorer
from clearlstm.web.protocol import bounded_protocol

MAX_BODY_BYTES = 256 * 1024
MAX_HEAD_BYTES = 16 * 1024
REQUEST_DEADLINE_SECONDS = 15.0  # the whole request, not each read
MAX_CONNECTIONS = 256
BACKLOG = 64
WORKERS = 3  # threads for the torch computations; more would only share the same cores
KEEP_ALIVE_SECONDS = 5
STOP_GRACE_SECONDS = 3  # how long a stop waits for answers under way


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: ``clearlstm serve`` installs its own
    (uvicorn's would raise the signal again after stopping, as a traceback)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ExplorerServer:
    """The explorer on ``host:port`` (port 0: a free one), bound and listening once built;
    :meth:`serve_forever` answers until :meth:`stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        models: str | Path | None = None,
        *,
        verbose: bool = False,
        deadline: float = REQUEST_DEADLINE_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
        workers: int = WORKERS,
    ) -> None:
        self.context = Context(ModelFolder(models) if models is not None else None)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(BACKLOG)  # connections wait in the backlog until the loop runs
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        bound_port = self.server_address[1]
        self.explorer = Explorer(
            self.context,
            host=host,
            port=bound_port,
            deadline=deadline,
            workers=workers,
            max_body_bytes=MAX_BODY_BYTES,
        )
        # Quiet unless --verbose: refusals are answered, not logged; errors still are.
        logging.getLogger("uvicorn.error").setLevel(logging.INFO if verbose else logging.ERROR)
        config = uvicorn.Config(
            self.explorer.app(),
            loop="asyncio",
            # The app answers within `deadline`; the connection is cut a moment later.
            http=bounded_protocol(deadline + 1.0, max_connections, MAX_HEAD_BYTES),
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=verbose,
            proxy_headers=False,
            server_header=False,
            headers=[("Server", f"clearlstm/{__version__}")],
            limit_concurrency=max_connections + 1,  # the protocol refuses more as they arrive
            backlog=BACKLOG,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=STOP_GRACE_SECONDS,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        )
        self._server = _Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def serve_forever(self) -> None:
        """Answer until :meth:`stop` (or :meth:`shutdown`); then the socket is closed."""
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self.explorer.close()

    def stop(self) -> None:
        """Ask the server to stop (safe from a signal handler); a second call stops it without
        waiting for answers under way."""
        if self._server.should_exit:
            self._server.force_exit = True
        self._server.should_exit = True

    def shutdown(self) -> None:
        """Stop, and wait for :func:`start_in_thread`'s thread to end."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout=STOP_GRACE_SECONDS + 10)

    def server_close(self) -> None:
        self.socket.close()
        self.explorer.close()

    @property
    def started(self) -> bool:
        return self._server.started


def start_in_thread(
    host: str = "127.0.0.1", port: int = 0, models=None, **limits: float
) -> ExplorerServer:
    """A running server on a background thread (for tests and notebooks); ``shutdown()`` it.
    ``limits``: ``deadline``, ``max_connections``, ``workers`` as for :class:`ExplorerServer`."""
    server = ExplorerServer(host, port, models, **limits)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, name="clearlstm-serve", daemon=True)
    server._thread = thread
    thread.start()
    give_up = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < give_up:
        time.sleep(0.01)
    if not server.started:
        server.server_close()
        raise RuntimeError(f"the explorer on {server.url} did not start within 30 s")
    return server
