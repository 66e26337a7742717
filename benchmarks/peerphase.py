"""The ``--peers`` phase of ``zeroembed bench --compare``: zeroembed's HTTP route and the peers (peers.py)
under the compare's loads, 1 client × 1 text and 8 clients × 8 texts on the benchmark corpus, and their
contenders for the interleaved rounds.

Every HTTP server, zeroembed's included, gets the same requests from the same load generator (load.py's
OpenAI client); fastembed, a library, encodes the same texts in process, one call per text for the 1 × 1
row and at its best batch size for the other. A peer that cannot run is reported with its reason
(``results["peers"]``), never left out silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .load import LoadConfig, SizeDist, run_load
from .peers import FastembedRunner, InfinityServer, PeerEnv, PeerUnavailable

if TYPE_CHECKING:
    from .compare import Compare
    from zeroembed.server.launch import ServerProcess

SINGLE_TEXTS = {"full": 100, "quick": 8}  # requests of the 1 client × 1 text rows
FASTEMBED_BATCHES = {"full": (8, 32, 256), "quick": (8,)}
INFINITY_ENGINES = (("infinity torch", "torch"), ("infinity onnx", "optimum"))


class PeerPhase:
    def __init__(self, compare: Compare, server: ServerProcess, texts: list[str]) -> None:
        self.compare = compare
        self.server = server
        self.texts = texts
        self.mode = "quick" if compare.quick else "full"
        self.info: dict[str, str] = compare.results.setdefault("peers", {})
        # name -> (row title, setting, a function measuring texts/s once): the compare's rounds run them.
        self.measures: dict[str, tuple[str, str, Callable[[], float]]] = {}
        self._infinity: list[InfinityServer] = []
        self._fastembed: FastembedRunner | None = None

    def run(self) -> None:
        log = self.compare_log
        self._http_phase("zeroembed HTTP", self.server.http_url, "default", "http_c8",
                         metrics=[self.server.metrics_url])
        self._http_phase("zeroembed ZeroMQ", self.server.endpoint, "default", None, metrics=[], only_single=True)
        try:
            peers = PeerEnv(getattr(self.compare.args, "peers_venv", None))
        except PeerUnavailable as exc:
            for name in ("infinity torch", "infinity onnx", "fastembed"):
                self.info[name] = f"not run: {exc}"
            log(f"peers not run: {exc}")
            return
        self.info["versions"] = ", ".join(f"{k} {v}" for k, v in peers.versions().items())
        source = self._model_dir()
        if source is None:
            for name in ("infinity torch", "infinity onnx", "fastembed"):
                self.info[name] = "not run: the artifact's source model folder is not on this machine"
            return
        onnx_dir, onnx_reason = None, None
        try:
            onnx_dir = peers.onnx_model_dir(source, log)
        except PeerUnavailable as exc:
            onnx_reason = str(exc)
        for name, engine in INFINITY_ENGINES:
            folder = source if engine == "torch" else onnx_dir
            if folder is None:
                self.info[name] = f"not run: {onnx_reason}"
                continue
            server = InfinityServer(peers, folder, engine, self.compare.threads)
            log(f"starting {name}: {' '.join(server.command)}")
            try:
                server.start()
            except PeerUnavailable as exc:
                self.info[name] = f"not run: {exc}"
                log(self.info[name])
                server.cleanup_log()
                continue
            self._infinity.append(server)
            self.info[name] = f"ran: {folder} (infinity-emb --engine {engine}, its default batch handling)"
            key = "infinity_torch_c8" if engine == "torch" else "infinity_onnx_c8"
            self._http_phase(name, server.url, server.model_name, key, metrics=[])
        if onnx_dir is None:
            self.info["fastembed"] = f"not run: {onnx_reason}"
        else:
            self._fastembed_phase(peers, onnx_dir)

    def compare_log(self, line: str) -> None:
        from .compare import _log

        _log(line)

    def _model_dir(self):
        from .compare import source_model_dir

        return source_model_dir(self.compare.manifest)

    def _load(self, endpoint: str, model: str, conc: int, size: int, requests: int, metrics: list[str],
              label: str) -> dict[str, Any]:
        cfg = LoadConfig(endpoints=[endpoint], concurrency=conc, sizes=SizeDist.parse(size), requests=requests,
                         timeout=120, warmup=min(conc, requests), seed=self.compare.args.seed, metrics_urls=metrics,
                         progress=not self.compare.args.no_progress, label=label, http_model=model)
        return run_load(cfg, self.texts, self.compare._token_counts)

    def _http_phase(self, name: str, endpoint: str, model: str, key: str | None, metrics: list[str],
                    only_single: bool = False) -> None:
        """``name``'s 1 × 1 row and (unless ``only_single``) its 8 × 8 row; its round contender as ``key``."""
        single = min(SINGLE_TEXTS[self.mode], len(self.texts))
        run = self._load(endpoint, model, 1, 1, single, metrics, f"{name} 1×1")
        self._row(name, "1 client × 1 text", run, concurrency=1)
        if only_single:
            return
        batch = 8
        requests = math.ceil(len(self.texts) / batch)
        run = self._load(endpoint, model, 8, batch, requests, metrics, f"{name} 8×8")
        self._row(name, f"8 clients × {batch} texts", run, concurrency=8)
        if key is not None:
            def rate() -> float:
                again = self._load(endpoint, model, 8, batch, requests, metrics, f"round: {name} 8×8")
                return again["texts"] / again["seconds"]

            self.measures[key] = (name, f"8 clients × {batch} texts", rate)

    def _row(self, name: str, setting: str, run: dict[str, Any], concurrency: int) -> None:
        note = f"errors {run['errors']}" if run["errors"] else None
        self.compare._row(name, setting, run["seconds"], n_texts=run["texts"], kind="peer", peer=name,
                          concurrency=concurrency, latency_ms=run["latency_ms"], errors=run["errors"], note=note)

    def _fastembed_phase(self, peers: PeerEnv, onnx_dir) -> None:
        name = "fastembed"
        try:
            self._fastembed = FastembedRunner(peers, onnx_dir, self.texts, self.compare.threads)
        except PeerUnavailable as exc:
            self.info[name] = f"not run: {exc}"
            self.compare_log(self.info[name])
            return
        self.info[name] = (f"ran: in process, {onnx_dir}/model.onnx (optimum's export of the same model), "
                           f"{self.compare.threads} threads")
        runner = self._fastembed
        single = min(SINGLE_TEXTS[self.mode], len(self.texts))
        one = runner.run(1, single)
        self.compare._row(name, "in process, 1 text per call", one["seconds"], n_texts=one["texts"], kind="peer",
                          peer=name, concurrency=1)
        best = None
        for bs in FASTEMBED_BATCHES[self.mode]:
            got = runner.run(bs)
            row = self.compare._row(name, f"in process, batch {bs}", got["seconds"], n_texts=got["texts"],
                                    kind="peer", peer=name, concurrency=8, batch=bs)
            best = row if best is None or row["texts_per_s"] > best["texts_per_s"] else best

        def rate(bs: int = best["batch"]) -> float:
            got = runner.run(bs)
            return got["texts"] / got["seconds"]

        self.measures["fastembed"] = (name, f"in process, batch {best['batch']}", rate)

    def close(self) -> None:
        for server in self._infinity:
            server.stop()
            server.cleanup_log()
        if self._fastembed is not None:
            self._fastembed.close()
