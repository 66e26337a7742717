"""Requests accepted and not yet answered: validation of their options, and reassembly of results.

A request's texts may run in several batches on several workers; each result
lands in its slot here, and the reply goes out once every slot is filled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError

from zeroembed.client.protocol import ErrorCode, Output, Request, encode_reply

from ..artifact import POOLED, SENTENCE, TOKENS, Manifest


class RequestRejected(Exception):
    """A request the server answers with an error instead of running it."""

    def __init__(self, code: ErrorCode, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.index = index


class EncodeOptionsModel(BaseModel):
    """The options of an ``encode`` header, validated strictly (``"yes"`` is not a bool)."""

    model_config = ConfigDict(extra="ignore")  # unknown fields are additive, per the protocol's rules

    output: Literal["sentence", "tokens"] = "sentence"
    normalize: StrictBool | None = None
    truncate: StrictBool = True
    show_tokens: StrictBool = False
    is_tokenized: StrictBool = False  # texts are word lists, not re-split by the tokenizer


def parse_options(request: Request) -> EncodeOptionsModel:
    """Validate an encode request's options; :class:`RequestRejected` names the bad field."""
    try:
        return EncodeOptionsModel.model_validate(request.header)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(p) for p in first["loc"])
        raise RequestRejected(ErrorCode.INVALID_REQUEST, f"option {field_name!r}: {first['msg']}") from None


def check_limits(texts: list[str] | list[list[str]], *, max_texts: int, max_chars: int) -> int:
    """Refuse a request over the per-request limits, naming the limit and the text; return its characters."""
    if len(texts) > max_texts:
        raise RequestRejected(
            ErrorCode.LIMIT_EXCEEDED, f"{len(texts)} texts in one request; the limit is {max_texts} (split it)"
        )
    total = 0
    for index, text in enumerate(texts):
        chars = len(text) if isinstance(text, str) else sum(map(len, text))
        if chars > max_chars:
            raise RequestRejected(
                ErrorCode.LIMIT_EXCEEDED, f"texts[{index}] has {chars} characters; the limit is {max_chars}", index
            )
        total += chars
    return total


@dataclass(eq=False)
class PendingRequest:
    """One accepted encode request, collecting its texts' results."""

    socket: Any  # the ROUTER socket the request came in on, and its reply goes out on
    envelope: list[bytes]  # ROUTER routing frames: how to reach the client
    id: str
    count: int
    output: str  # "sentence" | "tokens"
    source: str  # the model output this request reads
    renormalize: bool  # L2-normalise here (the model's graph did not)
    dim: int
    pieces: list[list[str]] | None = None
    num_tokens: int = 0
    received_at: float = field(default_factory=time.monotonic)  # when the broker read it
    failed: bool = False
    _sentences: np.ndarray | None = None
    _tokens: list[np.ndarray | None] = field(default_factory=list)
    _remaining: int = 0

    def __post_init__(self) -> None:
        self._remaining = self.count
        if self.output == Output.SENTENCE:
            self._sentences = np.empty((self.count, self.dim), dtype=np.float32)
        else:
            self._tokens = [None] * self.count

    @classmethod
    def create(cls, socket: Any, envelope: list[bytes], request: Request, options: EncodeOptionsModel,
               manifest: Manifest, received_at: float) -> PendingRequest:
        """Decide which model output serves the request, and whether to normalise after."""
        want_normalized = manifest.normalize if options.normalize is None else options.normalize
        if options.output == Output.TOKENS:
            source, renormalize = TOKENS, bool(options.normalize)
        elif manifest.normalize and not want_normalized:
            if POOLED not in manifest.outputs:
                raise RequestRejected(ErrorCode.INVALID_REQUEST,
                                      "this artifact has no pooled_embedding output: normalize=False is unavailable")
            source, renormalize = POOLED, False
        else:
            source, renormalize = SENTENCE, want_normalized and not manifest.normalize
        return cls(socket=socket, envelope=envelope, id=request.id, count=len(request.texts), output=options.output,
                   source=source, renormalize=renormalize, dim=manifest.hidden_size, received_at=received_at)

    @property
    def done(self) -> bool:
        return self._remaining == 0

    def fill(self, index: int, vector: np.ndarray) -> None:
        """Store one text's result (a sentence vector, or its token vectors)."""
        if self.renormalize:
            norm = np.linalg.norm(vector, axis=-1, keepdims=True)
            vector = vector / np.maximum(norm, 1e-12)
        if self._sentences is not None:
            self._sentences[index] = vector
        else:
            self._tokens[index] = vector
        self._remaining -= 1

    def reply(self) -> list:
        """The reply frames, routing envelope included."""
        fields: dict = {"num_tokens": self.num_tokens}
        if self.pieces is not None:
            fields["tokens"] = self.pieces
        if self._sentences is not None:
            frames = encode_reply(self.id, [self._sentences], **fields)
        else:
            tokens = [t for t in self._tokens if t is not None]
            flat = np.concatenate(tokens) if tokens else np.empty((0, self.dim), dtype=np.float32)
            frames = encode_reply(self.id, [flat], lengths=[len(t) for t in tokens], **fields)
        return [*self.envelope, *frames]
