"""ModernBERT without its padding (``in-graph`` builder): token-wise work on real tokens only.

ModernBERT was designed to run unpadded: everything but attention (LayerNorms,
the QKV and output projections, rotary, the GeGLU feed-forward) works token by
token, so a padded batch spends most of its matrix products on padding when its
texts differ in length. transformers does the same only with flash-attention
varlen kernels; on CPU (sdpa or eager) it computes every padded position. This
body keeps the hidden states as ``[tokens, hidden]`` (the real tokens of the
whole batch, gathered once after the embeddings) through every layer, and pads
only around attention: Q, K and V go into the same ``com.microsoft.
MultiHeadAttention`` node as in export/fused_attention.py, ``[batch, seq,
hidden]`` with the layer type's additive mask as ``attention_bias``, and its
output is gathered back to the real tokens. The last hidden state is padded
once more at the end (zeros at padding positions, which every pooling masks).

It reuses the model's own modules (embeddings, LayerNorms, Wqkv, Wo, MLP,
rotary frequencies, masks) and rewrites only each layer's forward; the parity
gate compares the graph with transformers' unmodified eager model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import fused_attention

if TYPE_CHECKING:
    import torch

    from .source import ModelSource


def build(encoder: torch.nn.Module, source: ModelSource) -> torch.nn.Module:
    """A body (input_ids, attention_mask -> last hidden state) running ``encoder`` on its real tokens only."""
    import torch
    from transformers.masking_utils import create_bidirectional_mask, create_bidirectional_sliding_window_mask

    fused_attention.register()
    config = encoder.config
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads

    class UnpaddedModernBert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def _masks(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
            # Exactly the additive masks transformers' eager path gets, one per layer type.
            eager = config._attn_implementation
            config._attn_implementation = fused_attention.ATTN_IMPLEMENTATION
            try:
                kwargs = {"config": config, "inputs_embeds": hidden, "attention_mask": attention_mask}
                return {
                    "full_attention": create_bidirectional_mask(**kwargs),
                    "sliding_attention": create_bidirectional_sliding_window_mask(**kwargs),
                }
            finally:
                config._attn_implementation = eager

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            model = self.encoder
            batch, seq = input_ids.shape
            padded = model.embeddings(input_ids=input_ids)  # [batch, seq, hidden]
            masks = self._masks(padded, attention_mask)
            flat = attention_mask.reshape(-1)
            tokens = torch.nonzero(flat).squeeze(1)  # flat positions of the real tokens
            # Row of each padded position in [zero row; real tokens]: 0 for padding.
            pad_rows = (torch.cumsum(flat, 0) * flat).reshape(batch, seq)

            def unpad(x: torch.Tensor) -> torch.Tensor:  # [batch, seq, width] -> [tokens, width]
                return x.reshape(batch * seq, -1).index_select(0, tokens)

            def pad(x: torch.Tensor) -> torch.Tensor:  # [tokens, width] -> [batch, seq, width]
                return torch.cat([x.new_zeros(1, x.shape[1]), x])[pad_rows]

            hidden = unpad(padded)
            position_ids = torch.arange(seq, device=input_ids.device).unsqueeze(0)
            rotary = {}
            for layer_type in set(config.layer_types):
                cos, sin = model.rotary_emb(padded, position_ids, layer_type)  # [1, seq, head_dim]
                rotary[layer_type] = tuple(
                    unpad(t.expand(batch, seq, head_dim)).unsqueeze(1) for t in (cos, sin)
                )  # [tokens, 1, head_dim]

            for layer in model.layers:
                attn = layer.attn
                qkv = attn.Wqkv(layer.attn_norm(hidden)).view(-1, 3, heads, head_dim)
                query, key, value = qkv.unbind(dim=1)  # [tokens, heads, head_dim]
                cos, sin = rotary[layer.attention_type]
                query = query * cos + _rotate_half(query) * sin
                key = key * cos + _rotate_half(key) * sin
                packed = pad(torch.cat([t.reshape(-1, heads * head_dim) for t in (query, key, value)], dim=1))
                query, key, value = packed.split(heads * head_dim, dim=2)
                context = _attend(query, key, value, masks[layer.attention_type], heads, head_dim**-0.5)
                hidden = hidden + attn.Wo(unpad(context))
                hidden = hidden + layer.mlp(layer.mlp_norm(hidden))
            return pad(model.final_norm(hidden))

    return UnpaddedModernBert()


def _attend(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, heads: int,
    scale: float,
) -> torch.Tensor:
    """The fused op on [batch, seq, heads * head_dim] Q, K, V with the layer type's additive mask."""
    import torch

    if mask is None:
        # transformers drops the mask only when nothing is masked (no padding, window wider than
        # the batch), and the exporter's traced sample is padded: only an eager call comes here.
        if torch.jit.is_tracing():
            raise RuntimeError("ModernBERT traced without an attention mask")
        return fused_attention._eager(query, key, value, None, heads, scale)
    return torch.ops.zeroembed.fused_attention(query, key, value, mask.to(query.dtype), heads, scale)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """transformers' rotate_half: (-second half, first half) of the last dimension."""
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
