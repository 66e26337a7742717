"""``zeroembed embed``: a corpus in, Parquet shards of vectors out (docs/bulk.md).

Only argparse is imported at load time, so ``zeroembed --help`` works without
the extras; pyarrow, the server's runtime and Ray are imported when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_PROG = "zeroembed embed"
LOCAL_RAY = "local"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``embed`` subcommand."""
    parser = subparsers.add_parser(
        "embed", help="embed a corpus into Parquet shards (one machine, or a Ray cluster)",
        description="Embed every row of the inputs (JSON Lines, CSV, Parquet, plain text; files, directories or "
                    "globs) into Parquet shards of id, embedding and num_tokens, plus manifest.json. Re-running "
                    "the same command resumes: complete shards are kept, the rest is done again.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories or glob patterns")
    parser.add_argument("--out", type=Path, required=True, help="output folder (made if missing)")
    parser.add_argument("--model", type=Path, default=None,
                        help="artifact directory from `zeroembed export` (default: the embedded all-MiniLM-L6-v2, "
                             "as `zeroembed serve` uses)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the default model is exported on first use (default ~/.cache/zeroembed)")
    parser.add_argument("--text-column", default="text", help="column holding the texts (default text)")
    parser.add_argument("--id-column", default=None,
                        help="column holding unique ids (default id when present; without one, a row's id is its "
                             "position across the inputs, from 0)")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt-name", default=None, metavar="NAME",
                        help="one of the model's named prompts (e.g. query), put before every text; without it "
                             "or --prompt, the model's default prompt if it has one (as the server does)")
    prompt.add_argument("--prompt", default=None, metavar="TEXT", help="a literal prompt put before every text")
    parser.add_argument("--dimensions", type=int, default=None, metavar="N",
                        help="Matryoshka: keep the first N dimensions of each vector (re-normalized when the "
                             "model normalizes)")
    parser.add_argument("--rows-per-shard", type=int, default=None,
                        help="rows per output shard, the unit of resuming (default 10000)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the vectors of another job (other model or inputs) in --out")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run (default auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no summary line")
    local = parser.add_argument_group("embedded engine (the default)")
    local.add_argument("--workers", type=int, default=0, help="worker processes (default: the server's, per device)")
    local.add_argument("--threads-per-worker", type=int, default=0, help="ONNX Runtime threads per worker")
    local.add_argument("--batch-size", type=int, default=0, help="texts per batch at most (default: per device)")
    ray = parser.add_argument_group("Ray engine (pip install 'zeroembed[ray]')")
    ray.add_argument("--ray", nargs="?", const=LOCAL_RAY, default=None, metavar="ADDRESS",
                     help="run on Ray Data: with no ADDRESS (or `local`) a local Ray, else join that cluster "
                          "(e.g. auto, ray://head:10001); put it after the inputs")
    ray.add_argument("--ray-actors", type=int, default=0,
                     help="model actors (default: one per GPU on CUDA, one per CPU otherwise)")
    ray.add_argument("--ray-batch-size", type=int, default=0,
                     help="rows per Ray batch handed to an actor (default 256 on CPU, 1024 on CUDA)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the job; 0 when every shard is complete, 1 on a failure while embedding, 2 on bad input or setup."""
    try:
        from zeroembed.server.artifact import ArtifactError, open_artifact
        from zeroembed.server.config import cuda_available
        from zeroembed.server.default_model import default_artifact

        from .errors import BulkError, EngineError
        from .inputs import Columns
        from .job import DEFAULT_ROWS_PER_SHARD, JobSpec, check_inputs, run_job
    except ImportError as exc:
        print(f"{_PROG}: error: a needed package is missing ({exc}); install `pip install 'zeroembed[server]'` "
              "and pyarrow", file=sys.stderr)
        return 2
    if args.ray not in (None, LOCAL_RAY) and Path(args.ray).exists():
        # `--ray corpus.jsonl --out v`: argparse gave the input to --ray as its address.
        print(f"{_PROG}: error: --ray took {args.ray!r}, a file, as the Ray address; write the inputs before "
              f"--ray, or --ray {LOCAL_RAY} for a local Ray", file=sys.stderr)
        return 2
    if args.ray is not None:
        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError:
            print(f"{_PROG}: error: --ray needs Ray Data, which is not installed; install it with "
                  "`pip install 'zeroembed[ray]'`", file=sys.stderr)
            return 2
    columns = Columns(text=args.text_column, id=args.id_column or "id", id_required=args.id_column is not None)
    spec = JobSpec(inputs=args.inputs, out=args.out, columns=columns,
                   rows_per_shard=args.rows_per_shard or DEFAULT_ROWS_PER_SHARD, overwrite=args.overwrite,
                   quiet=args.quiet, prompt_name=args.prompt_name, prompt=args.prompt, dimensions=args.dimensions)
    try:
        corpus = check_inputs(spec)  # before the model: a bad input fails in seconds, not after an export
        device = args.device if args.device != "auto" else ("cuda" if cuda_available() else "cpu")
        if args.model is not None:
            artifact = open_artifact(args.model)
        else:
            from zeroembed.server.config import Settings

            cache_dir = args.cache_dir or Settings.model_fields["cache_dir"].default_factory()
            progress = (lambda line: None) if args.quiet else (lambda line: print(f"{_PROG}: {line}", file=sys.stderr))
            artifact = open_artifact(default_artifact(cache_dir, device, progress=progress))
        _check_int8(artifact, device)
        engine = _engine(args, artifact, device)
        summary = run_job(spec, artifact, engine, corpus=corpus)
    except (BulkError, ArtifactError) as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, EngineError) else 2
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted; complete shards are kept: run the same command again to resume",
              file=sys.stderr)
        return 130
    if not args.quiet:
        print(summary.line(), file=sys.stderr)
    return 0


def _check_int8(artifact, device: str) -> None:
    """Refuse an int8 artifact this CPU's int8 kernel would spoil, as the server does (a Ray actor checks its
    own machine again); print the warning for an older manifest that does not say."""
    from zeroembed.server.errors import StartupError
    from zeroembed.server.workers.int8_kernel import check_int8_here

    from .errors import BulkError

    try:
        warning = check_int8_here(artifact.name, artifact.manifest, device)
    except StartupError as exc:
        raise BulkError(str(exc)) from None
    if warning:
        print(f"{_PROG}: warning: {warning}", file=sys.stderr)


def _engine(args: argparse.Namespace, artifact, device: str):
    if args.ray is not None:
        from .ray_engine import RayEngine, RayOptions

        return RayEngine(artifact, RayOptions(address=None if args.ray == LOCAL_RAY else args.ray, device=device,
                                              actors=args.ray_actors, batch_size=args.ray_batch_size))
    from .embedded import EmbeddedEngine, EmbeddedOptions

    return EmbeddedEngine(artifact, EmbeddedOptions(device=device, workers=args.workers,
                                                    threads_per_worker=args.threads_per_worker,
                                                    batch_size=args.batch_size))
