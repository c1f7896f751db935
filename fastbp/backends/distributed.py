"""Data-parallel training across processes on torch.distributed (gloo on CPU).

Every process (rank) holds a whole copy of the model and trains on its own
shard of the data: each step, each rank computes the gradients of its
``batch_size / world_size`` rows, one all-reduce of the flat gradient buffer
averages them, and every rank takes the same optimizer step. With a
mean-reduced loss and equal shares, the average of the ranks' gradients is
the gradient of the whole global batch, so N processes follow the run one
process makes with the same global batch.

Launch one process per rank with torchrun, which sets the environment
``init`` reads::

    torchrun --nproc_per_node 2 train.py

torch is imported only when this module's functions run.
"""
import contextlib
import datetime
import os
import time

import numpy as np

from kernels import step as stages
from kernels.losses import batch_weight, mean_scale
from kernels.network import N_OUT, WEIGHT_OFFSET, network_backward_layers
from fastbp._checks import as_float, as_int, describe
from fastbp.trainer import Trainer

# variables torchrun sets for every rank; init() needs them all
_LAUNCH_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _dist():
    try:
        import torch.distributed as dist
    except ImportError:
        raise ImportError("fastbp.backends.distributed needs PyTorch; install it with: pip install 'fastbp[torch]'") from None
    return dist


def init(timeout=60.0):
    """Join the process group torchrun set up (gloo backend, CPU).

    Args:
        timeout: seconds a collective waits for the other ranks before it
            fails, so a rank that died or stalled never hangs the others.

    Returns:
        (rank, world_size). Calling it again returns the same pair.
    """
    timeout = as_float("timeout", timeout, low=0.0, low_open=True)
    dist = _dist()
    if not dist.is_initialized():
        missing = [name for name in _LAUNCH_ENV if name not in os.environ]
        if missing:
            raise RuntimeError(f"fastbp.backends.distributed.init() reads {', '.join(_LAUNCH_ENV)} from the environment, "
                               f"which torchrun sets; missing: {', '.join(missing)}. Launch the script with "
                               f"`torchrun --nproc_per_node 2 your_script.py`")
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout))
    return dist.get_rank(), dist.get_world_size()


def shutdown():
    """Leave the process group, once every rank has reached this call.

    Call it at the end of the script: a rank that exits while another still
    talks to it can abort that rank.
    """
    dist = _dist()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(order, rank, world_size):
    """This rank's indices out of ``order`` (n,), as torch's
    DistributedSampler splits them: ``order`` wrapped around to a multiple of
    ``world_size`` (so every rank takes the same number of steps), then every
    ``world_size``-th index from position ``rank``."""
    total = -(-order.shape[0] // world_size) * world_size
    padded = np.resize(order, total)  # np.resize repeats from the start
    return padded[rank::world_size]


def buckets(layers, n_params, itemsize, bucket_bytes):
    """The gradient buckets a step all-reduces, in the order the backward
    fills them: layers grouped from the last, each group closed once it
    holds at least ``bucket_bytes`` (the first layers form the last group,
    whatever its size). Every group is one stretch of the flat buffer, since
    a layer's weights and bias follow the layer before it.

    Returns:
        [(first_layer, end_layer, start, stop)]: layers
        ``first_layer .. end_layer - 1`` own ``grads[start:stop]``.
    """
    n_layers = layers.shape[0]
    groups, end, stop = [], n_layers, n_params
    for first in range(n_layers - 1, -1, -1):
        start = layers[first, WEIGHT_OFFSET]
        if first == 0 or (stop - start) * itemsize >= bucket_bytes:
            groups.append((first, end, int(start), int(stop)))
            end, stop = first, start
    return groups


def _as_tensor(array):
    # shares the buffer: a collective on the tensor writes the array
    import torch

    return torch.from_numpy(array)


class DistributedTrainer(Trainer):
    """A ``fastbp.Trainer`` whose ``fit`` trains data-parallel across the
    ranks of the process group ``fastbp.backends.distributed.init()`` joined.

    Construction broadcasts rank 0's parameters and optimizer state, so
    every rank starts from the same model whatever its seed. Every rank must
    build its trainer the same way.

    Args:
        model, loss, optimizer, max_grad_norm, schedule: as in ``Trainer``.
        bucket_bytes: None (the default) all-reduces the whole gradient
            buffer once the backward is done. An integer splits it into
            buckets of layers, the last layer first, each closed once it
            holds at least this many bytes (0: one per layer), and starts
            each bucket's all-reduce as soon as the backward has written it,
            while the backward of the layers before goes on (torch's
            DistributedDataParallel buckets 25 MB). The numbers are the same
            either way; see the README for when it is faster.

    Example:
        >>> rank, world_size = fastbp.backends.distributed.init()
        >>> model = fastbp.MLP([20, 64, 3], seed=0)
        >>> trainer = DistributedTrainer(model, "cross_entropy", fastbp.Adam(model))
        >>> trainer.fit(X, y, epochs=10, batch_size=64, seed=0)  # 32 rows per rank per step
    """

    def __init__(self, model, loss, optimizer, max_grad_norm=None, schedule=None, bucket_bytes=None):
        bucket_bytes = _bucket_bytes(bucket_bytes)
        super().__init__(model, loss, optimizer, max_grad_norm, schedule)
        self._join(bucket_bytes)

    @classmethod
    def wrap(cls, trainer, bucket_bytes=None):
        """A DistributedTrainer that goes on from ``trainer`` (one built, or
        one ``Trainer.load`` read from a checkpoint), with its model,
        optimizer, epoch, history and shuffling stream; rank 0's parameters
        and optimizer state are broadcast."""
        if not isinstance(trainer, Trainer):
            raise TypeError(f"trainer must be a fastbp.Trainer, got {describe(trainer)}")
        bucket_bytes = _bucket_bytes(bucket_bytes)
        distributed = cls.__new__(cls)
        distributed.__dict__.update(trainer.__dict__)
        distributed._join(bucket_bytes)
        return distributed

    @classmethod
    def load(cls, path, bucket_bytes=None):
        """The checkpoint at ``path`` (written by ``save`` on rank 0, after
        an epoch) as a DistributedTrainer: every rank reads it, and rank 0's
        parameters and optimizer state are broadcast. ``fit`` with
        ``seed=None`` goes on as the run that wrote it would have."""
        return cls.wrap(Trainer.load(path), bucket_bytes)

    def _join(self, bucket_bytes):
        model, optimizer = self.model, self.optimizer
        dist = _dist()
        if not dist.is_initialized():
            raise RuntimeError("DistributedTrainer needs a process group: call fastbp.backends.distributed.init() first, "
                               "in a script launched with `torchrun --nproc_per_node 2 your_script.py`")
        if model.device != "cpu":
            raise ValueError(f"DistributedTrainer trains on the CPU (gloo), got a model on {model.device!r}; "
                             f"call model.to('cpu') first")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        # a rank that buckets otherwise would send all-reduces the others do not expect
        self._agree("the model's parameter count and bucket_bytes", model.n_params,
                    -1 if bucket_bytes is None else bucket_bytes)
        for buffer in (model._params, *optimizer._state):
            if buffer.size:
                dist.broadcast(_as_tensor(buffer), src=0)
        self.bucket_bytes = bucket_bytes
        # seconds the last fit spent waiting on the gradient all-reduce
        self.allreduce_seconds = 0.0

    def _agree(self, what, *values):
        """Raise unless every rank passed the same integers."""
        import torch

        local = torch.tensor(values, dtype=torch.int64)
        low, high = local.clone(), local.clone()
        _dist().all_reduce(low, op=_dist().ReduceOp.MIN)
        _dist().all_reduce(high, op=_dist().ReduceOp.MAX)
        if not torch.equal(low, high):
            raise ValueError(f"the ranks disagree on {what}: this rank (rank {self.rank}) has "
                             f"{list(values)}, others range from {low.tolist()} to {high.tolist()}; "
                             f"every rank must call the same thing with the same arguments")

    def fit(self, X, y, epochs=1, batch_size=32, shuffle=True, seed=0, **options):
        """``Trainer.fit`` with every rank on its shard of each epoch.

        Every rank passes the whole data set and the same arguments; each
        takes its shard of each epoch's sample order (see ``shard``).
        Validation, early stopping, schedules and callbacks run on every rank
        and agree, since every rank holds the same parameters.

        Args:
            batch_size: the global batch, summed over the ranks; a multiple
                of the world size. Each rank takes ``batch_size / world_size``
                rows per step; the last step of an epoch may be smaller.
            seed: seeds the shuffling (an integer: every rank must draw the
                same order); None continues the previous stream.
            X, y, epochs, shuffle, options: as in ``Trainer.fit``.

        Returns:
            the trainer's History; each epoch's loss is the mean over every
            rank's samples (those repeated to even out the shards count twice).
        """
        if options.get("checkpoint_every") is not None:
            # a mid-epoch checkpoint would have to hold every rank's place in its shard
            raise ValueError("checkpoint_every is not supported in a distributed fit; save after epochs with a "
                             "callback on rank 0")
        batch_size = as_int("batch_size", batch_size, minimum=1)
        if batch_size % self.world_size:
            down = max(batch_size // self.world_size, 1) * self.world_size
            raise ValueError(f"batch_size is the global batch and must be a multiple of the number of processes "
                             f"({self.world_size}), got {batch_size}; use {down} or {down + self.world_size}")
        if seed is None and self._rng_state is None and shuffle is True:
            raise ValueError("seed must be an integer for the first distributed fit, got None: every rank must "
                             "draw the same sample order; pass seed=0 (or any integer, the same on every rank)")
        seed = None if seed is None else as_int("seed", seed, minimum=0)
        shape = np.shape(X) if np.ndim(X) == 2 else (-1, -1)
        self._agree("X's shape, batch_size, shuffle and seed", *shape, batch_size, bool(shuffle),
                    -1 if seed is None else seed)
        self.allreduce_seconds = 0.0
        return super().fit(X, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle, seed=seed, **options)

    def _epoch_function(self, rows):
        if self.world_size == 1:
            # alone, there is nothing to average: the one-process epoch, no collective per step
            return super()._epoch_function(rows)
        return self._train_epoch, contextlib.nullcontext

    def _train_epoch(self, network, optimizer, loss, data, work, step, loss_sum, batch_size, max_grad_norm):
        """``kernels.train_epoch`` (same arguments and result, ``batch_size``
        the global batch) over this rank's shard of ``data.order``: the
        stages of ``kernels.step``, with the gradients averaged across the
        ranks after each backward (bucket by bucket during it, with
        ``bucket_bytes``). The finite check is of the averaged gradients,
        which every rank holds alike, so the ranks stop (or skip) at the same
        step."""
        samples, order = data.order.shape[0], data.order
        mine = shard(order, self.rank, self.world_size)
        data = data._replace(order=mine)
        local_batch = batch_size // self.world_size
        n_out = network.layers[-1, N_OUT]
        grads = network.grads
        plan = None if self.bucket_bytes is None else buckets(network.layers, grads.shape[0], grads.itemsize,
                                                              self.bucket_bytes)
        gradients = _as_tensor(grads)
        epoch_sum, loss_sum = loss_sum, 0.0
        # with weights, every rank divides by the global batch's weight, which each knows from the whole order:
        # the ranks' batches k together are entries k * batch_size ... of the order as shard pads it
        weighted = data.weights.shape[0] > 0 or loss.class_weights.shape[0] > 0
        padded = np.resize(order, mine.shape[0] * self.world_size) if weighted else None
        # dropout's masks: this rank's rows numbered after those of the ranks before
        first_row = np.int64(self.rank * local_batch)
        for start in range(0, mine.shape[0], local_batch):
            rows = min(local_batch, mine.shape[0] - start)
            x, target, labels, weights = stages.gather_batch(work.batch_x, work.batch_targets, work.batch_labels,
                                                             work.batch_weights, data, start, rows)
            divisor = rows if padded is None else batch_weight(data.weights, data.labels, loss.class_weights,
                                                               padded, start * self.world_size,
                                                               rows * self.world_size)
            scale = mean_scale(loss.code, divisor, n_out, loss.mean)
            if plan is None:
                # checked by take_step, once all-reduced
                value = stages.batch_gradients(grads, work.z_store, work.a_store, work.scratch, x, target, labels,
                                               weights, network, loss, scale, (step, first_row))[0]
                self._all_reduce(gradients, step + 1)
            else:
                value = self._bucketed_gradients(plan, step, work, x, target, labels, weights, network, loss,
                                                 scale, first_row)
            if loss.mean and not weighted:
                # every rank's share is equally large: the mean of the ranks'
                # gradients is the global batch's (weighted, their sum is)
                grads /= self.world_size
            # this rank's loss is its own: the ranks decide on the gradients alone
            if not stages.take_step(network, optimizer, 0.0, step, max_grad_norm, 1, True, False):
                done = start // local_batch * batch_size
                return self._epoch_loss(epoch_sum, loss_sum, start, step, done) + (done,)
            # weighted, this rank's value is its share of the global batch's mean
            loss_sum += value * rows * (self.world_size if weighted else 1) if loss.mean else value
            step += 1
        return self._epoch_loss(epoch_sum, loss_sum, mine.shape[0], step, samples) + (samples,)

    def _epoch_loss(self, epoch_sum, loss_sum, rows, step, samples):
        """(loss sum, step) as fit counts them: ``epoch_sum`` plus, for the
        first ``rows`` rows of every rank's shard, which stand for ``samples``
        of the order, the mean over every rank's rows (those repeated to even
        out the shards count twice) times ``samples``."""
        totals = np.array([loss_sum, rows], dtype=np.float64)
        self._all_reduce(_as_tensor(totals), step)
        return epoch_sum + (totals[0] / totals[1] * samples if rows else 0.0), step

    def _bucketed_gradients(self, plan, step, work, x, target, labels, weights, network, loss, loss_scale,
                            first_row):
        """``kernels.step.batch_gradients`` of update ``step + 1`` with each
        bucket's all-reduce started as soon as the backward has written it;
        returns once all are done."""
        params, grads, layers, layer_params = network
        value = stages.batch_loss(work.z_store, work.a_store, work.scratch, x, target, labels, weights, network,
                                  loss, loss_scale, (np.int64(step), first_row))
        pending = []
        for first, end, start, stop in plan:
            network_backward_layers(grads, work.scratch, x, params, layers, layer_params, work.z_store,
                                    work.a_store, first, end)
            pending.append(self._all_reduce(_as_tensor(grads[start:stop]), step + 1, async_op=True))
        self._wait(pending, step + 1)
        return value

    def _all_reduce(self, tensor, step, async_op=False):
        """Sum ``tensor`` across the ranks, in place; with ``async_op``, only
        start it and return the handle to pass to ``_wait``."""
        with self._collective(step):
            return _dist().all_reduce(tensor, async_op=async_op)

    def _wait(self, handles, step):
        with self._collective(step):
            for handle in handles:
                handle.wait()

    @contextlib.contextmanager
    def _collective(self, step):
        """Count the seconds spent in a collective in ``allreduce_seconds``
        and explain its failure."""
        started = time.perf_counter()
        try:
            yield
        except RuntimeError as error:
            raise RuntimeError(f"rank {self.rank} of {self.world_size}: the all-reduce at step {step} failed, "
                               f"so another rank stopped, crashed or cannot be reached (look for the first error "
                               f"in the other ranks' output; a rank that stalls fails the others after init's "
                               f"timeout): {error}") from error
        finally:
            self.allreduce_seconds += time.perf_counter() - started


def _bucket_bytes(bucket_bytes):
    if bucket_bytes is None:
        return None
    try:
        return as_int("bucket_bytes", bucket_bytes, minimum=0)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{error}; pass a byte count (25 * 2**20 for 25 MB, 0 for a bucket per layer) or None "
                          f"for one all-reduce of the whole buffer") from None
