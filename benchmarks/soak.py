"""Soak test: steady load on a running server for minutes, sampling its memory and latency.

Run it against a local server (it reads the server's and workers' RSS from /proc)::

    python -m zeroembed.benchmarks.soak --endpoint tcp://127.0.0.1:5555 --duration 600 --clients 4

It prints one line per sample and a verdict: memory that keeps growing after the
warm-up is a leak. The tests run a short version of it.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zeroembed.client import Client, ZeroEmbedError

_WORDS = ("embedding vector server batch token queue worker latency memory model sentence request reply "
          "cosine fused kernel pool soak steady leak growth sample").split()


@dataclass
class Sample:
    """One look at the server: elapsed seconds, RSS in MiB, and latency of the requests since the last look."""

    elapsed_s: float
    rss_mib: dict[str, float]
    requests: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass
class SoakReport:
    samples: list[Sample] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    total_requests: int = 0

    def growth_mib(self, process: str, warmup_s: float) -> float:
        """RSS of ``process`` at the end minus its lowest after the warm-up."""
        after = [s.rss_mib[process] for s in self.samples if s.elapsed_s >= warmup_s and process in s.rss_mib]
        return after[-1] - min(after) if after else 0.0


def rss_mib(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB, from /proc (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def soak(endpoint: str, *, duration_s: float, clients: int, texts_per_request: int, interval_s: float,
         seed: int = 0, out=sys.stdout) -> SoakReport:
    """Drive ``endpoint`` with ``clients`` threads for ``duration_s``, sampling every ``interval_s``."""
    with Client(endpoint, timeout=30) as probe:
        status = probe.status()
    pids = {"broker": status["pid"], **{f"worker{w['index']}": w["pid"] for w in status["workers"]}}
    report = SoakReport()
    latencies: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop(index: int) -> None:
        rng = random.Random(seed + index)
        with Client(endpoint, timeout=30) as client:
            while not stop.is_set():
                texts = [" ".join(rng.choices(_WORDS, k=rng.randint(2, 60))) for _ in range(texts_per_request)]
                started = time.perf_counter()
                try:
                    client.encode(texts)
                except ZeroEmbedError as exc:
                    with lock:
                        report.errors[exc.code.value] = report.errors.get(exc.code.value, 0) + 1
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)
                    report.total_requests += 1

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        while (elapsed := time.monotonic() - started) < duration_s:
            time.sleep(min(interval_s, max(0.0, duration_s - elapsed)))
            with lock:
                window, latencies[:] = sorted(latencies), []
            sample = Sample(
                elapsed_s=round(time.monotonic() - started, 1),
                rss_mib={name: round(rss, 1) for name, pid in pids.items() if (rss := rss_mib(pid)) is not None},
                requests=len(window),
                p50_ms=round(statistics.median(window) * 1000, 2) if window else None,
                p99_ms=round(window[int(0.99 * (len(window) - 1))] * 1000, 2) if window else None,
            )
            report.samples.append(sample)
            print(json.dumps(asdict(sample)), file=out, flush=True)
    finally:
        stop.set()
        for thread in threads:
            thread.join(35)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zeroembed.benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    parser.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--texts-per-request", type=int, default=8)
    parser.add_argument("--interval", type=float, default=10, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=60, help="seconds ignored before judging growth")
    parser.add_argument("--max-growth-mib", type=float, default=50, help="RSS growth after warm-up that fails")
    args = parser.parse_args(argv)
    report = soak(args.endpoint, duration_s=args.duration, clients=args.clients,
                  texts_per_request=args.texts_per_request, interval_s=args.interval)
    worst = max(report.samples[-1].rss_mib, key=lambda name: report.growth_mib(name, args.warmup))
    growth = report.growth_mib(worst, args.warmup)
    print(f"{report.total_requests} requests, errors {report.errors or 'none'}; "
          f"largest RSS growth after warm-up: {worst} +{growth:.1f} MiB")
    return 0 if growth <= args.max_growth_mib and not report.errors else 1


if __name__ == "__main__":
    sys.exit(main())
