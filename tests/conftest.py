"""Shared fixtures: exported artifacts, built once per test session.

``default_artifact`` is the contract the server tests build on: the fp32
export of the default model (all-MiniLM-L6-v2), made by the real exporter.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

# CI replays the same examples every run, so a red build is reproducible; locally hypothesis explores.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

TINY_LAYERS = 2
TINY_HIDDEN = 64
TINY_HEADS = 4
TINY_POSITIONS = 128


@pytest.fixture(scope="session")
def default_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the fp32 artifact of the default model, exported once per session."""
    pytest.importorskip("torch", reason="exporting needs the 'export' extra")
    from zeroembed.export import export_model

    out = tmp_path_factory.mktemp("artifacts") / "all-MiniLM-L6-v2"
    export_model(None, out)
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random-weight 2-layer BERT saved as a sentence-transformers dir with CLS pooling.

    Only vocab.txt (from the default model) is shipped as tokenizer, so the
    exporter has to build the fast tokenizer itself.
    """
    torch = pytest.importorskip("torch", reason="building the tiny model needs torch")
    from transformers import BertConfig, BertModel

    from zeroembed.export import default_model_dir

    directory = tmp_path_factory.mktemp("models") / "tiny-bert"
    vocab = default_model_dir() / "vocab.txt"
    config = BertConfig(
        vocab_size=sum(1 for _ in vocab.open(encoding="utf-8")),
        hidden_size=TINY_HIDDEN,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=TINY_HEADS,
        intermediate_size=4 * TINY_HIDDEN,
        max_position_embeddings=TINY_POSITIONS,
    )
    torch.manual_seed(1234)
    BertModel(config).eval().save_pretrained(directory)
    shutil.copy(vocab, directory / "vocab.txt")
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}), encoding="utf-8"
    )
    (directory / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        ),
        encoding="utf-8",
    )
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": TINY_HIDDEN,
                "pooling_mode_cls_token": True,
                "pooling_mode_mean_tokens": False,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        ),
        encoding="utf-8",
    )
    return directory


@pytest.fixture(scope="session")
def tiny_artifact(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32 artifact of ``tiny_bert_dir`` (CLS pooling, no normalisation)."""
    from zeroembed.export import export_model

    out = tmp_path_factory.mktemp("artifacts") / "tiny-bert"
    export_model(tiny_bert_dir, out)
    return out
