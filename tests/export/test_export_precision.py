"""fp16 and int8 exports, and the parity gate refusing bad ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from zeroembed.cli import main
from zeroembed.export import ExportError, Manifest, export_model
from zeroembed.export import parity, precision
from zeroembed.server.workers.int8_kernel import u8s8_products_exact


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
    if u8s8_products_exact():  # elsewhere the first recipe's full-range weights saturate and fail the gate
        # The default recipe quantises the fused attention itself: one QAttention per layer.
        assert manifest.quantization.recipe == precision.INT8_RECIPES[0].name
        assert manifest.fused_operators.get("QAttention") == 6 and "Attention" not in manifest.fused_operators
    recipe = next(r for r in precision.INT8_RECIPES if r.name == manifest.quantization.recipe)
    assert manifest.quantization.full_range_weights is recipe.full_range_weights
    model = onnx.load(str(int8_artifact / "model.onnx"), load_external_data=False)
    assert any(n.op_type == "MatMulInteger" for n in model.graph.node)
    expected = sentence_transformer.encode(unseen_texts, convert_to_numpy=True)
    got = embed(int8_artifact, unseen_texts)["sentence_embedding"]
    assert cosines(got, expected).min() >= 0.99


def test_int8_default_model_gate_holds_per_length_class(int8_artifact: Path, embed, sentence_transformer,
                                                         cosines) -> None:
    # The benchmark corpus (not the validation texts the recipe was picked on), every length class,
    # overlong (truncated) texts included: the same 0.99 gate against PyTorch.
    from zeroembed.benchmarks.corpus import DEFAULT_SEED, LENGTH_CLASSES, length_class, make_corpus

    texts = make_corpus(120, DEFAULT_SEED)
    expected = sentence_transformer.encode(texts, convert_to_numpy=True, batch_size=16)
    got = embed(int8_artifact, texts)["sentence_embedding"]
    by_class: dict[str, list[float]] = {}
    for text, cosine in zip(texts, cosines(got, expected), strict=True):
        by_class.setdefault(length_class(text), []).append(float(cosine))
    assert set(by_class) == {c.name for c in LENGTH_CLASSES}
    worst = {name: min(values) for name, values in by_class.items()}
    assert min(worst.values()) >= 0.99, worst


def test_smoothing_attention_keeps_the_function(tiny_artifact: Path) -> None:
    # Smoothing rescales activations and weights by inverse factors: in fp32 the model computes the same.
    from zeroembed.export.smoothing import smooth
    from zeroembed.export.tokenizer import encode_batch
    from tokenizers import Tokenizer

    import onnxruntime as ort

    model = onnx.load(str(tiny_artifact / "model.onnx"))
    tokenizer = Tokenizer.from_file(str(tiny_artifact / "tokenizer.json"))
    feeds = [encode_batch(tokenizer, ["a short one", "and a somewhat longer sentence for the calibration"])]
    smoothed = smooth(model, feeds, 0.6, ops=("MatMul", "Attention"))
    muls = [n for n in smoothed.graph.node if n.name.endswith("/smooth")]
    attention = [n for n in model.graph.node if n.op_type == "Attention"]
    assert attention and len(muls) > len(attention)  # the attentions were smoothed, and the MatMuls
    names = {i.name for i in ort.InferenceSession(model.SerializeToString()).get_inputs()}
    feed = {k: v for k, v in feeds[0].items() if k in names}
    before = ort.InferenceSession(model.SerializeToString()).run(["sentence_embedding"], feed)[0]
    after = ort.InferenceSession(smoothed.SerializeToString()).run(["sentence_embedding"], feed)[0]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static-qdq"])
def test_quantize_int8_recipe_modes(tiny_artifact: Path, tmp_path: Path, static: bool) -> None:
    # Both modes the recipes can ask for produce integer kernels that run; the parity gate judges them.
    from zeroembed.export.smoothing import calibration_feeds
    from tokenizers import Tokenizer

    import onnxruntime as ort

    recipe = precision.Int8Recipe("test", "", op_types=("MatMul",), smooth_alpha=0.6, static=static)
    tokenizer = Tokenizer.from_file(str(tiny_artifact / "tokenizer.json"))
    out = tmp_path / "int8.onnx"
    count, _ = precision.quantize_int8(tiny_artifact / "model.onnx", out, recipe, calibration_feeds(tokenizer))
    assert count > 0
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ("QuantizeLinear" in ops) if static else ("MatMulInteger" in ops)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feed = {k: v for k, v in calibration_feeds(tokenizer)[0].items() if k in names}
    vectors = session.run(["sentence_embedding"], feed)[0]
    assert np.isfinite(vectors).all()


def test_int8_too_strict_threshold_refuses(tiny_bert_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(parity.THRESHOLDS, "int8", 1.01)  # unreachable: cosine <= 1
    out = tmp_path / "strict"
    code = main(["export", "--model", str(tiny_bert_dir), "--out", str(out), "--precision", "int8"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: int8 artifact failed the parity check" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_int8_portable_export_keeps_to_recipes_that_hold_without_vnni(tiny_bert_dir: Path, tmp_path: Path,
                                                                      capsys) -> None:
    out = tmp_path / "portable"
    code = main(["export", "--model", str(tiny_bert_dir), "--out", str(out), "--precision", "int8",
                 "--int8-portable"])
    assert code == 0, capsys.readouterr().err
    quantization = Manifest.read(out).quantization
    full_range = {r.name for r in precision.INT8_RECIPES if r.full_range_weights}
    assert full_range  # the default recipe is one: otherwise this test shows nothing
    tried = [attempt["recipe"] for attempt in quantization.attempts]
    assert tried and not full_range & set(tried) and quantization.recipe not in full_range
    assert quantization.full_range_weights is False


def test_int8_portable_needs_int8(tiny_bert_dir: Path, tmp_path: Path, capsys) -> None:
    code = main(["export", "--model", str(tiny_bert_dir), "--out", str(tmp_path / "x"), "--int8-portable"])
    assert code != 0
    assert "--int8-portable applies to --precision int8 only, not fp32" in capsys.readouterr().err


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
