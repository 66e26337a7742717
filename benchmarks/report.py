"""Presenting results: the machine and commit, text tables, JSON and the concurrency plot."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment(argv: list[str] | None = None) -> dict[str, Any]:
    """When, where and what: date, cores, CPU model, commit, the command, the load average at start."""
    argv = sys.argv[1:] if argv is None else argv
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": cores(),
        "cpu": cpu_model(),
        "commit": git_commit(),
        "python": platform.python_version(),
        "command": "zeroembed " + shlex.join(argv) if argv else "zeroembed bench",
        "loadavg_start": load_average(),
    }


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]], digits: int = 1) -> str:
    """A plain-text table, right-aligned numbers; also valid Markdown."""
    cells = [[fmt(c, digits) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    # Text columns (any non-number in them) align left, numbers right.
    left = [any(isinstance(row[i], str) and row[i] and not row[i][0].isdigit() for row in rows)
            for i in range(len(headers))]
    line = lambda parts: "| " + " | ".join(  # noqa: E731
        p.ljust(w) if lft else p.rjust(w) for p, w, lft in zip(parts, widths, left)) + " |"
    sep = "|" + "|".join(":" + "-" * (w + 1) if lft else "-" * (w + 1) + ":" for w, lft in zip(widths, left)) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])


LOAD_HEADERS = ["conc", "batch", "reqs", "texts/s", "tokens/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors",
                "mean batch", "padding %", "queue wait ms"]


def load_rows(runs: list[dict]) -> list[list[Any]]:
    rows = []
    for r in runs:
        lat, srv = r["latency_ms"], r.get("server") or {}
        pad = srv.get("padding_ratio")
        wait = srv.get("mean_queue_wait_s")
        rows.append([r["concurrency"], r["batch_size"], r["requests"], r["texts_per_s"], r["tokens_per_s"],
                     lat["p50"], lat["p95"], lat["p99"], lat["max"], r["error_count"], srv.get("mean_batch_size"),
                     None if pad is None else pad * 100, None if wait is None else wait * 1000])
    return rows


def load_report(runs: list[dict]) -> str:
    out = [table(LOAD_HEADERS, load_rows(runs))]
    for r in runs:
        if r["errors"]:
            out.append(f"errors at concurrency {r['concurrency']}: "
                       + ", ".join(f"{k} × {v}" for k, v in r["errors"].items()))
        srv = r.get("server")
        if srv and srv.get("errors"):
            out.append(f"server error replies at concurrency {r['concurrency']}: {srv['errors']}")
        for w in r.get("warnings", []):
            out.append(f"warning: {w}")
    if runs and runs[0].get("tokens_source"):
        out.append(f"tokens counted by: {runs[0]['tokens_source']}; server columns: deltas of its Prometheus "
                   "metrics over the run (padding % = padding / (tokens + padding))")
    return "\n".join(out)


def write_json(path: str | Path, payload: dict) -> None:
    Path(path).write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def plot_sweep(runs: list[dict], path: str | Path, title: str = "zeroembed bench") -> None:
    """Throughput and p99 latency against concurrency (two axes), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc = [r["concurrency"] for r in runs]
    fig, ax1 = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax1.plot(conc, [r["texts_per_s"] for r in runs], "o-", color="tab:blue", label="texts/s")
    ax1.set_xlabel("concurrent clients")
    ax1.set_ylabel("texts/s", color="tab:blue")
    if len(set(conc)) > 1 and min(conc) > 0 and max(conc) / min(conc) >= 8:
        ax1.set_xscale("log", base=2)
    ax1.set_xticks(conc, [str(c) for c in conc])
    ax1.grid(alpha=0.3)
    ax2 = ax1.twinx()
    ax2.plot(conc, [r["latency_ms"]["p99"] or 0 for r in runs], "s--", color="tab:red", label="p99 ms")
    ax2.set_ylabel("p99 latency (ms)", color="tab:red")
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
