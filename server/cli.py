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
    ("--workers", int, "worker processes (default: per device)"),
    ("--threads-per-worker", int, "ONNX Runtime threads per worker (default: cores / workers on CPU)"),
    ("--max-batch-tokens", int, "token budget per batch: size × longest sequence (default: per device)"),
    ("--max-batch-size", int, "texts per batch at most (default: per device)"),
    ("--batch-wait-ms", float, "how long a partial batch waits for company while others run (default 2)"),
    ("--max-queue", int, "texts accepted and not yet answered, at most; past it: ServerBusy (default 20000)"),
    ("--max-texts-per-request", int, "texts per request at most (default 2048)"),
    ("--max-chars-per-text", int, "characters per text at most (default 100000)"),
    ("--max-message-bytes", int, "largest ZeroMQ message accepted (default 64 MiB)"),
    ("--batch-timeout-s", float, "a worker running one batch longer is declared stuck and replaced (default 30)"),
    ("--request-timeout-s", float, "a request unanswered this long is answered with a timeout error (default 120)"),
    ("--curve-secret", Path, "server.key_secret from `zeroembed keys`: encrypt and authenticate with CurveZMQ"),
    ("--curve-clients", Path, "directory of the public .key files of clients allowed in (with --curve-secret)"),
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
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="where to run (default auto)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM or SIGINT; 0 on a clean stop, 2 on a bad start."""
    try:
        import logging
        import signal

        from .artifact import ArtifactError, open_artifact
        from .broker import Broker, StartupError
        from .config import SettingsError, load_settings
        from .curve import CurveError
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
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
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
    for adapter in adapters:
        adapter.start()
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
