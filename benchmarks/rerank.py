"""Reranking throughput: one query × N documents through the server against in-process ONNX Runtime and
``sentence_transformers.CrossEncoder.predict``, same machine, same run.

    python -m zeroembed.benchmarks.rerank [--documents 100] [--queries 24] [--concurrency 8] [--quick]

A random-weight cross-encoder the size of ms-marco-MiniLM-L-6-v2 (6 layers × 384, 12 heads;
``randommodel.make_random_cross_encoder``) is exported once (fp32) into a temporary folder. The documents
are the benchmark corpus's passages; each query is a short text of it. Rates are pairs (query, document)
per second, tokenization included for all three. ORT and CrossEncoder run at each of their batch sizes
(the best is the baseline); the server gets ``--concurrency`` clients, each sending whole queries
(``client.rerank(query, documents)``). Numbers are for the report, not a test. An embedder and this
reranker in one server, alone and under mixed load: benchmarks/mixed.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .corpus import make_corpus
from .inprocess import timed, wait_until_idle
from .report import cores, environment, table


class OrtReranker:
    """The artifact run in process as docs/artifact.md says a server runs it: pairs, padded per batch."""

    def __init__(self, artifact: Path, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from zeroembed.server.workers.runtime import providers, session_options

        manifest = json.loads((artifact / "manifest.json").read_text())
        self.inputs = manifest["inputs"]
        self.session = ort.InferenceSession(str(artifact / "model.onnx"), session_options(threads, "cpu"),
                                            providers=providers("cpu"))
        self.tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
        self.tokenizer.no_padding()

    def scores(self, query: str, documents: list[str], batch: int) -> np.ndarray:
        encodings = self.tokenizer.encode_batch([(query, d) for d in documents])
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))  # the best case: by length
        out = np.empty(len(documents), dtype=np.float32)
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            width = max(len(encodings[i].ids) for i in rows)
            feeds = {name: np.zeros((len(rows), width), dtype=np.int64) for name in self.inputs}
            for r, i in enumerate(rows):
                e = encodings[i]
                feeds["input_ids"][r, :len(e.ids)] = e.ids
                feeds["attention_mask"][r, :len(e.ids)] = 1
                if "token_type_ids" in feeds:
                    feeds["token_type_ids"][r, :len(e.ids)] = e.type_ids
            (logits,) = self.session.run(["logits"], feeds)
            out[rows] = 1 / (1 + np.exp(-logits[:, 0]))
        return out


def build_model(workdir: Path) -> tuple[Path, Path]:
    """The random ms-marco-MiniLM-L-6-v2-sized cross-encoder and its fp32 artifact."""
    from zeroembed.export import export_model

    from .randommodel import make_random_cross_encoder

    model = make_random_cross_encoder(workdir / "model", layers=6, hidden=384, heads=12)
    export_model(model, workdir / "artifact")
    return model, workdir / "artifact"


def server_rate(endpoint: str, queries: list[str], documents: list[str], concurrency: int) -> float:
    """Pairs/s with ``concurrency`` threads of one shared Client, each ranking whole queries."""
    from zeroembed.client import Client

    with Client(endpoint, timeout=300) as client:
        client.rerank(queries[0], documents[:8])  # warm up
        todo = list(queries)
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    query = todo.pop()
                client.rerank(query, documents)

        threads = [threading.Thread(target=work) for _ in range(concurrency)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return len(queries) * len(documents) / (time.perf_counter() - started)


def run(args: argparse.Namespace) -> dict:
    from zeroembed.server.launch import ServerProcess

    threads = cores()
    texts = make_corpus(args.documents + args.queries, args.seed)
    documents, queries = texts[:args.documents], [t[:80] for t in texts[args.documents:]]
    pairs = len(queries) * len(documents)
    rows: list[list] = []
    results: dict = {"environment": environment(sys.argv), "threads": threads, "documents": len(documents),
                     "queries": len(queries), "concurrency": args.concurrency}
    with tempfile.TemporaryDirectory(prefix="zeroembed-rerank-") as tmp:
        model_dir, artifact = build_model(Path(tmp))
        ort = OrtReranker(artifact, threads)
        ort.scores(queries[0], documents[:16], 8)
        ort_rates = {}
        for batch in args.batches:
            wait_until_idle()
            _, seconds = timed(lambda: [ort.scores(q, documents, batch) for q in queries])
            ort_rates[batch] = pairs / seconds
            rows.append(["ORT fp32 in process", f"batch {batch}, length-sorted", pairs / seconds])
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(threads)
        cross_encoder = CrossEncoder(str(model_dir), device="cpu")
        st_rates = {}
        for batch in args.batches:
            wait_until_idle()
            with torch.inference_mode():
                _, seconds = timed(lambda: [cross_encoder.predict([(q, d) for d in documents], batch_size=batch,
                                                                  show_progress_bar=False) for q in queries])
            st_rates[batch] = pairs / seconds
            rows.append(["CrossEncoder.predict (PyTorch)", f"batch {batch}", pairs / seconds])
        server = ServerProcess(artifact, *args.server_args.split())
        server.start()
        try:
            with server.client() as client:  # the server's scores are the artifact's
                got = client.rerank(queries[0], documents)
                reference = cross_encoder.predict([(queries[0], d) for d in documents], show_progress_bar=False)
                results["server_max_abs_score_diff"] = float(max(abs(r.score - reference[r.index]) for r in got))
            server_rates = []
            for _ in range(args.rounds):
                wait_until_idle()
                server_rates.append(server_rate(server.endpoint, queries, documents, args.concurrency))
            rows.append(["server end to end", f"{args.concurrency} clients × 1 query × {len(documents)} documents, "
                                              f"median of {args.rounds}", statistics.median(server_rates)])
        finally:
            server.stop()
    best_ort, best_st = max(ort_rates.values()), max(st_rates.values())
    server = rows[-1][2]
    results.update(rows=[{"name": n, "setting": s, "pairs_per_s": r} for n, s, r in rows],
                   ratios={"server / ort_best": server / best_ort, "server / st_best": server / best_st})
    print(table(["what", "setting", "pairs/s"], rows))
    print(f"server / best ORT: {server / best_ort:.2f}× (target ≥ 0.9×); server / best CrossEncoder: "
          f"{server / best_st:.2f}× (target ≥ 1.25×); server vs CrossEncoder max |score diff| "
          f"{results['server_max_abs_score_diff']:.2e}")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zeroembed.benchmarks.rerank", description=__doc__.split("\n\n")[0])
    p.add_argument("--documents", type=int, default=100, help="documents per query (default 100)")
    p.add_argument("--queries", type=int, default=24, help="queries per measurement (default 24)")
    p.add_argument("--concurrency", type=int, default=8, help="server clients (default 8)")
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32, 100],
                   help="in-process batch sizes (default 16,32,100)")
    p.add_argument("--rounds", type=int, default=3, help="server measurements, median reported (default 3)")
    p.add_argument("--server-args", default="", help="extra `zeroembed serve` flags")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
