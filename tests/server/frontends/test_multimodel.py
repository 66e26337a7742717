"""Several models in one server, end to end: `zeroembed serve --model EMB --model rerank=RERANK` with an API
key, reached from the Python clients, the OpenAI-, TEI- and Cohere-shaped HTTP routes and the real Cohere SDK.

One server for the module; every request of it goes through routing by model.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from zeroembed.client import AsyncClient, InvalidRequest

from ...dependencies import require
from ..servers import RunningServer, free_port, start_server

require("aiohttp", "server")
st = require("sentence_transformers", "export")

KEY = "s3cret-key"
MAX_DOCUMENTS = 20
QUERY = "which animals live in the arctic?"
DOCUMENTS = [
    "Polar bears, arctic foxes and walruses live in the Arctic.",
    "Penguins live in the southern hemisphere.",
    "The stock market closed higher on Friday.",
    "",
    "Eisbären leben in der Arktis.",
    "Arctic wildlife adapts to the cold with thick fur and fat. " * 20,  # cut to fit 64 tokens
]


@pytest.fixture(scope="module")
def served(default_artifact: Path, cross_encoder: tuple[Path, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    port = free_port()
    running = start_server(default_artifact, tmp_path_factory.mktemp("multimodel"), "--model",
                           f"rerank={cross_encoder[1]}", "--workers", "1", "--threads-per-worker", "1",
                           "--http-port", str(port), "--api-key", KEY,
                           "--max-documents-per-rerank", str(MAX_DOCUMENTS))
    running.http_port = port
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture(scope="module")
def expected(cross_encoder: tuple[Path, Path]) -> np.ndarray:
    """sentence-transformers' own scores of (QUERY, document) for every document."""
    model = st.CrossEncoder(str(cross_encoder[0]), device="cpu")
    scores = model.predict([(QUERY, d) for d in DOCUMENTS], show_progress_bar=False)
    assert np.ptp(scores) > 0.01  # documents the check can tell apart
    return np.asarray(scores, dtype=np.float64)


def call(server: RunningServer, path: str, body: object = None, *, key: str | None = KEY,
         method: str | None = None) -> tuple[int, object]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", data=data, method=method,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def by_index(results, score=lambda r: r.score) -> np.ndarray:
    out = np.full(len(DOCUMENTS), np.nan)
    for result in results:
        out[result["index"] if isinstance(result, dict) else result.index] = score(result)
    return out


# ---------------------------------------------------------------------- the Python clients


def test_one_server_embeds_and_reranks(served, expected):
    with served.client() as client:
        assert client.encode(["hello world"]).shape == (1, 384)  # the default model
        results = client.rerank(QUERY, DOCUMENTS, model="rerank")
    assert [r.index for r in results] == list(np.argsort(-expected, kind="stable"))
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    np.testing.assert_allclose(by_index(results), expected, atol=1e-4, rtol=0)
    assert all(r.document is None for r in results)


def test_top_n_documents_and_raw_scores(served, expected):
    with served.client() as client:
        top = client.rerank(QUERY, DOCUMENTS, top_n=2, return_documents=True, model="rerank")
        raw = client.rerank(QUERY, DOCUMENTS, model="rerank", raw_scores=True)
    assert [r.index for r in top] == list(np.argsort(-expected, kind="stable")[:2])
    assert [r.document for r in top] == [DOCUMENTS[r.index] for r in top]
    logits = np.log(expected / (1 - expected))  # the inverse of the manifest's sigmoid
    np.testing.assert_allclose(by_index(raw), logits, atol=1e-3, rtol=0)


def test_a_long_list_is_split_across_batches_and_answers_like_a_short_one(served, expected):
    documents = DOCUMENTS * 3  # 18 pairs: several batches of at most 8
    with served.client() as client:
        results = client.rerank(QUERY, documents, model="rerank")
    scores = np.empty(len(documents))
    for result in results:
        scores[result.index] = result.score
    np.testing.assert_allclose(scores, np.tile(expected, 3), atol=1e-4, rtol=0)


def test_the_async_client_reranks(served, expected):
    async def main():
        async with AsyncClient(served.endpoint, timeout=30) as client:
            return await asyncio.gather(*(client.rerank(QUERY, DOCUMENTS, model="rerank") for _ in range(4)))

    for results in asyncio.run(main()):
        np.testing.assert_allclose(by_index(results), expected, atol=1e-4, rtol=0)


def test_status_lists_every_model_with_its_task(served):
    with served.client() as client:
        status = client.status()
    assert status["name"] == "all-MiniLM-L6-v2" and status["dim"] == 384 and status["task"] == "embed"
    embed, ranker = status["models"]
    assert (embed["name"], embed["task"], embed["dim"]) == ("all-MiniLM-L6-v2", "embed", 384)
    assert (ranker["name"], ranker["task"], ranker["dim"], ranker["precision"]) == ("rerank", "rerank", 32, "fp32")
    assert ranker["max_documents_per_rerank"] == MAX_DOCUMENTS and ranker["workers"][0]["ready"]


@pytest.mark.parametrize(("call_", "needle"), [
    (lambda c: c.encode(["x"], model="nope"), "no model named 'nope' here; the models loaded are "
                                               "['all-MiniLM-L6-v2', 'rerank']"),
    (lambda c: c.encode(["x"], model="rerank"), "'rerank' is a reranker"),
    (lambda c: c.rerank(QUERY, ["x"]), "'all-MiniLM-L6-v2' is an embedding model"),
    (lambda c: c.rerank(QUERY, ["x"] * (MAX_DOCUMENTS + 1), model="rerank"), "the limit is 20"),
    (lambda c: c.rerank(QUERY, ["x", 3], model="rerank"), "documents[1] is int"),
    (lambda c: c.rerank(QUERY, [], model="rerank"), "documents is empty"),
])
def test_routing_and_bad_input_errors_name_the_problem_and_leave_the_server_serving(served, call_, needle):
    with served.client() as client:
        with pytest.raises(InvalidRequest, match=None) as info:
            call_(client)
        assert needle in str(info.value)
        assert client.rerank(QUERY, ["still here"], model="rerank")[0].index == 0


def test_metrics_carry_each_model(served):
    with served.client() as client:
        client.rerank(QUERY, DOCUMENTS[:2], model="rerank")
        client.encode(["a text"])
    text = urllib.request.urlopen(served.metrics_url, timeout=5).read().decode()
    assert 'zeroembed_requests_total{model="rerank",op="rerank"}' in text
    assert 'zeroembed_requests_total{model="all-MiniLM-L6-v2",op="encode"}' in text
    assert 'zeroembed_request_latency_seconds_count{model="rerank",op="rerank"}' in text
    assert 'zeroembed_workers{model="rerank"} 1.0' in text


# ---------------------------------------------------------------------- HTTP


def test_tei_rerank(served, expected):
    status, body = call(served, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "model": "rerank",
                                            "return_text": True, "truncate": True})
    assert status == 200, body
    assert [r["score"] for r in body] == sorted((r["score"] for r in body), reverse=True)
    np.testing.assert_allclose(by_index(body, lambda r: r["score"]), expected, atol=1e-4, rtol=0)
    assert all(r["text"] == DOCUMENTS[r["index"]] for r in body)
    status, raw = call(served, "/rerank", {"query": QUERY, "texts": DOCUMENTS[:2], "model": "rerank",
                                           "raw_scores": True, "truncate": True})
    assert status == 200 and "text" not in raw[0]
    np.testing.assert_allclose(by_index(raw, lambda r: r["score"])[:2], np.log(expected / (1 - expected))[:2],
                               atol=1e-3)


def test_cohere_shaped_rerank(served, expected):
    status, body = call(served, "/v1/rerank", {"model": "rerank", "query": QUERY, "documents": DOCUMENTS,
                                               "top_n": 3, "return_documents": True})
    assert status == 200, body
    order = list(np.argsort(-expected, kind="stable")[:3])
    assert [r["index"] for r in body["results"]] == order and body["model"] == "rerank"
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], expected[order], atol=1e-4)
    assert [r["document"]["text"] for r in body["results"]] == [DOCUMENTS[i] for i in order]
    assert body["usage"]["total_tokens"] > 0


def test_the_cohere_sdk_reranks_unmodified(served, expected):
    cohere = require("cohere", "dev")
    base_url = f"http://127.0.0.1:{served.http_port}"
    v2 = cohere.ClientV2(api_key=KEY, base_url=base_url, timeout=60)
    response = v2.rerank(model="rerank", query=QUERY, documents=DOCUMENTS, top_n=2)
    assert [r.index for r in response.results] == list(np.argsort(-expected, kind="stable")[:2])
    np.testing.assert_allclose([r.relevance_score for r in response.results],
                               np.sort(expected)[::-1][:2], atol=1e-4)
    v1 = cohere.Client(api_key=KEY, base_url=base_url, timeout=60)
    response = v1.rerank(model="rerank", query=QUERY, documents=DOCUMENTS, return_documents=True)
    assert len(response.results) == len(DOCUMENTS) and response.results[0].document.text in DOCUMENTS
    with pytest.raises(cohere.core.ApiError) as info:
        cohere.ClientV2(api_key="wrong", base_url=base_url).rerank(model="rerank", query=QUERY, documents=["x"])
    assert info.value.status_code == 401


def test_embeddings_route_by_model(served):
    with served.client() as client:
        reference = client.encode(["hello world"])
    status, body = call(served, "/v1/embeddings", {"input": ["hello world"], "model": "all-MiniLM-L6-v2"})
    assert status == 200 and body["model"] == "all-MiniLM-L6-v2"
    np.testing.assert_allclose(body["data"][0]["embedding"], reference[0], atol=1e-6)
    status, vectors = call(served, "/embed", {"inputs": "hello world"})
    assert status == 200
    np.testing.assert_allclose(vectors[0], reference[0], atol=1e-6)
    status, tokens = call(served, "/embed_all", {"inputs": ["hello world"]})
    assert status == 200 and np.array(tokens[0]).shape == (4, 384)  # [CLS] hello world [SEP]


def test_tokenize_decode_info_models(served):
    status, tokens = call(served, "/tokenize", {"inputs": ["hello world"]})
    assert status == 200
    assert [t["text"] for t in tokens[0]] == ["[CLS]", "hello", "world", "[SEP]"]
    assert tokens[0][1]["special"] is False and tokens[0][0]["special"] is True
    assert (tokens[0][1]["start"], tokens[0][1]["stop"]) == (0, 5)
    status, text = call(served, "/decode", {"ids": [t["id"] for t in tokens[0]]})
    assert (status, text) == (200, ["hello world"])
    status, info = call(served, "/info?model=rerank", method="GET")
    assert status == 200 and info["model_id"] == "rerank" and "reranker" in info["model_type"]
    assert info["max_input_length"] == 64 and info["max_documents_per_rerank"] == MAX_DOCUMENTS
    status, info = call(served, "/info", method="GET")
    assert info["model_type"] == {"embedding": {"pooling": "mean"}} and info["dim"] == 384
    status, models = call(served, "/v1/models", method="GET")
    assert [(m["id"], m["task"]) for m in models["data"]] == [("all-MiniLM-L6-v2", "embed"), ("rerank", "rerank")]


@pytest.mark.parametrize(("path", "body", "status_", "needle"), [
    ("/v1/rerank", {"model": "nope", "query": "q", "documents": ["x"]}, 400, "no model named 'nope'"),
    ("/v1/rerank", {"model": "rerank", "query": "q", "documents": []}, 400, "'documents' is empty"),
    ("/v1/rerank", {"model": "rerank", "query": "q", "documents": ["x", 1]}, 400, "'documents'[1] is int"),
    ("/v1/rerank", {"model": "rerank", "query": "q", "documents": ["x"] * 21}, 400, "the limit is 20"),
    ("/v1/rerank", {"query": "q", "documents": ["x"]}, 400, "is an embedding model"),
    ("/rerank", {"model": "rerank", "query": "q", "texts": []}, 400, "`texts` is empty"),
    ("/rerank", {"model": "rerank", "query": "q", "texts": [None]}, 422, "`texts`[0] is NoneType"),
    ("/rerank", {"model": "rerank", "query": "q", "texts": ["x"] * 21}, 413, "the limit is 20"),
    ("/v1/embeddings", {"model": "rerank", "input": ["x"]}, 400, "is a reranker"),
    ("/embed", {"model": "nope", "inputs": ["x"]}, 422, "the models loaded are"),
])
def test_http_errors_name_the_problem(served, path, body, status_, needle):
    status, answer = call(served, path, body)
    message = answer["error"]["message"] if isinstance(answer["error"], dict) else answer["error"]
    assert status == status_ and needle in message, answer
    assert call(served, "/rerank", {"model": "rerank", "query": "q", "texts": ["still here"]})[0] == 200


@pytest.mark.parametrize("path", ["/v1/embeddings", "/embed", "/rerank", "/v1/rerank", "/v1/models", "/status",
                                  "/info", "/tokenize"])
@pytest.mark.parametrize("key", [None, "wrong"])
def test_every_route_but_health_needs_the_api_key(served, path, key):
    get = path in ("/v1/models", "/status", "/info")
    status, body = call(served, path, None if get else {"inputs": "x"}, key=key, method="GET" if get else "POST")
    assert status == 401, body
    message = body["error"]["message"] if isinstance(body["error"], dict) else body["error"]
    assert "API key" in message


def test_health_needs_no_key(served):
    assert call(served, "/health", key=None) == (200, {"status": "ok"})
