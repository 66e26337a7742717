"""The client's side of rerank, socket-free: argument checks, the request's frames, and reading a reply."""

from __future__ import annotations

import numpy as np
import pytest

from zeroembed.client import InvalidRequest, RerankResult, ServerError
from zeroembed.client.calls import check_rerank, rank, rerank_chunk
from zeroembed.client.protocol import Op, Reply, decode_request


def checked(query="q", documents=("a", "b"), top_n=None, return_documents=False, **options):
    return check_rerank(query, documents, top_n, return_documents, {"truncate": True, "model": None, **options})


def test_the_request_carries_the_query_options_and_documents():
    documents, options = checked(documents=("a", "b"), model="rerank", raw_scores=True)
    request = decode_request(rerank_chunk("the query", documents, options).frames)
    assert request.op == Op.RERANK and request.texts == ["a", "b"] and request.model == "rerank"
    assert request.header["query"] == "the query" and request.header["raw_scores"] is True
    plain = decode_request(rerank_chunk("q", ["a"], checked()[1]).frames)
    assert "model" not in plain.header  # an additive field goes only when set


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"query": 3}, "query must be a string"),
    ({"documents": "one string"}, "documents must be a list of strings"),
    ({"documents": []}, "documents is empty"),
    ({"documents": ["a", None]}, "documents[1] is NoneType"),
    ({"top_n": 0}, "top_n must be a positive int"),
    ({"return_documents": 1}, "return_documents must be True or False"),
    ({"truncate": "yes"}, "option 'truncate' must be bool"),
    ({"model": 5}, "option 'model' must be str or None"),
])
def test_bad_arguments_are_refused_before_anything_is_sent(kwargs, needle):
    with pytest.raises(InvalidRequest) as info:
        checked(**kwargs)
    assert needle in str(info.value)


def test_results_are_best_first_ties_in_document_order_and_cut_at_top_n():
    reply = Reply({"ok": True}, [np.array([0.2, 0.9, 0.2, 0.5], dtype=np.float32)])
    documents = ["a", "b", "c", "d"]
    assert [r.index for r in rank(reply, documents, None, False)] == [1, 3, 0, 2]
    top = rank(reply, documents, 2, True)
    assert top == [RerankResult(1, pytest.approx(0.9), "b"), RerankResult(3, 0.5, "d")]


def test_a_reply_with_the_wrong_number_of_scores_is_a_server_error():
    with pytest.raises(ServerError, match="3 scores"):
        rank(Reply({"ok": True}, [np.zeros(2, dtype=np.float32)]), ["a", "b", "c"], None, False)


def test_an_unencodable_document_is_named():
    documents, options = checked(documents=("fine", "bad \ud800"))
    with pytest.raises(InvalidRequest) as info:
        rerank_chunk("q", documents, options)
    assert "documents[1]" in str(info.value) and info.value.index == 1
