"""ONNX Runtime contrib ops emitted straight from torch, for attention no optimizer pattern matches.

Each op is a ``torch.autograd.Function``: its ``forward`` computes the op's
math in torch (so the module still runs eagerly), and its ``symbolic`` makes
the TorchScript exporter write the ``com.microsoft`` node itself. An
architecture's builder (export/architectures.py, ``fusion="in-graph"``) calls
these in place of transformers' attention; the parity gate then checks the
graph against transformers' own, unmodified model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# com.microsoft.Attention's fill for masked-out keys (its mask_filter_value default).
MASK_FILTER_VALUE = -10000.0


def _attention_function() -> type:
    import torch

    class Attention(torch.autograd.Function):
        """``com.microsoft.Attention`` with packed QKV weights, a 1-D mask index and an attention bias.

        ``x`` [batch, seq, hidden]; ``weight`` [hidden, 3 * hidden] (Q, K, V columns);
        ``bias`` [3 * hidden]; ``lengths`` int32 [batch], real tokens per row counted
        from the left (right padding, ORT's "mask index end"); ``attention_bias``
        [1 or batch, heads, seq, seq] added to the scaled scores before softmax.
        Returns the heads' context [batch, seq, hidden], before the output projection.
        """

        @staticmethod
        def forward(  # type: ignore[override]
            ctx: Any,
            x: torch.Tensor,
            weight: torch.Tensor,
            bias: torch.Tensor,
            lengths: torch.Tensor,
            attention_bias: torch.Tensor,
            num_heads: int,
        ) -> torch.Tensor:
            batch, seq, hidden = x.shape
            head_size = hidden // num_heads
            q, k, v = (x @ weight + bias).split(hidden, dim=-1)

            def heads(t: torch.Tensor) -> torch.Tensor:
                return t.view(batch, seq, num_heads, head_size).transpose(1, 2)

            scores = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(head_size) + attention_bias
            keep = torch.arange(seq, device=x.device).unsqueeze(0) < lengths.unsqueeze(1).long()
            scores = scores.masked_fill(~keep[:, None, None, :], MASK_FILTER_VALUE)
            context = scores.softmax(dim=-1) @ heads(v)
            return context.transpose(1, 2).reshape(batch, seq, hidden)

        @staticmethod
        def symbolic(
            g: Any,
            x: Any,
            weight: Any,
            bias: Any,
            lengths: Any,
            attention_bias: Any,
            num_heads: int,
        ) -> Any:
            # An absent optional input (past) is written as an empty input name.
            past = g.op("prim::Constant").setType(torch._C.OptionalType.ofTensor())
            node = g.op(
                "com.microsoft::Attention", x, weight, bias, lengths, past, attention_bias, num_heads_i=num_heads
            )
            return node.setType(x.type())

    return Attention


_ATTENTION: type | None = None


def attention(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    lengths: torch.Tensor,
    attention_bias: torch.Tensor,
    num_heads: int,
) -> torch.Tensor:
    """Fused self-attention: one ``com.microsoft.Attention`` node in the exported graph."""
    global _ATTENTION
    if _ATTENTION is None:
        _ATTENTION = _attention_function()
    return _ATTENTION.apply(x, weight, bias, lengths, attention_bias, num_heads)


def packed_qkv(q: torch.nn.Linear, k: torch.nn.Linear, v: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [hidden, 3 * hidden], bias [3 * hidden]) in the layout ``Attention`` takes."""
    import torch

    weight = torch.cat([q.weight.T, k.weight.T, v.weight.T], dim=1).contiguous()
    bias = torch.cat([q.bias, k.bias, v.bias])
    return weight.detach(), bias.detach()
