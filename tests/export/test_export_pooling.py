"""The in-graph head's pooling against sentence-transformers' Pooling, on both padding sides.

No model: random token vectors and masks go straight into the head, so every
mode is checked with left padding (decoders) as well as right, with and
without a prompt left out.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
st_modules = pytest.importorskip("sentence_transformers.sentence_transformer.modules")

from zeroembed.export.head import POOLING_MODES, Head  # noqa: E402
from zeroembed.export.pooling import build_head  # noqa: E402

HIDDEN = 8
LENGTHS = [7, 3, 5, 1]


class _Tokens(torch.nn.Module):
    """A body that returns fixed token vectors, whatever the ids."""

    def __init__(self, tokens: torch.Tensor) -> None:
        super().__init__()
        self.tokens = tokens

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.tokens


def _batch(left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token vectors [4, 7, HIDDEN] and the mask, each row's real tokens the same on either side."""
    generator = torch.Generator().manual_seed(0)
    width = max(LENGTHS)
    tokens = torch.randn(len(LENGTHS), width, HIDDEN, generator=generator)
    mask = torch.zeros(len(LENGTHS), width, dtype=torch.int64)
    for row, length in enumerate(LENGTHS):
        if left:
            tokens[row] = torch.roll(tokens[row], width - length, dims=0)
            mask[row, width - length:] = 1
        else:
            mask[row, :length] = 1
    return tokens, mask


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
@pytest.mark.parametrize("prompt_length", [0, 2])
@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pooling_matches_sentence_transformers(mode: str, prompt_length: int, left: bool) -> None:
    tokens, mask = _batch(left)
    head = build_head(_Tokens(tokens), Head(pooling=mode, include_prompt=False, dense=(), normalize=False))
    with torch.no_grad():
        _, sentence, _ = head(torch.zeros_like(mask), mask, torch.full((len(LENGTHS),), prompt_length))
    features = {"token_embeddings": tokens, "attention_mask": mask}
    if prompt_length:
        features["prompt_length"] = prompt_length
    expected = st_modules.Pooling(HIDDEN, pooling_mode=mode, include_prompt=False)(features)["sentence_embedding"]
    # Row 3 has one token, all prompt when prompt_length is 2: sentence-transformers fills max pooling
    # with -inf there, the graph with a finite fill; every other row must agree exactly.
    rows = [0, 1, 2] if mode == "max" and prompt_length else [0, 1, 2, 3]
    np.testing.assert_allclose(sentence[rows].numpy(), expected[rows].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_padding_side_does_not_change_pooling(mode: str) -> None:
    head_args = Head(pooling=mode, include_prompt=False, dense=(), normalize=False)
    results = []
    for left in (False, True):
        tokens, mask = _batch(left)
        with torch.no_grad():
            results.append(build_head(_Tokens(tokens), head_args)(torch.zeros_like(mask), mask,
                                                                  torch.tensor([1, 1, 0, 0]))[1])
    np.testing.assert_allclose(results[0].numpy(), results[1].numpy(), rtol=1e-6, atol=1e-6)
