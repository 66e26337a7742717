"""``zeroembed status``: ask a running server how it is; exit 0 only when it is healthy.

Made for people and for probes (Docker ``HEALTHCHECK``, Kubernetes exec probes).
Client-side only: it imports the client package, never the server. Exit codes:

* ``0`` healthy: the server answered, is accepting work, and has every configured
  worker ready (``workers`` in the status, one entry per configured worker);
* ``1`` down or unhealthy: no reply within ``--timeout`` (one line on stderr), an
  error reply, ``accepting`` false (draining on SIGTERM), or fewer workers ready than
  configured (one is loading or being replaced after a crash);
* ``2`` bad usage (argparse), or key files that cannot be read.

The endpoint defaults to the local server on ``$ZEROEMBED_PORT``, so the variables
that configure ``zeroembed serve`` in a container also point its health check.

The status is printed (to stdout) whenever there is one, healthy or not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def default_endpoint() -> str:
    """``$ZEROEMBED_STATUS_ENDPOINT``, else the local server on ``$ZEROEMBED_PORT`` (5555): the
    variables that configure ``zeroembed serve`` in a container also point its health check."""
    return os.environ.get("ZEROEMBED_STATUS_ENDPOINT") or f"tcp://127.0.0.1:{os.environ.get('ZEROEMBED_PORT') or 5555}"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``status`` subcommand."""
    parser = subparsers.add_parser(
        "status", help="ask a server for its status; exit 1 when it is down or unhealthy",
        description="Print a server's status and exit 0 when it is healthy (answering, accepting work, every "
                    "worker ready), 1 otherwise. Fit for Docker HEALTHCHECK and Kubernetes probes.",
    )
    parser.add_argument("--endpoint", default=None,
                        help="server endpoint (default $ZEROEMBED_STATUS_ENDPOINT, else "
                             "tcp://127.0.0.1:$ZEROEMBED_PORT, else tcp://127.0.0.1:5555)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the reply (default 5)")
    parser.add_argument("--server-key", default=None,
                        help="the server's public server.key, for CurveZMQ (default $ZEROEMBED_STATUS_SERVER_KEY)")
    parser.add_argument("--client-key", default=None,
                        help="this client's client.key_secret, for CurveZMQ (default $ZEROEMBED_STATUS_CLIENT_KEY)")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing when healthy (for probes)")
    parser.set_defaults(handler=run)


def problems(status: dict[str, Any]) -> list[str]:
    """Why ``status`` is unhealthy; empty when it is healthy. With several models (``models``), every
    model's workers must be ready."""
    found = []
    if status.get("accepting") is not True:
        found.append("not accepting requests (shutting down)")
    models = status.get("models")
    models = [m for m in models if isinstance(m, dict)] if isinstance(models, list) and models else [status]
    for model in models:
        prefix = f"model {model.get('name')}: " if len(models) > 1 else ""
        workers = model.get("workers")
        if not isinstance(workers, list) or not workers:
            found.append(f"{prefix}no workers")
        else:
            ready = sum(1 for w in workers if isinstance(w, dict) and w.get("ready"))
            if ready < len(workers):
                found.append(f"{prefix}{ready} of {len(workers)} workers ready")
    return found


def summary(status: dict[str, Any], endpoint: str) -> str:
    """A few lines for a person."""
    model = status.get("model")
    name = model.get("name") if isinstance(model, dict) else model
    workers = status.get("workers") if isinstance(status.get("workers"), list) else []
    ready = sum(1 for w in workers if isinstance(w, dict) and w.get("ready"))
    busy = sum(1 for w in workers if isinstance(w, dict) and w.get("busy"))
    providers = sorted({str(w.get("provider")) for w in workers if isinstance(w, dict) and w.get("provider")})
    lines = [
        f"zeroembed {status.get('version', '?')} at {endpoint} (pid {status.get('pid', '?')})",
        f"  model     {name}{' (default)' if isinstance(status.get('models'), list) and len(status['models']) > 1 else ''}"
        f" · {status.get('task', 'embed')} · dim {status.get('dim', '?')} · {status.get('precision', '?')} · "
        f"max {status.get('max_seq_length', '?')} tokens",
        f"  device    {status.get('device', '?')} · workers {ready}/{len(workers)} ready, {busy} busy"
        + (f" · {', '.join(providers)}" if providers else ""),
        f"  queue     {status.get('queue_depth', '?')} texts queued · "
        f"{status.get('in_flight_requests', '?')} requests in flight",
        f"  uptime    {_duration(status.get('uptime_s'))} · worker restarts {status.get('worker_restarts', '?')}"
        + (" · CurveZMQ" if status.get("curve") else ""),
    ]
    models = status.get("models")
    if isinstance(models, list) and len(models) > 1:
        for entry in models:
            if not isinstance(entry, dict):
                continue
            prompts = entry.get("prompts") or {}
            lines.append(f"  · {entry.get('name')}: {entry.get('task', 'embed')} · dim {entry.get('dim', '?')} · "
                         f"{entry.get('precision', '?')} · {entry.get('queue_depth', '?')} queued"
                         + (f" · prompts {', '.join(sorted(prompts))}" if prompts else ""))
    found = problems(status)
    lines.append(f"  health    {'ok' if not found else 'UNHEALTHY: ' + '; '.join(found)}")
    return "\n".join(lines)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:d}h{minutes:02d}m{secs:02d}s" if hours or days else f"{minutes:d}m{secs:02d}s"
    return f"{days}d {text}" if days else text


def run(args: argparse.Namespace) -> int:
    from . import Client, ServerTimeout, ZeroEmbedError

    args.endpoint = args.endpoint or default_endpoint()
    args.server_key = args.server_key or os.environ.get("ZEROEMBED_STATUS_SERVER_KEY") or None
    args.client_key = args.client_key or os.environ.get("ZEROEMBED_STATUS_CLIENT_KEY") or None
    if not args.timeout > 0:
        print("zeroembed status: error: --timeout must be positive", file=sys.stderr)
        return 2
    try:
        client = Client(args.endpoint, timeout=args.timeout, server_key=args.server_key, client_key=args.client_key)
    except (ZeroEmbedError, ValueError) as exc:  # unreadable key files, a bad endpoint
        print(f"zeroembed status: error: {exc}", file=sys.stderr)
        return 2
    try:
        with client:
            status = client.status()
    except ServerTimeout:
        return _fail(args, f"DOWN: no reply from {args.endpoint} within {args.timeout:g} s")
    except ZeroEmbedError as exc:
        return _fail(args, f"UNHEALTHY: {args.endpoint} answered with an error: {exc}")
    found = problems(status)
    if args.json:
        print(json.dumps({**status, "healthy": not found, "problems": found}, indent=2, sort_keys=True))
    elif found or not args.quiet:
        print(summary(status, args.endpoint))
    return 1 if found else 0


def _fail(args: argparse.Namespace, line: str) -> int:
    """One clear line on stderr (and a JSON verdict on stdout with ``--json``); exit 1."""
    if args.json:
        print(json.dumps({"healthy": False, "problems": [line]}, indent=2))
    print(f"zeroembed status: {line}", file=sys.stderr)
    return 1
