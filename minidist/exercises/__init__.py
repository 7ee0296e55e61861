"""Exercises: the learner writes BatchNorm, LayerNorm and a ring all-reduce; minidist grades.

    python -m minidist.exercises list
    python -m minidist.exercises start batchnorm my_work/      # a scaffold to fill in
    python -m minidist.exercises check my_work/                 # one line per case, a total

`check` compares the learner's NumPy code with the library's own (``F.batch_norm`` and
``F.layer_norm`` run in float64 through autograd, finite differences, and
``minidist.comm.ring_allreduce`` under ``mpiexec -n 1..5``) and names the first quantity
that disagrees: ``running_var after step 2 at [1]: expected ..., got ...``. The scaffolds
hold the signatures and the formulas, never the solutions. See docs/exercises.md.
"""
EXERCISES = {
    "batchnorm": ("batchnorm.py", ("batchnorm_forward", "batchnorm_backward"),
                  "BatchNorm for (N, C) and (N, C, H, W) inputs: running statistics and backward"),
    "layernorm": ("layernorm.py", ("layernorm_forward", "layernorm_backward"),
                  "LayerNorm over the last dimension and its backward"),
    "ring": ("ring.py", ("ring_allreduce",),
             "ring all-reduce over mpi4py point-to-point calls, graded under mpiexec -n 1..5"),
}

__all__ = ["EXERCISES"]
