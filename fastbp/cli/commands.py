"""The ``train``, ``predict``, ``export`` and ``check`` commands, from
parsed arguments to the modules that run them; each returns the exit
status. A command's modules are imported when it runs, so that one command
does not load the others'."""
import sys


def train(args, parser):
    from fastbp.cli.settings import DEFAULTS
    from fastbp.cli.training import train

    given = {name: getattr(args, name) for name in DEFAULTS}
    return train(given, resume=args.resume, save=args.save, plot=args.plot, quiet=args.quiet,
                 threads=args.threads, save_every=args.save_every, overwrite=args.overwrite,
                 device=args.device, distributed=args.distributed, checkpoint_every=args.checkpoint_every)


def predict(args, parser):
    from fastbp.cli.predict import predict

    return predict(args.model, args.data, target=args.target, out_path=args.out,
                   unknown_category=args.unknown_category, overwrite=args.overwrite,
                   keep=args.keep_columns, proba=args.proba)


def export(args, parser):
    from fastbp.cli.export import export

    return export(args.model, args.onnx, overwrite=args.overwrite)


def require_device(device):
    """None where ``device`` can run kernels here, else exit status 2 after
    one line on stderr naming what is missing (numba-cuda or a GPU)."""
    from fastbp.backends.cuda import as_device

    try:
        as_device("--device", device)
    except RuntimeError as error:
        print(f"fastbp: error: --device {device}: {error}", file=sys.stderr)
        return 2
    return None


def check(args, parser):
    from fastbp.cli import check

    refused = require_device(args.device)
    if refused:
        return refused
    try:
        results = check.rows(args.device)
    except ImportError as error:
        print(f"fastbp: error: {error}", file=sys.stderr)
        return 2
    text, passed = check.report(results)
    print(text)
    print("all kernels agree with torch" if passed else "MISS: some kernels disagree with torch beyond the limit")
    return 0 if passed else 1
