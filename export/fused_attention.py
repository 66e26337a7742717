"""Fused attention for the architectures ONNX Runtime's optimizer does not fuse.

ModernBERT, NomicBERT and the Qwen2/Qwen3 decoders apply rotary position
embeddings to the queries and keys, and ModernBERT alternates global and
sliding-window layers; Qwen adds a causal mask and grouped-query heads. None of
these match the attention patterns of ``onnxruntime.transformers``, so instead
of tracing the attention math and hoping a pattern matches, the exporter writes
the fused op itself:

1. :func:`register` adds an attention implementation to transformers
   (``config._attn_implementation = ATTN_IMPLEMENTATION``). It receives each
   layer's queries, keys and values after the model applied its rotary
   embedding, and the layer's additive mask as transformers' eager path builds
   it ([batch, 1, query, key], 0 or the dtype's minimum): bidirectional padding
   for global layers, the band for ModernBERT's sliding layers, causal plus
   padding for the decoders. One mask per layer type, built once per batch.
2. It calls the custom torch op ``zeroembed::fused_attention``, which computes
   eager attention in PyTorch (the parity reference runs it) and which the
   TorchScript exporter writes as one placeholder node.
3. :func:`to_contrib_ops` rewrites each placeholder into ONNX Runtime's
   ``com.microsoft.MultiHeadAttention`` with the mask as its ``attention_bias``.

Why ``MultiHeadAttention`` and not ``GroupQueryAttention``: GQA's CPU kernel is
causal-only and finds each row's length from ``seqlens_k``, which assumes right
padding; the encoders need bidirectional and banded masks, and the decoders'
vectors must not depend on the padding side. MHA with an attention bias covers
all four models with one op. Grouped-query heads are expanded to the query
heads before the op (a broadcast copy of K and V; the op dominates).
Rotary embedding stays as the traced elementwise ops (a few Mul/Add/Slice per
layer on [batch, seq, hidden]); ``RotaryEmbedding`` would fuse them but needs a
per-architecture cache layout, left for later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx
    import torch

# Architectures exported through this module (model_type -> kind of attention).
MODEL_TYPES: dict[str, str] = {
    "modernbert": "bidirectional, global and sliding-window layers",
    "nomic_bert": "bidirectional",
    "qwen2": "causal, grouped-query",
    "qwen3": "causal, grouped-query",
}
DECODER_MODEL_TYPES = ("qwen2", "qwen3")

ATTN_IMPLEMENTATION = "zeroembed_mha"
_OP = "zeroembed::fused_attention"
_PLACEHOLDER_DOMAIN = "zeroembed"
_PLACEHOLDER_OP = "FusedAttention"
_MS_DOMAIN = "com.microsoft"

_registered = False


def uses_fused_attention(model_type: str) -> bool:
    """Whether ``model_type`` is exported with this module's attention."""
    return model_type in MODEL_TYPES


def register() -> None:
    """Register the op, its ONNX symbolic and the transformers attention implementation."""
    global _registered
    if _registered:
        return
    import torch
    from torch.onnx import symbolic_helper
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    # An explicit schema: this module's annotations are strings (postponed evaluation).
    @torch.library.custom_op(
        _OP,
        mutates_args=(),
        schema="(Tensor query, Tensor key, Tensor value, Tensor bias, int num_heads, float scale) -> Tensor",
    )
    def fused_attention(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        bias: torch.Tensor,
        num_heads: int,
        scale: float,
    ) -> torch.Tensor:
        """[batch, seq, heads * head_dim] attention, mirroring transformers' eager math."""
        return _eager(query, key, value, bias, num_heads, scale)

    @fused_attention.register_fake
    def _(query, key, value, bias, num_heads, scale):  # noqa: ANN001, ANN202 - signature fixed by torch
        return torch.empty_like(query)

    @symbolic_helper.parse_args("v", "v", "v", "v", "i", "f")
    def symbolic(g, query, key, value, bias, num_heads, scale):  # noqa: ANN001, ANN202
        node = g.op(
            f"{_PLACEHOLDER_DOMAIN}::{_PLACEHOLDER_OP}", query, key, value, bias,
            num_heads_i=num_heads, scale_f=scale,
        )
        node.setType(query.type())
        return node

    # Any opset from 1 up: the symbolic emits one node of its own domain.
    torch.onnx.register_custom_op_symbolic(_OP, symbolic, 1)
    AttentionInterface.register(ATTN_IMPLEMENTATION, _attention)
    # Masks exactly as transformers' eager attention gets them (additive, dtype minimum).
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)
    _registered = True


def _eager(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None,
    num_heads: int, scale: float,
) -> torch.Tensor:
    import torch

    batch, seq, _ = query.shape
    q, k, v = (t.view(batch, seq, num_heads, -1).transpose(1, 2) for t in (query, key, value))
    scores = torch.matmul(q, k.transpose(2, 3)) * scale
    if bias is not None:
        scores = scores + bias
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(weights, v).transpose(1, 2).reshape(batch, seq, -1)


def _attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention interface: [b, heads, s, d] in, [b, s, heads, d] out."""
    import torch

    batch, heads, seq, head_dim = query.shape
    kv_heads = key.shape[1]
    if kv_heads != heads:  # grouped-query: each K/V head serves heads // kv_heads query heads
        groups = heads // kv_heads
        key = key[:, :, None].expand(batch, kv_heads, groups, seq, head_dim).reshape(batch, heads, seq, head_dim)
        value = value[:, :, None].expand(batch, kv_heads, groups, seq, head_dim).reshape(batch, heads, seq, head_dim)
    q, k, v = (t.transpose(1, 2).reshape(batch, seq, heads * head_dim) for t in (query, key, value))
    scale = float(scaling) if scaling is not None else head_dim**-0.5
    if attention_mask is None:
        # transformers skips the mask only for an unpadded bidirectional batch, and
        # never while tracing, so this path runs in the PyTorch reference alone.
        if torch.jit.is_tracing():
            raise RuntimeError("fused attention traced without a mask")
        out = _eager(q, k, v, None, heads, scale)
    else:
        out = torch.ops.zeroembed.fused_attention(q, k, v, attention_mask.to(q.dtype), heads, scale)
    return out.view(batch, seq, heads, head_dim), None


def to_contrib_ops(model: onnx.ModelProto) -> int:
    """Rewrite the placeholders into ``com.microsoft.MultiHeadAttention``; returns how many."""
    import onnx

    count = 0
    for node in model.graph.node:
        if node.domain != _PLACEHOLDER_DOMAIN or node.op_type != _PLACEHOLDER_OP:
            continue
        query, key, value, bias = node.input
        node.domain, node.op_type = _MS_DOMAIN, "MultiHeadAttention"
        del node.input[:]
        # MHA inputs: query, key, value, bias (projection), key_padding_mask, attention_bias.
        node.input.extend([query, key, value, "", "", bias])
        count += 1
    kept = [o for o in model.opset_import if o.domain != _PLACEHOLDER_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    if not any(o.domain == _MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(_MS_DOMAIN, 1))
    return count
