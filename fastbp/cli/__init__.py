"""The ``fastbp`` command line: train, predict, export, check, bench.

``arguments`` parses; ``commands`` (and ``bench.command``) run each command:
``settings``, ``prepare``, ``model``, ``progress`` and ``training`` make a
training run, ``predict`` a prediction, ``export`` an ONNX file, ``safety``
guards the files they write, ``check`` compares the kernels with torch, and
``bench`` times them.
None of it is imported by ``import fastbp``.
"""
import sys

from fastbp import data
from fastbp.cli import commands
from fastbp.cli.arguments import build_parser
from fastbp.cli.bench.command import bench

COMMANDS = {"train": commands.train, "predict": commands.predict, "export": commands.export, "check": commands.check,
            "bench": bench}


def main(argv=None):
    """The console command: runs the command ``argv`` (default: sys.argv) asks for; returns its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        print(f"fastbp: error: choose a command: {', '.join(list(COMMANDS)[:-1])} or {list(COMMANDS)[-1]}",
              file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](args, parser)
    except data.DataError as error:
        print(f"fastbp: error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"fastbp: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fastbp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (e.g. head) stopped listening: not an error worth a traceback
        sys.stdout = None
        return 1

