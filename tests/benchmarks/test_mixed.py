"""`python -m zeroembed.benchmarks.mixed` on a tiny reranker and short windows: the harness runs end to end,
every server and phase reports each loaded model's rate, and the split the server logged (no timings asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from ..dependencies import require

require("torch", "export")

from zeroembed.benchmarks.mixed import main, split  # noqa: E402


def test_split_reads_each_models_workers_and_threads_from_the_log():
    log = ("INFO serving all-MiniLM-L6-v2 as 'all-MiniLM-L6-v2' (embed, fp32, dim 384) on tcp://127.0.0.1:1 "
           "with 1 cpu worker(s) of 1 thread(s)\n"
           "INFO serving model as 'rerank' (rerank, fp32, dim 1) on tcp://127.0.0.1:1 "
           "with 2 cpu worker(s) of 3 thread(s)")
    assert split(log) == {"all-MiniLM-L6-v2": {"workers": 1, "threads_per_worker": 1},
                          "rerank": {"workers": 2, "threads_per_worker": 3}}


def test_tiny_run_reports_every_server_and_phase(default_artifact: Path, tmp_path: Path, capsys):
    from zeroembed.benchmarks.randommodel import make_random_cross_encoder
    from zeroembed.export import export_model

    reranker = tmp_path / "reranker"
    export_model(make_random_cross_encoder(tmp_path / "model", layers=1, hidden=32, heads=2, max_positions=128),
                 reranker)
    out = tmp_path / "mixed.json"
    argv = ["--embedder", str(default_artifact), "--reranker", str(reranker), "--documents", "6", "--queries", "2",
            "--texts", "24", "--embed-clients", "2", "--rerank-clients", "2", "--warmup", "0.3", "--duration", "1",
            "--json", str(out)]
    assert main(argv) == 0
    results = json.loads(out.read_text())
    servers = {entry["server"]: entry for entry in results["servers"]}
    assert len(servers) == 4
    for entry in servers.values():
        for phase in entry["phases"]:
            for kind in phase["loads"]:
                assert phase[kind]["items_per_s"] > 0, (entry["server"], phase)
    # Each server logged its split, one entry per model it holds.
    assert [len(entry["split"]) for entry in results["servers"]] == [1, 1, 2, 2]
    defaults, split_cores = results["servers"][2:]
    assert {s["threads_per_worker"] for s in defaults["split"].values()} == {results["cores"]}
    assert {s["threads_per_worker"] for s in split_cores["split"].values()} == {max(1, results["cores"] // 2)}
    assert set(results["ratios"]) == {results["servers"][2]["server"], results["servers"][3]["server"]}
    for by_kind in results["ratios"].values():
        assert set(by_kind) == {"embedder", "reranker"}
        assert all(value > 0 for ratios in by_kind.values() for value in ratios.values())
    printed = capsys.readouterr().out
    assert "| embedder texts/s |" in printed and "reranker pairs/s" in printed
