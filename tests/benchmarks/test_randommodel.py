"""Random-weight BERTs for benchmarks at sizes no bundled model has."""

from __future__ import annotations

import json

import pytest

from ..dependencies import require

require("torch", "export")

from zeroembed.benchmarks.randommodel import main, make_random_bert, make_random_cross_encoder  # noqa: E402


def test_cli_writes_a_model_the_exporter_reads(tmp_path, capsys):
    out = tmp_path / "bert-mini"
    assert main([str(out), "--layers", "2", "--hidden", "96", "--heads", "3", "--max-positions", "64"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    config = json.loads((out / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]) == (2, 96, 3)
    assert config["intermediate_size"] == 4 * 96
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]

    from zeroembed.export import export_model

    manifest = export_model(out, tmp_path / "artifact")
    assert manifest.hidden_size == 96 and manifest.fused_operators["Attention"] == 2


def test_same_seed_same_weights_and_bad_shapes_refused(tmp_path):
    a = make_random_bert(tmp_path / "a", layers=1, hidden=32, heads=2, max_positions=16, seed=7)
    b = make_random_bert(tmp_path / "b", layers=1, hidden=32, heads=2, max_positions=16, seed=7)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="multiple of"):
        make_random_bert(tmp_path / "c", hidden=100, heads=3)


def test_cli_writes_a_cross_encoder(tmp_path, capsys):
    from zeroembed.export.rerank_source import is_reranker, resolve_reranker

    out = tmp_path / "xlmr-rerank"
    argv = [str(out), "--cross-encoder", "--model-type", "xlm-roberta", "--layers", "2", "--hidden", "32",
            "--heads", "2", "--max-positions", "32", "--num-labels", "3"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["XLMRobertaForSequenceClassification"]
    assert config["max_position_embeddings"] == 34  # 32 usable after RoBERTa's padding offset
    assert is_reranker(out)
    source = resolve_reranker(out)
    assert (source.num_labels, source.max_seq_length, source.token_types) == (3, 32, False)
    with pytest.raises(ValueError, match="model_type"):
        make_random_cross_encoder(tmp_path / "bad", model_type="gpt2")
