"""A random 2-layer BERT with CLS pooling, and the pooling/length overrides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zeroembed.export import Manifest, export_model
from zeroembed.export.manifest import EXPORTER_REVISION

TEXTS = ["a short one", "Something quite a bit longer, with punctuation!", "東京 🚀", "word " * 200]


def _torch_embeddings(model_dir: Path, ids: np.ndarray, mask: np.ndarray, pooling: str) -> tuple[np.ndarray, np.ndarray]:
    """Tokens and pooled vectors straight from transformers, pooled by hand, one text at a time."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    tokens_out, pooled_out = [], []
    with torch.no_grad():
        for row in range(len(ids)):
            length = int(mask[row].sum())
            t = model(input_ids=torch.tensor(ids[row : row + 1, :length])).last_hidden_state[0]
            tokens_out.append(np.pad(t.numpy(), ((0, ids.shape[1] - length), (0, 0))))
            pooled_out.append({"cls": t[0], "max": t.max(0).values, "mean": t.mean(0)}[pooling].numpy())
    return np.stack(tokens_out), np.stack(pooled_out)


def test_tiny_manifest(tiny_artifact: Path) -> None:
    manifest = Manifest.read(tiny_artifact)
    assert (manifest.pooling, manifest.normalize) == ("cls", False)
    assert manifest.architecture.num_layers == 2 and manifest.hidden_size == 64
    assert manifest.max_seq_length == 128  # min(position embeddings, 512): no sentence_bert_config
    assert manifest.fused_operators["Attention"] == 2
    assert "SkipLayerNormalization" not in manifest.fused_operators  # left to the session
    assert manifest.exporter_revision == EXPORTER_REVISION
    assert manifest.parity.passed


def test_tiny_cls_pooling_matches_pytorch(tiny_bert_dir: Path, tiny_artifact: Path, embed, cosines) -> None:
    out = embed(tiny_artifact, TEXTS)
    tokens, pooled = _torch_embeddings(tiny_bert_dir, out["input_ids"], out["attention_mask"], "cls")
    assert cosines(out["sentence_embedding"], pooled).min() >= 0.9999
    np.testing.assert_allclose(out["sentence_embedding"], pooled, atol=1e-4)
    np.testing.assert_array_equal(out["sentence_embedding"], out["pooled_embedding"])  # no Normalize
    real = out["attention_mask"].astype(bool)
    np.testing.assert_allclose(out["token_embeddings"][real], tokens[real], atol=1e-4)


def test_tiny_tokenizer_built_from_vocab(tiny_artifact: Path) -> None:
    raw = json.loads((tiny_artifact / "tokenizer.json").read_text(encoding="utf-8"))
    assert raw["padding"] is None and raw["truncation"]["max_length"] == 128


def test_max_pooling_override(tiny_bert_dir: Path, tmp_path: Path, embed, cosines) -> None:
    out_dir = tmp_path / "max"
    manifest = export_model(tiny_bert_dir, out_dir, pooling="max")
    assert manifest.pooling == "max" and Manifest.read(out_dir).pooling == "max"
    out = embed(out_dir, TEXTS)
    _, pooled = _torch_embeddings(tiny_bert_dir, out["input_ids"], out["attention_mask"], "max")
    np.testing.assert_allclose(out["sentence_embedding"], pooled, atol=1e-4)


def test_max_seq_length_override(tiny_bert_dir: Path, tmp_path: Path, embed) -> None:
    out_dir = tmp_path / "short"
    manifest = export_model(tiny_bert_dir, out_dir, max_seq_length=16)
    assert manifest.max_seq_length == 16 == Manifest.read(out_dir).max_seq_length
    raw = json.loads((out_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert raw["truncation"]["max_length"] == 16 and raw["padding"] is None
    assert embed(out_dir, ["word " * 100])["input_ids"].shape == (1, 16)


def test_default_model_max_seq_length_override_uses_source(tmp_path: Path) -> None:
    # cheap: resolve only, no export
    from zeroembed.export.source import resolve_source

    assert resolve_source(None, max_seq_length=512).max_seq_length == 512
    assert resolve_source(None).max_seq_length == 256
    with pytest.raises(Exception, match="max-seq-length"):
        resolve_source(None, max_seq_length=513)


def test_tiny_roberta_fuses_and_matches(tmp_path: Path, embed) -> None:
    import shutil

    import torch
    from transformers import RobertaConfig, RobertaModel

    from zeroembed.export import default_model_dir

    model_dir = tmp_path / "tiny-roberta"
    config = RobertaConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=66, pad_token_id=1,
    )
    torch.manual_seed(7)
    RobertaModel(config).eval().save_pretrained(model_dir)
    shutil.copy(default_model_dir() / "tokenizer.json", model_dir / "tokenizer.json")
    manifest = export_model(model_dir, tmp_path / "out")
    assert manifest.architecture.model_type == "roberta"
    assert manifest.max_seq_length == 64  # 66 positions less RoBERTa's padding offset
    assert manifest.fused_operators["Attention"] == 2 and manifest.parity.passed
    out = embed(tmp_path / "out", TEXTS)
    _, pooled = _torch_embeddings(model_dir, out["input_ids"], out["attention_mask"], "mean")
    np.testing.assert_allclose(out["sentence_embedding"], pooled, atol=1e-4)
