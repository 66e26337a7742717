"""The worker's model runtime: real tokens in, padded on the device, only the asked-for outputs back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from zeroembed.server.workers.runtime import EncoderRuntime, session_options

TEXTS = ["a", "the quick brown fox jumps over the lazy dog", "hello world", "zeroembed pads on the device"]


def tokenize(artifact: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    tokenizer.no_padding()
    encodings = [tokenizer.encode(text) for text in texts]
    ids = np.concatenate([np.array(e.ids, dtype=np.int32) for e in encodings])
    return ids, np.array([len(e.ids) for e in encodings], dtype=np.int32)


def padded_run(artifact: Path, ids: np.ndarray, lengths: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    """The artifact run the plain ORT way, padded in numpy: what the runtime must agree with."""
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    mask = np.arange(lengths.max())[None, :] < lengths[:, None]
    input_ids = np.zeros(mask.shape, dtype=np.int64)
    input_ids[mask] = ids
    feeds = {"input_ids": input_ids, "attention_mask": mask.astype(np.int64)}
    if "token_type_ids" in {i.name for i in session.get_inputs()}:
        feeds["token_type_ids"] = np.zeros_like(input_ids)
    return session.run(outputs, feeds)


@pytest.fixture(params=["default_artifact", "tiny_artifact"])
def artifact(request) -> Path:
    return request.getfixturevalue(request.param)


def make_runtime(artifact: Path) -> EncoderRuntime:
    inputs = json.loads((artifact / "manifest.json").read_text())["inputs"]
    return EncoderRuntime(artifact / "model.onnx", device="cpu", threads=1, inputs=inputs)


def test_vectors_match_the_artifact_run_padded_by_hand(artifact):
    ids, lengths = tokenize(artifact, TEXTS)
    runtime = make_runtime(artifact)
    got = runtime.run(ids, lengths, ["sentence_embedding", "pooled_embedding"])
    expected = padded_run(artifact, ids, lengths, ["sentence_embedding", "pooled_embedding"])
    assert runtime.provider == "CPUExecutionProvider"
    for name, want in zip(["sentence_embedding", "pooled_embedding"], expected):
        assert got[name].shape == (len(TEXTS), want.shape[1])
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_token_vectors_come_back_flat_real_tokens_only(artifact):
    ids, lengths = tokenize(artifact, TEXTS)
    got = make_runtime(artifact).run(ids, lengths, ["token_embeddings"])
    assert list(got) == ["token_embeddings"]
    (padded,) = padded_run(artifact, ids, lengths, ["token_embeddings"])
    expected = np.concatenate([padded[row, :length] for row, length in enumerate(lengths)])
    assert got["token_embeddings"].shape == (int(lengths.sum()), padded.shape[2])
    np.testing.assert_allclose(got["token_embeddings"], expected, rtol=1e-5, atol=1e-5)


def test_one_text_skips_the_padding_graph_and_matches_the_plain_run(artifact):
    runtime = make_runtime(artifact)
    for text in TEXTS[:2]:
        ids, lengths = tokenize(artifact, [text])
        got = runtime.run(ids, lengths, ["sentence_embedding", "token_embeddings"])
        expected = padded_run(artifact, ids, lengths, ["sentence_embedding", "token_embeddings"])
        np.testing.assert_allclose(got["sentence_embedding"], expected[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["token_embeddings"], expected[1][0], rtol=1e-5, atol=1e-5)


def test_one_text_gets_the_inputs_the_padding_graph_makes(tmp_path):
    # A model that echoes its three inputs side by side: the one-text rows must be what padding makes.
    from onnx import TensorProto, helper

    names = ["input_ids", "attention_mask", "token_type_ids"]
    graph = helper.make_graph(
        [*(helper.make_node("Cast", [n], [f"{n}_f"], to=TensorProto.FLOAT) for n in names),
         helper.make_node("Concat", [f"{n}_f" for n in names], ["sentence_embedding"], axis=1)],
        "echo", [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "width"]) for n in names],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", "out"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "echo.onnx")
    runtime = EncoderRuntime(tmp_path / "echo.onnx", device="cpu", threads=1, inputs=names)
    ids = np.array([101, 7592, 2088, 102], dtype=np.int32)
    alone = runtime.run(ids, np.array([4], np.int32), ["sentence_embedding"])["sentence_embedding"]
    padded = runtime.run(np.concatenate([ids, ids]), np.array([4, 4], np.int32),
                         ["sentence_embedding"])["sentence_embedding"]
    np.testing.assert_array_equal(alone[0], [*ids, 1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(alone[0], padded[0])


def test_a_text_batched_with_longer_ones_gets_its_own_vector(default_artifact):
    ids, lengths = tokenize(default_artifact, TEXTS)
    runtime = make_runtime(default_artifact)
    together = runtime.run(ids, lengths, ["sentence_embedding"])["sentence_embedding"]
    start = int(lengths[:2].sum())
    alone = runtime.run(ids[start:start + lengths[2]], lengths[2:3], ["sentence_embedding"])["sentence_embedding"]
    np.testing.assert_allclose(together[2], alone[0], rtol=1e-5, atol=1e-5)


def test_read_only_buffers_from_the_wire_are_accepted(default_artifact):
    ids, lengths = tokenize(default_artifact, TEXTS)
    ids, lengths = np.frombuffer(ids.tobytes(), np.int32), np.frombuffer(lengths.tobytes(), np.int32)
    assert not ids.flags.writeable
    vectors = make_runtime(default_artifact).run(ids, lengths, ["sentence_embedding"])["sentence_embedding"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(("device", "kept", "gone"), [
    ("cpu", "LayerNormalization", "SkipLayerNormalization"),
    ("cuda", "SkipLayerNormalization", "LayerNormalization"),
])
def test_residual_layer_norms_are_fused_at_load_except_on_cpu(default_artifact, tmp_path, device, kept, gone):
    # What ORT makes of the artifact's Add + LayerNormalization under each device's settings. Run
    # on the CPU provider: ORT's SkipLayerNormFusion applies to CPU and CUDA nodes alike.
    options = session_options(1, device)
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(default_artifact / "model.onnx"), options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert (ops.count(kept), ops.count(gone)) == (12, 0)


def test_pairs_get_their_token_types(cross_encoder):
    """A reranker's batch of (query, document) pairs: type 1 on each document, as the tokenizer says."""
    artifact = cross_encoder[1]
    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    pairs = [("arctic animals", "polar bears"), ("arctic animals", "a much longer document about stocks"),
             ("q", "word " * 100)]  # the last one truncated to the model's 64 tokens
    encodings = tokenizer.encode_batch(pairs)
    ids = np.concatenate([np.array(e.ids, dtype=np.int32) for e in encodings])
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.int32)
    splits = np.array([e.type_ids.index(1) for e in encodings], dtype=np.int32)
    width = int(lengths.max())
    feeds = {name: np.zeros((len(pairs), width), dtype=np.int64)
             for name in ("input_ids", "attention_mask", "token_type_ids")}
    for row, e in enumerate(encodings):
        feeds["input_ids"][row, :len(e.ids)] = e.ids
        feeds["attention_mask"][row, :len(e.ids)] = 1
        feeds["token_type_ids"][row, :len(e.ids)] = e.type_ids
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    (expected,) = session.run(["logits"], feeds)
    runtime = EncoderRuntime(artifact / "model.onnx", device="cpu", threads=1,
                             inputs=("input_ids", "attention_mask", "token_type_ids"))
    got = runtime.run(ids, lengths, ["logits"], splits=splits)["logits"]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    one = runtime.run(ids[:lengths[0]], lengths[:1], ["logits"], splits=splits[:1])["logits"]  # the one-text path
    np.testing.assert_allclose(one, expected[:1], atol=1e-5)
    # Without the splits every token would be type 0, a different score: the test can tell.
    assert not np.allclose(runtime.run(ids, lengths, ["logits"])["logits"], expected, atol=1e-5)
