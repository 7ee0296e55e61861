"""minidist: a from-scratch data-parallel training simulator (NumPy autograd, collectives
from point-to-point MPI, DP / hub / DDP compared step by step). See docs/architecture.md.

Every submodule is imported on first use, so ``import minidist.comm`` loads no autograd
or nn, and comm and parallel (which initialise MPI through mpi4py) load only when used.
"""
import importlib
import os

# Launched as one of several MPI ranks on a machine: one BLAS thread per rank, as torchrun
# does, since BLAS's own threads only fight over the cores (a 67k-parameter MLP step took
# ~150 ms instead of ~5 ms with 4 ranks on 2 cores). A value already set wins. It must
# happen before NumPy is first imported: scripts import minidist first.
# Such a job is also fail-stop from here on: an error on one rank ends every rank (this
# loads minidist.comm, and so MPI, in that case only; see docs/reliability.md).
if importlib.import_module(".launcher", __name__).launcher_size() > 1:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    importlib.import_module(".mpich", __name__).apply_defaults()  # before MPI starts: see mpich.py
    _allocator = importlib.import_module(".allocator", __name__)  # see minidist/allocator.py
    if _allocator.wanted():
        _allocator.keep_freed_memory()
    importlib.import_module(".comm.failstop", __name__).install()

__version__ = "0.1.0"

_SUBMODULES = ("autograd", "nn", "optim", "data", "comm", "cost", "parallel", "report")
_NAMES = {"Tensor": "autograd", "Function": "autograd", "no_grad": "autograd",
          "manual_seed": "nn.init", "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint"}
__all__ = ["Tensor", "Function", "no_grad", "manual_seed", "save_checkpoint", "load_checkpoint", *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'minidist' has no attribute {name!r}")
