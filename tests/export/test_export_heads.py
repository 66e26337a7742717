"""Every sentence-transformers head in the graph, against sentence-transformers on the same folder.

Tiny random BERTs saved by sentence-transformers itself; each pooling mode
leaves the prompt out (``include_prompt=False``), so the ``prompt_length``
input is exercised for every mode, with and without a prompt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from zeroembed.export import Manifest, export_model

from .conftest import UNSEEN_TEXTS
from .stmodels import LAYERS, compare_with_st, load_st, make_st_model, run_artifact

pytest.importorskip("sentence_transformers")

PROMPTS = {"query": "query: ", "passage": "Represent this passage for retrieving supporting documents: "}
MODES = ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]


@pytest.fixture(scope="module", params=MODES)
def pooled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, object, Path]:
    """(mode, sentence-transformers model, artifact) for a BERT pooling with ``mode`` without its prompt."""
    mode = request.param
    base = tmp_path_factory.mktemp(f"head-{mode}")
    folder = make_st_model(base / "model", pooling=mode, include_prompt=False, normalize=mode in ("mean", "lasttoken"),
                           prompts=PROMPTS, seed=MODES.index(mode))
    export_model(folder, base / "artifact")
    return mode, load_st(folder), base / "artifact"


@pytest.mark.parametrize("prompt", ["", PROMPTS["query"], PROMPTS["passage"]])
def test_pooling_without_prompt_matches_sentence_transformers(pooled, prompt: str) -> None:
    _, st_model, artifact = pooled
    sentence, tokens = compare_with_st(st_model, artifact, UNSEEN_TEXTS, prompt)
    assert sentence >= 0.9999 and tokens >= 0.9999


def test_pooling_manifest_and_graph_input(pooled) -> None:
    mode, st_model, artifact = pooled
    manifest = Manifest.read(artifact)
    assert (manifest.pooling, manifest.include_prompt, manifest.dense) == (mode, False, [])
    assert manifest.inputs == ["input_ids", "attention_mask", "prompt_length"]
    # sentence-transformers saves an empty "document" prompt beside the ones given.
    assert manifest.prompts == st_model.prompts == PROMPTS | {"document": ""}
    assert manifest.default_prompt_name is None
    assert manifest.fused_attention and manifest.fused_operators["Attention"] == LAYERS
    graph_input = next(i for i in onnx.load(str(artifact / "model.onnx")).graph.input if i.name == "prompt_length")
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param for d in graph_input.type.tensor_type.shape.dim] == ["batch"]
    assert manifest.parity.num_texts == 32 + 2 * 5  # the validation texts, then 5 behind each prompt


def test_prompt_length_is_per_row(pooled) -> None:
    """One batch mixing texts with and without a prompt gives what each gives alone."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from zeroembed.export.tokenizer import encode_batch, prompt_token_length

    _, _, artifact = pooled
    texts = UNSEEN_TEXTS[:4]
    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    prompt = PROMPTS["query"]
    rows = [prompt + texts[0], texts[1], prompt + texts[2], texts[3]]
    lengths = [prompt_token_length(tokenizer, prompt), 0, prompt_token_length(tokenizer, prompt), 0]
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    mixed = session.run(["sentence_embedding"], encode_batch(tokenizer, rows, lengths))[0]
    alone = np.concatenate([run_artifact(artifact, [t], p)["sentence_embedding"]
                            for t, p in zip(texts, [prompt, "", prompt, ""], strict=True)])
    np.testing.assert_allclose(mixed, alone, atol=1e-5)


@pytest.fixture(scope="module")
def dense_head(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, Manifest]:
    """Mean pooling (prompt included), three chained Dense layers, Normalize, a default prompt."""
    base = tmp_path_factory.mktemp("head-dense")
    folder = make_st_model(base / "model", pooling="mean", dense=[(24, "Tanh", True), (24, "GELU", True), (16, "Identity")],
                           normalize=True, prompts=PROMPTS, default_prompt_name="query", seed=11)
    manifest = export_model(folder, base / "artifact")
    return load_st(folder), base / "artifact", manifest


@pytest.mark.parametrize("prompt", ["", PROMPTS["query"]])
def test_dense_head_matches_sentence_transformers(dense_head, prompt: str) -> None:
    st_model, artifact, _ = dense_head
    sentence, tokens = compare_with_st(st_model, artifact, UNSEEN_TEXTS, prompt)
    assert sentence >= 0.9999 and tokens >= 0.9999


def test_dense_head_manifest_and_outputs(dense_head) -> None:
    st_model, artifact, manifest = dense_head
    assert manifest == Manifest.read(artifact)
    assert manifest.hidden_size == 16 and manifest.architecture.hidden_size == 32  # the final (post-Dense) width
    assert [(d.in_features, d.out_features, d.activation, d.residual) for d in manifest.dense] == [
        (32, 24, "tanh", True), (24, 24, "gelu", True), (24, 16, "identity", False)]
    assert manifest.include_prompt and manifest.inputs == ["input_ids", "attention_mask"]
    assert (manifest.prompts, manifest.default_prompt_name) == (st_model.prompts, "query")
    outputs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
               for o in onnx.load(str(artifact / "model.onnx")).graph.output}
    assert outputs == {"token_embeddings": ["batch", "sequence", 32], "sentence_embedding": ["batch", 16],
                       "pooled_embedding": ["batch", 16]}
    got = run_artifact(artifact, UNSEEN_TEXTS)
    pooled = got["pooled_embedding"]  # after the Dense layers, before Normalize
    np.testing.assert_allclose(pooled / np.linalg.norm(pooled, axis=1, keepdims=True), got["sentence_embedding"],
                               atol=1e-5)
