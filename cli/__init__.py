"""The ``zeroembed`` command line: one entry point, one subcommand per job.

Each subcommand lives with the package it drives (``zeroembed.export.cli``,
``zeroembed.server.cli``, ...). Those modules import only ``argparse`` at load
time, so ``zeroembed --help`` works whatever extras are installed; heavy
imports happen when a subcommand actually runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

# subcommand -> module exposing ``register(subparsers)``; registration sets ``handler``.
_COMMANDS: dict[str, str] = {
    "export": "zeroembed.export.cli",
    "serve": "zeroembed.server.cli",
    "embed": "zeroembed.bulk.cli",
    "bench": "zeroembed.benchmarks.cli",
    "keys": "zeroembed.client.keys",
    "status": "zeroembed.client.status",
}


def _version() -> str:
    try:
        return version("zeroembed")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="zeroembed", description="Sentence embeddings: export a model, serve it, load-test it."
    )
    parser.add_argument("--version", action="version", version=f"zeroembed {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMANDS.values():
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and return its exit code."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
