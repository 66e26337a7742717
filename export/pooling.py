"""The sentence-transformers head in torch: pooling, Dense layers, Normalize.

It is part of the exported module, so the artifact's graph computes sentence
vectors exactly as sentence-transformers does (``Pooling._forward_padded``,
``Dense.forward``, ``Normalize.forward``), whatever side the batch is padded
on, and any ONNX Runtime user gets them without re-implementing the head.

Every mode reads the attention mask rather than assuming right padding:
``cls`` takes the first pooled token, ``lasttoken`` the last one,
``weightedmean`` weights each token by its position among the row's real
tokens. With ``include_prompt=False`` the graph takes ``prompt_length`` (one
int64 per row): the first ``prompt_length`` real tokens of the row are left out
of the pooling, as sentence-transformers does with the prompt's tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ExportError
from .head import DenseLayer, Head

if TYPE_CHECKING:
    import torch

# Filled into masked positions for max pooling. where(), not tokens + (mask - 1) * big: no
# inf * 0 = NaN once fp16 saturates the fill; finite, so an all-masked row stays finite.
_MAX_FILL = -1e9


def _activation(name: str) -> torch.nn.Module:
    import torch

    return {
        "tanh": torch.nn.Tanh,
        "identity": torch.nn.Identity,
        "relu": torch.nn.ReLU,
        "gelu": torch.nn.GELU,
        "sigmoid": torch.nn.Sigmoid,
        "silu": torch.nn.SiLU,
    }[name]()


def _load_state(folder: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        if (folder / "model.safetensors").is_file():
            from safetensors.torch import load_file

            return load_file(str(folder / "model.safetensors"))
        return torch.load(str(folder / "pytorch_model.bin"), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ExportError(f"cannot load the Dense weights in {folder}: {err}") from err


def _dense_module(layer: DenseLayer) -> torch.nn.Module:
    import torch

    class Dense(torch.nn.Module):
        """sentence-transformers' Dense: activation(linear(x)) (+ residual)."""

        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
            self.activation = _activation(layer.activation)
            project = layer.residual and layer.in_features != layer.out_features
            self.residual = torch.nn.Linear(layer.in_features, layer.out_features, bias=False) if project else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.activation(self.linear(x))
            if layer.residual:
                out = out + (x if self.residual is None else self.residual(x))
            return out

    module = Dense()
    try:
        module.load_state_dict(_load_state(layer.path), strict=True)
    except RuntimeError as err:  # missing/unexpected keys or shape mismatches
        first = str(err).strip().splitlines()
        raise ExportError(
            f"the Dense weights in {layer.path} do not match its config.json "
            f"({layer.in_features} -> {layer.out_features}): {first[1] if len(first) > 1 else first[0]}"
        ) from err
    return module.eval()


def pool(
    mode: str, tokens: torch.Tensor, mask: torch.Tensor, pool_mask: torch.Tensor
) -> torch.Tensor:
    """Pool ``tokens`` [batch, seq, hidden] over ``pool_mask`` (``mask`` without the prompt)."""
    import torch

    keep = pool_mask.unsqueeze(-1).to(tokens.dtype)
    if mode in ("cls", "lasttoken"):
        # First (cls) or last (lasttoken) pooled column of each row. argmax on float: ONNX Runtime
        # has no ArgMax for int64; positions stay exact in float32 far beyond any sequence length.
        if mode == "cls":
            index = pool_mask.to(torch.float32).argmax(dim=1)
        else:
            columns = torch.arange(1, tokens.shape[1] + 1, dtype=torch.float32, device=tokens.device)
            index = (pool_mask.to(torch.float32) * columns).argmax(dim=1)
        gather = index.view(-1, 1, 1).expand(-1, 1, tokens.shape[-1])
        # An all-masked row (the prompt filled the text) gives zeros for lasttoken, as in
        # sentence-transformers, and the first column for cls.
        source = tokens * keep if mode == "lasttoken" else tokens
        return torch.gather(source, 1, gather).squeeze(1)
    if mode == "max":
        return torch.where(keep.bool(), tokens, torch.full_like(tokens, _MAX_FILL)).max(dim=1).values
    if mode == "weightedmean":
        # Weight = the token's 1-based position among the row's real tokens (prompt included).
        weights = keep * torch.cumsum(mask, dim=1).unsqueeze(-1).to(tokens.dtype)
        return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    total = (tokens * keep).sum(dim=1)
    count = keep.sum(dim=1).clamp(min=1e-9)
    if mode == "mean_sqrt_len_tokens":
        return total / torch.sqrt(count)
    if mode == "mean":
        return total / count
    raise ExportError(f"unknown pooling mode {mode!r}")


def build_head(body: torch.nn.Module, head: Head) -> torch.nn.Module:
    """``body`` (input_ids, attention_mask -> last hidden state) followed by ``head``."""
    import torch

    class SentenceEncoder(torch.nn.Module):
        """body + pooling (+ Dense layers) (+ L2 normalise), mirroring sentence-transformers."""

        def __init__(self) -> None:
            super().__init__()
            self.body = body
            self.dense = torch.nn.ModuleList(_dense_module(layer) for layer in head.dense)

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            prompt_length: torch.Tensor | None = None,
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            tokens = self.body(input_ids, attention_mask)
            pool_mask = attention_mask
            if not head.include_prompt and prompt_length is not None:
                # The first prompt_length real tokens of each row are the prompt's.
                position = torch.cumsum(attention_mask, dim=1)
                pool_mask = attention_mask * (position > prompt_length.unsqueeze(1)).to(attention_mask.dtype)
            pooled = pool(head.pooling, tokens, attention_mask, pool_mask)
            for layer in self.dense:
                pooled = layer(pooled)
            sentence = torch.nn.functional.normalize(pooled, p=2, dim=1) if head.normalize else pooled
            return tokens, sentence, pooled

    return SentenceEncoder()
