"""minidist: a from-scratch data-parallel training simulator (NumPy autograd, collectives
from point-to-point MPI, DP / hub / DDP compared step by step). See DESIGN.md."""
import importlib

from .autograd import Function, Tensor, no_grad
from . import data, nn, optim

__version__ = "0.1.0"
__all__ = ["Tensor", "Function", "no_grad", "nn", "optim", "data", "comm", "parallel"]


def __getattr__(name):
    # comm and parallel import mpi4py, which initialises MPI: only when they are used.
    if name in ("comm", "parallel", "report"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'minidist' has no attribute {name!r}")
