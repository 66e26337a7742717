"""The models people pick, served: all nine architectures and their heads through a real server, against
sentence-transformers on the same folder, with prompts, a Dense head and Matryoshka dimensions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zeroembed.client import InvalidRequest

from ..dependencies import require
from .servers import start_server

torch = require("torch", "export")

from tests.export.stmodels import load_st, make_st_model, min_cosine  # noqa: E402

TEXTS = ["hello world", "The quick brown fox jumps over the lazy dog.", "a", "東京は日本の首都です。",
         " ".join(["a longer text with many words"] * 8)]
PROMPTS = {"query": "query: ", "passage": "passage: "}


def exported(tmp_path_factory, name: str, **head) -> tuple[Path, Path]:
    from zeroembed.export import export_model

    base = tmp_path_factory.mktemp(name)
    if head.pop("rotary", False):  # rotary and decoder architectures: their own tiny builders
        from zeroembed.benchmarks.randomrotary import make_random_rotary

        folder = make_random_rotary(head.pop("architecture"), base / "model", tiny=True, **head)
    else:
        folder = make_st_model(base / "model", **head)
    artifact = base / "artifact"
    export_model(folder, artifact)
    return folder, artifact


@pytest.fixture(scope="module", params=[
    pytest.param({"architecture": "mpnet", "normalize": True, "prompts": PROMPTS}, id="mpnet"),
    pytest.param({"architecture": "distilbert", "pooling": "cls", "dense": [(16, "Tanh")], "prompts": PROMPTS},
                 id="distilbert-dense"),
    pytest.param({"architecture": "bert", "pooling": "lasttoken", "include_prompt": False, "prompts": PROMPTS,
                  "default_prompt_name": "passage", "normalize": True}, id="bert-lasttoken-prompt-excluded"),
    pytest.param({"architecture": "roberta", "normalize": True, "prompts": PROMPTS}, id="roberta"),
    pytest.param({"architecture": "xlm-roberta", "pooling": "max", "dense": [(24, "Identity")], "prompts": PROMPTS},
                 id="xlm-roberta-max-dense"),
    pytest.param({"architecture": "modernbert", "rotary": True, "prompts": PROMPTS}, id="modernbert"),
    pytest.param({"architecture": "nomic_bert", "rotary": True, "prompts": PROMPTS}, id="nomic_bert"),
    pytest.param({"architecture": "qwen2", "rotary": True, "pooling": "lasttoken", "prompts": PROMPTS},
                 id="qwen2-decoder"),
    pytest.param({"architecture": "qwen3", "rotary": True, "pooling": "lasttoken", "padding_side": "left",
                  "prompts": PROMPTS}, id="qwen3-decoder"),
])
def served(request, tmp_path_factory):
    folder, artifact = exported(tmp_path_factory, request.param["architecture"], **dict(request.param))
    server = start_server(artifact, tmp_path_factory.mktemp("logs"), "--workers", "1", "--threads-per-worker", "1")
    yield load_st(folder), server, request.param
    assert server.stop() == 0, server.log()


def test_vectors_match_sentence_transformers_with_and_without_prompts(served):
    st, server, head = served
    with server.client() as client:
        for prompt_name in (None, "query", "passage"):
            options = {} if prompt_name is None else {"prompt_name": prompt_name}
            ours = client.encode(TEXTS, **options)
            theirs = st.encode(TEXTS, prompt_name=prompt_name, convert_to_numpy=True)
            assert ours.shape == theirs.shape
            assert min_cosine(ours, theirs) >= 0.9999, prompt_name
        literal = client.encode(TEXTS, prompt="query: ")
        np.testing.assert_allclose(literal, client.encode(TEXTS, prompt_name="query"), atol=1e-6)
        status = client.status()
    # sentence-transformers adds an empty "document" prompt when it loads a folder that has none.
    assert {k: v for k, v in status["prompts"].items() if v} == {k: v for k, v in st.prompts.items() if v}


def test_token_vectors_match_sentence_transformers(served):
    st, server, head = served
    with server.client() as client:
        ours = client.encode(TEXTS[:2], output="tokens", prompt_name="query")
    theirs = st.encode(TEXTS[:2], output_value="token_embeddings", prompt_name="query")
    for mine, reference in zip(ours, theirs):
        reference = reference.numpy()
        if head.get("padding_side") == "left":
            # sentence-transformers trims only trailing padding: a left-padded text keeps its leading pads.
            reference = reference[len(reference) - len(mine):]
        assert mine.shape == reference.shape
        assert min_cosine(mine, reference) >= 0.9999


def test_dimensions_truncate_as_sentence_transformers_does(served):
    st, server, head = served
    dim = st.get_embedding_dimension()
    with server.client() as client:
        ours = client.encode(TEXTS, dimensions=dim // 2, prompt_name="query")
        with pytest.raises(InvalidRequest, match="dimensions"):
            client.encode(TEXTS, dimensions=dim + 1)
        with pytest.raises(InvalidRequest, match="'nope' is not one of this model's prompts"):
            client.encode(TEXTS, prompt_name="nope")
    theirs = st.encode(TEXTS, prompt_name="query", truncate_dim=dim // 2, normalize_embeddings=head.get("normalize"))
    assert ours.shape == (len(TEXTS), dim // 2)
    assert min_cosine(ours, theirs) >= 0.9999
