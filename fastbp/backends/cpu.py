"""The CPU backend: one ``Trainer.fit`` as calls of the compiled epoch,
``kernels.train_epoch`` (serial, or with each minibatch split between
threads), over buffers allocated once."""
import contextlib
import functools

import numba
import numpy as np

import kernels
from kernels.config import split_passes
from kernels.network import all_small
from fastbp import data


def epoch_function(model, batch_size):
    """The compiled epoch for this model and batch size (``kernels.train_epoch``
    with the bundles, step, loss sum, batch size and clip norm), and the
    context its BLAS calls run in: a data-parallel epoch needs
    single-threaded BLAS (threadpoolctl sets that; without it, epochs stay
    serial)."""
    chunks = kernels.data_parallel_chunks(model.n_params, batch_size, numba.get_num_threads())
    if chunks == 1 or blas_controller() is None:
        # The epoch compiled without the paths this model never takes (None
        # leaves one out): the threaded passes unless split_passes, and the
        # small steps unless every layer is small
        threaded = True if split_passes.py_func(model.n_params, batch_size) else None
        small = True if all_small.py_func(model._layers, batch_size) else None
        # and without the argument checks: fit has checked the data and
        # built every buffer itself
        return lambda *args: kernels.train_epoch(*args, None, threaded, small, None), contextlib.nullcontext
    return (lambda *args: kernels.train_epoch(*args, chunks, None, None, None),
            lambda: blas_controller().limit(limits=1, user_api="blas"))


@functools.cache
def blas_controller():
    # made once: finding the BLAS libraries takes 50 us, limiting them 3 us
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


class HostFit:
    """One ``Trainer.fit`` on the CPU: the gather buffers and the bundles the
    compiled epoch takes, made once. ``epoch`` is the epoch function and its
    BLAS context (``epoch_function``, or a trainer's own).

    ``stretch`` is how many entries of the order one call of ``steps`` may
    take: all of them, but for a memory-mapped X, whose rows are gathered
    into memory a stretch at a time (``data.gather``, which keeps little of
    the mapping resident)."""

    def __init__(self, model, optimizer, loss, X, targets, labels, batch_size, max_grad_norm, epoch,
                 weights=np.empty(0)):
        n, n_in, n_out = X.shape[0], model.sizes[0], model.sizes[-1]
        rows = min(batch_size, n)
        self.optimizer, self.batch_size, self.max_grad_norm = optimizer, batch_size, max_grad_norm
        self.data = (X, targets, labels, weights)
        self.train_epoch, self.blas_threads = epoch
        self.network, self.loss = model._bundle(), loss._bundle()
        self.work = kernels.Work(np.empty(rows * n_in, dtype=model.dtype),
                                 np.empty(rows * n_out if targets.size else 0, dtype=model.dtype),
                                 np.empty(rows if labels.size else 0, dtype=np.int64), model._z, model._a,
                                 model._scratch, np.empty(rows if weights.size else 0))
        self.stretch, self.gathered = n, None
        if data.file_mapping(X) is not None:
            self.stretch = stretch = min(n, data.mapped_rows(X, batch_size))
            self.gathered = (np.empty((stretch, n_in), dtype=model.dtype),
                             np.empty((stretch, n_out) if targets.size else (0, 0), dtype=model.dtype),
                             np.empty(stretch if labels.size else 0, dtype=np.int64),
                             np.arange(stretch, dtype=np.int64), np.empty(stretch if weights.size else 0))

    def steps(self, order, loss_sum):
        """Train over ``order``, a whole epoch or a stretch of one, from the
        epoch's loss sum so far: ``kernels.train_epoch``'s ``loss_sum`` and
        ``done``, what ``Trainer._epoch_steps`` asks of a stretch."""
        optimizer = self.optimizer
        with self.blas_threads():
            loss_sum, optimizer.step_count, done = self.train_epoch(
                self.network, optimizer._bundle(), self.loss, self._data(order), self.work, optimizer.step_count,
                loss_sum, self.batch_size, self.max_grad_norm)
        return loss_sum, done

    def _data(self, order):
        """The data bundle of the rows ``order``: the data itself, or those
        rows of a memory-mapped X gathered into memory (then numbered
        0..k-1), so the kernel reads memory and checks the stretch's labels,
        not all of them, at each call."""
        X, targets, labels, weights = self.data
        if self.gathered is None:
            return kernels.Data(X, targets, labels, order, weights)
        rows, row_targets, row_labels, positions, row_weights = self.gathered
        k = order.shape[0]
        data.gather(X, order, rows)
        if targets.size:
            np.take(targets, order, axis=0, out=row_targets[:k])
        if labels.size:
            np.take(labels, order, out=row_labels[:k])
        if weights.size:
            np.take(weights, order, out=row_weights[:k])
        return kernels.Data(rows[:k], row_targets[:k] if targets.size else targets,
                            row_labels[:k] if labels.size else labels, positions[:k],
                            row_weights[:k] if weights.size else weights)
