"""The HTTP gateway: OpenAI ``/v1/embeddings``, TEI's routes (``/embed``, ``/rerank``, ``/tokenize``, ...) and
the Cohere/Jina-shaped ``/v1/rerank`` over the same request cores.

A front end in the ``zeroembed serve`` process (``--http-port``): one thread with
its own asyncio loop runs an aiohttp server, and every HTTP request goes to the
server's loop through a :class:`~zeroembed.server.frontends.bridge.CoreBridge` —
the same cores, batchers and workers as ZeroMQ clients, with no second
serialization or socket hop. docs/http.md describes the API.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import socket
import threading
import time
from typing import Any

import numpy as np

try:
    import orjson
    from aiohttp import web
except ImportError:  # pragma: no cover - the server extra carries them; start() says so when one is missing
    web = None

from zeroembed.client import ErrorCode, InvalidRequest, ServerBusy, ServerTimeout, ZeroEmbedError
from zeroembed.client.status import problems

from ..artifact import Artifact
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

    def __init__(self, bridge: CoreBridge, *, bind: str, port: int, models: dict[str, Artifact],
                 max_message_bytes: int, max_texts_per_request: int, request_timeout_s: float,
                 api_key: str | None = None) -> None:
        self.bind, self.port = bind, port
        self.artifacts = models  # by name, the default first
        self.default = next(iter(models))
        self.api_key = api_key
        self.max_message_bytes = max_message_bytes
        self._tokenizers: dict[str, Any] = {}  # /tokenize and /decode: each model's own, loaded when first asked
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
            raise StartupError("--http-port needs aiohttp and orjson: pip install 'zeroembed[server]'")
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

        @web.middleware
        async def authorize(request, handler):
            """With an API key, every route but /health needs ``Authorization: Bearer KEY``."""
            if request.path == "/health":
                return await handler(request)
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            # Constant time: how much of a guess matched must not show in how long the refusal takes.
            if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
                return await handler(request)
            message = ("a wrong API key" if scheme.lower() == "bearer" and given else "no API key") + \
                "; send the server's key as 'Authorization: Bearer KEY'"
            if request.path in _TEI_PATHS:
                response = self._json({"error": message, "error_type": "Unauthorized"}, 401)
            else:
                response = self._openai_error(401, message, code="invalid_api_key")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response

        # Without a key there is nothing to check: each middleware is one more coroutine on every request.
        middlewares = [errors] if self.api_key is None else [errors, authorize]
        app = web.Application(client_max_size=self.max_message_bytes, middlewares=middlewares)
        app.router.add_post("/v1/embeddings", self.openai_embeddings)
        app.router.add_post("/embeddings", self.openai_embeddings)  # for clients whose base_url lacks /v1
        app.router.add_post("/embed", self.tei_embed)
        app.router.add_post("/embed_all", self.tei_embed_all)
        app.router.add_post("/rerank", self.tei_rerank)
        app.router.add_post("/v1/rerank", self.cohere_rerank)  # Cohere v1, Jina
        app.router.add_post("/v2/rerank", self.cohere_rerank)  # Cohere's v2 client
        app.router.add_post("/tokenize", self.tei_tokenize)
        app.router.add_post("/decode", self.tei_decode)
        app.router.add_get("/info", self.tei_info)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/status", self.status)
        return app

    @staticmethod
    def _json(body: Any, status: int = 200):
        # orjson writes numpy rows directly, each float32 in its shortest exact form: the vectors of a
        # response never become Python floats, and the GIL this thread shares with the server's loop is
        # held a small fraction of the time json.dumps(array.tolist()) takes.
        return web.Response(body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
                                                default=_plain),
                            status=status, content_type="application/json")

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
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
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
            model = self._model(body, "'model'")
            dim = self.artifacts[model].manifest.hidden_size
            dimensions = body.get("dimensions")
            if dimensions is not None and (not _is_int(dimensions) or not 1 <= dimensions <= dim):
                raise BadRequest(f"'dimensions' must be an integer from 1 to {dim} (this model's size), "
                                 f"got {dimensions!r}", "dimensions")
            truncate = body.get("truncate", True)  # an extension: OpenAI has no such field
            if not isinstance(truncate, bool):
                raise BadRequest("'truncate' must be true or false", "truncate")
            prompt_name = body.get("prompt_name")  # an extension, as TEI's /embed has it
            if prompt_name is not None and not isinstance(prompt_name, str):
                raise BadRequest("'prompt_name' must be a string", "prompt_name")
        except BadRequest as exc:
            return self._openai_error(exc.status, exc.message, param=exc.param, code=exc.code)
        try:
            vectors, tokens = await self._client.encode_counted(texts, truncate=truncate, dimensions=dimensions,
                                                                prompt_name=prompt_name, model=model)
        except ZeroEmbedError as exc:
            return self._openai_server_error(exc)
        if encoding_format == "base64":
            little = np.ascontiguousarray(vectors, dtype="<f4")
            embeddings: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
        else:
            embeddings = list(vectors)
        return self._json({
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embeddings)],
            "model": model,
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
        """``GET /v1/models``: every model served (the default first), in OpenAI's list shape, with what
        each does (``task``: embed or rerank), its size, precision and prompts."""
        return self._json({"object": "list", "data": [
            {"id": name, "object": "model", "created": self.created, "owned_by": "zeroembed",
             "task": artifact.manifest.task, "dim": artifact.manifest.hidden_size,
             "precision": artifact.manifest.precision, "max_seq_length": artifact.manifest.max_seq_length,
             "prompts": dict(artifact.manifest.prompts)}
            for name, artifact in self.artifacts.items()]})

    def _model(self, body: dict[str, Any], field: str = "`model`") -> str:
        """The model a request body names: its ``model`` field, else the default.

        With one model loaded any name is taken (the OpenAI SDKs require a ``model`` and clients send
        whatever their code was written for); with several, a name no model has is refused, listing them.
        """
        name = body.get("model")
        if name is None:
            return self.default
        if not isinstance(name, str):
            raise BadRequest(f"{field} must be a string", "model")
        if name in self.artifacts:
            return name
        if len(self.artifacts) == 1:
            return self.default
        raise BadRequest(f"no model named {name!r} here; the models loaded are {list(self.artifacts)}", "model",
                         code="model_not_found")

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
            model = self._model(body)
            dim = self.artifacts[model].manifest.hidden_size
            prompt_name, dimensions = body.get("prompt_name"), body.get("dimensions")
            if prompt_name is not None and not isinstance(prompt_name, str):
                raise BadRequest("`prompt_name` must be a string")
            if dimensions is not None and (not _is_int(dimensions) or not 1 <= dimensions <= dim):
                raise BadRequest(f"`dimensions` must be an integer from 1 to {dim}")
        except BadRequest as exc:
            return self._tei_bad_request(exc)
        try:
            vectors = await self._client.encode(texts, normalize=normalize, truncate=truncate,
                                                prompt_name=prompt_name, dimensions=dimensions, model=model)
        except ZeroEmbedError as exc:
            return self._tei_error(exc)
        return self._json(vectors)

    def _tei_bad_request(self, exc: BadRequest):
        # TEI: an empty batch is 400 "Empty"; a body it cannot deserialize is 422; too large is 413.
        if exc.code == "empty":
            return self._json({"error": exc.message, "error_type": "Empty"}, 400)
        return self._json({"error": exc.message, "error_type": "Validation"}, 422 if exc.status == 400 else exc.status)

    def _tei_error(self, exc: ZeroEmbedError):
        status, kind = _tei_status(exc)
        return self._json({"error": exc.message, "error_type": kind}, status)

    async def tei_embed_all(self, request):
        """``POST /embed_all``: every token's vector (special tokens included), one list per input."""
        try:
            body = await self._body(request)
            texts = _tei_inputs(body)
            truncate = body.get("truncate", False)
            if not isinstance(truncate, bool):
                raise BadRequest("`truncate` must be true or false")
            model = self._model(body)
        except BadRequest as exc:
            return self._tei_bad_request(exc)
        try:
            vectors = await self._client.encode(texts, output="tokens", truncate=truncate, model=model)
        except ZeroEmbedError as exc:
            return self._tei_error(exc)
        return self._json(vectors)

    async def tei_rerank(self, request):
        """``POST /rerank`` in TEI's shape: ``[{"index", "score", "text"?}]``, best first."""
        try:
            body = await self._body(request)
            query, documents = _rerank_body(body, "texts", tei=True)
            flags = {name: body.get(name, False) for name in ("raw_scores", "return_text", "truncate")}
            for name, value in flags.items():
                if not isinstance(value, bool):
                    raise BadRequest(f"`{name}` must be true or false")
            model = self._model(body)
        except BadRequest as exc:
            return self._tei_bad_request(exc)
        try:
            results, _ = await self._client.rerank(query, documents, return_documents=flags["return_text"],
                                                   truncate=flags["truncate"], raw_scores=flags["raw_scores"],
                                                   model=model)
        except ZeroEmbedError as exc:
            return self._tei_error(exc)
        return self._json([{"index": r.index, "score": r.score, **({"text": r.document} if flags["return_text"] else {})}
                           for r in results])

    async def cohere_rerank(self, request):
        """``POST /v1/rerank`` (and ``/v2/rerank``) in Cohere's and Jina's shape, as LangChain's and
        LlamaIndex's rerankers call it."""
        try:
            body = await self._body(request)
            query, documents = _rerank_body(body, "documents", tei=False)
            top_n = body.get("top_n")
            if top_n is not None and (not _is_int(top_n) or top_n < 1):
                raise BadRequest(f"'top_n' must be a positive integer, got {top_n!r}", "top_n")
            return_documents = body.get("return_documents", False)
            if not isinstance(return_documents, bool):
                raise BadRequest("'return_documents' must be true or false", "return_documents")
            model = self._model(body, "'model'")
        except BadRequest as exc:
            return self._openai_error(exc.status, exc.message, param=exc.param, code=exc.code)
        try:
            results, tokens = await self._client.rerank(query, documents, top_n=top_n,
                                                        return_documents=return_documents, model=model)
        except ZeroEmbedError as exc:
            return self._openai_server_error(exc)
        return self._json({
            "id": f"rerank-{int(time.time() * 1000):x}-{id(request):x}",
            "model": model,
            "results": [{"index": r.index, "relevance_score": r.score,
                         **({"document": {"text": r.document}} if return_documents else {})} for r in results],
            "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
            "usage": {"total_tokens": tokens},
        })

    def _tokenizer(self, model: str):
        """``model``'s tokenizer for /tokenize and /decode (its own copy: the cores' live on another thread)."""
        if model not in self._tokenizers:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(self.artifacts[model].tokenizer_path))
            tokenizer.no_padding()
            tokenizer.no_truncation()
            self._tokenizers[model] = tokenizer
        return self._tokenizers[model]

    async def tei_tokenize(self, request):
        """``POST /tokenize``: each input's tokens as ``{"id", "text", "special", "start", "stop"}``."""
        try:
            body = await self._body(request)
            texts = _tei_inputs(body)
            add_special = body.get("add_special_tokens", True)
            if not isinstance(add_special, bool):
                raise BadRequest("`add_special_tokens` must be true or false")
            model = self._model(body)
        except BadRequest as exc:
            return self._tei_bad_request(exc)
        tokenizer = self._tokenizer(model)
        encodings = await asyncio.get_running_loop().run_in_executor(
            None, lambda: tokenizer.encode_batch(texts, add_special_tokens=add_special))
        return self._json([
            [{"id": token_id, "text": text, "special": bool(special), "start": start if not special else None,
              "stop": stop if not special else None}
             for token_id, text, special, (start, stop) in zip(e.ids, e.tokens, e.special_tokens_mask, e.offsets)]
            for e in encodings])

    async def tei_decode(self, request):
        """``POST /decode``: token ids back to text, one string per list of ids."""
        try:
            body = await self._body(request)
            ids = body.get("ids")
            if isinstance(ids, list) and ids and all(_is_int(i) for i in ids):
                batch = [ids]
            elif isinstance(ids, list) and ids and all(isinstance(row, list) and all(_is_int(i) and i >= 0
                                                                                        for i in row) for row in ids):
                batch = ids
            else:
                raise BadRequest("`ids` must be a non-empty list of token ids, or a list of such lists")
            if any(i < 0 for row in batch for i in row):
                raise BadRequest("`ids` must not be negative")
            skip = body.get("skip_special_tokens", True)
            if not isinstance(skip, bool):
                raise BadRequest("`skip_special_tokens` must be true or false")
            model = self._model(body)
        except BadRequest as exc:
            return self._tei_bad_request(exc)
        tokenizer = self._tokenizer(model)
        vocabulary = tokenizer.get_vocab_size()
        if any(i >= vocabulary for row in batch for i in row):
            return self._json({"error": f"`ids` holds ids past this model's vocabulary of {vocabulary}",
                               "error_type": "Validation"}, 422)
        return self._json(tokenizer.decode_batch(batch, skip_special_tokens=skip))

    async def tei_info(self, request):
        """``GET /info`` (``?model=NAME``): a model's facts and the server's limits, in TEI's shape."""
        try:
            model = self._model(dict(request.query))
            status = await self._server_status()
        except BadRequest as exc:
            return self._tei_bad_request(exc)
        except (ZeroEmbedError, asyncio.TimeoutError) as exc:
            return self._json({"error": f"the server did not answer: {exc}", "error_type": "Unhealthy"}, 503)
        facts = next(m for m in status.get("models", [status]) if m.get("name", model) == model)
        manifest = self.artifacts[model].manifest
        if manifest.task == "rerank":
            labels = list(getattr(manifest, "labels", None) or ["LABEL_0"])
            model_type: dict[str, Any] = {"reranker": {"id2label": {str(i): str(label) for i, label in enumerate(labels)},
                                                       "label2id": {label: i for i, label in enumerate(labels)}}}
        else:
            model_type = {"embedding": {"pooling": manifest.pooling}}
        batching = status.get("batching", {})
        return self._json({
            "model_id": model, "model_sha": None, "model_dtype": manifest.precision, "model_type": model_type,
            "task": manifest.task, "dim": manifest.hidden_size, "max_input_length": manifest.max_seq_length,
            "max_batch_tokens": batching.get("max_batch_tokens"), "max_batch_requests": batching.get("max_batch_size"),
            "max_client_batch_size": self._client.max_texts_per_request,
            "max_documents_per_rerank": facts.get("max_documents_per_rerank"),
            "max_queue": facts.get("max_queue"), "prompts": dict(manifest.prompts),
            "models": list(self.artifacts), "version": status.get("version"),
        })

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


def _plain(value: Any) -> Any:
    """What orjson cannot write itself (a non-contiguous array, a numpy scalar), as plain Python."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


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


#: Routes answered in TEI's error shape (``{"error", "error_type"}``); the rest answer in OpenAI's.
_TEI_PATHS = frozenset({"/embed", "/embed_all", "/rerank", "/tokenize", "/decode", "/info"})


def _rerank_body(body: dict[str, Any], field: str, *, tei: bool) -> tuple[str, list[str]]:
    """The query and documents of a rerank body (``field`` names the documents: TEI's ``texts``, Cohere's
    ``documents``, whose entries may also be ``{"text": ...}`` objects)."""
    quote = "`" if tei else "'"
    query = body.get("query")
    if not isinstance(query, str):
        raise BadRequest(f"{quote}query{quote} is required: a string", "query")
    value = body.get(field)
    if not isinstance(value, list):
        raise BadRequest(f"{quote}{field}{quote} is required: a list of strings", field)
    if not value:
        raise BadRequest(f"{quote}{field}{quote} is empty; send at least one document", field, code="empty")
    documents = []
    for index, document in enumerate(value):
        if not tei and isinstance(document, dict) and isinstance(document.get("text"), str):
            document = document["text"]  # Cohere's v1 document objects
        if not isinstance(document, str):
            raise BadRequest(f"{quote}{field}{quote}[{index}] is {type(document).__name__}, expected a string", field)
        documents.append(document)
    return query, documents


def _tei_status(exc: ZeroEmbedError) -> tuple[int, str]:
    """TEI's status and error_type for an error of the request core (TEI: Validation is 413, Backend 424)."""
    if isinstance(exc, InvalidRequest):
        return 413, "Validation"
    if isinstance(exc, ServerBusy):
        return (503, "Unhealthy") if exc.code == ErrorCode.SHUTTING_DOWN else (429, "Overloaded")
    if isinstance(exc, ServerTimeout):
        return 504, "Backend"
    return 424, "Backend"
