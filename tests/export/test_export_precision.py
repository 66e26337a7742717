"""fp16 and int8 exports, and the parity gate refusing bad ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from zeroembed.cli import main
from zeroembed.export import ExportError, Manifest, export_model
from zeroembed.export import parity, precision


@pytest.fixture(scope="module")
def int8_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "minilm-int8"
    export_model(None, out, precision="int8")
    return out


def test_int8_default_model_clears_gate(int8_artifact: Path, embed, sentence_transformer, unseen_texts, cosines) -> None:
    manifest = Manifest.read(int8_artifact)
    assert manifest.precision == "int8" and manifest.parity.passed
    assert manifest.parity.sentence_embedding.min_cosine >= 0.99
    assert manifest.quantization is not None and manifest.quantization.quantized_nodes > 0
    assert manifest.quantization.attempts[-1]["recipe"] == manifest.quantization.recipe
    assert manifest.fused_operators["Attention"] == 6  # quantisation keeps the fused attention
    model = onnx.load(str(int8_artifact / "model.onnx"), load_external_data=False)
    assert any(n.op_type == "MatMulInteger" for n in model.graph.node)
    expected = sentence_transformer.encode(unseen_texts, convert_to_numpy=True)
    got = embed(int8_artifact, unseen_texts)["sentence_embedding"]
    assert cosines(got, expected).min() >= 0.99


def test_int8_too_strict_threshold_refuses(tiny_bert_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(parity.THRESHOLDS, "int8", 1.01)  # unreachable: cosine <= 1
    out = tmp_path / "strict"
    code = main(["export", "--model", str(tiny_bert_dir), "--out", str(out), "--precision", "int8"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: int8 artifact failed the parity check" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_int8_bad_quantisation_refuses(tmp_path: Path, monkeypatch) -> None:
    # Plain quantize_dynamic on everything (QAttention, per-tensor): ~0.76 on MiniLM.
    bad = precision.Int8Recipe("everything-per-tensor", "deliberately bad", op_types=None, per_channel=False, reduce_range=False)
    monkeypatch.setattr(precision, "INT8_RECIPES", [bad])
    out = tmp_path / "bad"
    with pytest.raises(ExportError, match="int8 artifact failed the parity check") as info:
        export_model(None, out, precision="int8")
    assert info.value.exit_code == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_fp16_export_records_validation_method(tiny_bert_dir: Path, tmp_path: Path, embed, cosines) -> None:
    out = tmp_path / "fp16"
    manifest = export_model(tiny_bert_dir, out, precision="fp16")
    assert manifest.precision == "fp16" and manifest.parity.passed
    assert manifest.parity.sentence_embedding.min_cosine >= 0.999
    if manifest.parity.provider == "CPUExecutionProvider":
        assert "no CUDA device" in manifest.parity.method
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    for output in model.graph.output:  # keep_io_types
        assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert manifest.fused_operators["Attention"] == 2
    got = embed(out, ["fp16 keeps float32 outputs"])
    assert got["sentence_embedding"].dtype == np.float32
