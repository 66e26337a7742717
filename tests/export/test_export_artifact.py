"""The artifact contract (docs/artifact.md) on the default model's fp32 export."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from zeroembed.export import Manifest


def _dims(value_info: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_artifact_holds_exactly_the_three_files(default_artifact: Path) -> None:
    assert sorted(p.name for p in default_artifact.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]
    assert not any(p.name.startswith(".") for p in default_artifact.parent.iterdir())  # no staging left


def test_graph_inputs_and_outputs(default_artifact: Path) -> None:
    model = onnx.load(str(default_artifact / "model.onnx"), load_external_data=False)
    inputs = {i.name: i for i in model.graph.input}
    outputs = {o.name: o for o in model.graph.output}
    assert list(inputs) == ["input_ids", "attention_mask"]
    for value in inputs.values():
        assert value.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert _dims(value) == ["batch", "sequence"]
    assert list(outputs) == ["token_embeddings", "sentence_embedding", "pooled_embedding"]
    for value in outputs.values():
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(outputs["token_embeddings"]) == ["batch", "sequence", 384]
    assert _dims(outputs["sentence_embedding"]) == ["batch", 384]
    assert _dims(outputs["pooled_embedding"]) == ["batch", 384]


def test_dynamic_shapes_run(default_artifact: Path) -> None:
    session = ort.InferenceSession(str(default_artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch, seq in [(1, 1), (1, 2), (5, 37), (2, 256)]:
        ids = np.full((batch, seq), 1037, dtype=np.int64)
        tokens, sentence, pooled = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        assert tokens.shape == (batch, seq, 384) and tokens.dtype == np.float32
        assert sentence.shape == pooled.shape == (batch, 384)


def test_fused_operators(default_artifact: Path) -> None:
    model = onnx.load(str(default_artifact / "model.onnx"), load_external_data=False)
    ops = [n.op_type for n in model.graph.node if n.domain == "com.microsoft"]
    assert ops.count("Attention") == 6  # one per encoder layer
    # Residual connections stay Add + LayerNormalization, two per layer: ORT fuses them at load
    # where that pays (export/fusion.py).
    assert "SkipLayerNormalization" not in ops
    assert sum(n.op_type == "LayerNormalization" for n in model.graph.node) == 12
    assert "EmbedLayerNormalization" in ops
    assert "BiasGelu" in ops or "FastGelu" in ops
    # no unfused attention left behind: the raw graph has Softmax per layer
    assert not any(n.op_type == "Softmax" for n in model.graph.node)
    manifest = Manifest.read(default_artifact)
    assert manifest.fused_operators["Attention"] == 6
    assert manifest.fused_operators == {op: ops.count(op) for op in set(ops)}


def test_tokenizer_truncates_at_256_without_padding(default_artifact: Path) -> None:
    from tokenizers import Tokenizer

    raw = json.loads((default_artifact / "tokenizer.json").read_text(encoding="utf-8"))
    assert raw["padding"] is None
    assert raw["truncation"]["max_length"] == 256
    tokenizer = Tokenizer.from_file(str(default_artifact / "tokenizer.json"))
    assert len(tokenizer.encode("word " * 1000).ids) == 256
    short = tokenizer.encode("hello world")
    assert short.ids[0] == tokenizer.token_to_id("[CLS]") and len(short.ids) == 4  # not padded to 128


def test_manifest_fields(default_artifact: Path) -> None:
    raw = json.loads((default_artifact / "manifest.json").read_text(encoding="utf-8"))
    for field in (
        "format_version", "exporter_revision", "source", "architecture", "hidden_size", "max_seq_length", "pooling",
        "normalize", "precision", "inputs", "outputs", "opset", "fused_operators", "parity",
        "tool_versions", "model_sha256", "created_at",
    ):
        assert field in raw, field
    manifest = Manifest.model_validate(raw)
    assert manifest.format_version == 1
    assert manifest.source == "all-MiniLM-L6-v2"
    assert manifest.architecture.model_dump() == {
        "model_type": "bert", "num_layers": 6, "num_heads": 12, "hidden_size": 384, "vocab_size": 30522
    }
    assert (manifest.hidden_size, manifest.max_seq_length) == (384, 256)
    assert (manifest.pooling, manifest.normalize, manifest.precision) == ("mean", True, "fp32")
    assert manifest.inputs == ["input_ids", "attention_mask"]
    assert manifest.outputs == ["token_embeddings", "sentence_embedding", "pooled_embedding"]
    assert manifest.opset >= 14
    assert set(raw["tool_versions"]) == {"torch", "transformers", "onnx", "onnxruntime", "zeroembed"}
    digest = hashlib.sha256((default_artifact / "model.onnx").read_bytes()).hexdigest()
    assert manifest.model_sha256 == digest


def test_manifest_parity_report(default_artifact: Path) -> None:
    parity = Manifest.read(default_artifact).parity
    assert parity.passed and parity.provider == "CPUExecutionProvider"
    assert parity.num_texts >= 30
    assert parity.sentence_embedding.min_cosine >= 0.9999
    assert parity.token_embeddings.min_cosine >= 0.9999
    assert parity.sentence_embedding.max_abs_diff < 1e-3
    assert parity.token_embeddings.max_abs_diff < 1e-2
