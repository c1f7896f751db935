"""Training on an NVIDIA GPU with the CUDA twins of ``kernels/cuda``.

A model on ``device="cuda"`` keeps its parameters on the host between fits,
where ``predict``, ``save``, checkpoints and ``to_torch`` read them; ``fit``
copies parameters, gradients, optimizer state and the data to the device once
and runs every step there, each stretch of an epoch one call of
``kernels.cuda.train_epoch``, which stops at a step that went non-finite as
the CPU epoch does. After each call the host copies parameters, gradients
and optimizer state back (one copy of each flat buffer), so callbacks, the
best epoch's weights and checkpoints (in the middle of an epoch too) see the
state of the last step taken, and a checkpoint resumes on either device.

numba.cuda is imported only here, and only once a model asks for the GPU.
"""
import numpy as np

import kernels
from kernels.network import buffer_sizes
from fastbp._checks import as_choice

DEVICES = ("cpu", "cuda")


def as_device(name, value):
    """"cpu" or "cuda"; "cuda" only where a GPU (or the CUDA simulator) is
    there, else a RuntimeError saying why."""
    device = as_choice(name, value, DEVICES)
    if device == "cuda":
        require_cuda()
    return device


def require_cuda():
    """numba.cuda, once it can run kernels here."""
    try:
        import numba_cuda  # noqa: F401 (kernels/cuda is written for numba-cuda's numba.cuda)
    except ImportError:
        raise RuntimeError("device='cuda' needs numba-cuda, which is not installed: pip install 'fastbp[cuda]', "
                           "or train with device='cpu'") from None
    from numba import cuda

    if not cuda.is_available():
        raise RuntimeError("device='cuda' needs an NVIDIA GPU and its driver, and numba.cuda finds none here; "
                           "train with device='cpu' (or, for testing, set NUMBA_ENABLE_CUDASIM=1 before Python "
                           "starts to run the kernels on the CUDA simulator, slowly)")
    return cuda


def check_device_memory(cuda, model, optimizer, X, targets, labels, rows, weights=np.empty(0)):
    """MemoryError, before anything is copied, when what a fit keeps on the
    device would not fit in the GPU's free memory."""
    itemsize = model.dtype.itemsize
    n_params, total_units, max_width = buffer_sizes(model._layers)
    parts = {
        "the data": X.nbytes + targets.nbytes + labels.nbytes + weights.nbytes + 8 * X.shape[0],
        "parameters, gradients and optimizer state": itemsize * n_params * 2
        + sum(state.nbytes for state in optimizer._state),
        f"buffers for batches of {rows}": itemsize * rows * (model.sizes[0] + model.sizes[-1] + 2 * total_units
                                                             + 2 * max_width) + 8 * rows,
    }
    needed = sum(parts.values())
    free = cuda.current_context().get_memory_info().free
    if needed > free:
        spelled = ", ".join(f"{name} {size / 2**20:,.1f} MiB" for name, size in parts.items())
        raise MemoryError(f"training on the GPU needs {needed / 2**20:,.1f} MiB of device memory ({spelled}), "
                          f"but {free / 2**20:,.1f} MiB are free; use a smaller batch_size, train on a part of the "
                          f"data, or train with device='cpu'")


class DeviceFit:
    """One ``Trainer.fit`` on the device: the model's and the optimizer's flat
    buffers, the data and the batch buffers, copied or allocated once."""

    def __init__(self, model, optimizer, loss, X, targets, labels, batch_size, max_grad_norm, weights=np.empty(0)):
        cuda = require_cuda()
        import kernels.cuda

        self._kernels = kernels.cuda
        self.model, self.optimizer, self.loss = model, optimizer, loss
        self.batch_size, self.max_grad_norm = batch_size, max_grad_norm
        # the device holds all of X: one call of steps may take the whole order
        self.stretch = X.shape[0]
        rows = min(batch_size, X.shape[0])
        check_device_memory(cuda, model, optimizer, X, targets, labels, rows, weights)
        # the host draws the order, so it sums each batch's weights (the mean's divisor)
        self.weighted = (weights, labels) if weights.size or loss.class_weights.size else None
        self.device_weights, self.device_class_weights = cuda.to_device(weights), cuda.to_device(loss.class_weights)
        self.device_batch_weights = cuda.device_array(rows if weights.size else 0, dtype=np.float64)
        self.device_params, self.device_grads = cuda.to_device(model._params), cuda.to_device(model._grads)
        self.device_state = cuda.to_device(optimizer._state)
        self.device_X, self.device_targets, self.device_labels = (cuda.to_device(a) for a in (X, targets, labels))
        self.device_order = cuda.device_array(X.shape[0], dtype=np.int64)
        dtype = model.dtype
        _, total_units, max_width = buffer_sizes(model._layers)
        self.device_batch_x = cuda.device_array(rows * model.sizes[0], dtype=dtype)
        self.device_batch_targets = cuda.device_array(rows * model.sizes[-1] if targets.size else 0, dtype=dtype)
        self.device_batch_labels = cuda.device_array(rows if labels.size else 0, dtype=np.int64)
        self.device_z = cuda.device_array(rows * total_units, dtype=dtype)
        self.device_a = cuda.device_array(rows * total_units, dtype=dtype)
        self.device_scratch = cuda.device_array((2, rows * max_width), dtype=dtype)

    def steps(self, order, loss_sum):
        """Train over ``order`` (host, int64), a whole epoch or a stretch of
        one, from the epoch's loss sum so far: ``kernels.train_epoch``'s
        ``loss_sum`` and ``done``, what ``Trainer._epoch_steps`` asks of a
        stretch. Leaves the host's parameters, gradients, optimizer state and
        step count equal to the device's."""
        model, optimizer, loss = self.model, self.optimizer, self.loss
        device_order = self.device_order[:order.shape[0]]
        device_order.copy_to_device(order)
        divisors = None
        if self.weighted is not None:
            weights, labels = self.weighted
            divisors = np.array([kernels.losses.batch_weight(weights, labels, loss.class_weights, order, start,
                                                             min(self.batch_size, order.shape[0] - start))
                                 for start in range(0, order.shape[0], self.batch_size)])
        loss_sum, optimizer.step_count, done = self._kernels.train_epoch(
            kernels.Network(self.device_params, self.device_grads, model._layers, model._activation_params),
            kernels.Optimizer(optimizer.code, optimizer._hyper, self.device_state),
            loss._bundle()._replace(class_weights=self.device_class_weights),
            kernels.Data(self.device_X, self.device_targets, self.device_labels, device_order, self.device_weights),
            kernels.Work(self.device_batch_x, self.device_batch_targets, self.device_batch_labels, self.device_z,
                         self.device_a, self.device_scratch, self.device_batch_weights),
            optimizer.step_count, loss_sum, self.batch_size, self.max_grad_norm, divisors)
        self.device_params.copy_to_host(model._params)
        self.device_grads.copy_to_host(model._grads)
        self.device_state.copy_to_host(optimizer._state)
        return loss_sum, done
