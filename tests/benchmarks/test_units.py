"""Pieces of the harness: size distributions, request plans, metrics deltas, the FLOP formula, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zeroembed.benchmarks.ceiling import Arch
from zeroembed.benchmarks.load import RequestPlan, SizeDist, error_kind, take
from zeroembed.benchmarks.report import table
from zeroembed.benchmarks.scrape import default_metrics_url, parse, server_stats
from zeroembed.client import ServerBusy


def test_size_distribution_parsing():
    assert SizeDist.parse("8").sizes == (8,) and SizeDist.parse(8).mean == 8
    dist = SizeDist.parse("1:50,8:30,64:20")
    assert dist.sizes == (1, 8, 64) and dist.weights == (50, 30, 20)
    assert dist.mean == pytest.approx(0.5 + 2.4 + 12.8)
    for bad in ("0", "a", "8:-1", ""):
        with pytest.raises(ValueError):
            SizeDist.parse(bad)


def test_request_plan_is_deterministic_and_walks_the_corpus():
    plan = RequestPlan(10, SizeDist.parse("4"), seed=1)
    assert [plan.get(i) for i in range(4)] == [(0, 4), (4, 4), (8, 4), (2, 4)]
    assert take(list("abcdefghij"), 8, 4) == list("ijab")
    mixed_a, mixed_b = RequestPlan(100, SizeDist.parse("1:1,8:1"), 3), RequestPlan(100, SizeDist.parse("1:1,8:1"), 3)
    assert [mixed_a.get(i) for i in range(50)] == [mixed_b.get(i) for i in range(50)]


def test_error_kind_names_class_and_code():
    assert error_kind(ServerBusy("full")) == "ServerBusy[busy]"
    assert error_kind(ValueError("x")) == "ValueError"


METRICS_BEFORE = """# HELP zeroembed_tokens_total Real tokens encoded
zeroembed_tokens_total{model="m"} 100.0
zeroembed_padding_tokens_total{model="m"} 20.0
zeroembed_texts_total{model="m"} 10.0
zeroembed_batch_size_count{model="m"} 2.0
zeroembed_batch_size_sum{model="m"} 10.0
zeroembed_queue_wait_seconds_count{model="m"} 2.0
zeroembed_queue_wait_seconds_sum{model="m"} 0.002
zeroembed_errors_total{code="busy",model="m",op="encode"} 1.0
"""
METRICS_AFTER = """zeroembed_tokens_total{model="m"} 400.0
zeroembed_padding_tokens_total{model="m"} 120.0
zeroembed_texts_total{model="m"} 40.0
zeroembed_batch_size_count{model="m"} 6.0
zeroembed_batch_size_sum{model="m"} 40.0
zeroembed_batch_size_bucket{le="8.0",model="m"} 6.0
zeroembed_queue_wait_seconds_count{model="m"} 6.0
zeroembed_queue_wait_seconds_sum{model="m"} 0.010
zeroembed_errors_total{code="busy",model="m",op="encode"} 3.0
"""


def test_server_stats_are_deltas():
    stats = server_stats([parse(METRICS_BEFORE)], [parse(METRICS_AFTER)])
    assert stats["texts"] == 30 and stats["tokens"] == 300 and stats["padding_tokens"] == 100
    assert stats["padding_ratio"] == pytest.approx(100 / 400)
    assert stats["mean_batch_size"] == pytest.approx(30 / 4)
    assert stats["mean_queue_wait_s"] == pytest.approx(0.002)
    assert stats["errors"] == {"busy": 2}
    assert server_stats([None], [parse(METRICS_AFTER)]) is None


def test_default_metrics_url():
    assert default_metrics_url("tcp://10.0.0.5:5555") == "http://10.0.0.5:9100/metrics"
    assert default_metrics_url("tcp://*:5555") == "http://127.0.0.1:9100/metrics"


def test_flop_formula_for_minilm():
    arch = Arch.from_manifest({"hidden_size": 384, "architecture": {"num_layers": 6, "hidden_size": 384}})
    assert arch.intermediate == 1536
    assert arch.matmul_params == 6 * (4 * 384 * 384 + 2 * 384 * 1536)
    assert arch.flops(10) == 2 * arch.matmul_params * 10 + 4 * 6 * 100 * 384


def test_table_renders_none_as_dash():
    out = table(["a", "b"], [[1, None], [2.5, "x"]])
    assert "-" in out and "2.5" in out and out.count("\n") == 3


def test_sentence_transformers_row_loads_the_artifacts_own_source(tmp_path):
    from zeroembed.benchmarks.compare import source_model_dir
    from zeroembed.export import DEFAULT_MODEL_NAME, default_model_dir

    assert source_model_dir({"source": DEFAULT_MODEL_NAME}) == default_model_dir()
    assert source_model_dir({"source": str(tmp_path)}) == tmp_path  # a model exported from a local directory
    assert source_model_dir({"source": str(tmp_path / "gone")}) is None  # exported elsewhere: no such row


def test_compare_on_cuda_without_a_gpu_says_so(monkeypatch):
    from zeroembed.cli import main
    from zeroembed.server import config

    monkeypatch.setattr(config, "cuda_available", lambda: False)
    with pytest.raises(SystemExit, match="sees no CUDA GPU"):
        main(["bench", "--compare", "--device", "cuda", "--quick"])


def _cached_int8(xdg: Path) -> Path:
    from zeroembed.export.manifest import EXPORTER_REVISION

    cached = xdg / "zeroembed" / "all-MiniLM-L6-v2-int8"
    cached.mkdir(parents=True)
    (cached / "manifest.json").write_text(json.dumps({"exporter_revision": EXPORTER_REVISION}))
    return cached


@pytest.mark.parametrize("variable", ["XDG_CACHE_HOME", "ZEROEMBED_CACHE_DIR"])
def test_int8_row_uses_the_cached_int8_export_of_the_default_model(tmp_path, monkeypatch, variable):
    from zeroembed.benchmarks.compare import resolve_int8

    # The cache serve uses: under the user's cache, or where ZEROEMBED_CACHE_DIR says.
    monkeypatch.delenv("ZEROEMBED_CACHE_DIR", raising=False)
    monkeypatch.setenv(variable, str(tmp_path if variable == "XDG_CACHE_HOME" else tmp_path / "zeroembed"))
    cached = _cached_int8(tmp_path)
    fp32 = tmp_path / "zeroembed" / "all-MiniLM-L6-v2-fp32"
    assert resolve_int8(None, fp32, quick=False, workdir=tmp_path / "work") == (
        cached, f"the default model's int8 export, {cached}")


def test_int8_row_of_another_model_is_not_the_default_models(tmp_path, monkeypatch, tiny_artifact):
    from zeroembed.benchmarks.compare import resolve_int8

    monkeypatch.delenv("ZEROEMBED_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = _cached_int8(tmp_path)
    path, how = resolve_int8(None, tiny_artifact, quick=False, workdir=tmp_path / "work")
    assert path != cached and how.startswith("the fp32 artifact is not the default model")
    assert "stand-in: ORT quantize_dynamic" in how


def test_compare_refuses_server_settings_the_server_would_refuse(monkeypatch):
    from zeroembed.benchmarks.compare import resolve_artifact

    monkeypatch.setenv("ZEROEMBED_PORT", "abc")
    with pytest.raises(SystemExit, match="invalid --port / ZEROEMBED_PORT"):
        resolve_artifact(None)


def test_hops_measures_both_links():
    from zeroembed.benchmarks.hops import measure

    results = measure(messages=5, gap_s=0.0, rounds=1)
    assert set(results) == {"zeromq_ipc", "unix_socket"}
    for rounds in results.values():
        assert len(rounds) == 1 and 0 < rounds[0]["p50"] <= rounds[0]["p90"]


def test_wait_until_idle_waits_out_a_busy_thread_of_this_process():
    import threading
    import time

    from zeroembed.benchmarks.inprocess import wait_until_idle

    assert 0.02 <= wait_until_idle(quiet_s=0.02) < 1.0  # nothing else runs: one quiet spell

    def spin(seconds: float) -> None:  # what an in-process session's pool does after its last call
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass

    spinner = threading.Thread(target=spin, args=(0.4,))
    spinner.start()
    waited = wait_until_idle(quiet_s=0.02, limit_s=5.0)
    spinner.join()
    assert waited >= 0.3  # not before the spinning stopped

    spinner = threading.Thread(target=spin, args=(1.5,))
    spinner.start()
    assert wait_until_idle(limit_s=0.2) < 1.0  # a process that never goes quiet is waited on no longer than asked
    spinner.join()
