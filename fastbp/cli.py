"""The ``fastbp`` command line."""
import argparse
import json
import platform
import sys

from fastbp import benchmark


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one line and exit status 2."""

    def error(self, message):
        self.exit(2, f"fastbp: error: {message}\n")


def _sizes(text):
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths such as 784,128,10, got {text!r}")
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected at least two widths, each >= 1, got {text!r}")
    return sizes


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _bench(args, parser):
    unknown = [name for name in args.config if name not in benchmark.CONFIGS]
    if unknown:
        parser.error(f"unknown config {unknown[0]!r}; valid names: {', '.join(benchmark.CONFIGS)}")
    configs = [benchmark.CONFIGS[name] for name in args.config or benchmark.CONFIGS]
    if args.sizes:
        configs = [benchmark.Config("custom", args.sizes, args.batch or 64)]
    for config in configs:
        try:
            benchmark.check_fits_in_memory(config)
        except MemoryError as error:
            print(f"fastbp: error: {error}", file=sys.stderr)
            return 2
    if not benchmark.torch_available():
        print("note: torch is not installed, so only fastbp is timed (pip install 'fastbp[torch]')")
    ceiling = benchmark.sgemm_ceiling()
    print(f"sgemm ceiling: {ceiling:.1f} GFLOP/s on {platform.processor() or platform.machine()}")
    rows = []
    for config in configs:
        for optimizer in args.optimizer or benchmark.OPTIMIZERS:
            rows.append(benchmark.measure(config, optimizer, repeats=args.repeats, ceiling=ceiling,
                                          torch_compile=args.torch_compile))
            if not args.quiet:
                print(benchmark.format_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(benchmark.format_table(rows))
    result = {"ceiling_gflops": ceiling, "rows": rows}
    if args.startup:
        result["startup"] = benchmark.measure_startup()
        print(f"\nstartup to first step: cold cache {result['startup']['cold_s']:.2f} s, "
              f"warm cache {result['startup']['warm_s']:.2f} s")
    with open(args.json, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"\nwrote {args.json}")
    if benchmark.plot(rows, args.png):
        print(f"wrote {args.png}")
    else:
        print(f"skipped {args.png}: matplotlib is not installed (pip install 'fastbp[plot]')")
    return 0


def build_parser():
    parser = _Parser(prog="fastbp", description="JIT-compiled MLP training, checked against PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    bench = commands.add_parser("bench", help="time training steps against torch eager")
    bench.add_argument("--config", action="append", default=[], metavar="NAME",
                       help=f"a config to run (repeatable): {', '.join(benchmark.CONFIGS)}; default all")
    bench.add_argument("--optimizer", action="append", choices=benchmark.OPTIMIZERS,
                       help="sgd or adam (repeatable); default both")
    bench.add_argument("--sizes", type=_sizes, help="a custom config's layer widths, e.g. 784,128,10")
    bench.add_argument("--batch", type=_positive, help="the custom config's batch size (default 64)")
    bench.add_argument("--repeats", type=_positive, default=3, help="timed runs per framework (best counts)")
    bench.add_argument("--torch-compile", action="store_true",
                       help="also time torch.compile (tens of seconds of compilation per config)")
    bench.add_argument("--startup", action="store_true", help="also time cold and warm start in subprocesses")
    bench.add_argument("--json", default="fastbp-bench.json", help="where to write the results")
    bench.add_argument("--png", default="fastbp-bench.png", help="where to write the bar chart")
    bench.add_argument("--quiet", action="store_true", help="print only the final table")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench(args, parser)
    return 2


if __name__ == "__main__":
    sys.exit(main())
