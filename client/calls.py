"""One call's requests and replies, shared by the sync and async clients: checking input, building the
requests of a call, reading their replies, assembling the result.

Nothing here touches a socket, so both clients stay thin loops around these
functions and behave the same way by construction.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidRequest, ServerError, ServerTimeout, ZeroEmbedError, error_for
from .protocol import EncodeOptions, Output, ProtocolError, Reply, RerankOptions, decode_reply, encode_request, \
    rerank_request

log = logging.getLogger("zeroembed.client")

#: The server's default limit of texts per request; larger inputs are split into chunks this size.
DEFAULT_MAX_TEXTS_PER_REQUEST = 1024

#: What ``encode`` returns: an array (sentence), a list of arrays (tokens), or either with word pieces.
EncodeResult = np.ndarray | list[np.ndarray] | tuple[Any, list[list[str]]]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One request of a call: where its texts start in the caller's list, its id and frames."""

    offset: int
    count: int
    request_id: str
    frames: list[bytes]


def new_request_id() -> str:
    return os.urandom(16).hex()  # random, so a late reply can never match a later request


def reissue(chunk: Chunk) -> Chunk:
    """``chunk`` under a fresh request id, for sending it again to another replica."""
    header = json.loads(chunk.frames[0])
    header["id"] = request_id = new_request_id()
    frame = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Chunk(chunk.offset, chunk.count, request_id, [frame, *chunk.frames[1:]])


def format_endpoints(endpoints: Sequence[str]) -> str:
    return ", ".join(endpoints)


def check_endpoints(endpoint: str | Sequence[str]) -> list[str]:
    """The endpoint list from the constructor argument (one string or several)."""
    endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint) if isinstance(endpoint, Sequence) else []
    if not endpoints or not all(isinstance(e, str) and e for e in endpoints):
        raise ValueError(f"endpoint must be a non-empty string or a list of them, got {endpoint!r}")
    return endpoints


def check_texts(texts: Any, is_tokenized: bool) -> list[str] | list[list[str]]:
    """``texts`` as a list of str (or, ``is_tokenized``, of word lists), or :class:`InvalidRequest`
    naming the offending index and type."""
    if isinstance(texts, (str, bytes, bytearray, memoryview)) or not isinstance(texts, (Sequence, np.ndarray)):
        # A bare str would otherwise be encoded one character at a time.
        raise InvalidRequest(f"texts must be a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    for index, text in enumerate(texts):
        if is_tokenized:
            if isinstance(text, str) or not isinstance(text, Sequence) or not all(isinstance(w, str) for w in text):
                raise InvalidRequest(f"texts[{index}] must be a list of words (strings) with is_tokenized=True",
                                     index=index)
        elif not isinstance(text, str):
            raise InvalidRequest(f"texts[{index}] is {type(text).__name__}, expected a string", index=index)
    return [list(t) for t in texts] if is_tokenized else texts


_DEFAULT_OPTIONS = EncodeOptions()


def check_options(options: Mapping[str, Any]) -> EncodeOptions:
    """The keyword options of ``encode`` (see :class:`~zeroembed.client.protocol.EncodeOptions`), checked
    before anything is sent; :class:`InvalidRequest` names a bad or unknown one."""
    if not options:
        return _DEFAULT_OPTIONS
    try:
        return EncodeOptions.checked(options)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    return timeout


def check_chunk_size(max_texts_per_request: int) -> int:
    if isinstance(max_texts_per_request, bool) or not isinstance(max_texts_per_request, int) or max_texts_per_request < 1:
        raise ValueError(f"max_texts_per_request must be a positive int, got {max_texts_per_request!r}")
    return max_texts_per_request


def build_chunks(texts: list[str] | list[list[str]], options: EncodeOptions, size: int, *,
                 frames: bool = True) -> list[Chunk]:
    """The requests of one ``encode`` call; an empty list is still one request (the server knows dim).

    ``frames=False`` leaves the frames empty (for callers in the server's process, which pass the texts
    as they are) but still refuses text that is not valid Unicode, as encoding the frames would.
    """
    chunks = []
    for offset in range(0, max(len(texts), 1), size):
        part = texts[offset : offset + size]
        request_id = new_request_id()
        try:
            if frames:
                chunk_frames = encode_request(request_id, part, options)
            else:
                chunk_frames = []
                for text in part:
                    _joined(text).encode("utf-8")
        except UnicodeEncodeError:
            raise _unencodable(part, offset) from None
        chunks.append(Chunk(offset, len(part), request_id, chunk_frames))
    return chunks


def _joined(text: str | list[str]) -> str:
    return text if isinstance(text, str) else "".join(text)  # a word list (is_tokenized) as one string


def _unencodable(part: list[str], offset: int) -> InvalidRequest:
    # Only lone surrogates fail UTF-8; find which text has one, only on this rare path.
    for index, text in enumerate(part):
        try:
            _joined(text).encode("utf-8")
        except UnicodeEncodeError as exc:
            return InvalidRequest(f"texts[{offset + index}] is not valid Unicode: {exc.reason}", index=offset + index)
    return InvalidRequest("texts are not valid Unicode")


def reply_id(frames: Sequence[Any]) -> str | None:
    """The request id a reply answers, read loosely so even a broken reply reaches its caller."""
    try:
        header = json.loads(bytes(frames[0]))
    except (IndexError, ValueError, RecursionError):
        return None
    request_id = header.get("id") if isinstance(header, dict) else None
    return request_id if isinstance(request_id, str) else None


def open_reply(frames: Sequence[Any]) -> tuple[str | None, Reply | ZeroEmbedError]:
    """A reply's request id, and the reply or the exception its error (or its unreadable frames) stands for.

    The header is parsed once: each parse is on every reply's path, and runs with cold
    caches between calls. A reply too broken to decode is still routed by
    the id its header names, read loosely, so the error reaches the call that waits for it.
    """
    try:
        reply = decode_reply(frames)
    except ProtocolError as exc:
        return reply_id(frames), ServerError(f"unreadable reply from the server: {exc.message}", code=exc.code)
    request_id = reply.id if isinstance(reply.id, str) else None
    if not reply.ok:
        error = reply.error or {}
        return request_id, error_for(error["code"], error.get("message", ""), error.get("index"))
    return request_id, reply


def take_reply(outcome: Reply | ZeroEmbedError, chunk: Chunk) -> Reply:
    """The reply to ``chunk``; or its error raised, the text index moved from the chunk's list to the caller's."""
    if isinstance(outcome, ZeroEmbedError):
        if outcome.index is not None and chunk.offset:
            outcome.index += chunk.offset
        raise outcome
    return outcome


def timeout_error(endpoints: Sequence[str], timeout: float | None) -> ServerTimeout:
    return ServerTimeout(
        f"no reply from {format_endpoints(endpoints)} within {timeout} s "
        "(is a server running there? raise `timeout` for large inputs)"
    )


def assemble(chunks: Sequence[Chunk], replies: Sequence[Reply], options: EncodeOptions) -> EncodeResult:
    """The caller's result from the replies to ``chunks``, in order."""
    parts, tokens = [], []
    for chunk, reply in zip(chunks, replies, strict=True):
        parts.append(_vectors(chunk, reply, options.output))
        if options.show_tokens:
            tokens.extend(_word_pieces(chunk, reply))
    if options.output == Output.TOKENS:
        vectors: Any = [v for part in parts for v in part]
    else:
        if len({p.shape[1] for p in parts}) != 1:
            raise ServerError(f"replies disagree on the vector size: {[p.shape for p in parts]}")
        vectors = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return (vectors, tokens) if options.show_tokens else vectors


def _vectors(chunk: Chunk, reply: Reply, output: Output) -> Any:
    if len(reply.arrays) != 1 or reply.arrays[0].ndim != 2 or reply.arrays[0].dtype.kind != "f":
        got = [(a.dtype.str, a.shape) for a in reply.arrays]
        raise ServerError(f"expected one 2-d float array in the reply, got {got}")
    array = reply.arrays[0].astype(np.float32, copy=False)
    if output == Output.SENTENCE:
        if array.shape[0] != chunk.count:
            raise ServerError(f"sent {chunk.count} texts but got {array.shape[0]} vectors back")
        return array
    lengths = reply.header.get("lengths")
    if (
        not isinstance(lengths, list)
        or len(lengths) != chunk.count
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in lengths)
        or sum(lengths) != array.shape[0]
    ):
        raise ServerError(f"reply 'lengths' {lengths!r} does not split {array.shape[0]} token vectors into {chunk.count}")
    if chunk.count == 0:
        return []
    return np.split(array, np.cumsum(lengths[:-1], dtype=np.intp))  # views into the one reply buffer


def _word_pieces(chunk: Chunk, reply: Reply) -> list[list[str]]:
    tokens = reply.header.get("tokens")
    if not isinstance(tokens, list) or len(tokens) != chunk.count or not all(isinstance(t, list) for t in tokens):
        raise ServerError(f"reply 'tokens' is not a list of {chunk.count} word-piece lists")
    return tokens


@dataclass(frozen=True, slots=True)
class RerankResult:
    """One document's place in a ``rerank`` answer: its index in the documents sent, its score, and its
    text when ``return_documents`` was asked for."""

    index: int
    score: float
    document: str | None = None


def check_rerank(query: Any, documents: Any, top_n: Any, return_documents: Any, options: Mapping[str, Any]
                 ) -> tuple[list[str], RerankOptions]:
    """A ``rerank`` call's arguments checked before anything is sent: the documents as a list, and the
    options; :class:`InvalidRequest` names the bad one."""
    if not isinstance(query, str):
        raise InvalidRequest(f"query must be a string, got {type(query).__name__}")
    if isinstance(documents, (str, bytes)) or not isinstance(documents, (Sequence, np.ndarray)):
        raise InvalidRequest(f"documents must be a list of strings, got {type(documents).__name__}")
    documents = list(documents)
    if not documents:
        raise InvalidRequest("documents is empty; send at least one document to rank")
    for index, document in enumerate(documents):
        if not isinstance(document, str):
            raise InvalidRequest(f"documents[{index}] is {type(document).__name__}, expected a string", index=index)
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise InvalidRequest(f"top_n must be a positive int or None, got {top_n!r}")
    if not isinstance(return_documents, bool):
        raise InvalidRequest(f"return_documents must be True or False, got {return_documents!r}")
    try:
        checked = RerankOptions.checked({k: v for k, v in options.items()})
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return documents, checked


def rerank_chunk(query: str, documents: list[str], options: RerankOptions) -> Chunk:
    """The one request of a ``rerank`` call (the server's limit on documents applies to it whole)."""
    request_id = new_request_id()
    try:
        frames = rerank_request(request_id, query, documents, options)
    except UnicodeEncodeError:
        if not _valid(query):
            raise InvalidRequest("query is not valid Unicode") from None
        error = _unencodable(documents, 0)
        raise InvalidRequest(error.message.replace("texts[", "documents["), index=error.index) from None
    return Chunk(0, len(documents), request_id, frames)


def _valid(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def rank(reply: Reply, documents: Sequence[str], top_n: int | None, return_documents: bool) -> list[RerankResult]:
    """A ``rerank`` reply as results, best first (ties in document order), at most ``top_n``."""
    if len(reply.arrays) != 1 or reply.arrays[0].shape != (len(documents),) or reply.arrays[0].dtype.kind != "f":
        got = [(a.dtype.str, a.shape) for a in reply.arrays]
        raise ServerError(f"expected one float array of {len(documents)} scores in the reply, got {got}")
    scores = reply.arrays[0].astype(np.float64)
    order = np.argsort(-scores, kind="stable")[:top_n]
    return [RerankResult(int(i), float(scores[i]), documents[i] if return_documents else None) for i in order]


def read_status(reply: Reply) -> dict[str, Any]:
    status = reply.header.get("status")
    if not isinstance(status, dict):
        raise ServerError("status reply has no 'status' object")
    return status


def log_stray(request_id: str | None) -> None:
    log.debug("dropping a reply no pending call waits for (late, or unreadable): id=%r", request_id)
