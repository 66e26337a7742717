"""An accepted encode request while its texts run: which model output serves it, and its results.

A request's texts may run in several batches on several workers; each result
lands in its slot here, and the answer is built once every slot is filled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zeroembed.client.protocol import EncodeOptions, ErrorCode, Output, encode_error, encode_reply

from ..artifact import LOGITS, POOLED, SENTENCE, TOKENS, ArtifactManifest
from .validation import RequestRejected


@dataclass(slots=True)
class Outcome:
    """A request's answer before any wire format: arrays and header fields, or an error.

    Front ends turn it into their own reply (:meth:`frames` for protocol v1).
    """

    request_id: str | None
    arrays: list[np.ndarray] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    error: ErrorCode | None = None
    message: str = ""
    index: int | None = None  # the offending text, for some errors

    def frames(self) -> list[bytes | memoryview]:
        """The protocol-v1 reply frames."""
        if self.error is not None:
            return encode_error(self.request_id, self.error, self.message, self.index)
        return encode_reply(self.request_id, self.arrays, **self.fields)


#: Where a request's :class:`Outcome` goes: called once, on the core's thread.
Respond = Callable[[Outcome], None]


@dataclass(eq=False)
class EncodeJob:
    """One accepted encode request, collecting its texts' results. Batch items point here
    (:class:`~zeroembed.server.core.batcher.Owner`): ``model_output`` and ``failed`` are what the
    worker side reads."""

    respond: Respond
    id: str
    count: int
    output: str  # "sentence" | "tokens"
    model_output: str  # the model output this request reads
    renormalize: bool  # L2-normalise here (the model's graph did not)
    dim: int
    dimensions: int | None = None  # keep only the first ``dimensions`` of each vector (Matryoshka)
    normalized: bool = False  # the vectors are unit length: re-normalize them after cutting
    prompt_length: int = 0  # tokens of the prompt in each text, for models that pool without them
    pieces: list[list[str]] | None = None
    num_tokens: int = 0
    received_at: float = field(default_factory=time.monotonic)  # when the server read it
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
    def create(cls, respond: Respond, request_id: str, count: int, options: EncodeOptions,
               manifest: ArtifactManifest, received_at: float) -> EncodeJob:
        """Decide which model output serves the request, and whether to normalise after."""
        want_normalized = manifest.normalize if options.normalize is None else options.normalize
        if options.output == Output.TOKENS:
            model_output, renormalize = TOKENS, bool(options.normalize)
        elif manifest.normalize and not want_normalized:
            if POOLED not in manifest.outputs:
                raise RequestRejected(ErrorCode.INVALID_REQUEST,
                                      "this artifact has no pooled_embedding output: normalize=False is unavailable")
            model_output, renormalize = POOLED, False
        else:
            model_output, renormalize = SENTENCE, want_normalized and not manifest.normalize
        normalized = renormalize or (model_output == SENTENCE and manifest.normalize)
        return cls(respond=respond, id=request_id, count=count, output=options.output, model_output=model_output,
                   renormalize=renormalize, dim=manifest.hidden_size, received_at=received_at,
                   dimensions=check_dimensions(options.dimensions, manifest), normalized=normalized)

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

    def outcome(self) -> Outcome:
        """The finished request's answer."""
        fields: dict = {"num_tokens": self.num_tokens}
        if self.pieces is not None:
            fields["tokens"] = self.pieces
        if self._sentences is not None:
            return Outcome(self.id, [self._cut(self._sentences)], fields)
        tokens = [t for t in self._tokens if t is not None]
        flat = np.concatenate(tokens) if tokens else np.empty((0, self.dim), dtype=np.float32)
        fields["lengths"] = [len(t) for t in tokens]
        return Outcome(self.id, [self._cut(flat)], fields)

    def _cut(self, vectors: np.ndarray) -> np.ndarray:
        return cut_dimensions(vectors, self.dimensions, self.normalized or self.renormalize)


def check_dimensions(dimensions: int | None, manifest: ArtifactManifest) -> int | None:
    """A request's Matryoshka ``dimensions``: None when it keeps every one; :class:`RequestRejected`
    naming the option past the model's size (the lower bound is the protocol's)."""
    if dimensions is not None and dimensions > manifest.hidden_size:
        raise RequestRejected(ErrorCode.INVALID_REQUEST, f"option 'dimensions' must be at most {manifest.hidden_size} "
                                                         f"(this model's size), got {dimensions}")
    return dimensions if dimensions != manifest.hidden_size else None


def cut_dimensions(vectors: np.ndarray, dimensions: int | None, normalized: bool) -> np.ndarray:
    """The first ``dimensions`` of each row of ``vectors`` (all when None), unit length again if
    ``normalized``: as sentence-transformers' ``truncate_dim`` followed by its normalisation."""
    if dimensions is None:
        return vectors
    cut = vectors[:, :dimensions]
    if normalized:
        cut = cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(cut, dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


#: ``manifest.activation`` → the function that turns a batch of logits (pairs, labels) into scores.
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": _sigmoid, "identity": lambda x: x, "softmax": _softmax, "tanh": np.tanh,
}


@dataclass(eq=False)
class RerankJob:
    """One accepted rerank request, collecting its pairs' logits (an ``Owner`` of batch items, like
    :class:`EncodeJob`). Its answer is one float32 score per document, in the documents' order."""

    respond: Respond
    id: str
    count: int
    activation: str  # the manifest's, or "identity" for raw scores
    received_at: float
    model_output: str = LOGITS
    failed: bool = False
    num_tokens: int = 0
    pieces: None = None
    prompt_length: int = 0  # rerankers take no prompt
    _logits: np.ndarray | None = None
    _remaining: int = 0

    def __post_init__(self) -> None:
        self._remaining = self.count
        self._logits = np.empty(self.count, dtype=np.float32)

    @property
    def done(self) -> bool:
        return self._remaining == 0

    def fill(self, index: int, row: np.ndarray) -> None:
        """Store one pair's logits (a row of one label: reranker artifacts are checked to have one)."""
        self._logits[index] = row[0]
        self._remaining -= 1

    def outcome(self) -> Outcome:
        scores = ACTIVATIONS[self.activation](self._logits[:, None].astype(np.float64))[:, 0]
        return Outcome(self.id, [scores.astype(np.float32)], {"num_tokens": self.num_tokens})
