"""fastbp's compiled kernels: plain functions over preallocated NumPy buffers.

Importable on its own (``import kernels``); nothing here imports fastbp.
Every kernel writes into the buffers it is given and allocates nothing.
"""
from kernels.activations import (
    ELU, GELU, GELU_TANH, IDENTITY, LEAKY_RELU, RELU, SIGMOID, SILU, SOFTPLUS, TANH,
    activation_backward, activation_forward,
)
from kernels.blas import gemm
from kernels.layers.dense import dense_backward, dense_forward
from kernels.layers.dropout import dropout_backward, dropout_forward
from kernels.layers.embedding import embedding_backward, embedding_forward
from kernels.layers.batchnorm import batchnorm_backward, batchnorm_forward, batchnorm_inference
from kernels.layers.layernorm import layernorm_backward, layernorm_forward
from kernels.layers.periodic import periodic_backward, periodic_forward
from kernels.losses import (
    BCE_WITH_LOGITS, CROSS_ENTROPY, HUBER, L1, MSE, POISSON_NLL,
    cross_entropy_loss, loss_value_and_grad, pointwise_loss, weighted_loss_value_and_grad,
)
from kernels.network import network_backward, network_backward_layers, network_forward
from kernels.optimizers import ADAM, RMSPROP, SGD, adam_step, optimizer_step, rmsprop_step, sgd_step, state_rows
from kernels.bundles import Data, Loss, Network, Optimizer, Work
from kernels.step import all_finite, clip_grad_norm
from kernels.training import random_permutation, train_epoch, train_epoch_data_parallel
from kernels.config import data_parallel_chunks
