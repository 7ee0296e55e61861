"""minidist: a from-scratch data-parallel training simulator (NumPy autograd, collectives
from point-to-point MPI, DP / hub / DDP compared step by step). See DESIGN.md."""
import importlib
import os

# Launched as one of several MPI ranks on a machine: one BLAS thread per rank, as torchrun
# does, since BLAS's own threads only fight over the cores (a 67k-parameter MLP step took
# ~150 ms instead of ~5 ms with 4 ranks on 2 cores). A value already set wins. It must
# happen before NumPy is first imported: scripts import minidist first.
if int(os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or 1) > 1:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    if os.environ.get("MINIDIST_MALLOC", "keep") != "default":  # see minidist/allocator.py
        from .allocator import keep_freed_memory

        keep_freed_memory()

from .autograd import Function, Tensor, no_grad
from . import data, nn, optim
from .nn.init import manual_seed

__version__ = "0.1.0"
__all__ = ["Tensor", "Function", "no_grad", "manual_seed", "nn", "optim", "data", "comm", "parallel"]


def __getattr__(name):
    # comm and parallel import mpi4py, which initialises MPI: only when they are used.
    if name in ("comm", "parallel", "report"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'minidist' has no attribute {name!r}")
