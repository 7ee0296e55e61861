"""minidist: a from-scratch data-parallel training simulator (NumPy autograd, collectives
from point-to-point MPI, DP / hub / DDP compared step by step). See DESIGN.md."""
from .autograd import Function, Tensor, no_grad

__version__ = "0.1.0"
__all__ = ["Tensor", "Function", "no_grad"]
