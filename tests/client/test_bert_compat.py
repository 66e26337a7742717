"""BertClient (bert-as-service's API) against a real server: the same vectors as Client."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from zeroembed.client import BertClient, Client, ServerTimeout

from ..server.servers import RunningServer, free_port, start_server

TEXTS = ["First do it", "then do it right", "then do it better"]


@pytest.fixture(scope="module")
def real_server(default_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(default_artifact, tmp_path_factory.mktemp("bert"), "--workers", "1",
                           "--threads-per-worker", "1")
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture
def bc(real_server) -> Iterator[BertClient]:
    with BertClient(ip="127.0.0.1", port=real_server.port, timeout=30_000) as client:
        yield client


def expected(server: RunningServer, texts, **options):
    with Client(server.endpoint) as client:
        return client.encode(texts, **options)


def test_same_vectors_as_client(bc, real_server):
    vectors = bc.encode(TEXTS)
    assert isinstance(vectors, np.ndarray) and vectors.dtype == np.float32 and vectors.shape == (3, 384)
    np.testing.assert_allclose(vectors, expected(real_server, TEXTS), atol=1e-6)


def test_list_output_and_show_tokens(real_server):
    with BertClient(port=real_server.port, output_fmt="list", show_server_config=False) as bc:
        vectors, tokens = bc.encode(TEXTS, show_tokens=True)
    want, pieces = expected(real_server, TEXTS, show_tokens=True)
    assert isinstance(vectors, list) and isinstance(vectors[0], list)
    np.testing.assert_allclose(np.array(vectors, dtype=np.float32), want, atol=1e-6)
    assert tokens == pieces and tokens[0][0] == "[CLS]"


def test_is_tokenized(bc, real_server):
    words = [t.split() for t in TEXTS]
    vectors = bc.encode(words, is_tokenized=True)
    np.testing.assert_allclose(vectors, expected(real_server, TEXTS), atol=1e-6)
    _, tokens = bc.encode([["Hello", "world"]], is_tokenized=True, show_tokens=True)
    assert tokens == [["[CLS]", "hello", "world", "[SEP]"]]


def test_non_blocking_fetch_all(bc, real_server):
    assert bc.encode(TEXTS[:2], blocking=False) is None
    assert bc.encode(TEXTS[2:], blocking=False) is None
    assert bc.status["num_pending_request"] == 2
    result = bc.fetch_all(concat=True)
    np.testing.assert_allclose(result, expected(real_server, TEXTS), atol=1e-6)
    assert bc.fetch_all() is None


def test_encode_async(bc, real_server):
    results = sorted(bc.encode_async(iter([TEXTS[:1], TEXTS[1:]]), delay=0), key=lambda r: r.id)
    np.testing.assert_allclose(np.concatenate([r.embedding for r in results]), expected(real_server, TEXTS), atol=1e-6)


def test_server_config_status_and_client_status(bc):
    config = bc.server_config
    assert config["max_seq_len"] == 256 and config["show_tokens_to_client"] is True
    assert config["dim"] == 384 and config["server_version"]
    assert bc.server_status["workers"][0]["ready"]
    assert bc.status["client_version"] == "1.10.0" and bc.length_limit == 256


def test_show_server_config_prints(real_server, capsys):
    with BertClient(port=real_server.port, show_server_config=True):
        pass
    assert "server config:" in capsys.readouterr().out


def test_input_errors_mirror_bert_as_service(bc):
    with pytest.raises(TypeError):
        bc.encode("not a list")
    with pytest.raises(ValueError):
        bc.encode([])
    with pytest.raises(ValueError):
        bc.encode(["ok", "  "])
    with pytest.raises(TypeError):
        bc.encode(["ok", 3])
    with pytest.raises(TypeError):
        bc.encode(["not", "words"], is_tokenized=True)
    with pytest.raises(AttributeError):
        BertClient(output_fmt="csv", ignore_all_checks=True)


def test_long_text_warns_and_is_truncated(bc):
    with pytest.warns(UserWarning, match="max_seq_len=256"):
        vectors = bc.encode(["word " * 300])
    assert vectors.shape == (1, 384)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with BertClient(port=bc.port, check_length=False) as quiet:
            quiet.encode(["word " * 300])


def test_timeout_in_milliseconds():
    with pytest.raises(TimeoutError):
        BertClient(port=free_port(), timeout=200)
    with BertClient(port=free_port(), timeout=200, ignore_all_checks=True) as bc:
        with pytest.raises(ServerTimeout):
            bc.encode(["x"])
