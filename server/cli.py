"""``zeroembed serve``: flags → settings → artifact → broker, and graceful shutdown on signals.

Only argparse is imported at load time, so ``zeroembed --help`` works without
the server extra; everything else is imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# flag, type, help. Defaults live in server/config.py's Settings, not here:
# an unset flag is None and falls through to ZEROEMBED_* variables, then defaults.
_FLAGS: list[tuple[str, type, str]] = [
    ("--model", Path, "artifact directory from `zeroembed export` (default: the embedded all-MiniLM-L6-v2)"),
    ("--cache-dir", Path, "where the default model is exported on first start (default ~/.cache/zeroembed)"),
    ("--bind", str, "address for the ZeroMQ and metrics ports (default 127.0.0.1)"),
    ("--port", int, "ZeroMQ port for clients (default 5555)"),
    ("--metrics-port", int, "Prometheus port, 0 to disable (default 9100)"),
    ("--http-port", int, "HTTP port for the OpenAI- and TEI-compatible API (docs/http.md), 0 to disable (default 0)"),
    ("--cache-size", int, "texts whose vectors are cached to answer repeats without a worker; 0 = off (default 0)"),
    ("--workers", int, "worker processes (default: per device)"),
    ("--threads-per-worker", int, "ONNX Runtime threads per worker (default: cores / workers on CPU)"),
    ("--parallel-batches", int, "batches a worker runs side by side, one thread each, when more than that "
                                "many wait; otherwise each gets every thread (default: threads per worker on "
                                "CPU, 1 on CUDA)"),
    ("--max-batch-tokens", int, "token budget per batch: size × longest sequence (default: per device)"),
    ("--max-batch-size", int, "texts per batch at most (default: per device)"),
    ("--max-added-padding", int, "padding tokens a text may add to the batch it joins; one that would add more "
                                 "waits for a batch nearer its length (default: 4 on CPU, 1024 on CUDA)"),
    ("--batch-wait-ms", float, "how long a partial batch waits for company while others run (default 2)"),
    ("--max-queue", int, "texts accepted and not yet answered, at most; past it: ServerBusy (default 20000)"),
    ("--max-texts-per-request", int, "texts per request at most (default 2048)"),
    ("--max-chars-per-text", int, "characters per text at most (default 100000)"),
    ("--max-message-bytes", int, "largest ZeroMQ message accepted (default 64 MiB)"),
    ("--batch-timeout-s", float, "a worker running one batch longer is declared stuck and replaced (default 30)"),
    ("--request-timeout-s", float, "a request unanswered this long is answered with a timeout error (default 120)"),
    ("--curve-secret", Path, "server.key_secret from `zeroembed keys`: encrypt and authenticate with CurveZMQ"),
    ("--curve-clients", Path, "directory of the public .key files of clients allowed in (with --curve-secret)"),
    ("--bert-port", int, "also serve bert-serving-client 1.10.0 apps: its PULL port, 0 = off (default 0; "
                         "docs/migrate-from-bert-as-service.md)"),
    ("--bert-port-out", int, "bert-as-service's publish port (default --bert-port + 1)"),
    ("--shutdown-grace-s", float, "seconds to drain in-flight work on SIGTERM (default 8)"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    parser = subparsers.add_parser(
        "serve", help="serve a model over ZeroMQ",
        description="Serve sentence embeddings over ZeroMQ. Every flag can also be set as ZEROEMBED_<FLAG> "
                    "(e.g. ZEROEMBED_MAX_BATCH_TOKENS); flags win.",
    )
    for flag, kind, help_text in _FLAGS:
        parser.add_argument(flag, type=kind, default=None, help=help_text)
    parser.add_argument("--allow-insecure-bert", action="store_true", default=None,
                        help="allow --bert-port (plain TCP; the legacy client cannot do CurveZMQ) with --curve-secret")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="where to run (default auto)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM or SIGINT; 0 on a clean stop, 2 on a bad start."""
    try:
        import logging
        import signal

        from .artifact import ArtifactError, open_artifact
        from .frontends.zeromq import Broker, StartupError
        from .config import SettingsError, load_settings
        from .frontends.curve_auth import CurveError
        from .default_model import default_artifact
        from .metrics import Metrics
    except ImportError as exc:
        print(f"zeroembed serve: error: the server extra is not installed ({exc}); "
              "install it with `pip install 'zeroembed[server]'`", file=sys.stderr)
        return 2

    given = {k: v for k, v in vars(args).items() if k not in {"command", "handler"}}
    try:
        settings = load_settings(**given)
    except SettingsError as exc:
        print(f"zeroembed serve: error: {exc}", file=sys.stderr)
        return 2
    # Our loggers at the chosen level; third-party ones (ORT's optimizer, transformers) only warnings.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("zeroembed").setLevel(settings.log_level.upper())
    log = logging.getLogger("zeroembed.serve")
    try:
        model_dir = settings.model or default_artifact(settings.cache_dir, settings.device)
        artifact = open_artifact(model_dir)
        broker = Broker(settings, artifact, Metrics())
        broker.start()
    except (ArtifactError, StartupError, CurveError) as exc:
        print(f"zeroembed serve: error: {exc}", file=sys.stderr)
        return 2

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        broker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Other front ends (each speaks another protocol) run beside the broker in this process and
    # send into the same batcher through ``broker.internal_endpoint``; each has start() and stop().
    adapters: list = []
    if settings.http_port:
        from .frontends.http_gateway import HttpGateway

        adapters.append(HttpGateway(settings, broker.internal_endpoint, artifact))
    if settings.bert_port:
        from .frontends.bert import BertAdapter

        adapters.append(BertAdapter(settings, broker.internal_endpoint, broker.metrics))
    started: list = []
    try:
        for adapter in adapters:
            adapter.start()
            started.append(adapter)
    except StartupError as exc:  # e.g. a port taken: stop what started, and leave no worker behind
        print(f"zeroembed serve: error: {exc}", file=sys.stderr)
        for adapter in reversed(started):
            adapter.stop()
        broker.close()
        return 2
    m = artifact.manifest
    log.info("serving %s (%s, %s, dim %d) on %s with %d %s worker(s); metrics on %s", artifact.name, m.precision,
             m.pooling, m.hidden_size, settings.endpoint, settings.workers, settings.device,
             f"http://{settings.bind}:{settings.metrics_port}/metrics" if settings.metrics_port else "off")
    try:
        broker.run()
    except Exception:  # a bug in the loop: say so, and still leave no worker behind
        log.exception("the broker failed; stopping")
        broker.close()
        return 1
    finally:
        for adapter in reversed(adapters):
            adapter.stop()
    log.info("stopped")
    return 0
