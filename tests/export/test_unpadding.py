"""export/unpadding.py: the gathers between padded batches and real tokens."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="exporting needs the 'export' extra")

from zeroembed.export.unpadding import Unpadding, rotate  # noqa: E402

MASK = [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]


def test_unpad_keeps_real_tokens_in_row_order_and_pad_restores_them() -> None:
    mask = torch.tensor(MASK)
    x = torch.randn(3, 4, 5)
    unpadding = Unpadding(mask)
    tokens = unpadding.unpad(x)
    assert torch.equal(tokens, x[mask.bool()])
    back = unpadding.pad(tokens)
    assert back.shape == x.shape
    assert torch.equal(back[mask.bool()], x[mask.bool()])
    assert not back[~mask.bool()].any()  # zeros at padding


def test_rotary_gives_each_token_its_position() -> None:
    mask = torch.tensor(MASK)
    cos = torch.arange(4.0).view(1, 4, 1).expand(1, 4, 2)
    unpadding = Unpadding(mask)
    token_cos, token_sin = unpadding.rotary(cos, -cos)
    positions = torch.tensor([0, 1, 2, 0, 0, 1, 2, 3], dtype=torch.float)
    assert token_cos.shape == (8, 1, 2)
    assert torch.equal(token_cos[:, 0, 0], positions) and torch.equal(token_sin[:, 0, 0], -positions)


def test_rotate_matches_transformers() -> None:
    from transformers.models.modernbert.modeling_modernbert import rotate_half

    x, cos, sin = torch.randn(6, 2, 8), torch.randn(6, 1, 8), torch.randn(6, 1, 8)
    assert torch.allclose(rotate(x, cos, sin), x * cos + rotate_half(x) * sin)
