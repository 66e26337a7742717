"""Recognise a cross-encoder (reranker) directory and read what exporting it needs.

A reranker is a sentence-transformers ``CrossEncoder`` folder or a plain
Hugging Face ``*ForSequenceClassification`` checkpoint. Like source.py, only
JSON files are read here, never torch, so a bad ``--model`` fails at once.

The activation and the truncation length mirror what the installed
sentence-transformers' ``CrossEncoder`` does when it loads the same folder
(checked again against the loaded ``CrossEncoder`` during validation):

- activation: ``activation_fn`` in ``config_sentence_transformers.json``, else
  ``sentence_transformers.activation_fn`` in config.json, else the pre-v4
  ``sbert_ce_default_activation_function``; a path outside ``torch.`` is
  ignored (CrossEncoder only imports it with ``trust_remote_code``); with none,
  sigmoid for one label and identity for several.
- length: ``max_seq_length`` in ``sentence_bert_config.json``, else the
  tokenizer's ``model_max_length`` capped at ``max_position_embeddings``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .architectures import ARCHITECTURES
from .errors import ExportError
from .head import read_json
from .source import EncoderSource, check_max_seq_length, check_model_files, read_encoder_shape

# model_type values whose classifier graph is exported and fused (BERT's pooler
# head, RoBERTa's classification head); other encoders come with their own checks.
RERANK_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
# transformers saves no id2label for two labels, its default; a classifier of another size
# that lost its id2label then fails to load (the weights' shape disagrees), naming the problem.
_DEFAULT_NUM_LABELS = 2
# transformers' tokenizer_config.json value for "no limit" is 1e30 (VERY_LARGE_INTEGER).
_NO_LIMIT = 10**18

# torch activation class name -> the name the manifest records and the server applies.
ACTIVATIONS = {"Sigmoid": "sigmoid", "Identity": "identity", "Softmax": "softmax", "Tanh": "tanh"}


@dataclass(frozen=True)
class RerankSource(EncoderSource):
    """A cross-encoder directory, validated: the encoder's shape (``name``: the directory, absolute,
    ``max_seq_length``: the pair truncation length) plus the classifier's."""

    architecture: str  # e.g. BertForSequenceClassification
    num_labels: int
    labels: list[str]  # id2label, in label order
    activation: str  # one of ACTIVATIONS' values
    activation_fn: str  # the torch class path CrossEncoder resolves, e.g. torch.nn.modules.activation.Sigmoid
    token_types: bool  # the model embeds token types (query 0, document 1)
    crossencoder_max_length: int  # what CrossEncoder truncates at by itself, before any cap or override

    @property
    def allow_unfused(self) -> bool:
        """A reranker is exported only with one fused attention per layer."""
        return False


def _st_model_type(model_dir: Path) -> str | None:
    file = model_dir / "config_sentence_transformers.json"
    if not file.is_file():
        return None
    value = read_json(file).get("model_type")
    return value if isinstance(value, str) else None


def is_reranker(model: str | Path | None) -> bool:
    """Whether ``model`` is a directory holding a sequence classifier or a CrossEncoder."""
    if model is None:
        return False
    model_dir = Path(model).expanduser()
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        return False  # source.resolve_source names the problem
    if _st_model_type(model_dir) == "CrossEncoder":
        return True
    architectures = read_json(config_file).get("architectures") or []
    return any(str(arch).endswith("ForSequenceClassification") for arch in architectures)


def _activation(model_dir: Path, config: dict[str, Any], num_labels: int) -> tuple[str, str]:
    """(manifest name, torch class path) of the activation CrossEncoder.predict applies."""
    candidates: list[tuple[str, object]] = []
    st_file = model_dir / "config_sentence_transformers.json"
    if st_file.is_file():
        candidates.append((st_file.name, read_json(st_file).get("activation_fn")))
    st_section = config.get("sentence_transformers")
    if isinstance(st_section, dict) and "activation_fn" in st_section:
        candidates.append(("config.json sentence_transformers", st_section.get("activation_fn")))
    elif config.get("sbert_ce_default_activation_function") is not None:
        candidates.append(("config.json", config["sbert_ce_default_activation_function"]))
    for where, path in candidates:
        if not isinstance(path, str) or not path.startswith("torch."):
            continue  # CrossEncoder ignores it (untrusted code) and falls through
        name = ACTIVATIONS.get(path.rsplit(".", 1)[-1])
        if name is None:
            raise ExportError(
                f"unsupported CrossEncoder activation_fn {path!r} in {where} of {model_dir} "
                f"(supported: torch.nn {', '.join(ACTIVATIONS)})"
            )
        return name, path
    if num_labels == 1:
        return "sigmoid", "torch.nn.modules.activation.Sigmoid"
    return "identity", "torch.nn.modules.linear.Identity"


def _check_st_modules(model_dir: Path) -> None:
    """Refuse sentence-transformers modules besides the one sequence-classification Transformer."""
    modules_file = model_dir / "modules.json"
    if modules_file.is_file():
        kinds = [str(m.get("type", "")) for m in read_json(modules_file)]
        if len(kinds) != 1 or not kinds[0].endswith(".Transformer"):
            raise ExportError(
                f"{modules_file} lists modules {kinds}; a reranker export supports exactly one "
                "Transformer module (sequence classification)"
            )
    st_file = model_dir / "config_sentence_transformers.json"
    if st_file.is_file() and read_json(st_file).get("default_prompt_name"):
        raise ExportError(f"{st_file} sets a default prompt; prompts are not supported for rerankers yet")
    bert_file = model_dir / "sentence_bert_config.json"
    if bert_file.is_file():
        task = read_json(bert_file).get("transformer_task", "sequence-classification")
        if task != "sequence-classification":
            raise ExportError(
                f"{bert_file} has transformer_task {task!r}; a reranker must be 'sequence-classification'"
            )


def _num_labels(config: dict[str, Any], config_file: Path) -> tuple[int, list[str]]:
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        try:
            labels = [str(id2label[key]) for key in sorted(id2label, key=int)]
        except (TypeError, ValueError) as err:
            raise ExportError(f"{config_file} has an invalid id2label: {err}") from err
        return len(labels), labels
    value = config.get("num_labels", config.get("_num_labels", _DEFAULT_NUM_LABELS))
    if not isinstance(value, int) or value < 1:
        raise ExportError(f"{config_file} has an invalid num_labels {value!r}")
    return value, [f"LABEL_{i}" for i in range(value)]


def _crossencoder_max_length(model_dir: Path, positions: int) -> int:
    bert_file = model_dir / "sentence_bert_config.json"
    if bert_file.is_file():
        value = read_json(bert_file).get("max_seq_length")
        if value is not None:
            return int(value)
    limit = _NO_LIMIT
    tok_file = model_dir / "tokenizer_config.json"
    if tok_file.is_file():
        value = read_json(tok_file).get("model_max_length")
        if isinstance(value, (int, float)) and value > 0:
            limit = int(min(value, _NO_LIMIT))
    return min(limit, positions)


def resolve_reranker(model: str | Path, *, max_seq_length: int | None = None) -> RerankSource:
    """Validate the cross-encoder directory ``model`` (see :func:`is_reranker`)."""
    model_dir = Path(model).expanduser()
    config_file = model_dir / "config.json"
    config = read_json(config_file)
    model_type = config.get("model_type")
    architectures = [str(a) for a in config.get("architectures") or []]
    classifier = next((a for a in architectures if a.endswith("ForSequenceClassification")), None)
    if classifier is None:
        raise ExportError(
            f"{model_dir} is a CrossEncoder but {config_file} names no *ForSequenceClassification "
            f"architecture ({architectures or 'none'}); only classifier rerankers can be exported"
        )
    if model_type not in RERANK_MODEL_TYPES:
        raise ExportError(
            f"unsupported reranker architecture {model_type!r} in {config_file} "
            f"(supported: {', '.join(RERANK_MODEL_TYPES)})"
        )
    check_model_files(model_dir)
    _check_st_modules(model_dir)
    num_labels, labels = _num_labels(config, config_file)
    shape = read_encoder_shape(config, ARCHITECTURES[model_type], config_file)
    usable = shape["max_position_embeddings"]  # RoBERTa's padding offset removed
    try:
        type_vocab_size = int(config.get("type_vocab_size", 2 if model_type == "bert" else 1))
    except (TypeError, ValueError) as err:
        raise ExportError(f"{config_file} lacks a valid 'type_vocab_size' entry") from err
    ce_max_length = _crossencoder_max_length(model_dir, int(config["max_position_embeddings"]))
    if max_seq_length is not None:
        max_len = check_max_seq_length(max_seq_length, usable)
    else:
        # CrossEncoder caps at the raw position count; RoBERTa's offset makes the last slots unusable.
        max_len = min(ce_max_length, usable)
    activation, activation_fn = _activation(model_dir, config, num_labels)
    return RerankSource(
        path=model_dir.resolve(),
        name=str(model_dir.resolve()),
        model_type=model_type,
        **shape,
        max_seq_length=max_len,
        architecture=classifier,
        num_labels=num_labels,
        labels=labels,
        activation=activation,
        activation_fn=activation_fn,
        token_types=type_vocab_size > 1,
        crossencoder_max_length=ce_max_length,
    )
