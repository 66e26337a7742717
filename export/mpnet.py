"""MPNet with each layer's attention as one ``com.microsoft.Attention`` node.

ONNX Runtime's bert optimizer has no pattern for MPNet: its scores get a
relative-position bias (one [heads, seq, seq] table shared by all layers)
before the padding mask. ``Attention`` takes exactly that as its
``attention_bias`` input, so this body runs transformers' own embeddings,
bucketing, projections, LayerNorms and feed-forward, and only hands the
attention core to the contrib op (export/contrib.py). The relative bias is
built once, for batch 1, and broadcast by the op over the batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .contrib import attention, packed_qkv
from .source import ModelSource

if TYPE_CHECKING:
    import torch


def build(encoder: torch.nn.Module, source: ModelSource) -> torch.nn.Module:
    """A body (input_ids, attention_mask -> last hidden state) over ``encoder``'s own weights."""
    import torch

    class FusedMPNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings = encoder.embeddings
            self.encoder = encoder.encoder
            for index, layer in enumerate(self.encoder.layer):
                weight, bias = packed_qkv(layer.attention.attn.q, layer.attention.attn.k, layer.attention.attn.v)
                self.register_buffer(f"qkv_weight_{index}", weight)
                self.register_buffer(f"qkv_bias_{index}", bias)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.embeddings(input_ids=input_ids)
            # [1, heads, seq, seq]: transformers' bucketing, for one row; the op broadcasts it.
            position_bias = self.encoder.compute_position_bias(hidden[:1])
            lengths = attention_mask.sum(dim=1).to(torch.int32)
            for index, layer in enumerate(self.encoder.layer):
                context = attention(
                    hidden,
                    getattr(self, f"qkv_weight_{index}"),
                    getattr(self, f"qkv_bias_{index}"),
                    lengths,
                    position_bias,
                    source.num_heads,
                )
                # MPNetAttention and MPNetLayer, minus dropout (eval).
                attended = layer.attention.LayerNorm(layer.attention.attn.o(context) + hidden)
                hidden = layer.output(layer.intermediate(attended), attended)
            return hidden

    return FusedMPNet()
