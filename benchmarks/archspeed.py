"""Speed of one architecture at real size: fused ONNX Runtime in process against sentence-transformers.

Builds a random-weight model of the architecture's real width (benchmarks/randomrotary.py; a decoder
may be cut to a few layers), exports it fp32 with ``zeroembed export``, and embeds the same benchmark
corpus with both, each with all cores, sorted into batches the same way: ORT through the server's
session settings (benchmarks/inprocess.py), sentence-transformers as a user calls it. Prints one
markdown row per architecture for the per-architecture table in benchmarks/RESULTS.md.

    python -m zeroembed.benchmarks.archspeed --arch modernbert --arch qwen3 --layers qwen3=4
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from .corpus import make_corpus
from .inprocess import OrtEncoder, cosine_stats
from .randomrotary import ARCHITECTURES, make_random_rotary

HEADER = ("| architecture | layers × hidden | texts | batch | ST texts/s | ORT texts/s | ORT / ST | "
          "fused attention | min cosine |\n|---|---|---|---|---|---|---|---|---|")


def _artifact(arch: str, layers: int | None, max_seq_length: int, workdir: Path) -> Path:
    """The fp32 artifact of a random ``arch`` model, built and exported once into ``workdir``."""
    from zeroembed.export import export_model

    name = f"{arch}-{layers or 'all'}L-{max_seq_length}"
    model, artifact = workdir / name / "model", workdir / name / "artifact"
    if not (model / "config.json").is_file():
        make_random_rotary(arch, model, layers=layers, max_seq_length=max_seq_length)
    if not (artifact / "manifest.json").is_file():
        export_model(model, artifact, force=True, log=lambda line: print(f"  {line}", flush=True))
    return artifact


def measure(arch: str, layers: int | None, texts: list[str], batch: int, threads: int, max_seq_length: int,
            workdir: Path, rounds: int) -> dict:
    """One architecture's row: the best of ``rounds`` alternating timings of each side, and their agreement.

    Alternating and keeping each side's best run makes the ratio hold on a machine shared with other
    work, where one long run per side would compare two different loads.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    artifact = _artifact(arch, layers, max_seq_length, workdir)
    manifest = json.loads((artifact / "manifest.json").read_text())
    ort_encoder = OrtEncoder(artifact, threads)
    torch.set_num_threads(threads)
    model = SentenceTransformer(str(artifact.parent / "model"), device="cpu")

    def ort_run() -> np.ndarray:
        return ort_encoder.encode(texts, batch)

    def st_run() -> np.ndarray:
        with torch.inference_mode():
            return model.encode(texts, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)

    ort_encoder.encode(texts[:batch], batch)  # warm-up
    with torch.inference_mode():
        model.encode(texts[:batch], batch_size=batch)
    ort_s, st_s = float("inf"), float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        ort_vectors = ort_run()
        ort_s = min(ort_s, time.perf_counter() - start)
        gc.collect()
        start = time.perf_counter()
        st_vectors = st_run()
        st_s = min(st_s, time.perf_counter() - start)
        gc.collect()
    arch_info = manifest["architecture"]
    return {
        "architecture": arch, "layers": arch_info["num_layers"], "hidden": arch_info["hidden_size"],
        "texts": len(texts), "batch": batch, "rounds": rounds, "st_texts_per_s": len(texts) / st_s,
        "ort_texts_per_s": len(texts) / ort_s, "speedup": st_s / ort_s,
        "fused_operators": manifest["fused_operators"],
        "min_cosine": cosine_stats(ort_vectors, np.asarray(st_vectors))["min"],
    }


def row(result: dict) -> str:
    attention = result["fused_operators"].get("MultiHeadAttention", 0)
    return (f"| {result['architecture']} | {result['layers']} × {result['hidden']} | {result['texts']} | "
            f"{result['batch']} | {result['st_texts_per_s']:.1f} | {result['ort_texts_per_s']:.1f} | "
            f"{result['speedup']:.2f}× | MultiHeadAttention × {attention} | {result['min_cosine']:.5f} |")


def _layers(values: list[str]) -> dict[str, int]:
    pairs = (value.split("=", 1) for value in values)
    return {arch: int(count) for arch, count in pairs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zeroembed.benchmarks.archspeed", description=__doc__.split("\n")[0])
    p.add_argument("--arch", action="append", choices=ARCHITECTURES, help="repeat for several (default: all)")
    p.add_argument("--layers", action="append", default=[], metavar="ARCH=N",
                   help="cut ARCH to N layers (default: qwen2=4, qwen3=4; encoders keep all)")
    p.add_argument("--texts", type=int, default=256, help="benchmark corpus size (default 256)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="alternating timed runs per side; the best counts")
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "zeroembed" / "archspeed",
                   help="where models and artifacts are built once and reused")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    args = p.parse_args(argv)
    layers = {"qwen2": 4, "qwen3": 4, **_layers(args.layers)}
    texts = make_corpus(args.texts)
    print(f"{time.strftime('%Y-%m-%d')} · {platform.processor() or platform.machine()} · "
          f"{args.threads} threads · {args.texts} corpus texts, max_seq_length {args.max_seq_length}, "
          f"best of {args.rounds} alternating runs per side")
    results = []
    for arch in args.arch or ARCHITECTURES:
        print(f"{arch}:", flush=True)
        results.append(measure(arch, layers.get(arch), texts, args.batch, args.threads, args.max_seq_length,
                               args.workdir, args.rounds))
    print(HEADER)
    for result in results:
        print(row(result))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
