import importlib.util
import inspect
import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/strategies.py, tests/mpi_util.py
# compare.py calibrates and caches a cost profile: keep the tests' cache out of the user's home
os.environ.setdefault("MINIDIST_CACHE", tempfile.mkdtemp(prefix="minidist-test-cache-"))

HAS_TORCH = importlib.util.find_spec("torch") is not None

# The MPI tests that CI runs a second time under Open MPI (.ci/run: pytest -m openmpi): every
# launch path (minidist run/compare, scripts, errors and aborts on every rank, the README) and
# one size of the collectives and of the strategy equivalence. The whole MPI suite took 11 min
# under Open MPI on this 2-core machine (loaded), too long for a 10-minute CI beside MPICH's run.
OPENMPI_SUBSET = (
    "tests/test_cli_mpi.py", "tests/test_cli_compare.py", "tests/test_readme.py",
    "tests/test_mpi_launcher.py", "tests/test_comm_failures.py",
    "tests/test_comm_collectives.py::test_every_collective_matches_numpy[3]",
    "tests/test_comm_collectives.py::test_ledger_matches_closed_form_counts[3]",
    "tests/test_parallel_equivalence.py::test_strategies_equal_local_training[none-3]",
)


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
    ``mpi``: ``python -m pytest -q -m "not mpi"`` is then the quick single-process loop; and
    the tests in `OPENMPI_SUBSET` with ``openmpi``."""
    for item in items:
        funcs = [getattr(item, "function", None)]
        info = getattr(item, "_fixtureinfo", None)
        for defs in (info.name2fixturedefs.values() if info else ()):
            funcs += [d.func for d in defs]
        if any(_launches_mpi(f) for f in funcs if f is not None):
            item.add_marker(pytest.mark.mpi)
        if item.nodeid.startswith(OPENMPI_SUBSET):
            item.add_marker(pytest.mark.openmpi)


# ---- shared-memory files that aborted jobs leave behind (minidist/shm_segments.py) ---------------
# The suite aborts many MPI jobs on purpose (fail-stop, the watchdog): when pytest ends,
# remove the shared-memory files they left that no live process maps, and the one this
# process maps as an MPI singleton (Open MPI leaves it behind at exit). The snapshot is
# taken before collection, since importing a test module may start MPI in this process.
_shm_before: set | None = None


def pytest_configure(config):
    global _shm_before
    from minidist import shm_segments

    _shm_before = shm_segments.snapshot()


def pytest_unconfigure(config):
    from minidist import shm_segments

    if _shm_before is not None:
        shm_segments.remove_leaked(_shm_before, wait=1.0, including_own=True)
