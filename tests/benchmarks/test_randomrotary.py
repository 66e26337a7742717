"""Random-weight rotary models (ModernBERT, NomicBERT, Qwen2, Qwen3) for benchmarks and tests."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch", reason="building a model needs torch")

from zeroembed.benchmarks.randomrotary import main, make_random_rotary  # noqa: E402
from zeroembed.export.source import resolve_source  # noqa: E402


def test_cli_writes_a_folder_the_exporter_reads(tmp_path, capsys):
    out = tmp_path / "modernbert"
    assert main([str(out), "--arch", "modernbert", "--tiny", "--layers", "2", "--max-seq-length", "64"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("modernbert", 2, 32)
    source = resolve_source(out)
    assert (source.pooling, source.normalize, source.max_seq_length) == ("mean", True, 64)


def test_decoder_folder_pools_the_last_token_with_a_qwen_shaped_tokenizer(tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    out = make_random_rotary("qwen3", tmp_path / "qwen3", tiny=True, padding_side="left",
                             prompts={"query": "Instruct: find it\nQuery: "})
    config = json.loads((out / "config.json").read_text())
    assert config["num_key_value_heads"] < config["num_attention_heads"]  # grouped-query
    source = resolve_source(out)
    assert source.pooling == "lasttoken" and source.prompts.prompts == {"query": "Instruct: find it\nQuery: "}
    # What sentence-transformers tokenizes with (transformers rebuilds it as Qwen2Tokenizer) is
    # what the artifact ships (tokenizer.json), <|endoftext|> appended to every text.
    text = "Ünïcödé façade, 東京 and tabs\tin 2024!"
    hf = AutoTokenizer.from_pretrained(str(out))
    assert type(hf).__name__ == "Qwen2Tokenizer" and hf.padding_side == "left"
    ids = Tokenizer.from_file(str(out / "tokenizer.json")).encode(text).ids
    assert hf(text)["input_ids"] == ids and ids[-1] == hf.convert_tokens_to_ids("<|endoftext|>")


def test_same_seed_same_weights_and_unknown_architecture_refused(tmp_path):
    a = make_random_rotary("nomic_bert", tmp_path / "a", tiny=True, seed=7)
    b = make_random_rotary("nomic_bert", tmp_path / "b", tiny=True, seed=7)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="unknown architecture 'gpt2'"):
        make_random_rotary("gpt2", tmp_path / "c")
