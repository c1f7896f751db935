"""CUDA twins of fastbp's kernels (Numba CUDA), one module per CPU module,
with the same names and argument order; the CPU kernel is the reference each
is tested against.

Arguments are device arrays (``numba.cuda.to_device``); the functions here
launch kernels on them and return nothing, except the losses and
``train_epoch``, which read back what they return. Importing this package imports
``numba.cuda``: ``import kernels`` does not.
"""
from kernels.cuda.activations import activation_backward, activation_forward
from kernels.cuda.dense import column_sums, dense_backward, dense_forward
from kernels.cuda.dropout import dropout_backward, dropout_forward
from kernels.cuda.embedding import embedding_backward, embedding_forward
from kernels.cuda.batchnorm import batchnorm_backward, batchnorm_forward, batchnorm_inference
from kernels.cuda.layernorm import layernorm_backward, layernorm_forward
from kernels.cuda.periodic import periodic_backward, periodic_forward
from kernels.cuda.losses import cross_entropy_loss, loss_value_and_grad, pointwise_loss
from kernels.cuda.network import network_backward, network_forward
from kernels.cuda.optimizers import adam_step, optimizer_step, rmsprop_step, sgd_step
from kernels.cuda.training import (
    add_loss, batch_gradients, clip_grad_norm, finite_step, gather_rows, train_epoch, update,
)
