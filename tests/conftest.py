import importlib.util
import inspect
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/strategies.py, tests/mpi_util.py

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture
def torch():
    """The PyTorch oracle; tests that use it are skipped where torch is not installed."""
    if not HAS_TORCH:
        pytest.skip("torch not installed (pip install -e '.[torch]')")
    import torch as _torch

    _torch.set_num_threads(1)
    return _torch


_LAUNCHES_MPI = ("run_mpi(", "launch(", "mpiexec")


def _launches_mpi(func) -> bool:
    """Whether `func`'s source starts an mpiexec job (directly or through mpi_util)."""
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return False
    return any(word in source for word in _LAUNCHES_MPI)


def pytest_collection_modifyitems(config, items):
    """Mark every test that launches mpiexec, itself or through one of its fixtures, with
    ``mpi``: ``python -m pytest -q -m "not mpi"`` is then the quick single-process loop."""
    for item in items:
        funcs = [getattr(item, "function", None)]
        info = getattr(item, "_fixtureinfo", None)
        for defs in (info.name2fixturedefs.values() if info else ()):
            funcs += [d.func for d in defs]
        if any(_launches_mpi(f) for f in funcs if f is not None):
            item.add_marker(pytest.mark.mpi)
