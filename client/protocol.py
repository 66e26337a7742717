"""zeroembed wire protocol, version 1 — the one contract between client and server.

Needs only the standard library and numpy, so the thin client can carry it and
the server can validate on top of it. docs/protocol.md is the prose version of
this module; keep them in step.

A request is a multipart ZeroMQ message from a DEALER to the server's ROUTER::

    frame 0  header  UTF-8 JSON object: {"v": 1, "id": "...", "op": "encode"|"rerank"|"status", options...}
    frame 1  texts   UTF-8 JSON array of strings (``encode``: the texts; ``rerank``: the documents)

A reply is::

    frame 0  header  UTF-8 JSON object: {"v": 1, "id": "...", "ok": true, "arrays": [{"dtype", "shape"}], ...}
    frame 1+ one raw little-endian buffer per entry of ``arrays``, C order

or, on failure, a single header frame with ``"ok": false`` and
``"error": {"code", "message", "index"?}``. Nothing on the wire is pickled or
evaluated: JSON and raw numeric buffers only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

import numpy as np

PROTOCOL_VERSION = 1
#: Longest request id accepted; ids are opaque strings chosen by the client.
MAX_ID_LENGTH = 64
#: dtypes a reply buffer may carry. Anything else is refused rather than interpreted.
ALLOWED_DTYPES = frozenset({"<f4", "<f2", "<i8", "<i4"})


class Op(StrEnum):
    """What a request asks for."""

    ENCODE = "encode"
    STATUS = "status"
    RERANK = "rerank"  # added within v1: score (query, document) pairs with a cross-encoder


_OPS = frozenset(o.value for o in Op)


class Output(StrEnum):
    """Which vectors an ``encode`` request wants back."""

    SENTENCE = "sentence"  # one pooled vector per text
    TOKENS = "tokens"  # one vector per token (special tokens included) per text


class ErrorCode(StrEnum):
    """Every error a server can reply with. errors.py maps each to an exception class."""

    MALFORMED = "malformed"  # frames or JSON that cannot be parsed
    UNSUPPORTED_VERSION = "unsupported_version"
    INVALID_REQUEST = "invalid_request"  # well-formed, but an option or text is wrong
    TEXT_TOO_LONG = "text_too_long"  # over the model's max tokens with truncate=False
    LIMIT_EXCEEDED = "limit_exceeded"  # texts per request, characters per text
    BUSY = "busy"  # the queue is full: retry later or elsewhere
    SHUTTING_DOWN = "shutting_down"  # the server is draining and takes no new work
    TIMEOUT = "timeout"  # the server gave up on the request past its deadline
    WORKER_FAILED = "worker_failed"  # the model run failed (worker crashed, runtime error)
    INTERNAL = "internal"  # a bug on the server side


class ProtocolError(Exception):
    """A message that does not follow this protocol. ``code`` says how it fails.

    ``request_id`` is set when the header was readable enough to name the
    request, so the server can still address its error reply to it.
    """

    def __init__(self, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Options of every model request (``encode`` and ``rerank``): the one declaration of their names,
    types and defaults, inherited by each op's options.

    The client's checks (:meth:`checked`), the request header (:meth:`header`) and the
    server's validation all derive from these fields. A field whose metadata says
    ``additive`` goes into the header only when it differs from its default, so a
    server that predates it never sees it set.
    """

    # Which of the server's models answers; None: its default (the first it loaded). Keyword-only, so each
    # op's own options keep their positions.
    model: str | None = field(default=None, kw_only=True, metadata={"additive": True})

    @classmethod
    def checked(cls, values: Mapping[str, Any]) -> Any:
        """Options from ``values`` (absent ones take their defaults), each checked strictly
        (``1`` is no bool); ValueError names the first bad or unknown option."""
        types = option_types(cls)
        unknown = sorted(set(values) - set(types))
        if unknown:
            raise ValueError(f"unknown option {unknown[0]!r}; the options are {sorted(types)}")
        return cls(**{name: option_value(name, value, *types[name], cls) for name, value in values.items()})

    def header(self) -> dict[str, Any]:
        """The options as request header fields."""
        fields: dict[str, Any] = {}
        for option in dataclasses.fields(self):
            value = getattr(self, option.name)
            if option.metadata.get("additive") and value == option.default:
                continue
            fields[option.name] = value.value if isinstance(value, Enum) else value
        return fields


@dataclass(frozen=True, slots=True)
class EncodeOptions(RequestOptions):
    """Options of an ``encode`` request (and ``model``, from :class:`RequestOptions`)."""

    output: Output = Output.SENTENCE
    normalize: bool | None = None  # None keeps the model's own choice
    truncate: bool = True
    show_tokens: bool = False
    is_tokenized: bool = field(default=False, metadata={"additive": True})  # texts are word lists, taken as given
    # One of the model's named prompts (its manifest's ``prompts``), or a literal prompt, prepended to each text.
    prompt_name: str | None = field(default=None, metadata={"additive": True})
    prompt: str | None = field(default=None, metadata={"additive": True})
    # Matryoshka: keep the first ``dimensions`` of each vector (re-normalized when the vectors are normalized).
    dimensions: int | None = field(default=None, metadata={"additive": True, "ge": 1})


@dataclass(frozen=True, slots=True)
class RerankOptions(RequestOptions):
    """Options of a ``rerank`` request (added within v1), and ``model``. The query goes in the header
    (``query``), the documents in the texts frame. Which results come back and in what order
    (``top_n``, the documents' text) is the client's business: the reply carries every score."""

    truncate: bool = True  # cut pairs at the model's max tokens (longest side first); False: too long is an error
    raw_scores: bool = False  # the model's logits, without the manifest's activation


def _option_types(cls: type) -> dict[str, tuple[type, bool]]:
    """Each option's base type and whether it may be None, read from the dataclass's annotations."""
    hints = typing.get_type_hints(cls)
    types = {}
    for name, hint in hints.items():
        args = typing.get_args(hint)
        nullable = type(None) in args
        base = next(a for a in args if a is not type(None)) if args else hint
        types[name] = (base, nullable)
    return types


_TYPES: dict[type, dict[str, tuple[type, bool]]] = {}


def option_types(cls: type) -> dict[str, tuple[type, bool]]:
    """Each option of ``cls`` (an options dataclass): its base type and whether it may be None."""
    if cls not in _TYPES:
        _TYPES[cls] = _option_types(cls)
    return _TYPES[cls]


def option_bounds(name: str, cls: type | None = None) -> dict[str, Any]:
    """An option's numeric bounds (``ge``), from its declaration in ``cls`` (default: EncodeOptions)."""
    fields = {f.name: f for f in dataclasses.fields(cls or EncodeOptions)}
    return {k: v for k, v in fields[name].metadata.items() if k in ("ge", "le")}


#: Each encode option's base type and whether it may be None: what the server's validation derives from.
ENCODE_OPTION_TYPES: dict[str, tuple[type, bool]] = option_types(EncodeOptions)
#: The same for rerank options.
RERANK_OPTION_TYPES: dict[str, tuple[type, bool]] = option_types(RerankOptions)


def option_value(name: str, value: Any, kind: type, nullable: bool, cls: type | None = None) -> Any:
    """``value`` as option ``name`` of type ``kind``; ValueError naming the option when it does not fit."""
    if value is None:
        if nullable:
            return None
    elif issubclass(kind, Enum):
        if isinstance(value, str) and value in kind._value2member_map_:
            return kind(value)
        raise ValueError(f"option {name!r} must be one of {sorted(m.value for m in kind)}, got {value!r}")
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if _is_int(value):
            bounds = option_bounds(name, cls)
            if value < bounds.get("ge", value):
                raise ValueError(f"option {name!r} must be at least {bounds['ge']}, got {value!r}")
            return value
    elif isinstance(value, kind):
        return value
    allowed = f"{kind.__name__} or None" if nullable else kind.__name__
    raise ValueError(f"option {name!r} must be {allowed}, got {value!r}")


@dataclass(slots=True)
class Request:
    """A request as it came off the wire: a checked header and, for ``encode``, the texts."""

    header: dict[str, Any]
    texts: list[str] | list[list[str]] = field(default_factory=list)  # word lists when is_tokenized

    @property
    def id(self) -> str:
        return self.header["id"]

    @property
    def op(self) -> Op:
        return Op(self.header["op"])

    @property
    def model(self) -> str | None:
        """The model named by the request (checked to be a string or None when decoded)."""
        return self.header.get("model")


@dataclass(slots=True)
class Reply:
    """A reply as it came off the wire: its header and decoded arrays."""

    header: dict[str, Any]
    arrays: list[np.ndarray]

    @property
    def id(self) -> str | None:
        # A server that could not read a request's id answers with a null id.
        return self.header.get("id")

    @property
    def ok(self) -> bool:
        return self.header.get("ok") is True

    @property
    def error(self) -> dict[str, Any] | None:
        return self.header.get("error")


# --------------------------------------------------------------------- requests


def encode_request(request_id: str, texts: Sequence[str] | Sequence[Sequence[str]],
                   options: EncodeOptions) -> list[bytes]:
    """Frames of an ``encode`` request."""
    header = {"v": PROTOCOL_VERSION, "id": request_id, "op": Op.ENCODE.value, **options.header()}
    return [_dump(header), _dump(list(texts))]


def rerank_request(request_id: str, query: str, documents: Sequence[str], options: RerankOptions) -> list[bytes]:
    """Frames of a ``rerank`` request: the query in the header, the documents as the texts frame."""
    header = {"v": PROTOCOL_VERSION, "id": request_id, "op": Op.RERANK.value, "query": query, **options.header()}
    return [_dump(header), _dump(list(documents))]


def status_request(request_id: str) -> list[bytes]:
    """Frames of a ``status`` request."""
    return [_dump({"v": PROTOCOL_VERSION, "id": request_id, "op": Op.STATUS.value})]


def decode_request(frames: Sequence[bytes | memoryview]) -> Request:
    """Parse a request's frames; raise :class:`ProtocolError` on anything malformed.

    Checks structure only (JSON objects, version, id, op, texts are strings).
    The server validates option values on top of this with pydantic.
    """
    if not frames:
        raise ProtocolError(ErrorCode.MALFORMED, "empty message")
    header = _load_object(frames[0], "header")
    request_id = header.get("id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_ID_LENGTH:
        raise ProtocolError(ErrorCode.MALFORMED, f"header 'id' must be a string of 1 to {MAX_ID_LENGTH} characters")
    try:
        return _decode_request(header, frames)
    except ProtocolError as exc:
        exc.request_id = request_id  # the header named its request: the error reply can reach it
        raise


def _decode_request(header: dict[str, Any], frames: Sequence[bytes | memoryview]) -> Request:
    version = header.get("v")
    if not _is_int(version) or version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported; this server speaks version {PROTOCOL_VERSION}",
        )
    op = header.get("op")
    if not isinstance(op, str) or op not in _OPS:
        raise ProtocolError(ErrorCode.INVALID_REQUEST, f"unknown op {op!r}; expected one of {sorted(_OPS)}")
    if op == Op.STATUS:
        if len(frames) != 1:
            raise ProtocolError(ErrorCode.MALFORMED, f"a status request has 1 frame, got {len(frames)}")
        return Request(header)
    if len(frames) != 2:
        raise ProtocolError(ErrorCode.MALFORMED, f"an {op} request has 2 frames (header, texts), got {len(frames)}")
    texts = _load(frames[1], "texts")
    if not isinstance(texts, list):
        raise ProtocolError(ErrorCode.MALFORMED, "texts frame must be a JSON array of strings")
    model = header.get("model")
    if model is not None and not isinstance(model, str):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, f"option 'model' must be a string or null, got {model!r}")
    if op == Op.RERANK:
        if not isinstance(header.get("query"), str):
            raise ProtocolError(ErrorCode.INVALID_REQUEST, "a rerank request's header needs 'query', a string")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ProtocolError(ErrorCode.INVALID_REQUEST,
                                    f"documents[{index}] is {type(text).__name__}, expected a string")
        return Request(header, texts)
    # With "is_tokenized": true each text is a list of words, taken as given (not re-split).
    pretokenized = header.get("is_tokenized") is True
    for index, text in enumerate(texts):
        if pretokenized:
            if not isinstance(text, list) or not all(isinstance(word, str) for word in text):
                raise ProtocolError(ErrorCode.INVALID_REQUEST, f"texts[{index}] must be a list of strings "
                                                               "when is_tokenized is true")
        elif not isinstance(text, str):
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST, f"texts[{index}] is {type(text).__name__}, expected a string"
            )
    return Request(header, texts)


# ---------------------------------------------------------------------- replies


def encode_reply(request_id: str, arrays: Sequence[np.ndarray] = (), **fields: Any) -> list[bytes | memoryview]:
    """Frames of a successful reply: the header (with ``fields``) and one raw buffer per array."""
    buffers: list[memoryview] = []
    metas: list[dict[str, Any]] = []
    for array in arrays:
        if not (array.dtype.str in ALLOWED_DTYPES and array.flags.c_contiguous):  # else already as sent
            array = np.require(array, dtype=array.dtype.newbyteorder("<"), requirements="C")  # keeps 0-d shapes
            if array.dtype.str not in ALLOWED_DTYPES:  # fail here, not in every client that reads it
                raise ValueError(f"dtype {array.dtype.str} cannot go on the wire; use one of {sorted(ALLOWED_DTYPES)}")
        metas.append({"dtype": array.dtype.str, "shape": list(array.shape)})
        # Flat bytes via numpy: memoryview.cast refuses zero-sized shapes such as (0, dim).
        buffers.append(memoryview(array.reshape(-1).view(np.uint8)))
    header = {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "arrays": metas, **fields}
    return [_dump(header), *buffers]


def encode_error(request_id: str | None, code: ErrorCode, message: str, index: int | None = None) -> list[bytes]:
    """Frames of an error reply. ``index`` names the offending text, when there is one."""
    error: dict[str, Any] = {"code": ErrorCode(code).value, "message": message}
    if index is not None:
        error["index"] = index
    return [_dump({"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "error": error})]


def decode_reply(frames: Sequence[bytes | memoryview]) -> Reply:
    """Parse a reply's frames; raise :class:`ProtocolError` if they are not a valid reply."""
    if not frames:
        raise ProtocolError(ErrorCode.MALFORMED, "empty reply")
    header = _load_object(frames[0], "reply header")
    version = header.get("v")
    if not _is_int(version) or version != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"reply has protocol version {version!r}")
    if header.get("ok") is not True:
        error = header.get("error")
        if not isinstance(error, Mapping) or not isinstance(error.get("code"), str):
            raise ProtocolError(ErrorCode.MALFORMED, "error reply without an error object")
        if not isinstance(error.get("message", ""), str) or not (error.get("index") is None or _is_int(error["index"])):
            raise ProtocolError(ErrorCode.MALFORMED, "error 'message' must be a string and 'index' an integer")
        return Reply(header, [])
    metas = header.get("arrays", [])
    if not isinstance(metas, list):
        raise ProtocolError(ErrorCode.MALFORMED, "reply 'arrays' must be a list")
    if len(metas) != len(frames) - 1:
        raise ProtocolError(ErrorCode.MALFORMED, f"reply names {len(metas)} arrays but carries {len(frames) - 1}")
    return Reply(header, [_array(meta, frame) for meta, frame in zip(metas, frames[1:])])


# ---------------------------------------------------------------------- helpers


def _array(meta: Any, frame: bytes | memoryview) -> np.ndarray:
    if not isinstance(meta, Mapping):
        raise ProtocolError(ErrorCode.MALFORMED, "array metadata must be an object")
    dtype, shape = meta.get("dtype"), meta.get("shape")
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise ProtocolError(ErrorCode.MALFORMED, f"array dtype {dtype!r} is not one of {sorted(ALLOWED_DTYPES)}")
    if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
        raise ProtocolError(ErrorCode.MALFORMED, f"array shape {shape!r} is not a list of sizes")
    dtype = np.dtype(dtype)
    # Python ints: a hostile shape must not overflow int64 or meet a buffer of the wrong size.
    nbytes = memoryview(frame).nbytes
    if math.prod(shape) * dtype.itemsize != nbytes:
        raise ProtocolError(ErrorCode.MALFORMED, f"array of shape {shape} does not match its {nbytes}-byte buffer")
    try:
        return np.frombuffer(frame, dtype=dtype).reshape(shape)
    except ValueError as exc:  # e.g. more dimensions than numpy supports, or 0-sized huge dims
        raise ProtocolError(ErrorCode.MALFORMED, f"array shape {shape!r} is not usable: {exc}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true must not pass for 1


# One encoder for every frame: json.dumps with options builds a new encoder per call, which costs more
# than encoding a header does.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _dump(value: Any) -> bytes:
    return _ENCODER.encode(value).encode("utf-8")


def _load(frame: bytes | memoryview, what: str) -> Any:
    try:
        return json.loads(bytes(frame).decode("utf-8"))
    # ValueError covers bad UTF-8, bad JSON and integers past Python's digit limit.
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"{what} frame is not UTF-8 JSON: {exc}") from None


def _load_object(frame: bytes | memoryview, what: str) -> dict[str, Any]:
    value = _load(frame, what)
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.MALFORMED, f"{what} frame must be a JSON object")
    return value
