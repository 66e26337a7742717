"""ModernBERT without its padding (``in-graph`` builder): token-wise work on real tokens only.

ModernBERT was designed to run unpadded: everything but attention (LayerNorms,
the QKV and output projections, rotary, the GeGLU feed-forward) works token by
token, so a padded batch spends most of its matrix products on padding when its
texts differ in length; transformers on CPU (sdpa or eager attention) computes
every padded position. This
body keeps the hidden states as ``[tokens, hidden]`` through every layer and
pads only around attention (export/unpadding.py): Q, K and V go into the same
``com.microsoft.MultiHeadAttention`` node as in export/fused_attention.py, with
the layer type's additive mask as ``attention_bias``. The last hidden state is
padded once at the end (zeros at padding positions, which every pooling masks).

It reuses the model's own modules (embeddings, LayerNorms, Wqkv, Wo, MLP,
rotary frequencies, masks) and rewrites only each layer's forward; the parity
gate compares the graph with transformers' unmodified eager model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .unpadding import Unpadding, eager_masks, rotate

if TYPE_CHECKING:
    import torch

    from .source import ModelSource


def build(encoder: torch.nn.Module, source: ModelSource) -> torch.nn.Module:
    """A body (input_ids, attention_mask -> last hidden state) running ``encoder`` on its real tokens only."""
    import torch
    from transformers.masking_utils import create_bidirectional_mask, create_bidirectional_sliding_window_mask

    config = encoder.config
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads

    class UnpaddedModernBert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            model = self.encoder
            padded = model.embeddings(input_ids=input_ids)  # [batch, seq, hidden]
            kwargs = {"config": config, "inputs_embeds": padded, "attention_mask": attention_mask}
            masks = eager_masks(config, lambda: {
                "full_attention": create_bidirectional_mask(**kwargs),
                "sliding_attention": create_bidirectional_sliding_window_mask(**kwargs),
            })
            unpadding = Unpadding(attention_mask)
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            rotary = {kind: unpadding.rotary(*model.rotary_emb(padded, position_ids, kind))
                      for kind in set(config.layer_types)}
            hidden = unpadding.unpad(padded)  # [tokens, hidden]
            for layer in model.layers:
                qkv = layer.attn.Wqkv(layer.attn_norm(hidden)).view(-1, 3, heads, head_dim)
                query, key, value = qkv.unbind(dim=1)  # [tokens, heads, head_dim]
                cos, sin = rotary[layer.attention_type]
                context = unpadding.attend(rotate(query, cos, sin), rotate(key, cos, sin), value,
                                           masks[layer.attention_type], head_dim**-0.5)
                hidden = hidden + layer.attn.Wo(context)
                hidden = hidden + layer.mlp(layer.mlp_norm(hidden))
            return unpadding.pad(model.final_norm(hidden))

    return UnpaddedModernBert()
