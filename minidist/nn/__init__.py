"""Layers and models: `Module` and the PyTorch-shaped layers built on `functional`.

``SyncBatchNorm`` lives in minidist.parallel (it needs a communicator); it is reachable as
``minidist.nn.SyncBatchNorm`` but imported only on first use, so that importing nn does
not import the parallel layer.
"""
from . import functional, init
from .activation import Dropout, ReLU, Sigmoid, Tanh
from .conv import Conv2d, Flatten, MaxPool2d
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss
from .container import Sequential
from .module import Module, Parameter
from .norm import BatchNorm1d, BatchNorm2d, LayerNorm

__all__ = ["Module", "Parameter", "Sequential", "Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d",
           "LayerNorm", "SyncBatchNorm", "ReLU", "Sigmoid", "Tanh", "Dropout", "Flatten",
           "MaxPool2d", "CrossEntropyLoss", "MSELoss", "functional", "init"]


def __getattr__(name):
    if name == "SyncBatchNorm":
        from ..parallel.syncbn import SyncBatchNorm  # lazy: parallel sits above nn

        return SyncBatchNorm
    raise AttributeError(f"module 'minidist.nn' has no attribute {name!r}")
