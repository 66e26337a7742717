"""``zeroembed bench``: load-test running servers, or ``--compare`` the serving paths side by side.

Only argparse is imported at load time; the load generator, tqdm, matplotlib,
torch and ONNX Runtime are imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys


def _int_list(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {value!r}")
    return out


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return n


def _positive_float(value: str) -> float:
    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return x


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    p = subparsers.add_parser(
        "bench", help="load-test a running server, or compare serving paths (--compare)",
        description="Drive running zeroembed servers with concurrent clients and report throughput, latency "
                    "percentiles, errors and the server's own batch statistics (from its Prometheus metrics). "
                    "With --compare: sentence-transformers, in-process ONNX Runtime, the server and int8, side "
                    "by side in one run.",
    )
    load = p.add_argument_group("load test")
    load.add_argument("--endpoint", action="append", metavar="ENDPOINT",
                      help="server endpoint; repeat for several (default tcp://127.0.0.1:5555)")
    load.add_argument("--concurrency", type=_int_list, default=[8], metavar="N[,N...]",
                      help="concurrent clients; a list sweeps (e.g. 1,8,32) (default 8)")
    load.add_argument("--batch-size", default="8", metavar="N|N:W,...",
                      help="texts per request, or a distribution of sizes with weights, e.g. 1:50,8:30,64:20 "
                           "(default 8)")
    bound = load.add_mutually_exclusive_group()
    bound.add_argument("--requests", type=_positive_int, help="requests per run (all clients together)")
    bound.add_argument("--duration", type=_positive_float, help="seconds per run (default 10)")
    load.add_argument("--warmup", type=int, default=None, metavar="N",
                      help="requests sent before each run, not measured (default: 2 × concurrency)")
    load.add_argument("--timeout", type=_positive_float, default=30.0, help="client timeout per request, s")
    load.add_argument("--processes", type=_positive_int, default=1,
                      help="load-generator processes the clients are spread over (default 1: asyncio)")
    load.add_argument("--metrics-url", action="append", metavar="URL",
                      help="server Prometheus endpoint; repeat per server (default: http://HOST:9100/metrics "
                           "for each endpoint's host)")
    load.add_argument("--no-metrics", action="store_true", help="do not scrape server metrics")
    load.add_argument("--tokenizer-from", metavar="ARTIFACT_DIR",
                      help="count tokens client side with this artifact's tokenizer (default: the server's "
                           "model directory when readable from here, else the server's metrics)")
    common = p.add_argument_group("corpus and output")
    common.add_argument("--texts", type=_positive_int, default=None,
                        help="corpus size (default 2000 for a load test; 400 for --compare, 24 with --quick)")
    common.add_argument("--seed", type=int, default=None, help="corpus seed (default: the documented one)")
    common.add_argument("--json", metavar="FILE", help="write the results as JSON")
    common.add_argument("--plot", metavar="FILE.png", help="plot texts/s and p99 against concurrency")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    cmp = p.add_argument_group("compare (--compare)")
    cmp.add_argument("--compare", action="store_true",
                     help="in-process PyTorch and ORT, the server (own subprocess) and int8, side by side")
    cmp.add_argument("--artifact", metavar="DIR",
                     help="fp32 artifact (default: the default model, exported into the cache like `serve`)")
    cmp.add_argument("--int8-artifact", metavar="DIR",
                     help="int8 artifact (default: exported into the cache with `--precision int8`)")
    cmp.add_argument("--quick", action="store_true", help="a tiny compare, for tests")
    cmp.add_argument("--server-args", metavar="'FLAGS'",
                     help="extra `zeroembed serve` flags for the compare's server, e.g. '--workers 2'")
    cmp.add_argument("--st-batch-sizes", metavar="N,N", help="sentence-transformers batch sizes to try")
    cmp.add_argument("--ort-batch-sizes", metavar="N,N", help="in-process ORT batch sizes to try")
    cmp.add_argument("--compare-concurrency", metavar="N,N", help="server concurrencies (default 1,8,32)")
    cmp.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                     help="where every row runs (default cpu); cuda wants an fp16 artifact and reports no targets")
    cmp.add_argument("--peers", action="store_true",
                     help="add the peers under the same load: zeroembed's own HTTP route, infinity-emb (torch and "
                          "ONNX engines, HTTP) and fastembed (in process), from their own environment "
                          "(bash benchmarks/peers/setup.sh); docs/benchmarks.md")
    cmp.add_argument("--peers-venv", metavar="DIR",
                     help="the peers' environment (default $ZEROEMBED_PEERS_VENV, else ~/.cache/zeroembed/peers-venv)")
    cmp.add_argument("--served-int8", action="store_true",
                     help="a second server on the int8 artifact, its 8 clients × 8 texts in the interleaved rounds")
    cmp.add_argument("--rounds", type=int, default=None, metavar="N",
                     help="interleaved rounds of the headline rows the targets are judged on "
                          "(default 5 on CPU, 3 on CUDA; 0 = none)")
    p.set_defaults(handler=run, _bench_parser=p)


def command_line(args: argparse.Namespace) -> list[str]:
    """The ``bench`` arguments that reproduce ``args`` (from the parsed values, not ``sys.argv``, so it
    is right however ``main`` was called)."""
    parser = getattr(args, "_bench_parser", None)
    out = ["bench"]
    if parser is None:
        return out
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, None)
        if value is None or value == action.default or value is False:
            continue
        flag = action.option_strings[-1] if action.option_strings[-1].startswith("--") else action.option_strings[0]
        if value is True:
            out.append(flag)
        elif isinstance(value, list) and action.type is _int_list:
            out += [flag, ",".join(map(str, value))]
        elif isinstance(value, list):
            for item in value:
                out += [flag, str(item)]
        else:
            out += [flag, str(value)]
    return out


def run(args: argparse.Namespace) -> int:
    try:
        from .corpus import DEFAULT_SEED
    except ImportError as exc:  # pragma: no cover - the package itself is broken
        print(f"zeroembed bench: error: {exc}", file=sys.stderr)
        return 2
    args.argv = command_line(args)
    if args.seed is None:
        args.seed = DEFAULT_SEED
    if args.compare:
        from . import compare

        return compare.run(args)
    return run_load_test(args)


def run_load_test(args: argparse.Namespace) -> int:
    from .corpus import make_corpus, token_lengths
    from .load import LoadConfig, SizeDist, run_load
    from .report import environment, load_report, plot_sweep, write_json
    from .scrape import default_metrics_url

    try:
        from zeroembed.client import Client, ZeroEmbedError
    except ImportError as exc:
        print(f"zeroembed bench: error: the client is not installed ({exc})", file=sys.stderr)
        return 2
    endpoints = args.endpoint or ["tcp://127.0.0.1:5555"]
    try:
        sizes = SizeDist.parse(args.batch_size)
    except ValueError as exc:
        print(f"zeroembed bench: error: {exc}", file=sys.stderr)
        return 2
    if args.requests is None and args.duration is None:
        args.duration = 10.0
    metrics_urls = [] if args.no_metrics else (args.metrics_url or [default_metrics_url(e) for e in endpoints])

    # Is anybody there? One status call per endpoint: fail early with a message, not 30 s timeouts.
    model_dir = args.tokenizer_from
    for endpoint in endpoints:
        try:
            with Client(endpoint, timeout=min(args.timeout, 10.0)) as client:
                status = client.status()
        except ZeroEmbedError as exc:
            print(f"zeroembed bench: error: no server answers at {endpoint}: {exc}", file=sys.stderr)
            return 2
        if model_dir is None:
            model_dir = (status.get("model") or {}).get("path")

    texts = make_corpus(args.texts or 2000, args.seed)
    counts = token_lengths(texts, model_dir) if model_dir else None
    env = environment(args.argv)
    runs = []
    for conc in args.concurrency:
        cfg = LoadConfig(endpoints=endpoints, concurrency=conc, sizes=sizes, requests=args.requests,
                         duration=args.duration, timeout=args.timeout,
                         warmup=2 * conc if args.warmup is None else args.warmup, processes=args.processes,
                         seed=args.seed, metrics_urls=metrics_urls, progress=not args.no_progress,
                         label=f"c={conc}")
        runs.append(run_load(cfg, texts, counts))
    env["loadavg_end"] = _loadavg()
    print(f"zeroembed bench — {env['date']}, {env['cores']} cores ({env['cpu']}), commit {env['commit']}")
    print(f"endpoints {', '.join(endpoints)}; corpus {len(texts)} texts (seed {args.seed}); "
          + (f"{args.requests} requests per run" if args.requests else f"{args.duration:g} s per run"))
    print(load_report(runs), flush=True)
    if args.json:
        write_json(args.json, {"environment": env, "runs": runs})
    if args.plot:
        if len(runs) < 2:
            print("note: --plot draws against concurrency; one run makes a single point", file=sys.stderr)
        plot_sweep(runs, args.plot)
    return 1 if any(r["ok_requests"] == 0 for r in runs) else 0


def _loadavg():
    from .report import load_average

    return load_average()
