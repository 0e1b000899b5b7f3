"""``serve(engine, ...)``: the OpenAI-compatible app (``serve.app``) on uvicorn, in this process,
with a graceful shutdown.

Two threads do the work: the engine's loop runs the model in the calling thread, the one that
loaded it (``Engine.run``; ``Engine.start`` says why: 260-292 against 219-262 tokens/s with 16
clients, interleaved runs, 2-core AMD EPYC), and uvicorn's event loop runs HTTP on a thread of
its own. SIGTERM or Ctrl-C (SIGINT), caught in the calling thread, shuts down in steps:

1. At once (uvicorn looks every 0.1 s): the listening socket closes, idle keep-alive
   connections close, and the engine admits nothing more (``Engine.stop``: a request that still
   arrives on an open connection gets ``EngineClosedError``, 503).
2. Requests in flight run on, streams included, for up to ``shutdown_timeout`` seconds.
3. Then the engine aborts what is left: each choice ends with ``finish_reason "abort"``, so a
   stream ends with its last chunk and ``data: [DONE]``. ``FLUSH_SECONDS`` later uvicorn
   cancels any response still running (its connection is cut).
4. ``serve`` returns 0; the command exits with status 0.

A second Ctrl-C skips the wait of step 2 (uvicorn's ``force_exit``) and aborts what runs.

Example:
    >>> engine = Engine.from_pretrained("gpt2")  # doctest: +SKIP
    >>> serve(engine, port=8000, served_model_names=["gpt2"])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import uvicorn

from gpt2_dual.serve.app import create_app

__all__ = ["FLUSH_SECONDS", "serve"]

logger = logging.getLogger(__name__)

#: Seconds between the engine's abort of the requests still running and uvicorn's cancel of the
#: responses still open: time for a stream to send its last chunk.
FLUSH_SECONDS = 1.0
#: The signals that shut the server down (uvicorn's ``HANDLED_SIGNALS`` on POSIX).
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: The GIL switch interval while serving (Python's default is 5 ms): the engine's thread needs
#: the GIL between torch ops, and should not wait up to 5 ms for the event loop's thread to
#: give it up (one client: 31 against 27 tokens/s through HTTP, gpt2-small shape, 2 cores).
SWITCH_INTERVAL = 1e-4


class _Server(uvicorn.Server):
    """uvicorn's server that says where it listens, stops the engine when it shuts down, and
    shuts down when ``stop`` is set as on SIGTERM."""

    def __init__(
        self,
        config: uvicorn.Config,
        engine: Any,
        *,
        banner: str,
        shutdown_timeout: float,
        ready: threading.Event | None,
        stop: threading.Event | None,
    ) -> None:
        super().__init__(config)
        self.engine = engine
        self.banner = banner
        self.shutdown_timeout = shutdown_timeout
        self.ready, self.stop = ready, stop
        self.stopper: threading.Thread | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            logger.info("%s", self.banner)
            if self.ready is not None:
                self.ready.set()

    async def on_tick(self, counter: int) -> bool:
        if self.stop is not None and self.stop.is_set():
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.stop_engine()
        await super().shutdown(sockets=sockets)
        await self._engine_stopped()
        if self.force_exit:  # uvicorn skips the app's shutdown then (its task dies noisily)
            await self.lifespan.shutdown()

    async def _engine_stopped(self) -> None:
        """Wait for the engine's thread to end while this event loop still runs (the app's
        sinks post their last events to it); a second Ctrl-C aborts what still runs at once."""
        forced = False
        while self.stopper is not None and self.stopper.is_alive():
            if self.force_exit and not forced:
                forced = True
                threading.Thread(target=self.engine.stop, args=(0.0,), daemon=True).start()
            await asyncio.sleep(0.05)

    def stop_engine(self) -> None:
        """Start ``engine.stop(shutdown_timeout)`` in a thread of its own (once): admission ends
        now, the requests in flight run on while uvicorn waits for their responses."""
        if self.stopper is None:
            self.stopper = threading.Thread(
                target=self.engine.stop, args=(self.shutdown_timeout,),
                name="gpt2-dual-engine-stop", daemon=True,
            )  # fmt: skip
            self.stopper.start()


def serve(
    engine: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    served_model_names: Sequence[str],
    api_key: str | None = None,
    max_body_bytes: int = 1 << 20,
    shutdown_timeout: float = 10.0,
    log_level: str = "info",
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Serve ``engine`` over HTTP (OpenAI's API) until SIGTERM, SIGINT or ``stop``.

    Args:
        engine: a ``gpt2_dual.serve.Engine``; started here, stopped before returning.
        host: the address to listen on; loopback unless said.
        port: the port; 0 picks a free one (the log line names it).
        served_model_names: the names ``model`` may take in requests; the first is reported.
        api_key: when given, requests without ``Authorization: Bearer <api_key>`` get 401.
        max_body_bytes: larger request bodies get 413.
        shutdown_timeout: seconds the requests in flight may run on after a shutdown signal
            before the engine aborts them.
        log_level: uvicorn's log level (``critical`` ... ``trace``).
        ready: set once the socket listens (for callers in another thread).
        stop: setting it shuts the server down as SIGTERM does (signals reach only a server in
            the main thread).

    Returns:
        0, the exit status, after a shutdown.

    Raises:
        ValueError: ``shutdown_timeout`` is negative or no model name is given.
        OSError: the address cannot be listened on (in use, not this machine's).
    """
    if shutdown_timeout < 0:
        raise ValueError(f"shutdown_timeout must be at least 0 seconds, got {shutdown_timeout}")
    if not served_model_names:
        raise ValueError("served_model_names is empty: give the name requests use")
    names = list(served_model_names)
    app = create_app(engine, served_model_names=names, api_key=api_key,
                     max_body_bytes=max_body_bytes)  # fmt: skip
    sock = _listen(host, port)
    try:
        config = uvicorn.Config(
            app, host=host, port=sock.getsockname()[1], log_level=log_level,
            timeout_graceful_shutdown=shutdown_timeout + FLUSH_SECONDS,  # type: ignore[arg-type]
        )  # fmt: skip
        server = _Server(
            config, engine, banner=_banner(engine, names, sock), shutdown_timeout=shutdown_timeout,
            ready=ready, stop=stop,
        )  # fmt: skip
        http = threading.Thread(target=_http, args=(server, sock), name="gpt2-dual-http")
        switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            with _signals_to(server):
                http.start()
                engine.run()  # here, where the model was loaded (Engine.start says why)
                http.join()
        finally:
            sys.setswitchinterval(switch)
            server.stop_engine()  # a no-op after a shutdown; after a failed start-up, the stop
            server.stopper.join()  # type: ignore[union-attr]
    finally:
        sock.close()
    return 0


def _http(server: _Server, sock: socket.socket) -> None:
    """uvicorn's event loop, on its own thread; however it ends, the engine stops too."""
    try:
        server.run(sockets=[sock])
    finally:
        server.stop_engine()


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; OSError naming the address when it is refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else str(err)
        refused = OSError(f"cannot listen on {_url(host, port)}: {reason}")
        refused.errno = err.errno
        raise refused from err


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _banner(engine: Any, names: list[str], sock: socket.socket) -> str:
    """One line: ``serving NAMES on URL (framework, slots, KV per slot, context)``."""
    host, port = sock.getsockname()[:2]
    return (
        f"serving {', '.join(names)} on {_url(host, port)} ({engine.framework}, "
        f"{engine.max_num_seqs} slots, KV {_bytes(engine.kv_bytes_per_slot)} per slot, "
        f"{engine.max_model_len} tokens of context)"
    )


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


@contextlib.contextmanager
def _signals_to(server: uvicorn.Server) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``server.handle_exit`` for the whole call (main thread only).

    While it serves, uvicorn installs handlers of its own; when it is done it puts back the
    handlers it found and raises each signal it caught again, so that a default SIGTERM kills
    the process (status 143) and SIGINT raises KeyboardInterrupt (130). Installed here first,
    the handlers it finds are the server's own: the shutdown ends in ``return 0`` instead, and a
    signal that comes during start-up, before uvicorn's handlers, still shuts the server down.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
