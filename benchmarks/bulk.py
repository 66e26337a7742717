"""Bulk embedding throughput and memory: ``zeroembed embed`` (embedded and Ray) against in-process ONNX Runtime.

    python -m zeroembed.benchmarks.bulk [--model DIR] [--texts 50000] [--json FILE]

The benchmark corpus (corpus.py, 2000 texts) repeated to ``--texts`` rows of
JSON Lines; then, one after another on the same machine:

1. in-process ORT (inprocess.py) at each of ``--ort-batch-sizes``, length-sorted, on the
   2000 base texts (which the corpus repeats: the same rate as on all of it), ``--ort-rounds``
   times each; the best rate of the best size;
2. ``zeroembed embed`` with the embedded engine, in a child process;
3. ``zeroembed embed --ray`` on a local Ray, in a child process (skipped without Ray).

Each ``zeroembed embed`` run reports its own rate (the manifest's: from the
engine's start, workers' or Ray's start-up included, to the last shard; the
check that reads every input first is not in it) and the peak
RSS of the job's process and of its largest child process (a worker; Ray's
actors are the raylet's children, not the job's, and are not counted). Rates include
tokenization everywhere. The two ratios the issue asks for and the peak RSS are printed last.

Time: about ``rounds × sizes × 2000`` texts of ORT plus the corpus twice (embedded, Ray), each run
with its start-up; at ~100-130 texts/s on 2 idle cores, 50 000 texts take about 15-20 minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zeroembed.server.config import cpu_count

# Runs the job and reports the peak RSS of its own process (VmHWM: getrusage's ru_maxrss survives exec, so
# it would report this benchmark's own RSS) and of its largest waited-for child (a worker process).
_CHILD = (
    "import json, resource, sys\n"
    "from zeroembed.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
    "print('BULK_RSS ' + json.dumps({'job_kb': hwm,\n"
    "      'child_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}), file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def write_corpus(path: Path, texts: int, base: int = 2000) -> list[str]:
    """The benchmark corpus of ``base`` texts repeated to ``texts`` rows of JSON Lines; returns the base texts."""
    from .corpus import make_corpus

    corpus = make_corpus(base)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(texts):
            handle.write(json.dumps({"id": i, "text": corpus[i % base]}) + "\n")
    return corpus


def in_process(model: Path, base: list[str], batch_sizes: list[int], rounds: int = 2) -> dict:
    """In-process ORT, length-sorted, on the base corpus: each of ``batch_sizes`` timed ``rounds`` times,
    interleaved; the best rate of the best size.

    The job's corpus is the base repeated, so the base has the same lengths in the same proportions and
    a global length sort pads it no worse: its rate is the whole corpus's, without the whole corpus's
    time (as long again as an engine's run).
    """
    from .inprocess import OrtEncoder, timed

    encoder = OrtEncoder(model, threads=cpu_count())
    encoder.encode(base[:64], 8)  # warm up
    rates: dict[int, list[float]] = {size: [] for size in batch_sizes}
    for _ in range(rounds):
        for size in batch_sizes:
            _, seconds = timed(encoder.encode, base, size)
            rates[size].append(round(len(base) / seconds, 2))
    best = max(rates, key=lambda size: max(rates[size]))
    return {"engine": "in-process ORT", "batch_size": best, "rows": len(base), "rounds": rounds,
            "texts_per_s_by_batch_size": rates, "texts_per_s": max(rates[best])}


def embed(corpus: Path, out: Path, model: Path, *flags: str) -> dict:
    """One ``zeroembed embed`` run in a child process: the manifest's run record and peak RSS."""
    command = [sys.executable, "-c", _CHILD, "embed", str(corpus), "--out", str(out), "--model", str(model),
               "--quiet", *flags]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"zeroembed embed {' '.join(flags)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    rss = next(json.loads(line.split(" ", 1)[1]) for line in done.stderr.splitlines() if line.startswith("BULK_RSS"))
    run = json.loads((out / "manifest.json").read_text())["runs"][-1]
    return {"engine": run["engine"] + (" (local Ray)" if run["engine"] == "ray" else ""), "rows": run["rows"],
            "seconds": run["seconds"], "texts_per_s": run["texts_per_s"], "wall_s": round(wall, 1),
            "job_peak_rss_mb": round(rss["job_kb"] / 1024, 1), "child_peak_rss_mb": round(rss["child_kb"] / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zeroembed.benchmarks.bulk", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="artifact directory (default: the default model's fp32 artifact, exported into the "
                             "cache on first use as `zeroembed serve` does)")
    parser.add_argument("--texts", type=int, default=50_000, help="rows of the corpus (default 50000)")
    parser.add_argument("--ort-batch-sizes", default="4,8,16", help="in-process batch sizes to try (default 4,8,16)")
    parser.add_argument("--ort-rounds", type=int, default=2, help="timings of each in-process batch size (default 2)")
    parser.add_argument("--rss-texts", type=int, default=0,
                        help="also run the embedded engine on this many rows, to set its peak RSS beside the "
                             "full run's (0: skip)")
    parser.add_argument("--skip", default="", help="comma-separated: inprocess, embedded, ray")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if args.model is None:
        from zeroembed.server.config import Settings
        from zeroembed.server.default_model import default_artifact

        args.model = default_artifact(Settings.model_fields["cache_dir"].default_factory(), "cpu", "fp32",
                                      progress=lambda line: print(line, file=sys.stderr))
    results: list[dict] = []

    def report(result: dict) -> None:
        results.append(result)
        print(json.dumps(result), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"texts": args.texts, "cores": cpu_count(), "results": results},
                                            indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="zeroembed-bulk-bench-") as tmp:
        tmp = Path(tmp)
        base = write_corpus(tmp / "corpus.jsonl", args.texts)
        if "inprocess" not in skip:
            report(in_process(args.model, base, [int(b) for b in args.ort_batch_sizes.split(",")],
                              args.ort_rounds))
        if "embedded" not in skip:
            report(embed(tmp / "corpus.jsonl", tmp / "embedded", args.model))
            if args.rss_texts:
                write_corpus(tmp / "small.jsonl", args.rss_texts)
                report(dict(embed(tmp / "small.jsonl", tmp / "embedded-small", args.model), note="RSS at fewer rows"))
        if "ray" not in skip:
            try:
                import ray  # noqa: F401
            except ImportError:
                print("ray is not installed: skipping the Ray engine", file=sys.stderr)
            else:
                report(embed(tmp / "corpus.jsonl", tmp / "ray", args.model, "--ray"))
    rates = {r["engine"]: r["texts_per_s"] for r in results if "note" not in r}
    if "embedded" in rates and "in-process ORT" in rates:
        print(f"embedded / in-process ORT: {rates['embedded'] / rates['in-process ORT']:.3f} (target >= 0.95)")
    if "embedded" in rates and "ray (local Ray)" in rates:
        print(f"Ray / embedded: {rates['ray (local Ray)'] / rates['embedded']:.3f} (target >= 0.75)")
    for r in results:
        if "job_peak_rss_mb" in r:
            print(f"peak RSS, {r['engine']} at {r['rows']} rows: job {r['job_peak_rss_mb']} MB, largest child "
                  f"{r['child_peak_rss_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
