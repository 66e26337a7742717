"""Speed of one architecture at real size: sentence-transformers, fused ONNX Runtime in process, and served.

Builds a random-weight model of the architecture's real width (benchmarks/randomencoder.py for the
BERT family, benchmarks/randomrotary.py for the rotary ones; ``--layers`` cuts any of them), exports
it fp32 with ``zeroembed export``, and embeds the same benchmark corpus three ways, each with all cores:
sentence-transformers as a user calls it, ORT in process through the server's session settings
(benchmarks/inprocess.py), both in length-sorted batches of ``--batch``; and ``zeroembed serve`` on the
artifact with its defaults, ``--concurrency`` clients each sending ``--request-size`` texts at a time.
Prints one markdown row per architecture for the per-architecture table in benchmarks/RESULTS.md.

    python -m zeroembed.benchmarks.archspeed --arch modernbert --arch qwen3 --layers qwen3=4
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .corpus import make_corpus
from .inprocess import OrtEncoder, cosine_stats, wait_until_idle
from .randomencoder import ARCHITECTURES as ENCODERS
from .randomencoder import make_random_encoder
from .randomrotary import ARCHITECTURES as ROTARY
from .randomrotary import make_random_rotary
from .report import load_average

ARCHITECTURES = (*ENCODERS, *ROTARY)
# Decoders at their real depth (28 layers) would take most of the run; their widths are what matter.
DEFAULT_LAYERS = {"qwen2": 4, "qwen3": 4}

HEADER = ("| architecture | layers × hidden | texts | ST texts/s | ORT texts/s | ORT / ST | served texts/s | "
          "served / ORT | fused attention | min cosine |\n|---|---|---|---|---|---|---|---|---|---|")


def _artifact(arch: str, layers: int | None, max_seq_length: int, workdir: Path, tiny: bool = False) -> Path:
    """The fp32 artifact of a random ``arch`` model, built and exported once into ``workdir`` (again
    when an older exporter revision made it, so a faster graph reaches the table)."""
    from zeroembed.export import export_model
    from zeroembed.export.manifest import EXPORTER_REVISION

    name = f"{arch}-{'tiny-' if tiny else ''}{layers or 'all'}L-{max_seq_length}"
    model, artifact = workdir / name / "model", workdir / name / "artifact"
    if not (model / "modules.json").is_file():
        build = make_random_encoder if arch in ENCODERS else make_random_rotary
        build(arch, model, tiny=tiny, layers=layers, max_seq_length=max_seq_length)
    manifest = artifact / "manifest.json"
    if not manifest.is_file() or json.loads(manifest.read_text()).get("exporter_revision", 1) < EXPORTER_REVISION:
        export_model(model, artifact, force=True, log=lambda line: print(f"  {line}", flush=True))
    return artifact


def served_run(endpoint: str, texts: list[str], request_size: int, concurrency: int) -> np.ndarray:
    """The vectors of ``texts`` (in order) from ``concurrency`` threads of one shared Client, each
    sending the next ``request_size`` texts until none are left."""
    from zeroembed.client import Client

    starts = list(range(0, len(texts), request_size))
    out: list[np.ndarray | None] = [None] * len(starts)
    lock = threading.Lock()
    errors: list[BaseException] = []
    with Client(endpoint, timeout=600) as client:

        def work() -> None:
            while True:
                with lock:
                    if not starts or errors:
                        return
                    start = starts.pop()
                try:
                    out[start // request_size] = client.encode(texts[start:start + request_size])
                except BaseException as exc:  # noqa: BLE001 — re-raised in the caller's thread
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=work) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return np.concatenate(out)


def measure(arch: str, layers: int | None, texts: list[str], batch: int, threads: int, max_seq_length: int,
            workdir: Path, rounds: int, concurrency: int = 8, request_size: int = 4,
            server_args: tuple[str, ...] = (), tiny: bool = False) -> dict:
    """One architecture's row: the best of ``rounds`` alternating timings of each side, and their agreement.

    Alternating (ORT, sentence-transformers, server, then again) and keeping each side's best run
    makes the ratios hold on a machine shared with other work, where one long run per side would
    compare two different loads. The server runs throughout (its idle workers take no CPU); each
    timing starts once this process's own thread pools have stopped spinning.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    from zeroembed.server.launch import ServerProcess

    artifact = _artifact(arch, layers, max_seq_length, workdir, tiny)
    manifest = json.loads((artifact / "manifest.json").read_text())
    ort_encoder = OrtEncoder(artifact, threads)
    torch.set_num_threads(threads)
    model = SentenceTransformer(str(artifact.parent / "model"), device="cpu")

    def st_encode(chunk: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return model.encode(chunk, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)

    with ServerProcess(artifact, *server_args) as server:
        sides: dict[str, Callable[[list[str]], np.ndarray]] = {
            "ort": lambda chunk: ort_encoder.encode(chunk, batch),
            "st": st_encode,
            "served": lambda chunk: served_run(server.endpoint, chunk, request_size, concurrency),
        }
        seconds = dict.fromkeys(sides, float("inf"))
        vectors: dict[str, np.ndarray] = {}
        for run in sides.values():  # warm-up
            run(texts[:batch])
        for _ in range(rounds):
            for name, run in sides.items():
                gc.collect()
                wait_until_idle()
                start = time.perf_counter()
                vectors[name] = run(texts)
                seconds[name] = min(seconds[name], time.perf_counter() - start)
        status = server.status
    workers = status.get("workers", [])
    arch_info = manifest["architecture"]
    return {
        "architecture": arch, "layers": arch_info["num_layers"], "hidden": arch_info["hidden_size"],
        "texts": len(texts), "batch": batch, "rounds": rounds, "concurrency": concurrency,
        "request_size": request_size, "server_workers": len(workers),
        "st_texts_per_s": len(texts) / seconds["st"], "ort_texts_per_s": len(texts) / seconds["ort"],
        "served_texts_per_s": len(texts) / seconds["served"], "speedup": seconds["st"] / seconds["ort"],
        "served_vs_ort": seconds["ort"] / seconds["served"],
        "fused_operators": manifest["fused_operators"],
        "min_cosine": cosine_stats(vectors["ort"], vectors["st"])["min"],
        "served_min_cosine_to_st": cosine_stats(vectors["served"], vectors["st"])["min"],
        "load_average": load_average(),
    }


def row(result: dict) -> str:
    """The architecture's markdown row under :data:`HEADER`."""
    fused = result["fused_operators"]
    attention = next((f"{op} × {fused[op]}" for op in ("Attention", "MultiHeadAttention", "GroupQueryAttention")
                      if fused.get(op)), "none")
    return (f"| {result['architecture']} | {result['layers']} × {result['hidden']} | {result['texts']} | "
            f"{result['st_texts_per_s']:.1f} | {result['ort_texts_per_s']:.1f} | {result['speedup']:.2f}× | "
            f"{result['served_texts_per_s']:.1f} | {result['served_vs_ort']:.2f}× | {attention} | "
            f"{result['min_cosine']:.5f} |")


def _layers(values: list[str]) -> dict[str, int]:
    pairs = (value.split("=", 1) for value in values)
    return {arch: int(count) for arch, count in pairs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zeroembed.benchmarks.archspeed", description=__doc__.split("\n")[0])
    p.add_argument("--arch", action="append", choices=ARCHITECTURES, help="repeat for several (default: all)")
    p.add_argument("--layers", action="append", default=[], metavar="ARCH=N",
                   help="cut ARCH to N layers (default: qwen2=4, qwen3=4; the others keep all)")
    p.add_argument("--texts", type=int, default=32, help="benchmark corpus size (default 32)")
    # Batches of 8 would put the corpus's two longest texts (over 300 tokens) with six of 72-158, padding
    # the in-process runs to twice the real tokens; the server, which batches by length, pads next to none.
    p.add_argument("--batch", type=int, default=4, help="in-process batch size, length-sorted (default 4)")
    p.add_argument("--rounds", type=int, default=2, help="alternating timed runs per side; the best counts")
    p.add_argument("--concurrency", type=int, default=8, help="server clients (default 8)")
    p.add_argument("--request-size", type=int, default=4,
                   help="texts per server request (default 4: the 32 texts keep 8 clients busy)")
    p.add_argument("--server-args", default="", help="extra `zeroembed serve` flags")
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "zeroembed" / "archspeed",
                   help="where models and artifacts are built once and reused")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.add_argument("--tiny", action="store_true", help="test-sized models instead of the real widths (smoke runs)")
    p.add_argument("--build-only", action="store_true",
                   help="build and export the models into --workdir, measure nothing (the first run's slow part)")
    args = p.parse_args(argv)
    layers = {**({} if args.tiny else DEFAULT_LAYERS), **_layers(args.layers)}
    if args.build_only:
        for arch in args.arch or ARCHITECTURES:
            print(f"{arch}: {_artifact(arch, layers.get(arch), args.max_seq_length, args.workdir, args.tiny)}",
                  flush=True)
        return 0
    texts = make_corpus(args.texts)
    started = time.monotonic()
    print(f"{time.strftime('%Y-%m-%d %H:%MZ', time.gmtime())} · {platform.processor() or platform.machine()} · "
          f"{args.threads} threads · {args.texts} corpus texts, max_seq_length {args.max_seq_length}, "
          f"best of {args.rounds} alternating runs per side; served: {args.concurrency} clients × "
          f"{args.request_size} texts · load average {load_average()}", flush=True)
    results = []
    for arch in args.arch or ARCHITECTURES:
        print(f"{arch}:", flush=True)
        arch_started = time.monotonic()
        results.append(measure(arch, layers.get(arch), texts, args.batch, args.threads, args.max_seq_length,
                               args.workdir, args.rounds, args.concurrency, args.request_size,
                               tuple(args.server_args.split()), args.tiny))
        results[-1]["seconds"] = time.monotonic() - arch_started
        print(f"  {row(results[-1])} ({results[-1]['seconds']:.0f} s)", flush=True)
    print(HEADER)
    for result in results:
        print(row(result))
    print(f"{time.monotonic() - started:.0f} s · load average {load_average()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
