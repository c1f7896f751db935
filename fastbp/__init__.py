"""fastbp: multi-layer perceptrons trained by hand-written, JIT-compiled
backpropagation, validated number for number against PyTorch autograd."""
from fastbp.activations import Activation
from fastbp.history import History
from fastbp.files import load, load_checkpoint
from fastbp.losses import BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss, PoissonNLLLoss, class_weights
from fastbp.mlp import MLP
from fastbp.pipeline import Pipeline
from fastbp.optim import LBFGS, SGD, Adam, AdamW, Optimizer, RMSprop
from fastbp.schedules import CosineAnnealingLR, ReduceLROnPlateau, StepLR
from fastbp.trainer import Trainer

__version__ = "0.1.0"

__all__ = ["MLP", "Activation", "MSELoss", "L1Loss", "HuberLoss", "CrossEntropyLoss", "BCEWithLogitsLoss",
           "PoissonNLLLoss", "class_weights",
           "SGD", "Adam", "AdamW", "RMSprop", "LBFGS", "Optimizer",
           "StepLR", "CosineAnnealingLR", "ReduceLROnPlateau", "Trainer", "History", "Pipeline", "load", "load_checkpoint"]
