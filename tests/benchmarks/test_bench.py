"""`zeroembed bench` end to end: against a real server on loopback, the sweep plot, and `--compare --quick`.

These prove the harness works on a tiny load; they assert no timings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.servers import RunningServer, free_port, start_server
from zeroembed.benchmarks.compare import (TARGET_HTTP_LATENCY_SLACK_MS, TARGET_LATENCY_SLACK_MS, TARGET_SERVER_VS_ORT,
                                          TARGET_SERVER_VS_ST, TARGET_SERVER_VS_ST_STRETCH)
from zeroembed.cli import main


@pytest.fixture(scope="module")
def server(default_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(default_artifact, tmp_path_factory.mktemp("bench-server"), "--workers", "1",
                           "--max-batch-size", "8")
    yield running
    assert running.stop() == 0, running.log()


def _bench(server: RunningServer, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "bench.json"
    code = main(["bench", "--endpoint", server.endpoint, "--metrics-url", server.metrics_url, "--texts", "60",
                 "--no-progress", "--json", str(out), *extra])
    return code, json.loads(out.read_text())


def test_load_run_reports_sane_fields(server: RunningServer, tmp_path: Path, capsys) -> None:
    code, data = _bench(server, tmp_path, "--requests", "20", "--concurrency", "2", "--batch-size", "1:1,4:1")
    assert code == 0
    env = data["environment"]
    assert env["cores"] >= 1 and env["cpu"] and env["command"].startswith("zeroembed bench")
    (run,) = data["runs"]
    assert run["concurrency"] == 2 and run["requests"] == 20 and run["ok_requests"] == 20
    assert run["errors"] == {} and run["error_count"] == 0
    assert run["texts"] >= 20 and run["texts_per_s"] > 0 and run["tokens"] >= run["texts"]
    assert run["tokens_per_s"] > 0 and run["seconds"] > 0
    lat = run["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    srv = run["server"]
    assert srv is not None and srv["texts"] == run["texts"] and srv["tokens"] == run["tokens"]
    assert 1 <= srv["mean_batch_size"] <= 8
    assert 0 <= srv["padding_ratio"] < 1 and srv["mean_queue_wait_s"] >= 0
    table = capsys.readouterr().out
    assert "texts/s" in table and "p99 ms" in table and "padding %" in table


def test_sweep_writes_the_plot(server: RunningServer, tmp_path: Path) -> None:
    plot = tmp_path / "sweep.png"
    code, data = _bench(server, tmp_path, "--requests", "6", "--concurrency", "1,2", "--plot", str(plot))
    assert code == 0
    assert [r["concurrency"] for r in data["runs"]] == [1, 2]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_server_is_a_clear_error(capsys) -> None:
    code = main(["bench", "--endpoint", f"tcp://127.0.0.1:{free_port()}", "--requests", "1", "--timeout", "0.5",
                 "--no-progress"])
    assert code == 2
    assert "no server answers" in capsys.readouterr().err


def test_compare_quick_end_to_end(default_artifact: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "compare.json"
    code = main(["bench", "--compare", "--quick", "--artifact", str(default_artifact), "--json", str(out),
                 "--no-progress"])
    assert code == 0
    results = json.loads(out.read_text())["compare"]
    kinds = {row["kind"] for row in results["rows"]}
    assert {"ort", "st", "server", "int8"} <= kinds
    for row in results["rows"]:
        assert row["texts_per_s"] > 0 and 0 < row["ceiling_fraction"]
    assert results["ceiling"]["ceiling_gflops"] > 0 and results["corpus"]["flops"] > 0
    assert {r["concurrency"] for r in results["rows"] if r["kind"] == "server"} == {1, 8}
    assert all(not r["errors"] for r in results["rows"] if r["kind"] == "server")
    assert results["server_cosine_to_ort_fp32"]["min"] > 0.999
    int8 = next(r for r in results["rows"] if r["kind"] == "int8")
    assert 0.9 < int8["cosine_to_fp32"]["min"] <= int8["cosine_to_fp32"]["mean"] <= 1.0001
    # Each target's verdict is its measured value against its goal, as the results record them.
    targets = {t["target"]: t for t in results["targets"]}
    ort_target, st_target = results["targets"][:2]
    latency_target = next(t for name, t in targets.items() if name.startswith("one short text, one client"))
    stretch = next(t for name, t in targets.items() if "performance issue" in name)
    assert stretch["value"] == st_target["value"] and stretch["goal"] == TARGET_SERVER_VS_ST_STRETCH
    assert ort_target["value"] == results["ratios"]["server_c8 / ort_best"]
    assert st_target["value"] == results["ratios"]["server_c8 / st_best"]
    assert (ort_target["goal"], st_target["goal"]) == (TARGET_SERVER_VS_ORT, TARGET_SERVER_VS_ST)
    assert latency_target["value"] == results["single_text_server_ms"]["p50"]
    assert latency_target["goal"] == results["single_text_inprocess_ms"]["p50"] + TARGET_LATENCY_SLACK_MS
    assert ort_target["passed"] is (ort_target["value"] >= ort_target["goal"])
    assert st_target["passed"] is (st_target["value"] >= st_target["goal"])
    assert latency_target["passed"] is (latency_target["value"] <= latency_target["goal"])
    # The headline rows ran again in interleaved rounds, and the targets are judged on those medians.
    assert {name: len(v) for name, v in results["rounds"].items()} == {"ort": 2, "st": 2, "server_c8": 2}
    median_ort = next(r for r in results["rows"] if r["kind"] == "round_ort")
    assert sorted(median_ort["rounds"]) == sorted(results["rounds"]["ort"])
    c8 = next(r for r in results["rows"] if r["kind"] == "round_server_c8")
    assert results["ratios"]["server_c8 / ort_best"] == pytest.approx(c8["texts_per_s"] / median_ort["texts_per_s"])
    printed = capsys.readouterr().out
    for target in results["targets"]:  # each verdict printed on the target's own line
        verdict = "PASS" if target["passed"] else "FAIL"
        assert any(line.startswith(f"{verdict}  {target['target']}:") for line in printed.splitlines()), target
    assert "% ceiling" in printed


def test_compare_quick_peers_without_their_environment(default_artifact: Path, tmp_path: Path, capsys) -> None:
    # No peers environment here: zeroembed's own HTTP route still runs beside ZeroMQ, and every peer is
    # reported with the reason it did not run (not left out). The int8 server joins the rounds too.
    out = tmp_path / "compare.json"
    code = main(["bench", "--compare", "--quick", "--peers", "--served-int8", "--peers-venv", str(tmp_path / "no-venv"),
                 "--artifact", str(default_artifact), "--json", str(out), "--no-progress"])
    assert code == 0
    results = json.loads(out.read_text())["compare"]
    peer_rows = [r for r in results["rows"] if r["kind"] == "peer"]
    assert {(r["peer"], r["concurrency"]) for r in peer_rows} == {
        ("zeroembed HTTP", 1), ("zeroembed HTTP", 8), ("zeroembed ZeroMQ", 1)}
    assert all(r["texts_per_s"] > 0 and not r["errors"] for r in peer_rows)
    for name in ("infinity torch", "infinity onnx", "fastembed"):
        assert results["peers"][name].startswith("not run: no peers environment at")
    assert {"http_c8", "server_int8_c8"} <= set(results["rounds"])
    assert results["ratios"]["server_int8_c8 / server_c8"] > 0
    assert results["ratios"]["http_c8 / server_c8 (ZeroMQ)"] > 0
    assert results["ratios"]["http_c8 / infinity_best"] is None
    # One short text over HTTP, timed in blocks interleaved with the ZeroMQ client's, judged against it.
    targets = {t["target"]: t for t in results["targets"]}
    http_latency = next(t for name, t in targets.items() if name.startswith("one short text over HTTP"))
    assert http_latency["value"] == results["single_text_http_ms"]["p50"] > 0  # base64, as the OpenAI SDK asks
    assert f"with JSON floats {results['single_text_http_float_ms']['p50']:.2f} ms" in http_latency["detail"]
    assert http_latency["goal"] == results["single_text_server_ms"]["p50"] + TARGET_HTTP_LATENCY_SLACK_MS
    http_rate = next(t for name, t in targets.items() if name.endswith("the ZeroMQ client"))
    assert http_rate["value"] == results["ratios"]["http_c8 / server_c8 (ZeroMQ)"]
    int8 = next(t for name, t in targets.items() if name.startswith("served int8"))
    assert int8["value"] == results["ratios"]["server_int8_c8 / server_c8"]
    printed = capsys.readouterr().out
    assert "peer fastembed: not run: no peers environment" in printed
    assert "benchmarks/peers/setup.sh" in printed
