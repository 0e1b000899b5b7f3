"""The OpenAI-compatible HTTP app over an ``Engine`` (Starlette, as vLLM's FastAPI app serves it).

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /health`` (200, empty; 503 once stopping) and ``GET /metrics`` (Prometheus text,
``serve.metrics``).

- Every refusal is an OpenAI error object (``protocol.error_body``) with its status: 400 for a
  bad body or malformed JSON, 401 without the API key on ``/v1/*``, 404 for an unknown model
  or route, 413 for a body over ``max_body_bytes`` (its ``Content-Length`` or the bytes that
  arrive), 429 when the engine's queue is full, 503 when it is stopping, 500 on a bug.
- The engine runs on its own thread and calls each request's sink there; the sink hands the
  event to the request's asyncio queue (``loop.call_soon_threadsafe``), never blocking.
- A client that disconnects, streaming or not, has its requests cancelled (``Handle.cancel``):
  a task waits on the ASGI ``receive`` for ``http.disconnect`` (uvicorn drops writes to a gone
  client silently, so waiting for a failed write would not do).
- Streams are server-sent events: ``data: <chunk JSON>\\n\\n`` per chunk (choices interleave
  when ``n > 1``), a usage chunk with ``stream_options.include_usage``, then ``data: [DONE]``.

The engine is started and stopped by its owner (``serve.server``); the app only submits.

Example:
    >>> app = create_app(engine, served_model_names=["gpt2"])  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gpt2_dual.errors import RequestError
from gpt2_dual.serve import metrics
from gpt2_dual.serve.protocol import (
    ParsedRequest,
    error_body,
    new_request_id,
    parse_chat,
    parse_completion,
)
from gpt2_dual.serve.responses import ResponseBuilder

logger = logging.getLogger(__name__)

__all__ = ["create_app"]

#: The status a request's response gets when its client left first (nobody reads it; nginx's).
CLIENT_GONE = 499
_GONE = object()  # queued when the client disconnects


def create_app(
    engine: Any,
    *,
    served_model_names: list[str],
    api_key: str | None = None,
    max_body_bytes: int = 1 << 20,
) -> Starlette:
    """The Starlette app serving ``engine`` with OpenAI's API.

    Args:
        engine: a started ``gpt2_dual.serve.Engine`` (``tokenizer``, ``submit``, ``stats``,
            ``max_model_len``).
        served_model_names: the names ``model`` may take; the first is reported by default.
        api_key: when given, ``/v1/*`` needs ``Authorization: Bearer <api_key>`` (else 401).
        max_body_bytes: larger request bodies get 413.

    Returns:
        The ASGI app (run it with uvicorn on 127.0.0.1).
    """
    if not served_model_names:
        raise ValueError("served_model_names is empty: give the name requests use")
    api = _Api(engine, list(served_model_names), max_body_bytes)
    routes = [
        Route("/v1/completions", _guarded(api.completions), methods=["POST"]),
        Route("/v1/chat/completions", _guarded(api.chat), methods=["POST"]),
        Route("/v1/models", _guarded(api.models), methods=["GET"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/metrics", _guarded(api.metrics), methods=["GET"]),
    ]
    middleware = [] if api_key is None else [Middleware(_ApiKey, key=api_key)]
    return Starlette(
        routes=routes, middleware=middleware, exception_handlers={HTTPException: _http_error}
    )


def error_response(err: RequestError) -> Response:
    """``err`` as OpenAI's error object with its HTTP status."""
    return Response(_dumps(error_body(err)), err.status, media_type="application/json")


class _Api:
    """The routes' state: the engine, the names, the body limit and the latency histograms."""

    def __init__(self, engine: Any, names: list[str], max_body_bytes: int) -> None:
        self.engine, self.names, self.max_body_bytes = engine, names, max_body_bytes
        self.created = int(time.time())
        self.ttft = metrics.Histogram(metrics.TTFT_BUCKETS)
        self.e2e = metrics.Histogram(metrics.E2E_BUCKETS)

    async def completions(self, request: Request) -> Response:
        body = await self._json(request)
        return await self._answer(
            request, parse_completion(body, self.engine.tokenizer, self.names)
        )

    async def chat(self, request: Request) -> Response:
        body = await self._json(request)
        return await self._answer(request, parse_chat(body, self.engine.tokenizer, self.names))

    async def models(self, request: Request) -> Response:
        cards = [
            {"id": name, "object": "model", "created": self.created, "owned_by": "gpt2_dual",
             "root": self.names[0], "parent": None, "max_model_len": self.engine.max_model_len,
             "permission": []}
            for name in self.names
        ]  # fmt: skip
        return _json_response({"object": "list", "data": cards})

    async def health(self, request: Request) -> Response:
        """200 while the engine admits requests; 503 once it is stopping (load balancers
        then send no more)."""
        return Response(status_code=503 if self.engine.closed else 200)

    async def metrics(self, request: Request) -> Response:
        text = metrics.render(self.engine.stats(), self.names[0], ttft=self.ttft, e2e=self.e2e)
        return Response(text, media_type=metrics.CONTENT_TYPE)

    async def _json(self, request: Request) -> Any:
        """The body as JSON, at most ``max_body_bytes`` (413) and well formed (400)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                raise self._too_large()
        try:
            return json.loads(body, parse_constant=_no_constant)
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, NaN
            raise RequestError(f"the request body is not valid JSON: {err}") from None

    def _too_large(self) -> RequestError:
        return RequestError(
            f"the request body is larger than the limit of {self.max_body_bytes} bytes",
            status=413,
        )

    async def _answer(self, request: Request, parsed: ParsedRequest) -> Response:
        run = _Run(self, parsed, request.receive)
        if parsed.stream:
            return _EventStream(_sse(run, parsed.include_usage))
        async with aclosing(run.chunks()) as chunks:
            async for _ in chunks:
                pass
        if not run.builder.finished:
            return Response(status_code=CLIENT_GONE)
        failure = run.builder.failure()
        if failure is not None:
            return error_response(failure)
        return _json_response(run.builder.response())


class _Run:
    """One HTTP request's engine requests (one per prompt) and the queue their events reach.

    Submitting happens here, so ``RequestError`` (400, 429, 503) comes before any response;
    when a later prompt is refused, those already submitted are cancelled.
    """

    def __init__(self, api: _Api, parsed: ParsedRequest, receive: Receive) -> None:
        engine = api.engine
        request_id = new_request_id(parsed.kind)
        self.api, self.receive = api, receive
        self.builder = ResponseBuilder(parsed, request_id, engine.tokenizer)
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.arrival, self.first_token = time.monotonic(), None
        self.handles: list[Any] = []
        try:
            for p, ids in enumerate(parsed.prompts):
                rid = request_id if len(parsed.prompts) == 1 else f"{request_id}-{p}"
                sink = functools.partial(self._sink, p)
                self.handles.append(engine.submit(ids, parsed.params, sink, request_id=rid))
        except BaseException:
            self.cancel()
            raise

    def _sink(self, prompt: int, event: Any) -> None:
        """Called on the engine's thread: hand ``event`` to the event loop."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (prompt, event))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def cancel(self) -> None:
        for handle in self.handles:
            handle.cancel()

    async def chunks(self) -> AsyncIterator[list[dict]]:
        """The stream chunks, a list per batch of events that arrived together, until every
        choice has finished; the requests are cancelled when the client disconnects or the
        caller stops early (close this generator: ``contextlib.aclosing``)."""
        watcher = asyncio.ensure_future(self._watch())
        try:
            while not self.builder.finished:
                batch = [await self.queue.get()]
                while not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                if _GONE in batch:
                    return
                out = [c for item in batch if (c := self.builder.add(*item)) is not None]
                self._observe(batch)
                if out:
                    yield out
        finally:
            watcher.cancel()
            if not self.builder.finished:
                self.cancel()

    async def _watch(self) -> None:
        try:
            while (await self.receive())["type"] != "http.disconnect":
                pass
        except Exception:  # the server's receive failed: nobody will read the answer either
            logger.debug("receive failed; taking the client as gone", exc_info=True)
        self.queue.put_nowait(_GONE)

    def _observe(self, batch: list[tuple[int, Any]]) -> None:
        now = time.monotonic()
        if self.first_token is None and any(event.token_ids for _, event in batch):
            self.first_token = now
            self.api.ttft.observe(now - self.arrival)
        if self.builder.finished:
            self.api.e2e.observe(now - self.arrival)


async def _sse(run: _Run, include_usage: bool) -> AsyncIterator[bytes]:
    """A request's server-sent events, ``data: [DONE]`` last (nothing more if the client left).

    A failure once the stream has begun is sent as an error object in an event of its own
    (the status is already 200), as vLLM does.
    """
    try:
        if run.builder.chat:
            yield _event(run.builder.role_chunk())
        async with aclosing(run.chunks()) as chunks:
            async for batch in chunks:
                yield b"".join(_event(chunk) for chunk in batch)
        if not run.builder.finished:
            return
        failure = run.builder.failure()
        if failure is not None and failure.status == 500:
            yield _event(error_body(failure))
        elif include_usage:
            yield _event(run.builder.usage_chunk())
    except Exception:
        logger.exception("a stream failed")
        yield _event(error_body(_internal_error()))
    yield b"data: [DONE]\n\n"


class _EventStream(StreamingResponse):
    """``text/event-stream`` whose generator is always closed (so its requests are cancelled)
    when the response ends, however it ends."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        super().__init__(events, headers={"cache-control": "no-cache"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with aclosing(self.body_iterator) as events:  # type: ignore[type-var]
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            try:
                async for data in events:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:  # the client is gone (servers that report it)
                return


class _ApiKey:
    """ASGI middleware: ``/v1/*`` needs ``Authorization: Bearer <key>`` (401 otherwise)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app, self.expected = app, f"Bearer {key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith("/v1")
            and scope["method"] != "OPTIONS"
        ):
            given = Headers(scope=scope).get("authorization", "").encode()
            if not hmac.compare_digest(given, self.expected):
                err = RequestError(
                    "Invalid or missing API key: send it as `Authorization: Bearer <key>`.",
                    status=401,
                )
                await error_response(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _guarded(route: Callable[[Request], Awaitable[Response]]) -> Callable[..., Any]:
    """``route`` answering its ``RequestError`` as an error object, and any other exception
    as a 500 (logged), so one bad request never takes the server down."""

    @functools.wraps(route)
    async def guarded(request: Request) -> Response:
        try:
            return await route(request)
        except RequestError as err:
            return error_response(err)
        except ClientDisconnect:  # while it sent its body
            return Response(status_code=CLIENT_GONE)
        except Exception:
            logger.exception("%s %s failed", request.method, request.url.path)
            return error_response(_internal_error())

    return guarded


def _internal_error() -> RequestError:
    return RequestError("internal server error", status=500, type="InternalServerError")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route: 404, wrong method: 405) as error objects."""
    assert isinstance(exc, HTTPException)
    types = {405: "MethodNotAllowedError"}
    err = RequestError(exc.detail, status=exc.status_code, type=types.get(exc.status_code))
    return error_response(err)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _json_response(obj: Any) -> Response:
    return Response(_dumps(obj), media_type="application/json")


def _event(chunk: dict) -> bytes:
    return b"data: " + _dumps(chunk) + b"\n\n"
