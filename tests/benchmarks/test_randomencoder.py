"""Random-weight BERT-family encoders (BERT, RoBERTa, XLM-R, DistilBERT, MPNet) for the speed table."""

from __future__ import annotations

import json

import pytest

from ..dependencies import require

require("torch", "export")

from zeroembed.benchmarks.randomencoder import ARCHITECTURES, main, make_random_encoder  # noqa: E402
from zeroembed.export.source import resolve_source  # noqa: E402


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_writes_a_folder_the_exporter_and_sentence_transformers_read(arch, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = make_random_encoder(arch, tmp_path / arch, tiny=True, max_seq_length=64)
    source = resolve_source(out)
    assert (source.pooling, source.normalize, source.max_seq_length) == ("mean", True, 64)
    vectors = SentenceTransformer(str(out), device="cpu").encode(["a short text", "another, longer one"])
    assert vectors.shape == (2, 32)


def test_cli_cuts_layers_and_keeps_the_real_width_names(tmp_path, capsys):
    out = tmp_path / "distilbert"
    assert main([str(out), "--arch", "distilbert", "--tiny", "--layers", "1", "--max-seq-length", "32"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["n_layers"], config["dim"]) == ("distilbert", 1, 32)


def test_same_seed_same_weights_and_unknown_architecture_refused(tmp_path):
    a = make_random_encoder("mpnet", tmp_path / "a", tiny=True, seed=7)
    b = make_random_encoder("mpnet", tmp_path / "b", tiny=True, seed=7)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # the build's scratch folder is gone
    with pytest.raises(ValueError, match="unknown architecture 'gpt2'"):
        make_random_encoder("gpt2", tmp_path / "c")
