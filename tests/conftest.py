import importlib.util
import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/strategies.py, tests/mpi_util.py
# compare.py calibrates and caches a cost profile: keep the tests' cache out of the user's home
os.environ.setdefault("MINIDIST_CACHE", tempfile.mkdtemp(prefix="minidist-test-cache-"))

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture
def torch():
    """The PyTorch oracle; tests that use it are skipped where torch is not installed."""
    if not HAS_TORCH:
        pytest.skip("torch not installed (pip install -e '.[torch]')")
    import torch as _torch

    _torch.set_num_threads(1)
    return _torch
