"""Layers and models: `Module` and the PyTorch-shaped layers built on `functional`.

``SyncBatchNorm`` is here, where PyTorch users look for it: it is handed its communicator
and only calls that object's methods, so nn imports neither comm nor parallel.
"""
from . import functional, init
from .activation import Dropout, ReLU, Sigmoid, Tanh
from .conv import Conv2d, Flatten, MaxPool2d
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss
from .container import Sequential
from .module import Module, Parameter
from .norm import BatchNorm1d, BatchNorm2d, LayerNorm
from .syncbn import SyncBatchNorm, convert_sync_batchnorm

__all__ = ["Module", "Parameter", "Sequential", "Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d",
           "LayerNorm", "SyncBatchNorm", "ReLU", "Sigmoid", "Tanh", "Dropout", "Flatten",
           "MaxPool2d", "CrossEntropyLoss", "MSELoss", "convert_sync_batchnorm", "functional", "init"]

