"""Benchmark harness: ``python -m benchmarks {throughput,sweep,tune,aimd,memory,instructions,costs} [options]``."""

from __future__ import annotations

import argparse
import shlex
import sys

from benchmarks.loadtest import LoadOptions
from benchmarks.throughput import Options, run_throughput
from clipper import cmdline


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _batch_sizes(text: str) -> list[int]:
    from benchmarks.serving import parse_batch_sizes

    try:
        return parse_batch_sizes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _env(items: list[tuple[str, str]]) -> dict[str, str]:
    return dict(items)


def _load_args(p: argparse.ArgumentParser, search: bool) -> None:
    d = LoadOptions()
    p.add_argument("--duration", type=cmdline.positive_float, default=d.duration, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=d.warmup, help="unmeasured seconds before each point")
    p.add_argument("--pool", type=cmdline.positive_int, default=d.connections,
                   help="open loop: keep-alive connections of the client")
    p.add_argument("--max-default-ratio", type=float, default=d.max_default_ratio,
                   help="a point meets the SLO with at most this share of default answers")
    p.add_argument("--input-size", type=cmdline.positive_int, default=d.input_size, help="doubles per input")
    if search:
        p.add_argument("--start-rate", type=float, default=d.start_rate,
                       help="capacity search: first rate")
        p.add_argument("--max-rate", type=float, default=d.max_rate, help="capacity search: highest rate")
        p.add_argument("--growth", type=float, default=d.growth, help="capacity search: rate factor")
        p.add_argument("--refine", type=int, default=d.refine, help="capacity search: bisection steps")
        p.add_argument("--retries", type=int, default=d.retries,
                       help="capacity search: tries more before a rate counts as failed")


def _load(a: argparse.Namespace) -> LoadOptions:
    d = LoadOptions()
    return LoadOptions(duration=a.duration, warmup=a.warmup, connections=a.pool, max_default_ratio=a.max_default_ratio,
                       input_size=a.input_size, start_rate=getattr(a, "start_rate", d.start_rate),
                       max_rate=getattr(a, "max_rate", d.max_rate), growth=getattr(a, "growth", d.growth),
                       refine=getattr(a, "refine", d.refine), retries=getattr(a, "retries", d.retries))


def _serve_args(p: argparse.ArgumentParser, predict_default: str | None) -> None:
    p.add_argument("--predict", default=predict_default, required=predict_default is None,
                   help="model function, module:fn")
    p.add_argument("--env", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="environment of the model containers (repeatable)")
    p.add_argument("--input-type", type=cmdline.input_type, choices=cmdline.INPUT_TYPES, default="doubles",
                   help="app and model input type (load sends doubles)")


def _add_subcommands(sub: argparse._SubParsersAction) -> None:
    from benchmarks.sweeps import SLEEP

    sw = sub.add_parser("sweep", help="latency vs throughput over rates (open loop) or connections (closed loop), "
                                      "for batch sizes x batch waits x SLOs")
    _serve_args(sw, SLEEP)
    sw.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 32, -1], help="e.g. 1,32,a (a: adaptive)")
    sw.add_argument("--batch-waits-us", type=_ints, default=[0], help="e.g. 0,500")
    sw.add_argument("--slos-ms", type=_floats, default=[20.0], help="e.g. 20,50")
    sw.add_argument("--rates", type=_floats, default=None, help="open-loop Poisson rates, e.g. 1000,5000,10000")
    sw.add_argument("--connections", type=_ints, default=None, help="closed loop (wrk) instead: e.g. 16,64,256")
    _load_args(sw, search=False)

    tu = sub.add_parser("tune", help="for a model and an SLO: best batch settings, 1 vs 2 replicas")
    _serve_args(tu, None)
    tu.add_argument("--slo-ms", type=cmdline.positive_float, required=True, help="latency objective, ms")
    tu.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 8, 32, 128, -1],
                    help="e.g. 1,8,32,128,a (a: adaptive)")
    tu.add_argument("--batch-waits-us", type=_ints, default=[0], help="e.g. 0,500")
    tu.add_argument("--replicas", type=_ints, default=[1, 2], help="replica counts to try, e.g. 1,2")
    tu.add_argument("--target-rate", type=float, default=None, help="req/s to size the replica count for")
    _load_args(tu, search=True)

    ai = sub.add_parser("aimd", help="AIMD vs the best fixed batch size on sleep (fixed + per-item cost)")
    ai.add_argument("--slo-ms", type=cmdline.positive_float, default=20.0, help="latency objective, ms")
    ai.add_argument("--fixed-ms", type=float, default=1.0, help="model cost per batch")
    ai.add_argument("--per-item-us", type=float, default=20.0, help="model cost per item")
    ai.add_argument("--batch-sizes", type=_batch_sizes, default=[8, 32, 128, 256, 512],
                    help="fixed batch sizes to compare")
    ai.add_argument("--load-fraction", type=float, default=0.8, help="open-loop check at this share of AIMD's capacity")
    ai.add_argument("--check-duration", type=float, default=10.0, help="seconds of the open-loop check")
    _load_args(ai, search=True)

    ins = sub.add_parser("instructions", help="instructions per request of each process (valgrind's callgrind): "
                                              "floor vs pipeline, a figure that does not move with the machine's load")
    ins.add_argument("--requests", type=cmdline.positive_int, default=2000, help="measured requests per point")
    ins.add_argument("--warmup", type=cmdline.positive_int, default=300, help="requests before the counters are zeroed")
    ins.add_argument("--connections", type=_ints, default=[1, 64], help="connection counts, e.g. 1,64")
    ins.add_argument("--ready-timeout", type=cmdline.positive_float, default=300.0,
                     help="seconds to wait for the servers under valgrind")

    me = sub.add_parser("memory", help="query frontend RSS over a steady full-load run (wrk, no-op model)")
    me.add_argument("--duration", type=cmdline.positive_int, default=60, help="seconds (e.g. 600)")
    me.add_argument("--interval", type=cmdline.positive_float, default=5.0, help="seconds between RSS samples")
    me.add_argument("--connections", type=cmdline.positive_int, default=64, help="wrk connections")
    me.add_argument("--predict", default="clipper.model_runtime.models:noop", help="model function, module:fn")

    _costs_args(sub.add_parser("costs", help="how cost grows: input size, apps, replicas, connections (issue #19)"))


def _costs_args(co: argparse.ArgumentParser) -> None:
    from benchmarks.costs import DEFAULT_CONNECTIONS, DEFAULT_POINTS, CostOptions

    d = CostOptions("size")
    curves = co.add_subparsers(dest="curve", metavar="CURVE", required=True)
    helps = {"size": "input size: doubles and bytes inputs, floor vs. pipeline, CPU per request and per KB",
             "apps": "1, 100, 1000 apps (Redis + management frontend): req/s, p99, RSS, add_app -> served time",
             "replicas": "1, 2, 4, 8 replicas of a model whose batch sleeps 1 ms: where throughput stops scaling",
             "connections": "1 to 10,000 keep-alive connections: req/s, p99, the frontend's RSS per connection"}
    for curve, text in helps.items():
        p = curves.add_parser(curve, help=text)
        points = DEFAULT_POINTS[curve][0]
        p.add_argument("--duration", type=cmdline.positive_float, default=d.duration, help="measured seconds per point")
        p.add_argument("--warmup", type=float, default=d.warmup, help="unmeasured seconds before each point")
        p.add_argument("--quick", action="store_true",
                       help="smoke test: 1 s points, no warm-up, fewer points (lists given here still win)")
        p.add_argument("--ready-timeout", type=cmdline.positive_float, default=d.ready_timeout,
                       help="seconds to wait for the processes to serve")
        p.add_argument("--wrk-timeout", type=cmdline.positive_int, default=d.wrk_timeout,
                       help="wrk's per-request timeout, seconds")
        if curve == "connections":
            p.add_argument("--connections", dest="levels", type=_ints, default=None,
                           help=f"wrk connection counts (default {_csv(points['levels'])})")
            continue
        p.add_argument("--connections", type=cmdline.positive_int, default=None,
                       help=f"wrk connections (default {DEFAULT_CONNECTIONS[curve]})")
        if curve == "size":
            p.add_argument("--doubles", type=_ints, default=None,
                           help=f"values per doubles input (default {_csv(points['doubles'])}; empty: none)")
            p.add_argument("--bytes", dest="byte_sizes", type=_ints, default=None,
                           help=f"bytes per bytes input (default {_csv(points['byte_sizes'])}; empty: none)")
        elif curve == "apps":
            p.add_argument("--apps", type=_ints, default=None, help=f"app counts (default {_csv(points['apps'])})")
            p.add_argument("--served", type=cmdline.positive_int, default=d.served,
                           help="apps whose models get a container (the load goes to them)")
            p.add_argument("--changes", type=int, default=d.changes, help="add_app propagation times to measure")
        else:
            p.add_argument("--replicas", type=_ints, default=None,
                           help=f"replica counts (default {_csv(points['replicas'])})")
            p.add_argument("--batch-sizes", type=_batch_sizes, default=d.batch_sizes,
                           help="batch sizes of the model (a: adaptive)")
            p.add_argument("--fixed-ms", type=cmdline.positive_float, default=d.fixed_ms,
                           help="the model's cost per batch, ms")


def _csv(values: list[int]) -> str:
    return ",".join(str(v) for v in values)


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from benchmarks import costs, instructions, memory, sweeps

    if args.command == "costs":
        fields = {k: v for k, v in vars(args).items() if k != "command"}
        return costs.run_costs(costs.CostOptions(**fields))
    if args.command == "sweep":
        if (args.rates is None) == (args.connections is None):
            parser.error("sweep: give exactly one of --rates (open loop) or --connections (closed loop)")
        serve = sweeps.ServeOptions(args.predict, _env(args.env), args.input_type)
        return sweeps.run_sweep(sweeps.SweepOptions(args.batch_sizes, args.batch_waits_us, args.slos_ms,
                                                    args.rates or [], args.connections or [], _load(args), serve))
    if args.command == "tune":
        serve = sweeps.ServeOptions(args.predict, _env(args.env), args.input_type)
        return sweeps.run_tune(sweeps.TuneOptions(args.slo_ms, args.batch_sizes, args.batch_waits_us, args.replicas,
                                                  args.target_rate, _load(args), serve))
    if args.command == "aimd":
        return sweeps.run_aimd(sweeps.AimdOptions(args.slo_ms, args.fixed_ms, args.per_item_us, args.batch_sizes,
                                                  args.load_fraction, args.check_duration, load=_load(args)))
    if args.command == "instructions":
        return instructions.run_instructions(instructions.InstructionsOptions(
            args.requests, args.warmup, args.connections, args.ready_timeout))
    return memory.run_memory(memory.MemoryOptions(args.duration, args.interval, args.connections, args.predict))


def build_parser() -> argparse.ArgumentParser:
    """``python -m benchmarks``'s parser (every option's help shows its default)."""
    parser = cmdline.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    tp = sub.add_parser(
        "throughput",
        help="predict req/s and p50/p99: floor server vs. full pipeline (no-op model)",
    )
    d = Options()
    tp.add_argument(
        "--connections",
        type=int,
        default=d.connections,
        help="wrk connections",
    )
    tp.add_argument(
        "--duration",
        type=int,
        default=d.duration,
        help="measured run, seconds",
    )
    tp.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="wrk threads",
    )
    tp.add_argument(
        "--warmup",
        type=int,
        default=d.warmup,
        help="warm-up run, seconds; 0 to skip",
    )
    tp.add_argument(
        "--cache",
        action="store_true",
        help="repeat one fixed input (cache hits) instead of unique inputs",
    )
    tp.add_argument(
        "--pipeline",
        choices=["clipper", "floor"],
        default=d.pipeline,
        help="what to measure as the pipeline; 'floor' tests the harness alone",
    )
    tp.add_argument(
        "--app", default=d.app, help="application name"
    )
    tp.add_argument(
        "--workers", type=int, default=d.workers,
        help="query frontend processes (--workers of the frontend)",
    )
    tp.add_argument(
        "--container-command", default=None, metavar="COMMAND LINE",
        help="run this model container program (split like a shell would) in place of the Python no-op; it gets "
             "CLIPPER_MODEL_NAME=noop, CLIPPER_MODEL_VERSION=1, CLIPPER_INPUT_TYPE=doubles, CLIPPER_IP, CLIPPER_PORT",
    )
    tp.add_argument(
        "--no-spin", dest="spin", action="store_false",
        help="start the frontend with --no-spin and the Python container with CLIPPER_SPIN=0 (no low-load poll)",
    )
    tp.add_argument(
        "--ready-timeout",
        type=float,
        default=d.ready_timeout,
        help="seconds to wait for a server to answer",
    )
    tp.add_argument(
        "--wrk-timeout",
        type=int,
        default=d.wrk_timeout,
        help="wrk per-request timeout, seconds",
    )
    _add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "throughput":
        return _dispatch(args, parser)
    if args.duration < 1 or args.warmup < 0 or args.connections < 1 or args.threads < 1 or args.workers < 1:
        parser.error("--duration, --connections, --threads, --workers must be >= 1; --warmup >= 0")
    if args.container_command is not None:
        try:
            if not shlex.split(args.container_command):
                raise ValueError("it is empty")
        except ValueError as e:
            parser.error(f"--container-command: {e}")
        if args.workers != 1:
            parser.error("--container-command runs with --workers 1 (a container gets one CLIPPER_PORT)")
    opts = Options(**{k: v for k, v in vars(args).items() if k != "command"})
    return run_throughput(opts)


if __name__ == "__main__":
    sys.exit(main())
