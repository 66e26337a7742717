"""The HTTP gateway: OpenAI ``/v1/embeddings`` and TEI ``/embed`` over the same request cores.

A front end in the ``zeroembed serve`` process (``--http-port``): one thread with
its own asyncio loop runs an aiohttp server, and every HTTP request goes to the
server's loop through a :class:`~zeroembed.server.frontends.bridge.CoreBridge` —
the same cores, batchers and workers as ZeroMQ clients, with no second
serialization or socket hop. docs/http.md describes the API.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import threading
import time
from typing import Any

import numpy as np

try:
    from aiohttp import web
except ImportError:  # pragma: no cover - the server extra carries it; start() says so when it is missing
    web = None

from zeroembed.client import ErrorCode, InvalidRequest, ServerBusy, ServerTimeout, ZeroEmbedError
from zeroembed.client.status import problems

from ..config import host_port
from ..errors import StartupError
from .bridge import CoreBridge, InProcessClient

log = logging.getLogger(__name__)

_HEALTH_TIMEOUT_S = 5.0  # a server that cannot answer a status request this fast is not healthy
_STOP_TIMEOUT_S = 3.0  # handlers still running when the gateway stops get this long to finish


class BadRequest(Exception):
    """A request body the gateway refuses before anything reaches the request core."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


class HttpGateway:
    """``start()`` binds the port and serves in a thread of its own; ``stop()`` closes it. Both idempotent."""

    def __init__(self, bridge: CoreBridge, *, bind: str, port: int, model: str, dim: int, max_message_bytes: int,
                 max_texts_per_request: int, request_timeout_s: float) -> None:
        self.bind, self.port = bind, port
        self.model = model
        self.dim = dim
        self.max_message_bytes = max_message_bytes
        self.created = int(time.time())
        # The core's own request timeout answers first; the backstop only catches a loop that is gone.
        self._client = InProcessClient(bridge, max_texts_per_request=max_texts_per_request,
                                       backstop_s=request_timeout_s + 5)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._failure: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if web is None:
            raise StartupError("--http-port needs aiohttp: pip install 'zeroembed[server]'")
        sock = self._bind()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sock, ready), name="zeroembed-http", daemon=True)
        self._thread.start()
        if not ready.wait(30) or self._failure is not None:
            self.stop()
            raise StartupError(f"the HTTP gateway did not start: {self._failure}")
        log.info("HTTP API on http://%s/v1/embeddings (OpenAI) and /embed (TEI)", self.address)

    @property
    def address(self) -> str:
        return host_port(self.bind, self.port)

    def _bind(self) -> socket.socket:
        """Bind here, in the caller's thread, so a taken port is a StartupError of ``start()``."""
        bind, port = self.bind, self.port
        try:
            family, kind, proto, _, address = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM,
                                                                 flags=socket.AI_PASSIVE)[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise StartupError(f"cannot serve HTTP on {self.address}: {exc.strerror or exc}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise StartupError(f"cannot serve HTTP on {self.address}: {exc.strerror or exc}") from None
        return sock

    def stop(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # the loop closed in between
                pass
        thread.join(_STOP_TIMEOUT_S + 5)
        self._thread = None

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(sock, ready))
        except BaseException as exc:  # noqa: BLE001 - reported to start(), or logged when it happens later
            self._failure = exc
            if ready.is_set():
                log.exception("the HTTP gateway failed")
            ready.set()
        finally:
            sock.close()
            loop.close()

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=_STOP_TIMEOUT_S)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    # ------------------------------------------------------------------ the application

    def app(self):
        """The aiohttp application (routes, size limit, error middleware)."""

        @web.middleware
        async def errors(request, handler):
            """Unknown paths, wrong methods and bugs answered as JSON error objects, never HTML or text."""
            try:
                return await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status)
                return self._openai_error(exc.status, f"{request.method} {request.path}: {exc.reason}", code=code)
            except Exception:
                log.exception("HTTP %s %s failed", request.method, request.path)
                return self._openai_error(500, "internal error in the HTTP gateway", code=ErrorCode.INTERNAL.value)

        app = web.Application(client_max_size=self.max_message_bytes, middlewares=[errors])
        app.router.add_post("/v1/embeddings", self.openai_embeddings)
        app.router.add_post("/embeddings", self.openai_embeddings)  # for clients whose base_url lacks /v1
        app.router.add_post("/embed", self.tei_embed)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/status", self.status)
        return app

    @staticmethod
    def _json(body: Any, status: int = 200):
        return web.Response(text=json.dumps(body, separators=(",", ":")), status=status,
                            content_type="application/json")

    def _openai_error(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                      kind: str | None = None):
        if kind is None:
            kind = "invalid_request_error" if status < 429 else "rate_limit_error" if status == 429 else "server_error"
        return self._json({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)

    async def _body(self, request) -> dict[str, Any]:
        """The request's JSON object, or BadRequest (413 when over ``max_message_bytes``)."""
        limit = self.max_message_bytes
        too_large = BadRequest(f"the request body is larger than the server's limit of {limit} bytes "
                               "(--max-message-bytes); split the input", status=413, code="request_too_large")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        return body

    # ------------------------------------------------------------------ OpenAI

    async def openai_embeddings(self, request):
        """``POST /v1/embeddings`` in the OpenAI schema."""
        try:
            body = await self._body(request)
            texts = _openai_input(body)
            encoding_format = body.get("encoding_format", "float")
            if encoding_format is None:
                encoding_format = "float"
            if encoding_format not in ("float", "base64"):
                raise BadRequest(f"'encoding_format' must be 'float' or 'base64', got {encoding_format!r}",
                                 "encoding_format")
            dimensions = body.get("dimensions")
            if dimensions is not None and (not _is_int(dimensions) or not 1 <= dimensions <= self.dim):
                raise BadRequest(f"'dimensions' must be an integer from 1 to {self.dim} (this model's size), "
                                 f"got {dimensions!r}", "dimensions")
            model = body.get("model")
            if model is not None and not isinstance(model, str):
                raise BadRequest("'model' must be a string", "model")
            truncate = body.get("truncate", True)  # an extension: OpenAI has no such field
            if not isinstance(truncate, bool):
                raise BadRequest("'truncate' must be true or false", "truncate")
            prompt_name = body.get("prompt_name")  # an extension, as TEI's /embed has it
            if prompt_name is not None and not isinstance(prompt_name, str):
                raise BadRequest("'prompt_name' must be a string", "prompt_name")
        except BadRequest as exc:
            return self._openai_error(exc.status, exc.message, param=exc.param, code=exc.code)
        try:
            vectors, pieces = await self._client.encode(texts, truncate=truncate, show_tokens=True,
                                                        dimensions=dimensions, prompt_name=prompt_name)
        except ZeroEmbedError as exc:
            return self._openai_server_error(exc)
        if encoding_format == "base64":
            little = np.ascontiguousarray(vectors, dtype="<f4")
            embeddings: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
        else:
            embeddings = vectors.tolist()
        tokens = sum(len(p) for p in pieces)
        return self._json({
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embeddings)],
            "model": self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    def _openai_server_error(self, exc: ZeroEmbedError):
        code = exc.code.value
        if isinstance(exc, InvalidRequest):
            param = "input" if exc.code in (ErrorCode.TEXT_TOO_LONG, ErrorCode.LIMIT_EXCEEDED) else None
            return self._openai_error(400, exc.message, param=param, code=code)
        if isinstance(exc, ServerBusy):
            return self._openai_error(503 if exc.code == ErrorCode.SHUTTING_DOWN else 429, exc.message, code=code)
        if isinstance(exc, ServerTimeout):
            return self._openai_error(504, exc.message, code=code)
        return self._openai_error(500, exc.message, code=code)

    async def models(self, _request):
        """``GET /v1/models``: the one model served, in OpenAI's list shape."""
        return self._json({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": self.created, "owned_by": "zeroembed"}]})

    # ------------------------------------------------------------------ TEI

    async def tei_embed(self, request):
        """``POST /embed`` in text-embeddings-inference's shape: a JSON list of vectors."""
        try:
            body = await self._body(request)
            texts = _tei_inputs(body)
            normalize, truncate = body.get("normalize", True), body.get("truncate", False)
            for name, value in (("normalize", normalize), ("truncate", truncate)):
                if not isinstance(value, bool):
                    raise BadRequest(f"`{name}` must be true or false")
            prompt_name, dimensions = body.get("prompt_name"), body.get("dimensions")
            if prompt_name is not None and not isinstance(prompt_name, str):
                raise BadRequest("`prompt_name` must be a string")
            if dimensions is not None and (not _is_int(dimensions) or not 1 <= dimensions <= self.dim):
                raise BadRequest(f"`dimensions` must be an integer from 1 to {self.dim}")
        except BadRequest as exc:
            # TEI: an empty batch is 400 "Empty"; a body it cannot deserialize is 422; too large is 413.
            if exc.code == "empty":
                return self._json({"error": exc.message, "error_type": "Empty"}, 400)
            return self._json({"error": exc.message, "error_type": "Validation"}, 422 if exc.status == 400 else exc.status)
        try:
            vectors = await self._client.encode(texts, normalize=normalize, truncate=truncate,
                                                prompt_name=prompt_name, dimensions=dimensions)
        except ZeroEmbedError as exc:
            status, kind = _tei_status(exc)
            return self._json({"error": exc.message, "error_type": kind}, status)
        return self._json(vectors.tolist())

    # ------------------------------------------------------------------ health and status

    async def _server_status(self) -> dict[str, Any]:
        return await asyncio.wait_for(self._client.status(), _HEALTH_TIMEOUT_S)

    async def health(self, _request):
        """200 when the server answers, accepts work and has every worker ready; 503 otherwise."""
        try:
            status = await self._server_status()
        except (ZeroEmbedError, asyncio.TimeoutError) as exc:
            return self._json({"status": "unhealthy", "error": f"the server did not answer: {exc}",
                               "error_type": "Unhealthy"}, 503)
        found = problems(status)
        if found:
            return self._json({"status": "unhealthy", "error": "; ".join(found), "error_type": "Unhealthy"}, 503)
        return self._json({"status": "ok"})

    async def status(self, _request):
        """``GET /status``: the server's status, as ``Client.status()`` returns it."""
        try:
            return self._json(await self._server_status())
        except (ZeroEmbedError, asyncio.TimeoutError) as exc:
            return self._openai_error(503, f"the server did not answer: {exc}", code="unavailable")


# ---------------------------------------------------------------------- body checks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _openai_input(body: dict[str, Any]) -> list[str]:
    if "input" not in body:
        raise BadRequest("'input' is required: a string or a list of strings", "input")
    value = body["input"]
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise BadRequest(f"'input' must be a string or a list of strings, got {type(value).__name__}", "input")
    if not value:
        raise BadRequest("'input' is an empty list; send at least one string", "input")
    if all(isinstance(v, str) for v in value):
        return value
    if all(_is_int(v) for v in value) or all(isinstance(v, list) and all(_is_int(t) for t in v) for v in value):
        raise BadRequest("'input' holds token ids; this server tokenizes with its own model's tokenizer "
                         "and takes text only: send a string or a list of strings", "input")
    index = next(i for i, v in enumerate(value) if not isinstance(v, str))
    raise BadRequest(f"'input'[{index}] is {type(value[index]).__name__}, expected a string", "input")


def _tei_inputs(body: dict[str, Any]) -> list[str]:
    value = body.get("inputs")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        if not value:
            raise BadRequest("`inputs` cannot be empty", code="empty")
        return value
    raise BadRequest("`inputs` must be a string or a list of strings")


def _tei_status(exc: ZeroEmbedError) -> tuple[int, str]:
    """TEI's status and error_type for an error of the request core (TEI: Validation is 413, Backend 424)."""
    if isinstance(exc, InvalidRequest):
        return 413, "Validation"
    if isinstance(exc, ServerBusy):
        return (503, "Unhealthy") if exc.code == ErrorCode.SHUTTING_DOWN else (429, "Overloaded")
    if isinstance(exc, ServerTimeout):
        return 504, "Backend"
    return 424, "Backend"
