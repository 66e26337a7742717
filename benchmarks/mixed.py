"""An embedder and a reranker in one server: each model's throughput alone and under mixed load.

    python -m zeroembed.benchmarks.mixed [--duration 15] [--embed-clients 8] [--rerank-clients 8]

The embedder is the default model (all-MiniLM-L6-v2, fp32, exported into the cache as ``serve`` does);
the reranker a random-weight cross-encoder the size of ms-marco-MiniLM-L-6-v2 (benchmarks/rerank.py).
The embedder's load is ``--embed-clients`` clients each sending 8 texts of the benchmark corpus at a
time; the reranker's ``--rerank-clients`` clients each ranking one query × ``--documents`` passages.
Each phase keeps its loads running for a warm-up and then ``--duration`` seconds, and reads each
model's rate from the server's own counters over that window (texts or pairs batched, per ``model``
label), so a long rerank request cut by the window's edges counts for what ran inside it; latency is
the client's, over the requests that finished inside the window (each client's first one left out).

The servers, in one run:

1. the embedder alone in its own server, then the reranker alone in its own (each has every core);
2. ``zeroembed serve --model EMBEDDER --model rerank=RERANKER`` with the defaults (each model's worker
   may use every core; under mixed load the two share them by the operating system's scheduling): each
   phase loads the embedder alone, the reranker alone, then both;
3. the same pair with the cores split between the two models (``--threads-per-worker`` = cores / 2),
   same three phases.

The rows print as a markdown table; ``mixed / alone`` is each model's rate under mixed load over its
rate alone in the same server, and their sum says whether sharing the cores lost (< 1) or gained (> 1)
against running the two loads one after the other. Numbers are for the report, not a test.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import make_corpus
from .report import cores, environment, fmt, load_average, table
from .scrape import Sample, scrape

RERANK_NAME = "rerank"
_SERVING = re.compile(r"serving .* as '(?P<name>[^']+)' .* with (?P<workers>\d+) \w+ worker\(s\) "
                      r"of (?P<threads>\d+) thread\(s\)")


@dataclass
class Load:
    """One model's clients in a phase: ``call(client, i)`` sends request ``i`` and returns its items."""

    model: str
    clients: int
    call: Callable[[object, int], int]
    latencies_s: list[float] = field(default_factory=list)


def run_phase(endpoint: str, metrics_url: str, loads: list[Load], warmup_s: float, duration_s: float) -> dict:
    """Run ``loads`` together; each model's items/s over the window from the server's counters, and p50 latency.

    The window opens ``warmup_s`` after every client has had its first answer: the first requests all
    start at once and finish one after another, quicker than any later one, so none of them is timed.
    """
    from zeroembed.client import Client

    stop = threading.Event()
    total = sum(load.clients for load in loads)
    answered_once: list[int] = []  # one entry per client with its first answer
    all_answered = threading.Event()
    window: list[tuple[float, float]] = []  # (start, end), appended once: one atomic step for the readers
    errors: list[BaseException] = []
    counter = iter(range(10**9))
    lock = threading.Lock()

    def work(client: Client, load: Load) -> None:
        first = True
        while not stop.is_set():
            with lock:
                i = next(counter)
            started = time.perf_counter()
            try:
                load.call(client, i)
            except BaseException as exc:  # noqa: BLE001 — reported by the caller
                errors.append(exc)
                stop.set()
                return
            done = time.perf_counter()
            if first:
                first = False
                with lock:
                    answered_once.append(1)
                    if len(answered_once) == total:
                        all_answered.set()
            elif window and window[0][0] <= done <= window[0][1]:
                load.latencies_s.append(done - started)

    clients = [Client(endpoint, timeout=600) for _ in loads]
    try:
        threads = [threading.Thread(target=work, args=(client, load), daemon=True)
                   for client, load in zip(clients, loads) for _ in range(load.clients)]
        for t in threads:
            t.start()
        while not all_answered.wait(0.1) and not errors:
            pass
        time.sleep(warmup_s)  # then a while for the loads to settle
        before = scrape(metrics_url)
        start = time.perf_counter()
        window.append((start, start + duration_s))
        time.sleep(duration_s)
        after = scrape(metrics_url)
        elapsed = time.perf_counter() - start
        stop.set()
        for t in threads:
            t.join()
    finally:
        for client in clients:
            client.close()
    if errors:
        raise errors[0]
    return {load.model: {"items_per_s": (batched(after, load.model) - batched(before, load.model)) / elapsed,
                         "p50_ms": statistics.median(load.latencies_s) * 1000 if load.latencies_s else None,
                         "requests": len(load.latencies_s)}
            for load in loads}


def batched(sample: Sample, model: str) -> float:
    """Texts (or pairs) the server has batched for ``model`` so far."""
    label = f'model="{model}"'
    return sum(v for k, v in sample.items() if k.startswith("zeroembed_batch_size_sum{") and label in k)


def split(log: str) -> dict[str, dict[str, int]]:
    """Each model's workers and threads per worker, as the server logged them at start."""
    return {m["name"]: {"workers": int(m["workers"]), "threads_per_worker": int(m["threads"])}
            for m in _SERVING.finditer(log)}


def run(args: argparse.Namespace) -> dict:
    from zeroembed.server.launch import ServerProcess

    from .compare import resolve_artifact
    from .rerank import build_model

    embedder = resolve_artifact(args.embedder)
    texts = make_corpus(args.texts, args.seed)
    passages = make_corpus(args.documents + args.queries, args.seed + 1)
    documents, queries = passages[:args.documents], [t[:80] for t in passages[args.documents:]]

    def embed_load(label: str) -> Load:
        def call(client, i: int) -> int:
            start = (i * 8) % len(texts)
            client.encode((texts + texts)[start:start + 8])  # the embedder is always the default model
            return 8
        return Load(label, args.embed_clients, call)

    def rerank_load(label: str) -> Load:
        def call(client, i: int) -> int:
            client.rerank(queries[i % len(queries)], documents, model=RERANK_NAME)
            return len(documents)
        return Load(label, args.rerank_clients, call)

    results: dict = {"environment": environment(sys.argv), "cores": cores(), "load_average_start": load_average(),
                     "embedder": str(embedder), "documents": len(documents), "duration_s": args.duration,
                     "servers": []}
    rows: list[list] = []
    with tempfile.TemporaryDirectory(prefix="zeroembed-mixed-") as tmp:
        reranker = Path(args.reranker) if args.reranker else build_model(Path(tmp))[1]
        pair = ["--model", f"{RERANK_NAME}={reranker}"]
        half = max(1, cores() // 2)
        servers = [
            ("embedder only, defaults", embedder, [], [["embedder"]]),
            ("reranker only, defaults", None, pair, [["reranker"]]),
            ("both, defaults", embedder, pair, [["embedder"], ["reranker"], ["embedder", "reranker"]]),
            (f"both, cores split: --threads-per-worker {half}", embedder, [*pair, "--threads-per-worker", str(half)],
             [["embedder"], ["reranker"], ["embedder", "reranker"]]),
        ]
        for title, first, flags, phases in servers:
            print(f"[mixed] {title}", file=sys.stderr, flush=True)
            with ServerProcess(first, *flags, *args.server_args.split()) as server:
                # The server's model names, which label its metrics: the first model is the default.
                first_name = server.status["models"][0]["name"]
                labels = {"embedder": first_name, "reranker": RERANK_NAME}
                entry = {"server": title, "flags": flags, "split": split(server.log()), "phases": []}
                for phase in phases:
                    loads = [embed_load(labels[kind]) if kind == "embedder"
                             else rerank_load(labels[kind]) for kind in phase]
                    measured = run_phase(server.endpoint, server.metrics_url, loads, args.warmup, args.duration)
                    by_kind = {kind: measured[labels[kind]] for kind in phase}
                    entry["phases"].append({"loads": phase, **by_kind})
                    rows.append(_row(title, entry["split"], phase, by_kind, args))
                results["servers"].append(entry)
    results["load_average_end"] = load_average()
    results["ratios"] = _ratios(results["servers"])
    print(table(["server (workers × threads per model)", "load", "embedder texts/s", "embedder p50 ms",
                 "reranker pairs/s", "reranker p50 ms"], rows))
    for title, by_kind in results["ratios"].items():
        for kind, ratios in by_kind.items():
            print(f"{title}, {kind}: " + "; ".join(f"{name} {fmt(value, 2)}" for name, value in ratios.items()))
        both = [r["mixed / own server"] for r in by_kind.values()]
        if None not in both:
            print(f"{title}: mixed / own server summed over both models {sum(both):.2f} (1.00: the cores shared "
                  "as well as running the two loads one after the other)")
    print(f"load average at start {results['load_average_start']}, at end {results['load_average_end']}")
    return results


def _row(title: str, split_: dict, phase: list[str], by_kind: dict, args: argparse.Namespace) -> list:
    shares = ", ".join(f"{name} {s['workers']} × {s['threads_per_worker']}" for name, s in split_.items())
    load = " + ".join(f"{args.embed_clients} × 8 texts" if kind == "embedder"
                      else f"{args.rerank_clients} × 1 query × {args.documents} docs" for kind in phase)
    cells = []
    for kind in ("embedder", "reranker"):
        measured = by_kind.get(kind)
        cells += [measured["items_per_s"], measured["p50_ms"]] if measured else [None, None]
    return [f"{title} ({shares})", load, *cells]


def _ratios(servers: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per two-model server and model: its rate alone there and under mixed load, over its rate alone in
    its own server (which has every core), and mixed over alone there."""
    own = {}
    for entry in servers:
        for phase in entry["phases"]:
            if len(phase["loads"]) == 1 and len(entry["split"]) == 1:
                own[phase["loads"][0]] = phase[phase["loads"][0]]["items_per_s"]
    out = {}
    for entry in servers:
        phases = {tuple(p["loads"]): p for p in entry["phases"]}
        mixed = phases.get(("embedder", "reranker"))
        if not mixed:
            continue
        out[entry["server"]] = {}
        for kind in ("embedder", "reranker"):
            alone = phases[(kind,)][kind]["items_per_s"]
            out[entry["server"]][kind] = {
                "alone here / own server": alone / own[kind] if own.get(kind) else None,
                "mixed / own server": mixed[kind]["items_per_s"] / own[kind] if own.get(kind) else None,
                "mixed / alone here": mixed[kind]["items_per_s"] / alone if alone else None,
            }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zeroembed.benchmarks.mixed", description=__doc__.split("\n\n")[0])
    p.add_argument("--embedder", default=None, help="embedder artifact (default: the default model, as serve makes it)")
    p.add_argument("--reranker", default=None,
                   help="reranker artifact (default: a random ms-marco-MiniLM-L-6-v2-sized one, built for the run)")
    p.add_argument("--embed-clients", type=int, default=8, help="embedder clients, 8 texts each (default 8)")
    p.add_argument("--rerank-clients", type=int, default=8, help="reranker clients, one query each (default 8)")
    p.add_argument("--documents", type=int, default=100, help="documents per rerank query (default 100)")
    p.add_argument("--queries", type=int, default=24, help="distinct rerank queries (default 24)")
    p.add_argument("--texts", type=int, default=512, help="embedder corpus size (default 512)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each window (default 3)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds each phase is measured (default 15)")
    p.add_argument("--server-args", default="", help="extra `zeroembed serve` flags for every server")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
