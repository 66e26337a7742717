"""``zeroembed bench --compare``: in-process PyTorch and ONNX Runtime, the server end to end, and int8,
side by side — same texts, same process start, same machine — against the machine's matmul ceiling.

Rows (rates include tokenization everywhere):

(a) sentence-transformers on PyTorch in process (the model the artifact was exported from), at each of
    a few batch sizes;
(b) ONNX Runtime in process on the artifact, length-sorted, at the same batch sizes;
(c) the server end to end (a `zeroembed serve` subprocess on free loopback ports, always stopped) at
    concurrency 1, 8 and 32 with 8 texts per request, each run sending the whole corpus once;
(d) ONNX Runtime in process on the int8 artifact, with its cosine to fp32 (CPU only).

``--device cuda`` runs every row on the GPU (an fp16 artifact by default, sentence-transformers in fp16
then too) with a bigger corpus and batches; the targets are set for fp32 on a CPU, so none is judged there.

One short text's round trip through the server is timed in blocks alternating
with the same text in process, each block (and each round below) starting once
the previous one's threads are idle: an in-process session's pool goes on
spinning after its last call (ONNX Runtime's longer than PyTorch's), on a core
the server needs. Then (e) the headline rows again — ORT and sentence-transformers at their best
batch size, the server at 8 clients — in interleaved rounds, and the targets,
each PASS or FAIL, on the rounds' medians. On a shared or throttled machine the
speed of the cores drifts over tens of seconds; rows measured minutes apart
would compare the drift, rounds that alternate compare the rows. Last, the
fraction of the matmul ceiling (ceiling.py) each row reaches.
"""

from __future__ import annotations

import gc
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .ceiling import Arch, numpy_matmul_gflops, ort_matmul_gflops
from .corpus import SHORT_TEXT, describe, length_class, make_corpus, token_lengths
from .inprocess import OrtEncoder, call_times_ms, cosine_stats, percentiles_ms, quantize_fallback, timed, wait_until_idle
from .load import LoadConfig, SizeDist, run_load
from .report import cores, environment, fmt, table, write_json
from zeroembed.server.launch import ServerProcess

# The same batch sizes for both in-process rows: each is held to its own best. Five rounds: where the
# cores' speed drifts, one row's rounds swing within a run, and a median of three can follow the swing.
FULL = {"texts": 400, "st_batches": (4, 8, 16, 32, 64), "ort_batches": (4, 8, 16, 32, 64),
        "concurrency": (1, 8, 32), "rounds": 5, "latency_iters": 200, "ceiling_s": 1.5}
# On a GPU a 400-text corpus takes a fraction of a second: more texts, bigger batches, more clients.
FULL_CUDA = {"texts": 4000, "st_batches": (32, 128, 512), "ort_batches": (32, 128, 512),
             "concurrency": (1, 8, 32, 128), "rounds": 3, "latency_iters": 200, "ceiling_s": 1.5}
QUICK = {"texts": 24, "st_batches": (8,), "ort_batches": (8,), "concurrency": (1, 8), "rounds": 2,
         "latency_iters": 10, "ceiling_s": 0.2}
SERVER_BATCH = 8  # texts per request in the server rows

# Targets (fp32, CPU): see the issue. (name, check(results) -> (passed, detail)).
TARGET_SERVER_VS_ORT = 0.90
TARGET_SERVER_VS_ST = 1.25
TARGET_LATENCY_SLACK_MS = 2.0
# With --peers: zeroembed's OpenAI HTTP route at 8 clients × 8 texts against the peers.
TARGET_HTTP_VS_INFINITY_BEST = 1.2
TARGET_HTTP_VS_INFINITY_TORCH = 1.7
TARGET_HTTP_VS_FASTEMBED = 1.0
TARGET_HTTP_VS_ZEROMQ = 0.98  # 8 clients × 8 texts
TARGET_HTTP_LATENCY_SLACK_MS = 0.5  # one short text over HTTP against the ZeroMQ client
# The performance issue's goals beside the ones above: int8 that pays, and fp32 well past PyTorch.
TARGET_SERVED_INT8_VS_FP32 = 1.5
TARGET_SERVER_VS_ST_STRETCH = 1.5


def _log(message: str) -> None:
    print(f"[compare] {message}", file=sys.stderr, flush=True)


def resolve_artifact(path: str | None, device: str = "cpu") -> Path:
    """``--artifact``, or the default model exported into the cache as ``serve`` does (fp16 for CUDA)."""
    if path:
        return Path(path).expanduser()
    from zeroembed.server.default_model import default_artifact

    return default_artifact(_cache_dir(), device, progress=_export_progress)


def _cache_dir() -> Path:
    """Where ``serve`` keeps the default model: ``ZEROEMBED_CACHE_DIR``, else the user's cache."""
    from zeroembed.server.config import SettingsError, load_settings

    try:
        return load_settings(device="cpu").cache_dir  # the device given only spares it the GPU probe
    except SettingsError as exc:  # the server this compare starts would refuse the same variables
        raise SystemExit(f"zeroembed bench --compare: {exc}") from None


def _export_progress(line: str) -> None:
    _log(f"export: {line}")


def source_model_dir(manifest: dict) -> Path | None:
    """The model directory an artifact was exported from, for sentence-transformers; None if not here."""
    from zeroembed.export.source import DEFAULT_MODEL_NAME, default_model_dir

    source = manifest.get("source")
    if source == DEFAULT_MODEL_NAME:
        return default_model_dir()
    return Path(source) if source and Path(source).is_dir() else None


def resolve_int8(path: str | None, fp32: Path, quick: bool, workdir: Path) -> tuple[Path | None, str]:
    """(int8 artifact, how it was obtained). For the default model, its int8 export in the cache (made, or
    made again, as ``serve`` makes its fp32 one); other models, the quick mode and a failed export fall back
    to ORT's dynamic quantization of the fp32 model, and say so."""
    if path:
        return Path(path).expanduser(), "given (--int8-artifact)"
    from zeroembed.server.artifact import ArtifactError
    from zeroembed.server.default_model import default_artifact

    if quick:
        note = "quick mode"
    elif fp32.parent != (cache := _cache_dir()):  # the cache holds the default model's int8, not this one's
        note = "the fp32 artifact is not the default model"
    else:
        try:
            target = default_artifact(cache, "cpu", "int8", progress=_export_progress)
            return target, f"the default model's int8 export, {target}"
        except ArtifactError as exc:
            note = str(exc)
    try:
        out = quantize_fallback(fp32, workdir / "int8")
    except Exception as exc:  # quantization tooling missing or failing: the row is skipped, not the compare
        return None, f"{note}; fallback quantization failed: {exc}"
    return out, f"{note}; stand-in: ORT quantize_dynamic (per-channel) of the fp32 model"


class Compare:
    def __init__(self, args) -> None:
        self.args = args
        self.quick = bool(args.quick)
        self.device = getattr(args, "device", None) or "cpu"
        if self.device == "cuda":
            from zeroembed.server.config import cuda_available

            if not cuda_available():
                raise SystemExit("zeroembed bench --compare --device cuda: ONNX Runtime sees no CUDA GPU here")
        self.plan = dict(QUICK if self.quick else FULL_CUDA if self.device == "cuda" else FULL)
        if args.texts:
            self.plan["texts"] = args.texts
        if getattr(args, "st_batch_sizes", None):
            self.plan["st_batches"] = tuple(int(x) for x in args.st_batch_sizes.split(","))
        if getattr(args, "ort_batch_sizes", None):
            self.plan["ort_batches"] = tuple(int(x) for x in args.ort_batch_sizes.split(","))
        if getattr(args, "compare_concurrency", None):
            self.plan["concurrency"] = tuple(int(x) for x in args.compare_concurrency.split(","))
        if getattr(args, "rounds", None) is not None:
            self.plan["rounds"] = args.rounds
        self.threads = cores()
        self.peers = bool(getattr(args, "peers", False))
        self.rows: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {}

    # ------------------------------------------------------------------ phases

    def run(self) -> dict[str, Any]:
        env = environment(getattr(self.args, "argv", None))
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="zeroembed-compare-") as tmp:
            workdir = Path(tmp)
            artifact = resolve_artifact(self.args.artifact, self.device)
            manifest = json.loads((artifact / "manifest.json").read_text())
            self.manifest = manifest
            self.arch = Arch.from_manifest(manifest)
            texts = make_corpus(self.plan["texts"], self.args.seed)
            lengths = token_lengths(texts, artifact) or []
            self._token_counts = lengths or None
            self.corpus_flops = self.arch.corpus_flops(lengths)
            self.tokens = sum(lengths)
            self.texts = texts
            _log(f"corpus: {len(texts)} texts, {self.tokens} tokens, {self.corpus_flops / 1e9:.1f} GFLOP "
                 f"({self.threads} cores)")

            self.ceiling_phase()
            self.int8_phase(artifact, texts, self.ort_phase(artifact, texts), workdir)
            self.st_phase(texts)
            server = self.server_phase(artifact, texts)
            peers = int8_server = None
            try:
                if self.peers:
                    from .peerphase import PeerPhase

                    peers = PeerPhase(self, server, texts)
                    peers.run()
                extra = dict(peers.measures) if peers else {}
                if getattr(self.args, "served_int8", False) and getattr(self, "int8_artifact", None):
                    int8_server = self._int8_server(self.int8_artifact, texts, extra)
                self.rounds_phase(texts, server, extra)
            finally:
                if peers is not None:
                    peers.close()
                if int8_server is not None:
                    self._stop(int8_server)
                self._stop(server)
        self.results.update(
            environment=env, artifact=str(artifact), device=self.device, threads=self.threads, plan=self.plan,
            corpus={**describe(texts, lengths), "seed": self.args.seed, "flops": self.corpus_flops,
                    "tokens": self.tokens},
            architecture=vars(self.arch) | {"matmul_params": self.arch.matmul_params},
            rows=self.rows, seconds=time.perf_counter() - started,
        )
        self.results["ratios"] = self.ratios()
        self.results["targets"] = self.targets()
        return self.results

    def ceiling_phase(self) -> None:
        seconds = self.plan["ceiling_s"]
        fp16 = self.device == "cuda" and self.manifest.get("precision") == "fp16"
        ort_rate = ort_matmul_gflops(self.arch, self.threads, seconds=seconds, device=self.device, fp16=fp16)
        np_rate = numpy_matmul_gflops(self.arch, seconds=seconds)
        self.ceiling = ort_rate or np_rate
        self.results["ceiling"] = {"ort_matmul_gflops": ort_rate, "numpy_matmul_gflops": np_rate,
                                   "ceiling_gflops": self.ceiling,
                                   "source": "ORT MatMul" if ort_rate else "numpy matmul",
                                   "precision": "fp16" if fp16 else "fp32", "device": self.device}
        _log(f"matmul ceiling: ORT {fmt(ort_rate)} GFLOP/s, numpy {fmt(np_rate)} GFLOP/s")

    def _row(self, name: str, setting: str, seconds: float, n_texts: int | None = None, **extra: Any) -> dict:
        n_texts = len(self.texts) if n_texts is None else n_texts
        frac = n_texts / len(self.texts) if self.texts else 1.0
        gflops = self.corpus_flops * frac / seconds / 1e9 if seconds else 0.0
        row = {"name": name, "setting": setting, "seconds": seconds, "texts_per_s": n_texts / seconds,
               "tokens_per_s": self.tokens * frac / seconds, "gflops": gflops,
               "ceiling_fraction": gflops / self.ceiling if self.ceiling else None, **extra}
        self.rows.append(row)
        _log(f"{name} [{setting}]: {row['texts_per_s']:.1f} texts/s ({gflops:.1f} GFLOP/s)")
        return row

    def ort_phase(self, artifact: Path, texts: list[str]):
        encoder = OrtEncoder(artifact, self.threads, device=self.device)
        encoder.encode(texts[:16], 8)  # warm up
        vectors = None
        for bs in self.plan["ort_batches"]:
            out, seconds = timed(encoder.encode, texts, bs)
            vectors = out if vectors is None else vectors
            self._row(f"ORT {self.manifest.get('precision', 'fp32')} in process", f"batch {bs}, length-sorted",
                      seconds, kind="ort", batch=bs)
        self.encode_one = lambda: encoder.encode_one(SHORT_TEXT)  # the latency floor, measured with the server's
        self.ort_vectors = vectors
        best = self._best("ort")["batch"]
        self.contenders = {"ort": (f"batch {best}, length-sorted", lambda: encoder.encode(texts, best))}
        return vectors

    def int8_phase(self, artifact: Path, texts: list[str], fp32_vectors, workdir: Path) -> None:
        if self.device != "cpu":
            self.results["int8_source"] = "skipped: ONNX Runtime runs dynamic int8 on the CPU only"
            return
        int8, how = resolve_int8(self.args.int8_artifact, artifact, self.quick, workdir)
        self.results["int8_source"] = how
        self.int8_artifact = int8
        if int8 is None:
            _log(f"int8 row skipped: {how}")
            return
        encoder = OrtEncoder(int8, self.threads)
        encoder.encode(texts[:16], 8)
        best = None
        for bs in self.plan["ort_batches"]:
            out, seconds = timed(encoder.encode, texts, bs)
            cos = cosine_stats(out, fp32_vectors)
            row = self._row("ORT int8 in process", f"batch {bs}, length-sorted", seconds, kind="int8", batch=bs,
                            cosine_to_fp32=cos)
            best = row if best is None or row["texts_per_s"] > best["texts_per_s"] else best
        # Cosine by length class: where quantization error concentrates.
        by_class: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            by_class.setdefault(length_class(t), []).append(i)
        self.results["int8_cosine_by_class"] = {c: cosine_stats(out[idx], fp32_vectors[idx])
                                                for c, idx in by_class.items()}
        del encoder
        gc.collect()

    def st_phase(self, texts: list[str]) -> None:
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            self.results["st_skipped"] = f"sentence-transformers unavailable: {exc}"
            _log(self.results["st_skipped"])
            return
        source = source_model_dir(self.manifest)
        if source is None or (self.device == "cuda" and not torch.cuda.is_available()):
            why = "PyTorch sees no CUDA GPU" if source else f"the artifact's source {self.manifest.get('source')!r} " \
                                                             "is not a directory here"
            self.results["st_skipped"] = why
            _log(f"sentence-transformers skipped: {why}")
            return
        torch.set_num_threads(self.threads)
        model = SentenceTransformer(str(source), device=self.device)
        if self.device == "cuda" and self.manifest.get("precision") == "fp16":
            model.half()  # the same precision as the artifact
        model.encode(texts[:16], batch_size=8)
        def encode(bs: int):
            with torch.inference_mode():
                return model.encode(texts, batch_size=bs, convert_to_numpy=True, show_progress_bar=False)

        for bs in self.plan["st_batches"]:
            out, seconds = timed(encode, bs)
            self._row("sentence-transformers (PyTorch)", f"batch {bs}", seconds, kind="st", batch=bs,
                      cosine_to_ort_fp32=cosine_stats(out, self.ort_vectors))
        best = self._best("st")["batch"]
        self.contenders["st"] = (f"batch {best}", lambda: encode(best))

    def server_phase(self, artifact: Path, texts: list[str]) -> ServerProcess:
        """The server rows; returns the server, still running, for the rounds."""
        from zeroembed.client import Client

        flags = shlex.split(self.args.server_args or "")
        server = ServerProcess(artifact, *flags, device=self.device, http=self.peers)
        _log(f"starting: {shlex.join(server.command)}")
        try:
            server.start()
            self.results["server"] = {"flags": flags, "batching": server.status.get("batching"),
                                      "workers": len(server.status.get("workers", []))}
            with Client(server.endpoint, timeout=60) as client:
                got = client.encode(texts[:64])
                self.results["server_cosine_to_ort_fp32"] = cosine_stats(got, self.ort_vectors[:64])
                calls = {"inprocess": self.encode_one, "server": lambda: client.encode([SHORT_TEXT])}
                if server.http_url is not None:
                    # The OpenAI SDK asks for base64 unless told otherwise; curl and plain clients get floats.
                    calls["http"] = http_short_text_call(server.http_url, "base64")
                    calls["http_float"] = http_short_text_call(server.http_url, "float")
                self._single_text_latency(calls)
            for conc in self.plan["concurrency"]:
                run = self._server_load(server, texts, conc, label=f"server c={conc}")
                srv = run.get("server") or {}
                self._row("server end to end", f"{conc} clients × {SERVER_BATCH} texts", run["seconds"],
                          n_texts=run["texts"], kind="server", concurrency=conc, latency_ms=run["latency_ms"],
                          errors=run["errors"], mean_batch_size=srv.get("mean_batch_size"),
                          padding_ratio=srv.get("padding_ratio"), mean_queue_wait_s=srv.get("mean_queue_wait_s"),
                          mean_inference_s=srv.get("mean_inference_s"),
                          inference_busy=(srv.get("inference_s_total") or 0) / run["seconds"] if run["seconds"]
                          else None)
        except BaseException:
            self._stop(server)
            raise
        return server

    def _int8_server(self, int8: Path, texts: list[str], extra: dict) -> ServerProcess:
        """A second server on the int8 artifact (same flags), its 8 × 8 load a contender of the rounds."""
        flags = shlex.split(self.args.server_args or "")
        server = ServerProcess(int8, *flags, device=self.device)
        _log(f"starting the int8 server: {shlex.join(server.command)}")
        server.start()

        def rate() -> float:
            run = self._server_load(server, texts, 8, label="round: int8 server c=8")
            return run["texts"] / run["seconds"]

        extra["server_int8_c8"] = ("server end to end, int8", f"8 clients × {SERVER_BATCH} texts", rate)
        return server

    def _single_text_latency(self, calls: dict[str, Callable[[], Any]]) -> None:
        """p50/p99 of one short text each way in ``calls`` (in process, the ZeroMQ client, HTTP), in
        alternating blocks so that all see the same machine; every other round of blocks runs in reverse
        order, so that neither a drift of the machine nor going first favours one way."""
        blocks = 6
        per_block = max(1, self.plan["latency_iters"] // blocks)
        times: dict[str, list[float]] = {name: [] for name in calls}
        order = list(calls.items())
        for block in range(blocks):
            for name, call in (order if block % 2 == 0 else order[::-1]):
                # Each block starts once the other's threads have stopped spinning (wait_until_idle).
                wait_until_idle()
                times[name] += call_times_ms(call, per_block)
        for name, values in times.items():
            self.results[f"single_text_{name}_ms"] = {**percentiles_ms(values), "blocks": blocks}

    def _server_load(self, server: ServerProcess, texts: list[str], conc: int, label: str) -> dict[str, Any]:
        """The whole corpus once through the server, ``conc`` clients × SERVER_BATCH texts per request."""
        requests = math.ceil(len(texts) / SERVER_BATCH)
        cfg = LoadConfig(endpoints=[server.endpoint], concurrency=conc, sizes=SizeDist.parse(SERVER_BATCH),
                         requests=requests, timeout=120, warmup=min(conc, requests), seed=self.args.seed,
                         metrics_urls=[server.metrics_url], progress=not self.args.no_progress, label=label)
        return run_load(cfg, texts, self._token_counts)

    def rounds_phase(self, texts: list[str], server: ServerProcess, extra: dict | None = None) -> None:
        """ORT and sentence-transformers at their best batch size and the server at 8 clients, alternating;
        ``extra``: more contenders, name -> (title, setting, a function measuring texts/s once)."""
        extra = extra or {}
        rounds = self.plan["rounds"]
        if rounds < 1 or 8 not in self.plan["concurrency"]:
            return
        def server_rate() -> float:
            run = self._server_load(server, texts, 8, label="round: server c=8")
            return run["texts"] / run["seconds"]

        # name -> (setting, a function measuring texts/s once)
        measure = {name: (setting, lambda fn=fn: len(texts) / timed(fn)[1])
                   for name, (setting, fn) in self.contenders.items()}
        measure["server_c8"] = (f"8 clients × {SERVER_BATCH} texts", server_rate)
        measure.update({name: (setting, fn) for name, (_, setting, fn) in extra.items()})
        rates: dict[str, list[float]] = {name: [] for name in measure}
        for i in range(rounds):
            for name, (_, rate) in measure.items():
                wait_until_idle()
                rates[name].append(rate())
            _log(f"round {i + 1}/{rounds}: " + ", ".join(f"{n} {r[-1]:.1f}" for n, r in rates.items()))
        titles = {"ort": f"ORT {self.manifest.get('precision', 'fp32')} in process",
                  "st": "sentence-transformers (PyTorch)", "server_c8": "server end to end",
                  **{name: title for name, (title, _, _) in extra.items()}}
        for name, values in rates.items():
            median = statistics.median(values)
            # A contender whose every request failed (a peer that broke mid-run) rates 0: a row of 0 texts/s.
            self._row(titles[name], f"{measure[name][0]}, median of {rounds} rounds",
                      len(texts) / median if median > 0 else math.inf, kind=f"round_{name}", rounds=values)
        self.results["rounds"] = rates

    def _stop(self, server: ServerProcess) -> None:
        code = server.stop()
        if code not in (0, None):
            _log(f"server exited with {code}; log:\n{server.log()[-3000:]}")
        server.cleanup_log()

    # ------------------------------------------------------------------ verdicts

    def _best(self, kind: str, **match: Any) -> dict | None:
        rows = [r for r in self.rows if r.get("kind") == kind and all(r.get(k) == v for k, v in match.items())]
        return max(rows, key=lambda r: r["texts_per_s"]) if rows else None

    def ratios(self) -> dict[str, float | None]:
        """Texts/s ratios; the headline ones on the interleaved rounds' medians when there were rounds."""
        int8 = self._best("int8")
        ort = self._best("round_ort") or self._best("ort")
        st = self._best("round_st") or self._best("st")
        c8 = self._best("round_server_c8") or self._best("server", concurrency=8)
        div = lambda a, b: a["texts_per_s"] / b["texts_per_s"] if a and b else None  # noqa: E731
        out = {"server_c8 / ort_best": div(c8, ort), "server_c8 / st_best": div(c8, st),
               "ort_best / st_best": div(ort, st), "int8_best / ort_fp32_best": div(int8, self._best("ort"))}
        int8_served = self._best("round_server_int8_c8")
        if int8_served:
            out["server_int8_c8 / server_c8"] = div(int8_served, c8)
        if self.peers:
            http = self._best("round_http_c8") or self._best("peer", peer="zeroembed HTTP", concurrency=8)
            torch_ = self._best("round_infinity_torch_c8") or self._best("peer", peer="infinity torch", concurrency=8)
            onnx_ = self._best("round_infinity_onnx_c8") or self._best("peer", peer="infinity onnx", concurrency=8)
            fast = self._best("round_fastembed") or self._best("peer", peer="fastembed", concurrency=8)
            infinity = max((r for r in (torch_, onnx_) if r), key=lambda r: r["texts_per_s"], default=None)
            out.update({"http_c8 / server_c8 (ZeroMQ)": div(http, c8),
                        "http_c8 / infinity_best": div(http, infinity), "http_c8 / infinity_torch": div(http, torch_),
                        "http_c8 / infinity_onnx": div(http, onnx_), "http_c8 / fastembed": div(http, fast)})
        for conc in self.plan["concurrency"]:  # the sweep's rows, each measured once
            out[f"sweep: server_c{conc} / ort_best"] = div(self._best("server", concurrency=conc), self._best("ort"))
        return out

    def targets(self) -> list[dict[str, Any]]:
        """The issue's targets, set for fp32 on a CPU; none elsewhere (the rows and ratios still print)."""
        if self.device != "cpu" or self.manifest.get("precision") != "fp32":
            return []
        r = self.ratios()
        out = []

        def add(name: str, value: float | None, goal: float, detail: str) -> None:
            out.append({"target": name, "value": value, "goal": goal,
                        "passed": None if value is None else value >= goal, "detail": detail})

        rounds = self.results.get("rounds")
        how = f"ratio of texts/s, medians of {len(rounds['server_c8'])} interleaved rounds" if rounds else \
            "ratio of texts/s, one run each"
        add(f"server 8 clients × 8 texts ≥ {TARGET_SERVER_VS_ORT:.2f}× in-process ORT best",
            r["server_c8 / ort_best"], TARGET_SERVER_VS_ORT, how)
        add(f"server 8 clients × 8 texts ≥ {TARGET_SERVER_VS_ST:.2f}× sentence-transformers best",
            r["server_c8 / st_best"], TARGET_SERVER_VS_ST, how)
        if self.peers:
            for key, goal in (("http_c8 / infinity_best", TARGET_HTTP_VS_INFINITY_BEST),
                              ("http_c8 / infinity_torch", TARGET_HTTP_VS_INFINITY_TORCH),
                              ("http_c8 / fastembed", TARGET_HTTP_VS_FASTEMBED)):
                add(f"zeroembed HTTP 8 clients × 8 texts ≥ {goal:.2f}× {key.split(' / ')[1]}", r[key], goal, how)
            add(f"zeroembed HTTP 8 clients × 8 texts ≥ {TARGET_HTTP_VS_ZEROMQ:.2f}× the ZeroMQ client",
                r["http_c8 / server_c8 (ZeroMQ)"], TARGET_HTTP_VS_ZEROMQ, how)
        if "server_int8_c8 / server_c8" in r:
            add(f"served int8 8 clients × 8 texts ≥ {TARGET_SERVED_INT8_VS_FP32:.2f}× served fp32",
                r["server_int8_c8 / server_c8"], TARGET_SERVED_INT8_VS_FP32, how)
        add(f"server 8 clients × 8 texts ≥ {TARGET_SERVER_VS_ST_STRETCH:.2f}× sentence-transformers best "
            "(the performance issue's goal)", r["server_c8 / st_best"], TARGET_SERVER_VS_ST_STRETCH, how)
        local = (self.results.get("single_text_inprocess_ms") or {}).get("p50")
        remote = (self.results.get("single_text_server_ms") or {}).get("p50")
        if local is not None and remote is not None:
            out.append({"target": f"one short text, one client: p50 ≤ in-process p50 + {TARGET_LATENCY_SLACK_MS:g} ms",
                        "value": remote, "goal": local + TARGET_LATENCY_SLACK_MS,
                        "passed": remote <= local + TARGET_LATENCY_SLACK_MS,
                        "detail": f"server {remote:.2f} ms vs in process {local:.2f} ms"})
        http = (self.results.get("single_text_http_ms") or {}).get("p50")
        http_float = (self.results.get("single_text_http_float_ms") or {}).get("p50")
        if http is not None and remote is not None:
            goal = remote + TARGET_HTTP_LATENCY_SLACK_MS
            floats = "" if http_float is None else f"; with JSON floats {http_float:.2f} ms"
            out.append({"target": f"one short text over HTTP as the OpenAI SDK sends it (base64): p50 ≤ the "
                                  f"ZeroMQ client's p50 + {TARGET_HTTP_LATENCY_SLACK_MS:g} ms", "value": http,
                        "goal": goal, "passed": http <= goal,
                        "detail": f"HTTP {http:.2f} ms vs ZeroMQ {remote:.2f} ms{floats}"})
        return out


def http_short_text_call(base_url: str, encoding_format: str = "float") -> Callable[[], np.ndarray]:
    """One short text through the OpenAI route on one kept-alive connection, its vector decoded as a client
    decodes it: the ``embedding`` list of floats, or with ``"base64"`` (the OpenAI SDK's default) the
    little-endian float32 bytes."""
    import base64
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    body = json.dumps({"input": [SHORT_TEXT], "model": "default", "encoding_format": encoding_format}).encode()
    headers = {"Content-Type": "application/json"}

    def call() -> np.ndarray:
        connection.request("POST", url.path.rstrip("/") + "/embeddings", body, headers)
        reply = connection.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {data[:200]!r}")
        embedding = json.loads(data)["data"][0]["embedding"]
        if encoding_format == "base64":
            return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
        return np.asarray(embedding, dtype=np.float32)

    return call


def render(results: dict[str, Any]) -> str:
    env = results["environment"]
    ceil = results["ceiling"]
    corpus = results["corpus"]
    lines = [
        f"zeroembed bench --compare — {env['date']}, {env['cores']} cores ({env['cpu']}), commit {env['commit']}, "
        f"load average at start {env['loadavg_start']}",
        f"corpus: {corpus['texts']} texts (seed {corpus['seed']}), {corpus['tokens']} tokens "
        f"(mean {fmt(corpus.get('tokens_mean'))}, max {corpus.get('tokens_max')}), classes {corpus['classes']}; "
        f"{corpus['flops'] / 1e9:.1f} GFLOP of model work",
        f"ceiling: {fmt(ceil['ceiling_gflops'])} GFLOP/s ({ceil['source']}, {ceil.get('precision', 'fp32')} on "
        f"{ceil.get('device', 'cpu')}, {results['threads']} threads; "
        f"numpy {fmt(ceil['numpy_matmul_gflops'])} GFLOP/s)",
        "",
    ]
    headers = ["row", "setting", "texts/s", "tokens/s", "GFLOP/s", "% ceiling", "p50 ms", "p99 ms", "notes"]
    rows = []
    for r in results["rows"]:
        lat = r.get("latency_ms") or {}
        notes = []
        if "cosine_to_fp32" in r:
            notes.append(f"cos min {r['cosine_to_fp32']['min']:.4f} mean {r['cosine_to_fp32']['mean']:.5f}")
        if "cosine_to_ort_fp32" in r:
            notes.append(f"cos vs ORT min {r['cosine_to_ort_fp32']['min']:.5f}")
        if r.get("note"):
            notes.append(r["note"])
        if r.get("kind") == "server":
            if r.get("mean_batch_size") is not None:
                notes.append(f"batch {r['mean_batch_size']:.1f}")
            if r.get("padding_ratio") is not None:
                notes.append(f"pad {r['padding_ratio'] * 100:.0f}%")
            if r.get("mean_queue_wait_s") is not None:
                notes.append(f"wait {r['mean_queue_wait_s'] * 1000:.1f}ms")
            if r.get("inference_busy") is not None:
                notes.append(f"run time {r['inference_busy'] * 100:.0f}% of wall")  # over 100 %: batches side by side
            if r.get("errors"):
                notes.append(f"errors {r['errors']}")
        frac = r.get("ceiling_fraction")
        rows.append([r["name"], r["setting"], r["texts_per_s"], r["tokens_per_s"], r["gflops"],
                     None if frac is None else frac * 100, lat.get("p50"), lat.get("p99"), "; ".join(notes)])
    lines.append(table(headers, rows))
    lines.append("")
    single_local = results.get("single_text_inprocess_ms") or {}
    single_remote = results.get("single_text_server_ms") or {}
    lines.append(f"one short text ({SHORT_TEXT!r}): in process p50 {fmt(single_local.get('p50'), 2)} ms "
                 f"(p99 {fmt(single_local.get('p99'), 2)}), server round trip p50 {fmt(single_remote.get('p50'), 2)} "
                 f"ms (p99 {fmt(single_remote.get('p99'), 2)})")
    single_http, single_float = results.get("single_text_http_ms"), results.get("single_text_http_float_ms")
    if single_http:
        lines.append(f"  over HTTP (OpenAI route, one kept-alive connection, interleaved with the above): p50 "
                     f"{fmt(single_http.get('p50'), 2)} ms (p99 {fmt(single_http.get('p99'), 2)}) with base64 "
                     f"vectors, the OpenAI SDK's default"
                     + ("" if not single_float else f"; p50 {fmt(single_float.get('p50'), 2)} ms "
                                                    f"(p99 {fmt(single_float.get('p99'), 2)}) with JSON floats"))
    if "int8_source" in results:
        lines.append(f"int8 artifact: {results['int8_source']}")
    if results.get("int8_cosine_by_class"):
        parts = [f"{c} {v['min']:.4f}/{v['mean']:.4f}" for c, v in results["int8_cosine_by_class"].items()]
        lines.append("int8 cosine to fp32 by length class (min/mean): " + ", ".join(parts))
    if "server_cosine_to_ort_fp32" in results:
        c = results["server_cosine_to_ort_fp32"]
        lines.append(f"server vectors vs in-process ORT fp32: cosine min {c['min']:.6f}")
    if results.get("server"):
        lines.append(f"server: {results['server']['workers']} worker(s), batching {results['server']['batching']}, "
                     f"extra flags {results['server']['flags'] or 'none'}")
    for name, info in (results.get("peers") or {}).items():
        lines.append(f"peer {name}: {info}")
    if results.get("st_skipped"):
        lines.append(f"sentence-transformers skipped: {results['st_skipped']}")
    if results.get("rounds"):
        lines.append("interleaved rounds, texts/s (the headline ratios use their medians): " + "; ".join(
            f"{name} " + ", ".join(f"{v:.1f}" for v in values) for name, values in results["rounds"].items()))
    lines.append("")
    lines.append("ratios: " + ", ".join(f"{k} = {fmt(v, 2)}" for k, v in results["ratios"].items()))
    if not results["targets"]:
        lines.append("targets: none (they are set for an fp32 artifact on the CPU)")
    for t in results["targets"]:
        verdict = "n/a " if t["passed"] is None else ("PASS" if t["passed"] else "FAIL")
        lines.append(f"{verdict}  {t['target']}: {fmt(t['value'], 2)} (goal {fmt(t['goal'], 2)}; {t['detail']})")
    lines.append(f"command: {env['command']}  ({results['seconds']:.0f} s)")
    return "\n".join(lines)


def run(args) -> int:
    results = Compare(args).run()
    print(render(results), flush=True)
    if args.json:
        write_json(args.json, {"compare": results})
    return 0
