"""MPNet and DistilBERT: fused attention in every layer, and sentence-transformers' vectors.

Each is a tiny random model saved by sentence-transformers with a Dense head,
Normalize and prompts, exported at fp32 and int8 and compared with
sentence-transformers on the same folder, with and without a prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from zeroembed.export import Manifest, export_model

from ..dependencies import require
from .conftest import UNSEEN_TEXTS
from .stmodels import LAYERS, compare_with_st, load_st, make_st_model

require("sentence_transformers", "dev")

PROMPTS = {"query": "query: ", "passage": "passage: "}
ARCHITECTURES = ["mpnet", "distilbert"]


@pytest.fixture(scope="module", params=ARCHITECTURES)
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ``request.param`` model: mean pooling, Dense 32 -> 16 (tanh), Normalize, two prompts."""
    base = tmp_path_factory.mktemp(request.param)
    return make_st_model(base / "model", request.param, pooling="mean", dense=[(16, "Tanh")], normalize=True,
                         prompts=PROMPTS, seed=3)


@pytest.fixture(scope="module")
def fp32_artifact(model_dir: Path) -> Path:
    out = model_dir.with_name("fp32")
    export_model(model_dir, out)
    return out


@pytest.mark.parametrize("prompt", ["", PROMPTS["query"]])
def test_fp32_matches_sentence_transformers(model_dir: Path, fp32_artifact: Path, prompt: str) -> None:
    sentence, tokens = compare_with_st(load_st(model_dir), fp32_artifact, UNSEEN_TEXTS, prompt)
    assert sentence >= 0.9999 and tokens >= 0.9999


def test_fp32_attention_fused_in_every_layer(model_dir: Path, fp32_artifact: Path) -> None:
    manifest = Manifest.read(fp32_artifact)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert manifest.architecture.model_type == config["model_type"]
    assert manifest.fused_attention and manifest.fused_operators["Attention"] == LAYERS
    graph = onnx.load(str(fp32_artifact / "model.onnx")).graph
    assert not any(node.op_type == "Softmax" for node in graph.node)  # no attention left unfused
    assert manifest.hidden_size == 16 and manifest.parity.passed
    assert manifest.parity.sentence_embedding.min_cosine >= 0.9999


def test_int8_matches_sentence_transformers(model_dir: Path) -> None:
    out = model_dir.with_name("int8")
    manifest = export_model(model_dir, out, precision="int8")
    # int8 fuses attention as QAttention where the recipe quantizes it, else it stays Attention.
    attention = manifest.fused_operators.get("Attention", 0) + manifest.fused_operators.get("QAttention", 0)
    assert manifest.precision == "int8" and attention == LAYERS
    st_model = load_st(model_dir)
    for prompt in ("", PROMPTS["passage"]):
        sentence, tokens = compare_with_st(st_model, out, UNSEEN_TEXTS, prompt)
        assert sentence >= 0.99 and tokens >= 0.95
