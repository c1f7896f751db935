"""fastbp: multi-layer perceptrons trained by hand-written, JIT-compiled
backpropagation, validated number for number against PyTorch autograd."""
from fastbp.activations import Activation
from fastbp.io import load
from fastbp.losses import BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss
from fastbp.mlp import MLP
from fastbp.optim import SGD, Adam, AdamW, Optimizer, RMSprop
from fastbp.trainer import Trainer

__version__ = "0.1.0"

__all__ = ["MLP", "Activation", "MSELoss", "L1Loss", "HuberLoss", "CrossEntropyLoss", "BCEWithLogitsLoss",
           "SGD", "Adam", "AdamW", "RMSprop", "Optimizer", "Trainer", "load"]
