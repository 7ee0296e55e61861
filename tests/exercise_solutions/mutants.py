"""Subtly wrong solutions, each the correct one (correct/) with one edit: the grader must
fail every one of them and name the quantity it gets wrong (tests/test_exercises.py).

`write_mutant(name, folder)` writes the mutant as ``folder/<exercise>.py``, a file a
learner could have written; kept as edits so that each wrong idea reads as one diff.
"""
from pathlib import Path

CORRECT = Path(__file__).resolve().parent / "correct"

# name: (file, what is wrong, the correct text, the wrong text)
MUTANTS = {
    "bn_biased_running_var": (
        "batchnorm.py", "the running variance is updated with the biased batch variance",
        "var * m / (m - 1)", "var"),
    "bn_momentum_swapped": (
        "batchnorm.py", "running_mean weighs the old value by momentum, the batch by 1 - momentum",
        "running_mean[...] = (1 - momentum) * running_mean + momentum * mean",
        "running_mean[...] = momentum * running_mean + (1 - momentum) * mean"),
    "bn_conv_wrong_axes": (
        "batchnorm.py", "conv statistics after x.reshape(-1, C), which mixes channels and pixels",
        "mean, var = x.mean(axis=axes), x.var(axis=axes)",
        "mean, var = x.reshape(-1, x.shape[1]).mean(axis=0), x.reshape(-1, x.shape[1]).var(axis=0)"),
    "bn_backward_ignores_mean": (
        "batchnorm.py", "the backward ignores the batch mean's dependence on x",
        "(dxhat - dxhat.mean(axis=axes, keepdims=True)", "(dxhat"),
    "ln_wrong_axis": (
        "layernorm.py", "normalises over the batch axis 0 instead of the last axis",
        "mean = x.mean(axis=-1, keepdims=True)\n    var = x.var(axis=-1, keepdims=True)",
        "mean = x.mean(axis=0, keepdims=True)\n    var = x.var(axis=0, keepdims=True)"),
    "ln_eps_outside_sqrt": (
        "layernorm.py", "eps is added outside the square root",
        "1.0 / np.sqrt(var + eps)", "1.0 / (np.sqrt(var) + eps)"),
    "ln_backward_ignores_mean": (
        "layernorm.py", "the backward ignores each row mean's dependence on x",
        "(dxhat - dxhat.mean(axis=-1, keepdims=True)", "(dxhat"),
    "ln_dgamma_one_axis": (
        "layernorm.py", "dgamma is summed over axis 0 only, not over every leading axis",
        "(dout * xhat).sum(axis=lead)", "(dout * xhat).sum(axis=0)"),
    "ring_wrong_on_one_rank": (
        "ring.py", "the last rank skips the last all-gather step, keeping one partial chunk",
        "        x[recv] = buf", "        if not (rank == size - 1 and step == size - 2):\n"
                                "            x[recv] = buf"),
    "ring_raises_on_rank_1": (
        "ring.py", "rank 1 raises, leaving its neighbours waiting",
        "    rank, size = comm.Get_rank(), comm.Get_size()\n",
        "    rank, size = comm.Get_rank(), comm.Get_size()\n"
        "    if rank == 1:\n        raise ValueError('rank 1 gives up')\n"),
}


def write_mutant(name: str, folder: Path) -> Path:
    """Write mutant `name` into `folder`; returns the file's path."""
    filename, what, right, wrong = MUTANTS[name]
    text = (CORRECT / filename).read_text()
    if text.count(right) != 1:
        raise ValueError(f"mutant {name}: {right!r} is not exactly once in correct/{filename}")
    body = text.replace(right, wrong).split("\n", 1)[1]  # drop the "correct" docstring line
    path = Path(folder) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'"""Wrong: {what}."""\n' + body)
    return path
