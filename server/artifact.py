"""Opening an exported model artifact: the directory `zeroembed export` writes.

The artifact contract (docs/artifact.md) is the only thing the server knows of
the exporter: ``model.onnx``, ``tokenizer.json`` and ``manifest.json``. This
module reads the manifest fields the server needs and checks the files are
there, so a bad ``--model`` fails at start with a message, not in a worker.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .workers.padding import PADDED_INPUTS, PROMPT_LENGTH

log = logging.getLogger(__name__)

SENTENCE = "sentence_embedding"
POOLED = "pooled_embedding"
TOKENS = "token_embeddings"
LOGITS = "logits"  # a reranker's output: one row of logits per (query, document) pair


class ArtifactError(Exception):
    """An artifact directory that cannot be served; ``str()`` names the problem."""


class QuantizationFacts(BaseModel):
    """What an int8 manifest says of its quantization that the server acts on (workers/int8_kernel.py)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    full_range_weights: bool | None = None  # s8 weights over the whole range; None: exported before the field


class ArtifactManifest(BaseModel):
    """The manifest fields the server relies on; the rest is kept and reported as is."""

    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=())

    format_version: int
    source: str
    hidden_size: int
    max_seq_length: int
    pooling: Literal["mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
    normalize: bool
    precision: Literal["fp32", "fp16", "int8"]
    inputs: list[str]
    outputs: list[str]
    prompts: dict[str, str] = {}  # sentence-transformers' named prompts, e.g. {"query": "query: "}
    default_prompt_name: str | None = None  # applied when a request names no prompt
    include_prompt: bool = True  # false: the graph pools without the prompt's tokens (input ``prompt_length``)
    fused_attention: bool = True  # false: exported with --allow-unfused
    quantization: QuantizationFacts | None = None  # int8 artifacts only
    task: Literal["embed"] = "embed"


class RerankManifest(BaseModel):
    """A reranker's manifest (``task: "rerank"``, docs/artifact.md "Rerank artifacts"): pairs in, logits out."""

    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=())

    task: Literal["rerank"]
    format_version: int
    source: str
    hidden_size: int
    max_seq_length: int  # tokens per (query, document) pair
    precision: Literal["fp32", "fp16", "int8"]
    inputs: list[str]
    outputs: list[str]
    num_labels: int
    activation: Literal["sigmoid", "identity", "softmax", "tanh"]
    # None for rerankers: here so every manifest answers the same questions.
    prompts: dict[str, str] = {}
    default_prompt_name: str | None = None
    include_prompt: bool = True
    fused_attention: bool = True
    quantization: QuantizationFacts | None = None


@dataclass(frozen=True)
class Artifact:
    """A checked artifact directory."""

    path: Path
    manifest: ArtifactManifest | RerankManifest
    raw_manifest: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / "model.onnx"

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def name(self) -> str:
        return Path(self.manifest.source).name or self.manifest.source


def open_artifact(path: str | Path) -> Artifact:
    """Check ``path`` holds a servable artifact and read its manifest."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ArtifactError(f"model artifact {path} is not a directory (make one with `zeroembed export --out DIR`)")
    for name in ("model.onnx", "tokenizer.json", "manifest.json"):
        if not (path / name).is_file():
            raise ArtifactError(
                f"{path} is not a zeroembed artifact: {name} is missing (make one with `zeroembed export --out DIR`)"
            )
    try:
        raw = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        kind = RerankManifest if isinstance(raw, dict) and raw.get("task") == "rerank" else ArtifactManifest
        manifest = kind.model_validate(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path / 'manifest.json'} is not valid JSON: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(f"{path / 'manifest.json'} is not a zeroembed manifest: {where}: {first['msg']}") from None
    if manifest.format_version != 1:
        raise ArtifactError(f"{path} has artifact format {manifest.format_version}; this server reads format 1")
    missing = {"input_ids", "attention_mask"} - set(manifest.inputs)
    if missing:
        raise ArtifactError(f"{path}: model inputs lack {sorted(missing)}")
    unknown = set(manifest.inputs) - set(PADDED_INPUTS) - {PROMPT_LENGTH}
    if unknown:
        raise ArtifactError(f"{path}: model inputs {sorted(unknown)} are not ones this server fills "
                            f"(it feeds {', '.join((*PADDED_INPUTS, PROMPT_LENGTH))})")
    if isinstance(manifest, RerankManifest):
        if LOGITS not in manifest.outputs:
            raise ArtifactError(f"{path}: a rerank model's outputs lack 'logits'")
        if manifest.num_labels != 1:
            # Several labels make a pair classifier (e.g. NLI), which has no one score to rank by.
            raise ArtifactError(f"{path}: a reranker has one label; this model has {manifest.num_labels} "
                                "(a pair classifier), so there is no one score to rank by")
        return Artifact(path=path, manifest=manifest, raw_manifest=raw)
    if (PROMPT_LENGTH in manifest.inputs) == manifest.include_prompt:
        raise ArtifactError(f"{path}: manifest include_prompt={manifest.include_prompt} contradicts the model's "
                            f"inputs {manifest.inputs} ({PROMPT_LENGTH} is an input exactly when it is false)")
    missing = {SENTENCE, TOKENS} - set(manifest.outputs)
    if missing:
        raise ArtifactError(f"{path}: model outputs lack {sorted(missing)}")
    return Artifact(path=path, manifest=manifest, raw_manifest=raw)
