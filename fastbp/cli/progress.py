"""What a training run shows while it runs: the compile notice, a bar over
the epochs; and the BLAS thread limit it runs under."""
import sys
from contextlib import nullcontext

import numba.core.event as numba_event

from fastbp.data import DataError


class Progress:
    """One bar over the epochs (tqdm when installed, else a line per epoch)."""

    def __init__(self, total, start, quiet, n_samples):
        self.n_samples, self.quiet, self.bar = n_samples, quiet, None
        if quiet:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, initial=start, desc="epoch", unit="epoch", dynamic_ncols=True,
                        file=sys.stdout, bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}{postfix}")

    def __call__(self, trainer, logs):
        if self.quiet:
            return
        parts = [f"loss {logs['loss']:.4f}"]
        if "val_loss" in logs:
            parts.append(f"val_loss {logs['val_loss']:.4f}")
            parts.append(f"val_{trainer.history.metric} {logs['val_metric']:.4f}")
        parts.append(f"{self.n_samples / logs['seconds']:,.0f} samples/s")
        if logs.get("skipped"):
            parts.append(f"{logs['skipped']} non-finite batches skipped")
        if self.bar is None:
            print(f"epoch {logs['epoch']}: " + "  ".join(parts), flush=True)
        else:
            self.bar.set_postfix_str("  ".join(parts), refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def thread_limit(threads):
    """A context that limits the BLAS threads (threadpoolctl), or does nothing."""
    if threads is None:
        return nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise DataError("--threads needs threadpoolctl; install it with: pip install 'fastbp[sklearn]'") from None
    return threadpool_limits(limits=threads)


class CompileNotice(numba_event.Listener):
    """Says once, on stderr, that the kernels are compiling: Numba announces a
    compilation before it starts and only when its cache holds no machine code
    for it, so a run with a warm cache says nothing."""

    def __init__(self):
        self.said = False

    def on_start(self, event):
        if not self.said:
            self.said = True
            print("compiling kernels (first run only; cached after)", file=sys.stderr, flush=True)

    def on_end(self, event):
        pass
