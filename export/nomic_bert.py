"""NomicBERT without its padding (``in-graph`` builder): token-wise work on real tokens only.

As for ModernBERT (export/modernbert.py): the embeddings run padded, then the
hidden states stay ``[tokens, hidden]`` through every layer (projections, rotary,
post-norms, the SwiGLU feed-forward) and are padded only around the
``com.microsoft.MultiHeadAttention`` node (export/unpadding.py), with
transformers' eager padding mask as its ``attention_bias``. The last hidden state
is padded once at the end (zeros at padding positions). The model's own modules,
each layer's forward rewritten; the parity gate checks it against the unmodified
eager model.
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
    from transformers.masking_utils import create_bidirectional_mask

    config = encoder.config

    class UnpaddedNomicBert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            model = self.encoder
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            padded = model.embeddings(input_ids=input_ids, position_ids=position_ids)  # [batch, seq, hidden]
            mask = eager_masks(config, lambda: create_bidirectional_mask(
                config=config, inputs_embeds=padded, attention_mask=attention_mask))
            unpadding = Unpadding(attention_mask)
            cos, sin = unpadding.rotary(*model.rotary_emb(padded, position_ids))
            hidden = unpadding.unpad(padded)  # [tokens, hidden]
            for layer in model.layers[: config.num_hidden_layers]:
                attn = layer.self_attn
                query, key, value = (proj(hidden).view(hidden.shape[0], -1, attn.head_dim)
                                     for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
                context = unpadding.attend(rotate(query, cos, sin), rotate(key, cos, sin), value, mask, attn.scaling)
                hidden = layer.post_attention_layernorm(hidden + attn.o_proj(context))
                hidden = layer.post_mlp_layernorm(hidden + layer.mlp(hidden))
            return unpadding.pad(hidden)

    return UnpaddedNomicBert()
