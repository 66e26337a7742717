"""``manifest.json`` of a rerank artifact (``task: "rerank"``); see docs/artifact.md.

Shares the embedder manifest's provenance fields (architecture, precision,
quantisation, tool versions, checksum) and replaces what only an embedder has
(pooling, normalisation, cosine parity) with the classifier's labels, its
activation, the pair truncation and a score-based parity report.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .manifest import (
    EXPORTER_REVISION,
    FORMAT_VERSION,
    Architecture,
    ManifestFile,
    Precision,
    QuantizationReport,
    ToolVersions,
)

Activation = Literal["sigmoid", "identity", "softmax", "tanh"]


class RerankParityReport(BaseModel):
    """The artifact's scores against ``sentence_transformers.CrossEncoder.predict``."""

    passed: bool
    method: str
    provider: str
    reference: str
    num_queries: int
    num_pairs: int
    tokenization: str  # how the artifact's tokenizer was checked against CrossEncoder's
    max_abs_score_diff: float  # after the activation, as CrossEncoder.predict returns them
    max_abs_logit_diff: float  # raw logits (predict with an identity activation)
    rankings_changed: int  # validation queries whose document order differs from the reference
    thresholds: dict[str, float]  # max_abs_score_diff, and rankings_changed where it is gated


class RerankManifest(ManifestFile):
    """Everything a runtime needs to score (query, document) pairs with ``model.onnx``."""

    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    exporter_revision: int = EXPORTER_REVISION
    task: Literal["rerank"] = "rerank"
    source: str
    architecture: Architecture
    classifier: str  # the transformers class, e.g. BertForSequenceClassification
    hidden_size: int
    max_seq_length: int  # tokens per pair after truncation, special tokens included
    truncation: Literal["longest_first"] = "longest_first"
    num_labels: int
    labels: list[str]
    activation: Activation
    activation_fn: str  # the torch class CrossEncoder applies, e.g. torch.nn.modules.activation.Sigmoid
    precision: Precision
    inputs: list[str]
    outputs: list[str]
    opset: int
    fused_operators: dict[str, int]
    parity: RerankParityReport
    quantization: QuantizationReport | None = None
    tool_versions: ToolVersions
    model_sha256: str
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

