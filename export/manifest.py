"""``manifest.json``: what the artifact is, how it was made, how well it matches.

The server reads these field names; changing one is a ``format_version`` bump.
See docs/artifact.md for the contract.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 1
# Bumped when the exporter builds a different graph from the same model, so that caches of
# exported models (the server's default model) know to export again. 2: residual LayerNorms
# left unfused (export/fusion.py). 3: int8 quantises the fused attention (export/precision.py).
# 4: ModernBERT and NomicBERT run their real tokens only, padded around attention (export/unpadding.py).
# 5: int8 manifests say whether the weights use the full range (quantization.full_range_weights).
# Manifests written before the field existed read as 1.
EXPORTER_REVISION = 5
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"

Pooling = Literal["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
Precision = Literal["fp32", "fp16", "int8"]


class Architecture(BaseModel):
    """Shape of the encoder, from its config.json."""

    model_type: str
    num_layers: int
    num_heads: int
    hidden_size: int
    vocab_size: int


class DenseInfo(BaseModel):
    """One sentence-transformers ``Dense`` layer applied in the graph after pooling."""

    in_features: int
    out_features: int
    bias: bool
    activation: str  # tanh, identity, relu, gelu, sigmoid, silu
    residual: bool


class Agreement(BaseModel):
    """How closely one output matches the PyTorch reference over the validation texts."""

    min_cosine: float
    max_abs_diff: float


class ParityReport(BaseModel):
    """Result of running the artifact against PyTorch before it was written."""

    passed: bool
    method: str  # how it was validated, in words (fp16 on CPU says so here)
    provider: str  # ONNX Runtime execution provider that ran the artifact
    reference: str
    num_texts: int
    thresholds: dict[str, float]  # output name -> min cosine required
    sentence_embedding: Agreement
    pooled_embedding: Agreement
    token_embeddings: Agreement  # over real (unmasked) tokens only


class QuantizationReport(BaseModel):
    """The int8 recipe that was picked and what the others measured."""

    recipe: str
    description: str
    quantized_nodes: int
    fp32_nodes: list[str]  # MatMuls deliberately left in fp32
    attempts: list[dict[str, object]]  # recipe, sentence/token min cosine, passed
    # s8 weights over the whole range: graded on the exporting CPU, they hold only on CPUs whose u8 x s8 kernels
    # sum exactly (VNNI); servers refuse the artifact elsewhere. None in manifests written before the field.
    full_range_weights: bool | None = None


class ToolVersions(BaseModel):
    torch: str
    transformers: str
    onnx: str
    onnxruntime: str
    zeroembed: str


class ManifestFile(BaseModel):
    """What every artifact's manifest does: written to and read from ``manifest.json``."""

    def write(self, directory: Path) -> Path:
        """Write ``manifest.json`` into ``directory``; returns its path."""
        path = Path(directory) / MANIFEST_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory: Path) -> Self:
        """Load and validate the manifest of the artifact in ``directory``."""
        return cls.model_validate_json((Path(directory) / MANIFEST_FILE).read_text(encoding="utf-8"))


class Manifest(ManifestFile):
    """Everything a runtime needs to serve ``model.onnx`` correctly."""

    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    exporter_revision: int = 1
    # What the artifact does; rerank artifacts have their own manifest (rerank_manifest.py).
    # Manifests written before the field existed read as "embed".
    task: Literal["embed"] = "embed"
    source: str
    architecture: Architecture
    hidden_size: int  # width of sentence_embedding (after any Dense); token_embeddings: architecture.hidden_size
    max_seq_length: int
    pooling: Pooling
    # Fields below up to ``precision`` are additive (absent in older manifests: their defaults hold).
    include_prompt: bool = True  # False: the graph takes ``prompt_length`` and pools without the prompt
    dense: list[DenseInfo] = Field(default_factory=list)
    normalize: bool
    prompts: dict[str, str] = Field(default_factory=dict)
    default_prompt_name: str | None = None
    fused_attention: bool = True  # False only for an --allow-unfused export
    precision: Precision
    inputs: list[str]
    outputs: list[str]
    opset: int
    fused_operators: dict[str, int]
    parity: ParityReport
    quantization: QuantizationReport | None = None
    tool_versions: ToolVersions
    model_sha256: str
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

