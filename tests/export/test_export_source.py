"""Reading model directories and their sentence-transformers config (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zeroembed.export import DEFAULT_MODEL_NAME, ExportError, default_model_dir
from zeroembed.export.source import resolve_source


def _bert_dir(path: Path, **config: object) -> Path:
    path.mkdir()
    base = {
        "model_type": "bert", "num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 8,
        "vocab_size": 10, "max_position_embeddings": 1024,
    }
    (path / "config.json").write_text(json.dumps(base | config), encoding="utf-8")
    (path / "model.safetensors").write_bytes(b"")
    (path / "vocab.txt").write_text("[PAD]\n", encoding="utf-8")
    return path


def test_default_model() -> None:
    source = resolve_source(None)
    assert source.name == DEFAULT_MODEL_NAME and source.path == default_model_dir().resolve()
    assert (source.pooling, source.normalize, source.max_seq_length) == ("mean", True, 256)
    assert (source.num_layers, source.num_heads, source.hidden_size) == (6, 12, 384)


def test_plain_bert_defaults(tmp_path: Path) -> None:
    source = resolve_source(_bert_dir(tmp_path / "plain"))
    assert (source.pooling, source.normalize, source.max_seq_length) == ("mean", False, 512)
    assert not source.is_sentence_transformer


def test_overrides(tmp_path: Path) -> None:
    source = resolve_source(_bert_dir(tmp_path / "plain"), pooling="cls", max_seq_length=1000)
    assert (source.pooling, source.max_seq_length) == ("cls", 1000)


def test_unsupported_sentence_transformers_module(tmp_path: Path) -> None:
    model = _bert_dir(tmp_path / "dense")
    (model / "modules.json").write_text(
        json.dumps([{"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]), encoding="utf-8"
    )
    with pytest.raises(ExportError, match="Dense"):
        resolve_source(model)


def test_unsupported_pooling_mode_can_be_overridden(tmp_path: Path) -> None:
    model = _bert_dir(tmp_path / "sqrt")
    (model / "modules.json").write_text(
        json.dumps([{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]), encoding="utf-8"
    )
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_sqrt_len_tokens": True}), encoding="utf-8")
    with pytest.raises(ExportError, match="mean_sqrt_len"):
        resolve_source(model)
    assert resolve_source(model, pooling="mean").pooling == "mean"


def test_missing_weights_and_tokenizer(tmp_path: Path) -> None:
    model = _bert_dir(tmp_path / "m")
    (model / "model.safetensors").unlink()
    with pytest.raises(ExportError, match="no weights"):
        resolve_source(model)
    (model / "model.safetensors").write_bytes(b"")
    (model / "vocab.txt").unlink()
    with pytest.raises(ExportError, match="no tokenizer"):
        resolve_source(model)
