"""Running an encoder on its real tokens only: the index plumbing shared by the unpadded bodies.

Everything in an encoder layer but attention works token by token, so a body can keep its hidden
states as ``[tokens, hidden]`` (the batch's real tokens, in row order) and pad only around the
attention node. Each rotary encoder's body (export/modernbert.py, export/nomic_bert.py) builds one
:class:`Unpadding` per batch from the attention mask and uses it for every layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import fused_attention

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


class Unpadding:
    """Gathers between ``[batch, seq, width]`` and the real tokens ``[tokens, width]``, for one batch."""

    def __init__(self, attention_mask: torch.Tensor) -> None:
        import torch

        self.batch, self.seq = attention_mask.shape
        flat = attention_mask.reshape(-1)
        self.tokens = torch.nonzero(flat).squeeze(1)  # flat positions of the real tokens
        # Row of each padded position in [zero row; real tokens]: 0 at padding.
        self.rows = (torch.cumsum(flat, 0) * flat).reshape(self.batch, self.seq)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, seq, width]`` -> ``[tokens, width]``."""
        return x.reshape(self.batch * self.seq, -1).index_select(0, self.tokens)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``[tokens, width]`` -> ``[batch, seq, width]``, zeros at padding."""
        import torch

        return torch.cat([x.new_zeros(1, x.shape[1]), x])[self.rows]

    def rotary(self, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """transformers' ``[1, seq, head_dim]`` cos/sin as ``[tokens, 1, head_dim]``, each token's own."""
        return tuple(self.unpad(t.expand(self.batch, self.seq, t.shape[-1])).unsqueeze(1) for t in (cos, sin))

    def attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scale: float,
    ) -> torch.Tensor:
        """Attention of ``[tokens, heads, head_dim]`` Q, K, V under the additive ``mask``: ``[tokens, hidden]``.

        Padded (one Gather) into the ``com.microsoft.MultiHeadAttention`` node of
        export/fused_attention.py and gathered back.
        """
        import torch

        heads, head_dim = query.shape[1:]
        width = heads * head_dim
        packed = self.pad(torch.cat([t.reshape(-1, width) for t in (query, key, value)], dim=1))
        q, k, v = packed.split(width, dim=2)
        if mask is None:
            # transformers drops the mask only when nothing is masked, and the exporter's traced
            # sample is padded: only an eager call of the body comes here.
            if torch.jit.is_tracing():
                raise RuntimeError("unpadded body traced without an attention mask")
            context = fused_attention._eager(q, k, v, None, heads, scale)
        else:
            context = torch.ops.zeroembed.fused_attention(q, k, v, mask.to(q.dtype), heads, scale)
        return self.unpad(context)


def eager_masks(config: Any, build: Callable[[], T]) -> T:
    """``build()`` (transformers' mask functions) with ``config`` switched to the fused implementation.

    The fused implementation registers transformers' eager mask builder, so the masks come out
    additive, ``[batch, 1, seq, seq]``, as the ``attention_bias`` of the fused op takes them.
    """
    fused_attention.register()
    eager = config._attn_implementation
    config._attn_implementation = fused_attention.ATTN_IMPLEMENTATION
    try:
        return build()
    finally:
        config._attn_implementation = eager


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' rotary rotation: ``x * cos + rotate_half(x) * sin``."""
    import torch

    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
