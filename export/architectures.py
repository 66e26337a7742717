"""The architectures the exporter knows, keyed by config.json's ``model_type``.

Each entry says, from JSON alone, how to read the model's shape, how many
position embeddings are usable, how transformers loads it, and how its
attention ends up fused in the graph:

- ``ort-bert``: trace transformers' own model and let ONNX Runtime's transformer
  optimizer (``model_type="bert"``) fuse each layer's attention into
  ``com.microsoft.Attention`` by pattern (bert, roberta, xlm-roberta, distilbert);
- ``in-graph``: trace a module (``export/<builder>.py``) that emits the fused
  contrib op itself, for attention the optimizer has no pattern for (MPNet's
  relative-position bias), then run the optimizer for the rest (LayerNorm, Gelu);
- ``none``: no fusion; exporting needs ``--allow-unfused``.

Whatever the route, the fusion gate (export/fusion.py) counts one fused
attention per layer before anything is written. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FusionRoute = Literal["ort-bert", "in-graph", "none"]


def _no_offset(config: Mapping[str, Any]) -> int:
    return 0


def _pad_offset(config: Mapping[str, Any]) -> int:
    # RoBERTa-style positions count from padding_idx + 1, so that many slots are unusable.
    return int(config.get("pad_token_id", 1)) + 1


@dataclass(frozen=True)
class ArchitectureSpec:
    """What the exporter knows about one transformers ``model_type``."""

    model_type: str
    fusion: FusionRoute
    # config.json keys for the model's shape (DistilBERT names them differently).
    layers_key: str = "num_hidden_layers"
    heads_key: str = "num_attention_heads"
    hidden_key: str = "hidden_size"
    positions_key: str = "max_position_embeddings"
    # Position embeddings a text cannot use, given config.json.
    reserved_positions: Callable[[Mapping[str, Any]], int] = _no_offset
    # Extra keyword arguments for ``AutoModel.from_pretrained``.
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # ``fusion == "in-graph"``: the module under export/ whose ``build(encoder, source)``
    # returns the torch module to trace (input_ids, attention_mask -> last hidden state).
    builder: str | None = None
    # ORT transformer optimizer model type run after tracing (None: skip the optimizer).
    optimizer: str | None = "bert"
    # Cap on max_seq_length when the model folder does not set one.
    default_max_seq_length: int = 512


_BERT_LOAD = {"add_pooling_layer": False}
_DECODER_LOAD = {"use_cache": False}  # one forward pass: no KV cache in the graph

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    spec.model_type: spec
    for spec in (
        ArchitectureSpec("bert", "ort-bert", load_kwargs=_BERT_LOAD),
        ArchitectureSpec("roberta", "ort-bert", load_kwargs=_BERT_LOAD, reserved_positions=_pad_offset),
        ArchitectureSpec("xlm-roberta", "ort-bert", load_kwargs=_BERT_LOAD, reserved_positions=_pad_offset),
        ArchitectureSpec(
            "distilbert", "ort-bert", layers_key="n_layers", heads_key="n_heads", hidden_key="dim"
        ),
        # transformers' MPNet hard-codes padding_idx = 1 for its positions, whatever pad_token_id says.
        ArchitectureSpec(
            "mpnet", "in-graph", builder="mpnet", load_kwargs=_BERT_LOAD,
            reserved_positions=lambda config: 2,
        ),
        # Rotary position embeddings (ModernBERT also sliding-window layers, the Qwen decoders a causal
        # mask and grouped-query heads): transformers' own model with each attention core handed to
        # com.microsoft.MultiHeadAttention (export/fused_attention.py); the encoders' layers rebuilt to
        # run on their real tokens only, padded around that node (export/modernbert.py,
        # export/nomic_bert.py, export/unpadding.py). No pooler to leave out.
        ArchitectureSpec("modernbert", "in-graph", builder="modernbert", default_max_seq_length=8192),
        ArchitectureSpec("nomic_bert", "in-graph", builder="nomic_bert", load_kwargs=_BERT_LOAD,
                         default_max_seq_length=8192),
        ArchitectureSpec("qwen2", "in-graph", builder="fused_attention", load_kwargs=_DECODER_LOAD,
                         default_max_seq_length=8192),
        ArchitectureSpec("qwen3", "in-graph", builder="fused_attention", load_kwargs=_DECODER_LOAD,
                         default_max_seq_length=8192),
    )
}


def supported() -> list[str]:
    """The ``model_type`` values the exporter accepts, sorted."""
    return sorted(ARCHITECTURES)
