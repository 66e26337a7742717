"""Fused attention for ModernBERT, NomicBERT, Qwen2 and Qwen3 (``in-graph`` builder).

These models apply rotary position embeddings to the queries and keys, ModernBERT
alternates global and sliding-window layers, and the Qwen decoders add a causal
mask and grouped-query heads. None of this matches the attention patterns of
``onnxruntime.transformers``, so instead of tracing the attention math and
hoping a pattern matches, the body built here emits the fused op itself while
running transformers' own model for everything else:

1. :func:`register` adds an attention implementation to transformers, and
   :func:`build` returns a body that switches the model to it for its forward.
   transformers hands it each layer's queries, keys and values after the
   model's rotary embedding, and that layer's additive mask exactly as its eager
   path builds it ([batch, 1, query, key], 0 or the dtype's minimum): padding
   for global layers, the band for ModernBERT's sliding layers, causal plus
   padding for the decoders. One mask per layer type, built once per batch.
2. It calls the custom torch op ``zeroembed::fused_attention``, which computes
   eager attention in PyTorch and which the TorchScript exporter writes as one
   ``com.microsoft.MultiHeadAttention`` node with the mask as its
   ``attention_bias``.

Why ``MultiHeadAttention`` and not ``GroupQueryAttention``: GQA's CPU kernel is
causal-only and finds each row's length from ``seqlens_k``, which assumes right
padding; the encoders need bidirectional and banded masks, and the decoders'
vectors must not depend on the padding side. MHA with an attention bias covers
all four models with one op. Grouped-query heads are expanded to the query
heads before the op (a broadcast copy of K and V). Rotary embedding stays as
the traced elementwise ops (a few Mul/Add/Slice per layer); ``RotaryEmbedding``
would fuse them but needs a per-architecture cache layout, left for later.
The parity gate runs transformers' unmodified eager model as the reference.

ModernBERT and NomicBERT use the op and masks registered here from their own
bodies (export/modernbert.py, export/nomic_bert.py), which also drop the batch's
padding outside attention (export/unpadding.py); the decoders run as above.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .source import ModelSource

ATTN_IMPLEMENTATION = "zeroembed_mha"
_OP = "zeroembed::fused_attention"

_registered = False


def build(encoder: torch.nn.Module, source: ModelSource) -> torch.nn.Module:
    """A body (input_ids, attention_mask -> last hidden state) running ``encoder`` with fused attention."""
    import torch

    register()

    class FusedAttentionBody(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # The reference body shares this model: switch its attention only for this call.
            config = self.encoder.config
            eager = config._attn_implementation
            config._attn_implementation = ATTN_IMPLEMENTATION
            try:
                return self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            finally:
                config._attn_implementation = eager

    return FusedAttentionBody()


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
        def absent():  # an absent optional input, written as an empty input name
            return g.op("prim::Constant").setType(torch._C.OptionalType.ofTensor())

        # MHA inputs: query, key, value, bias (of the projections), key_padding_mask, attention_bias.
        node = g.op(
            "com.microsoft::MultiHeadAttention", query, key, value, absent(), absent(), bias,
            num_heads_i=num_heads, scale_f=scale,
        )
        return node.setType(query.type())

    # Any opset from 1 up: the symbolic emits one com.microsoft node.
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
    """transformers attention interface: [b, heads, s, d] in, [b, s, heads, d] out.

    ``kwargs`` (ModernBERT's and Qwen's ``sliding_window``, ...) need no handling: the
    window is already in ``attention_mask``, which transformers builds per layer type.
    """
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
        # transformers skips the mask only for an unpadded bidirectional batch, and never
        # while tracing (the exporter's sample is padded anyway): only an eager call of
        # the body on unpadded rows comes here.
        if torch.jit.is_tracing():
            raise RuntimeError("fused attention traced without a mask")
        out = _eager(q, k, v, None, heads, scale)
    else:
        out = torch.ops.zeroembed.fused_attention(q, k, v, attention_mask.to(q.dtype), heads, scale)
    return out.view(batch, seq, heads, head_dim), None
