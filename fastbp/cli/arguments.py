"""The ``fastbp`` command line's arguments: the parser of every command and
the argparse types that check each value as it is parsed."""
import argparse
import os

import numpy as np

import fastbp
from fastbp import data
from kernels import isa as kernels_isa
from fastbp.activations import NAMES as ACTIVATIONS
from fastbp.optim import OPTIMIZERS
from fastbp.preprocessing import IMPUTE, UNKNOWN_CATEGORY
from fastbp.cli.bench import harness, runners
from fastbp.cli.settings import CLASSIFY_LOSSES, REGRESS_LOSSES
from fastbp.metrics import CLASSIFY as CLASSIFY_METRICS, REGRESS as REGRESS_METRICS


OVERWRITE = ("replace an existing output file that fastbp did not write (without it, only its own checkpoints, "
             "models, predictions, charts, results and ONNX exports are replaced); an input file is never replaced")


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one line and exit status 2."""

    def error(self, message):
        self.exit(2, f"fastbp: error: {message}\n")


def _widths(text):
    try:
        widths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths such as 128,64, got {text!r}") from None
    if any(width < 1 for width in widths):
        raise argparse.ArgumentTypeError(f"every width must be >= 1, got {text!r}")
    return widths


def _sizes(text):
    sizes = tuple(_widths(text))
    if len(sizes) < 2:
        raise argparse.ArgumentTypeError(f"expected at least two widths (input and output), got {text!r}")
    return sizes


def _number(convert, accept, expected):
    """An argparse type: ``convert(text)``, which ``accept`` must approve."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


def _names(text):
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated column names such as age,city, got {text!r}")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"expected each column once, got {', '.join(map(repr, twice))} more than "
                                         f"once in {text!r}")
    return names


_positive = _number(int, lambda value: value >= 1, "a positive integer")
_non_negative = _number(int, lambda value: value >= 0, "an integer >= 0")
_non_negative_float = _number(float, lambda value: 0 <= value < np.inf, "a finite number >= 0")
# --lr and --max-grad-norm: at rate 0 nothing trains, and the Trainer refuses a clipping norm of 0.
# --momentum takes a _fraction: from 1 on the velocity grows without bound and the run diverges.
_positive_float = _number(float, lambda value: 0 < value < np.inf, "a finite number > 0")
_fraction = _number(float, lambda value: 0 <= value < 1, "a fraction in [0, 1)")


def _batches(text):
    try:
        batches = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a batch size such as 64, or several such as 1,64, got {text!r}") \
            from None
    if not batches or any(batch < 1 for batch in batches):
        raise argparse.ArgumentTypeError(f"every batch must be a positive integer, got {text!r}")
    return batches


def _configs(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in harness.CONFIGS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown config {(unknown or [text])[0]!r}; "
                                         f"valid names: {', '.join(harness.CONFIGS)}")
    return names


def build_parser():
    parser = _Parser(prog="fastbp", description="JIT-compiled MLP training, checked against PyTorch.")
    parser.add_argument("--version", action="version", version=f"fastbp {fastbp.__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    train = commands.add_parser(
        "train", help="train an MLP (default: scikit-learn's handwritten digits)",
        description="Train an MLP on an embedded dataset or a file, report the held-out test metric, and "
                    "optionally save a checkpoint. With no options: digits, 256,128 relu, AdamW, cosine schedule, "
                    "30 epochs.")
    source = train.add_mutually_exclusive_group()
    source.add_argument("--dataset", help=f"an embedded dataset: {', '.join(data.DATASETS)} (default digits)")
    source.add_argument("--data", metavar="PATH", help="a .csv or .parquet file, a .npz (arrays X, y) or a .npy "
                        "of features (memory-mapped)")
    train.add_argument("--target", metavar="COLUMN", help="the CSV's or Parquet file's target column, or the .npy "
                       "file of targets")
    train.add_argument("--features", type=_names, metavar="A,B", help="the feature columns (default: all others)")
    train.add_argument("--impute", choices=IMPUTE, help="fill missing values with the training split's mean, median "
                       "or most frequent value (text columns: most frequent); default: missing values are an error")
    train.add_argument("--unknown-category", choices=UNKNOWN_CATEGORY,
                       help="a category not seen in training: an error (default), or all zeros")
    train.add_argument("--max-categories", type=_positive, metavar="N",
                       help="refuse a text column with more categories than this (default 100)")
    train.add_argument("--sample-weight", metavar="COLUMN",
                       help="the CSV's or Parquet file's column of sample weights (>= 0; 0 leaves the row out): "
                            "each batch's loss, the validation loss and the test metric are weighted means")
    train.add_argument("--class-weight", choices=("balanced",),
                       help="weigh each class n / (n_classes * its count) over the training split, as "
                            "scikit-learn's class_weight='balanced' (cross_entropy)")
    train.add_argument("--task", choices=data.TASKS, help="inferred when not given: string or few integer "
                       f"labels (<= {data.MAX_INFERRED_CLASSES}) classify, anything else regresses")
    train.add_argument("--hidden", type=_widths, metavar="W1,W2", help="hidden layer widths (default 256,128)")
    train.add_argument("--activation", choices=ACTIVATIONS, help="hidden activation (default relu)")
    train.add_argument("--dropout", type=_fraction, metavar="P",
                       help="dropout after each hidden layer, each unit dropped with probability P in training "
                            "(as torch.nn.Dropout; default 0: none)")
    train.add_argument("--norm", choices=("layer",),
                       help="a layer norm (torch.nn.LayerNorm) after each hidden layer's activation (default none)")
    train.add_argument("--residual", action="store_const", const=True,
                       help="a ResNet: each hidden layer a residual block of its width (all --hidden widths equal)")
    train.add_argument("--loss", choices=CLASSIFY_LOSSES + REGRESS_LOSSES,
                       help="default cross_entropy to classify, mse to regress")
    train.add_argument("--optimizer", choices=OPTIMIZERS,
                       help="default adamw; lbfgs: each epoch one L-BFGS iteration over the whole training set "
                            "(no --lr, schedule or batches)")
    train.add_argument("--lr", type=_positive_float, help="learning rate (default 0.01 for sgd, else 0.001)")
    train.add_argument("--momentum", type=_fraction, help="sgd (default 0.9) and rmsprop (default 0)")
    train.add_argument("--weight-decay", type=_non_negative_float, help="L2 penalty (decoupled for adamw; default 0, 0.01 for adamw)")
    train.add_argument("--epochs", type=_non_negative, help="total epochs of the run (default 30)")
    train.add_argument("--batch-size", type=_positive, help="samples per update (default 64)")
    train.add_argument("--val-split", type=_fraction, help="fraction held out to validate each epoch (default 0.1)")
    train.add_argument("--test-split", type=_fraction, help="fraction held out for the final test (default 0.2)")
    train.add_argument("--metric", choices=CLASSIFY_METRICS + REGRESS_METRICS,
                       help="what validation picks the best epoch by and the run reports on validation and test "
                            "rows (default accuracy to classify, r2 to regress; a tie goes to the lower "
                            "validation loss)")
    train.add_argument("--early-stopping", type=_positive, metavar="PATIENCE",
                       help="stop after this many epochs without a better validation --metric")
    train.add_argument("--restore-best", action=argparse.BooleanOptionalAction,
                       help="end with the weights of the best validation epoch, which the run scores and saves "
                            "(default on; --no-restore-best keeps the last epoch's)")
    train.add_argument("--lr-schedule", choices=("constant", "step", "cosine", "plateau"),
                       help="step: x0.1 every epochs/3; cosine: to 0 over the run; plateau: x0.1 after 5 epochs "
                            "without a better validation loss (default cosine)")
    train.add_argument("--max-grad-norm", type=_positive_float, help="clip the global gradient norm to this")
    train.add_argument("--on-nonfinite", choices=("raise", "skip"),
                       help="a step whose loss or gradient is NaN or infinite: stop the run with an error naming "
                            "the step and layer, keeping the last finite weights (raise, the default), or leave "
                            "that batch out and go on (skip; counted per epoch)")
    train.add_argument("--seed", type=_non_negative, help="seeds the split, the weights and the shuffling (default 0)")
    train.add_argument("--dtype", choices=("float32", "float64"), help="default float32")
    train.add_argument("--threads", type=_positive, help="limit the BLAS threads")
    train.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="train on the CPU or an NVIDIA GPU (needs fastbp[cuda]; default cpu)")
    train.add_argument("--distributed", action="store_true",
                       help="train data-parallel across the processes torchrun starts, --batch-size rows in all "
                            "per step (torchrun --nproc_per_node 2 -m fastbp train --distributed ...)")
    train.add_argument("--standardize", action=argparse.BooleanOptionalAction,
                       help="standardise features (and regression targets) on the training split "
                            "(default: on, except for the embedded digits)")
    train.add_argument("--save", metavar="PATH", help="write a checkpoint (model, optimizer, schedule, history) "
                       "at the end, on Ctrl-C and every few seconds on the way")
    train.add_argument("--save-every", type=_positive, metavar="N", help="write the checkpoint every N epochs instead")
    train.add_argument("--checkpoint-every", type=_positive, metavar="N",
                       help="also write it every N optimizer steps, mid-epoch too: a run killed anywhere goes on "
                            "from there with --resume, bit for bit")
    train.add_argument("--resume", metavar="PATH",
                       help="go on from a checkpoint up to --epochs in total; the step and cosine schedules are "
                            "laid out again for that total, and --lr or --lr-schedule start a new schedule")
    train.add_argument("--plot", metavar="PATH", help="write a PNG of loss and metric per epoch")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--overwrite", action="store_true", help=OVERWRITE)

    predict = commands.add_parser("predict", help="predict with a saved model or checkpoint")
    predict.add_argument("--model", required=True, metavar="PATH", help="a file written by fastbp train --save")
    predict.add_argument("--data", required=True, metavar="PATH",
                         help="a .csv, .parquet, .npz (array X) or .npy file, read in batches; a table's columns "
                              "are matched by name to the model's when it was trained on a table")
    predict.add_argument("--target", metavar="COLUMN", help="score against this column or .npy of targets")
    predict.add_argument("--out", metavar="PATH",
                         help="write predictions to a .csv, .parquet or .npy (default: print them)")
    predict.add_argument("--unknown-category", choices=UNKNOWN_CATEGORY,
                         help="a category not seen in training: an error, or all zeros (default: as trained)")
    predict.add_argument("--proba", action="store_true",
                         help="add one column of probabilities per class, named by the class")
    predict.add_argument("--keep-columns", type=_names, default=(), metavar="A,B",
                         help="carry these input columns (an ID, say) into the output, before the predictions")
    predict.add_argument("--overwrite", action="store_true", help=OVERWRITE)

    export = commands.add_parser(
        "export", help="write a saved model as an ONNX graph, its preprocessing inside",
        description="Write a model saved by fastbp train as an ONNX graph (needs fastbp[onnx]) that takes the "
                    "table's raw columns: input 'numeric' (double, NaN for missing) and 'text' (string, \"\" for "
                    "missing), the columns named in its metadata; outputs 'label' and 'probabilities', or "
                    "'prediction'. A category not seen in training is encoded as all zeros.")
    export.add_argument("--model", required=True, metavar="PATH", help="a file written by fastbp train --save")
    export.add_argument("--onnx", required=True, metavar="PATH", help="the .onnx file to write")
    export.add_argument("--overwrite", action="store_true", help=OVERWRITE)

    check = commands.add_parser("check", help="compare this machine's kernels with torch autograd")
    check.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="check the CPU kernels or their CUDA twins on an NVIDIA GPU, against torch on the CPU "
                            "(needs fastbp[cuda]; default cpu)")

    bench = commands.add_parser(
        "bench", help="time training steps against torch eager and JAX (predictions with --inference)",
        description="Time one training step (forward, cross-entropy, backward, update) of fastbp and each "
                    "installed peer, every framework in its own process, in interleaved rounds; with "
                    "--inference, one prediction against ONNX Runtime and torch eager.")
    configs = bench.add_mutually_exclusive_group()
    configs.add_argument("--configs", type=_configs, metavar="NAMES",
                         help=f"comma-separated configs: {', '.join(harness.CONFIGS)} (default all)")
    configs.add_argument("--sizes", type=_sizes, help="a custom config's layer widths, e.g. 784,128,10")
    configs.add_argument("--sweep", action="store_true",
                         help=f"64-w-w-10 for w in {', '.join(map(str, harness.SWEEP_WIDTHS))} and batches "
                              f"{', '.join(map(str, harness.SWEEP_BATCHES))}, SGD")
    bench.add_argument("--batch", type=_batches, help="the custom config's batch size (default 64); with "
                       "--inference, comma-separated batches for every config (default 1,64,10000)")
    bench.add_argument("--optimizer", action="append", choices=harness.OPTIMIZERS,
                       help="sgd or adam (repeatable); default both")
    bench.add_argument("--activation", choices=runners.ACTIVATIONS, default="relu",
                       help="hidden activation (default relu)")
    bench.add_argument("--dropout", type=_fraction, default=0.0, metavar="P",
                       help="dropout after each hidden layer, in every framework (default 0: none)")
    bench.add_argument("--norm", choices=("layer",), help="a layer norm after each hidden layer, in every framework")
    bench.add_argument("--residual", action="store_true",
                       help="residual blocks, one per hidden width (fastbp.MLP(residual=True)), in every framework")
    bench.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default float32")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="time on the CPU, or on an NVIDIA GPU against torch eager with TF32 off and on, "
                            "without JAX (needs fastbp[cuda] and a CUDA build of torch; default cpu)")
    bench.add_argument("--threads", type=_positive,
                       help="threads for every framework (default: all cores, here %d; 2 with --inference)"
                            % (os.cpu_count() or 1))
    bench.add_argument("--rounds", type=_positive,
                       help="interleaved rounds, each framework in a fresh process (default 3; 5 with --inference)")
    bench.add_argument("--torch-compile", action="store_true",
                       help="also time torch.compile (tens of seconds of compilation per round)")
    bench.add_argument("--isa", choices=("auto", *kernels_isa.ISAS, "none"), default="auto",
                       help="fastbp's tiles: the best this CPU has (auto, the default), an ISA's, or none (BLAS "
                            "only); avx2 on an AVX-512 CPU also holds Numba and the peers to AVX2")
    bench.add_argument("--startup", action="store_true", help="also time cold and warm start in subprocesses")
    bench.add_argument("--inference", action="store_true",
                       help="time predictions instead (MLP.predict against ONNX Runtime and torch eager under "
                            "inference_mode) of 64-256-128-10 and 784-512-512-10, or --sizes; ReLU, on the CPU")
    bench.add_argument("--json", help="where to write every round's results (default fastbp-bench.json; "
                                      "fastbp-bench-inference.json with --inference)")
    bench.add_argument("--png", default="fastbp-bench.png", help="where to write the bar chart (not with --inference)")
    bench.add_argument("--quiet", action="store_true", help="print only the final table")
    bench.add_argument("--overwrite", action="store_true", help=OVERWRITE)
    return parser
