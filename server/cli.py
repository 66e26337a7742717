"""``zeroembed serve``: flags → settings → artifact → models → front ends, and graceful shutdown on signals.

Every flag is a field of ``config.Settings``: its help text and shown default
come from there. Only argparse (and pydantic, for the field list) is needed to
build the parser; the rest is imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path


def _flags() -> list[tuple[str, dict]]:
    """One argparse flag per settings field: its type, choices, help and default read from the field."""
    from pydantic import SecretStr

    from .config import Settings

    flags = []
    for name, info in Settings.model_fields.items():
        kwargs: dict = {"default": None, "help": info.description or ""}
        hint = info.annotation
        base = hint
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: the flag takes an X
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            base = args[0] if len(args) == 1 else hint
        if typing.get_origin(base) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(base))
        elif typing.get_origin(base) is list:  # repeatable: each use adds an entry
            kwargs["action"] = "append"
            kwargs["type"] = typing.get_args(base)[0]
        elif base is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = base if base in (int, float, str) else str if base is SecretStr else Path
        default = info.get_default(call_default_factory=True)
        if default not in (None, False, "", []):
            kwargs["help"] += f" (default: {default})"
        flags.append((f"--{name.replace('_', '-')}", kwargs))
    return flags


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    parser = subparsers.add_parser(
        "serve", help="serve a model over ZeroMQ (and HTTP, bert-as-service)",
        description="Serve sentence embeddings and rerankers (one or several models). Every flag can also be set as ZEROEMBED_<FLAG> "
                    "(e.g. ZEROEMBED_MAX_BATCH_TOKENS); flags win. A default of 0 means 'chosen for the "
                    "device' where the flag says so.",
    )
    try:
        flags = _flags()
    except ImportError:  # the server extra is missing: `zeroembed serve` says so when it runs
        flags = []
    for flag, kwargs in flags:
        parser.add_argument(flag, **kwargs)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM or SIGINT; 0 on a clean stop, 2 on a bad start."""
    try:
        import logging
        import signal

        from .artifact import ArtifactError, open_artifact
        from .config import SettingsError, load_settings
        from .default_model import default_artifact
        from .errors import StartupError
        from .frontends.curve_auth import CurveError
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
    metrics = Metrics()
    try:
        entries = settings.models or [(None, default_artifact(settings.cache_dir, settings.device))]
        artifacts: dict[str, object] = {}
        for name, path in entries:
            artifact = open_artifact(path)
            name = name or artifact.name
            if name in artifacts:
                raise StartupError(f"two models are named {name!r}; name one with --model NAME={path}")
            artifacts[name] = artifact
        server = _start(settings, artifacts, metrics)
    except (ArtifactError, StartupError, CurveError) as exc:
        print(f"zeroembed serve: error: {exc}", file=sys.stderr)
        return 2
    front, adapters, sockdir = server

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        front.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for name, artifact in artifacts.items():
        m = artifact.manifest
        if not m.fused_attention:
            log.warning("%s was exported with --allow-unfused: its attention runs as plain ONNX ops, slower than "
                        "the fused kernels", artifact.name)
        log.info("serving %s as %r (%s, %s, dim %d) on %s with %d %s worker(s) of %d thread(s)", artifact.name, name,
                 m.task, m.precision, m.hidden_size, settings.endpoint, settings.workers, settings.device,
                 settings.threads_per_worker)
    log.info("metrics on %s", f"http://{settings.metrics_address}/metrics" if settings.metrics_port else "off")
    try:
        front.run()
    except Exception:  # a bug in the loop: say so, and still leave no worker behind
        log.exception("the server's loop failed; stopping")
        front.close()
        return 1
    finally:
        for adapter in reversed(adapters):
            adapter.stop()
        metrics.close()
        sockdir.cleanup()
    log.info("stopped")
    return 0


def _start(settings, artifacts, metrics):
    """Build and start the models (``artifacts`` by name, the default first), the ZeroMQ front end, the
    metrics endpoint and the adapters.

    Returns ``(front end, adapters, socket directory)``; on failure nothing is left running.
    """
    import tempfile

    from .errors import StartupError
    from .frontends.curve_auth import CurveServer
    from .frontends.zeromq import ZmqFrontEnd
    from .models import load_model

    sockdir = tempfile.TemporaryDirectory(prefix="zeroembed-")
    base = Path(sockdir.name)
    adapters: list = []
    models: dict = {}
    front = None
    try:
        for index, (name, artifact) in enumerate(artifacts.items()):
            models[name] = load_model(name, artifact, settings, metrics, base / f"model-{index}")
        curve = CurveServer(settings.curve_secret, settings.curve_clients) if settings.curve_secret else None
        front = ZmqFrontEnd(
            models, endpoint=settings.endpoint, internal_endpoint=f"ipc://{base / 'internal'}",
            max_message_bytes=settings.max_message_bytes, shutdown_grace_s=settings.shutdown_grace_s,
            metrics=metrics, curve=curve,
            status_extras={
                "device": settings.device,
                "batching": {"max_batch_tokens": settings.max_batch_tokens,
                             "max_batch_size": settings.max_batch_size,
                             "max_added_padding": settings.max_added_padding,
                             "batch_wait_ms": settings.batch_wait_ms, "max_queue": settings.max_queue,
                             "parallel_batches": settings.parallel_batches},
            })
        front.start()
        if settings.metrics_port:
            try:
                metrics.serve(settings.bind, settings.metrics_port)
            except OSError as exc:
                raise StartupError(f"cannot serve metrics on {settings.metrics_address}: {exc.strerror}") from None
        # Other front ends (each speaks another protocol) run beside the ZeroMQ one in this process and reach
        # the same cores through ``front.internal_endpoint``; each has start() and stop().
        if settings.http_port:
            from .frontends.http_gateway import HttpGateway

            adapters.append(HttpGateway(front.bridge, bind=settings.bind, port=settings.http_port,
                                        models={name: model.artifact for name, model in models.items()},
                                        api_key=settings.http_api_key,
                                        max_message_bytes=settings.max_message_bytes,
                                        max_texts_per_request=settings.max_texts_per_request,
                                        request_timeout_s=settings.request_timeout_s))
        if settings.bert_port:
            from .frontends.bert import BertAdapter

            adapters.append(BertAdapter(front.internal_endpoint, metrics.for_model(next(iter(models))),
                                        bind=settings.bind,
                                        port=settings.bert_port, port_out=settings.bert_port_out,
                                        max_message_bytes=settings.max_message_bytes,
                                        request_timeout_s=settings.request_timeout_s,
                                        beside_curve=settings.curve_secret is not None))
        started = []
        try:
            for adapter in adapters:
                adapter.start()
                started.append(adapter)
        except BaseException:
            for adapter in reversed(started):
                adapter.stop()
            raise
    except BaseException:
        if front is not None:
            front.close()
        else:
            for model in models.values():
                model.close()
        metrics.close()
        sockdir.cleanup()
        raise
    return front, adapters, sockdir
