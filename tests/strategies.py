"""Hypothesis strategies shared by the tests. Shared file: only ADD functions to it."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


# ---- autograd ops (tests/test_autograd_ops.py) ----------------------------------------------
def broadcastable_shape_pairs(max_dims: int = 4, max_side: int = 4):
    """Pairs ``(shape_a, shape_b)`` that NumPy can broadcast together: 0-d to `max_dims`
    dims, sides 1..`max_side`, including size-1 axes that stretch and missing leading axes."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=2, min_dims=0, max_dims=max_dims, min_side=1, max_side=max_side,
    ).map(lambda shapes: shapes.input_shapes)


def float64_arrays(shape, min_magnitude: float = 0.0, max_magnitude: float = 3.0):
    """float64 arrays of `shape` with finite entries of magnitude in [min, max], either sign
    (``min_magnitude > 0`` keeps them away from zero, for denominators)."""
    if min_magnitude == 0:
        elements = st.floats(-max_magnitude, max_magnitude, allow_nan=False,
                             allow_infinity=False, allow_subnormal=False)
    else:
        positive = st.floats(min_magnitude, max_magnitude, allow_nan=False, allow_infinity=False)
        elements = positive | positive.map(lambda v: -v)
    return hnp.arrays(np.float64, shape, elements=elements)


@st.composite
def broadcastable_array_pairs(draw, max_dims: int = 4, max_side: int = 4,
                              nonzero_second: bool = False):
    """``(a, b)`` float64 arrays whose shapes broadcast together; with `nonzero_second`
    every entry of b has magnitude >= 0.5 (safe to divide by)."""
    shape_a, shape_b = draw(broadcastable_shape_pairs(max_dims, max_side))
    a = draw(float64_arrays(shape_a))
    b = draw(float64_arrays(shape_b, min_magnitude=0.5 if nonzero_second else 0.0))
    return a, b


# ---- cost model (tests/test_costmodel.py) ------------------------------------------------
@st.composite
def cost_model_cases(draw):
    """``(collective, algorithm, size, nbytes, profile)`` for `minidist.cost.costmodel`:
    every modelled collective and variant, 1..5000 ranks, 0..1 GiB, a named profile or
    that profile with a node-wide bandwidth limit and 1..64 ranks per node."""
    from minidist.cost.costmodel import COLLECTIVE_STEPS as COLLECTIVES
    from minidist.cost.profiles import PROFILES

    collective = draw(st.sampled_from(sorted(set(COLLECTIVES) - {"allreduce"})))
    algorithm = None
    if collective in ("broadcast", "reduce_to_root"):
        algorithm = draw(st.sampled_from(["linear", "binomial"]))
    size = draw(st.integers(1, 5000))
    nbytes = draw(st.integers(0, 1 << 30))
    profile = PROFILES[draw(st.sampled_from(sorted(PROFILES)))]
    if draw(st.booleans()):
        profile = profile.with_(node_bw=draw(st.floats(1e8, 1e12)),
                                ranks_per_node=draw(st.integers(1, 64)))
    return collective, algorithm, size, nbytes, profile


# ---- closed-form collective counts (tests/test_comm_counts.py) -----------------------------
@st.composite
def collective_count_cases(draw, max_size: int = 70):
    """``(collective, algorithm, size, count, itemsize, root)`` for
    `minidist.cost.counts.message_counts`: every collective counted there, 1..`max_size`
    ranks, counts around the number of ranks (0, < N, N, N+1, ...) or up to 10**6."""
    from minidist.cost.counts import COUNTED_COLLECTIVES as COLLECTIVES

    collective = draw(st.sampled_from(sorted(set(COLLECTIVES) - {"allreduce"})))
    algorithm = None
    if collective in ("broadcast", "reduce_to_root"):
        algorithm = draw(st.sampled_from(["linear", "binomial"]))
    size = draw(st.integers(1, max_size))
    count = draw(st.integers(0, 3 * size + 2) | st.integers(0, 10**6))
    itemsize = draw(st.sampled_from([1, 4, 8, 24]))
    root = draw(st.integers(0, size - 1))
    return collective, algorithm, size, count, itemsize, root


# ---- convolution and pooling geometry (tests/test_functional_conv.py) --------------------------
@st.composite
def conv2d_geometries(draw):
    """``(x_shape, weight_shape, stride, padding)`` for F.conv2d whose output is at least
    1x1: 1-3 batch items and channels, kernels 1-4 (non-square), strides 1-3, padding 0-2;
    stride and padding drawn as an int or an (h, w) pair."""
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    stride = sh if sh == sw and draw(st.booleans()) else (sh, sw)
    padding = ph if ph == pw and draw(st.booleans()) else (ph, pw)
    return (n, c, h, w), (o, c, kh, kw), stride, padding


@st.composite
def max_pool2d_geometries(draw):
    """``(x_shape, kernel_size, stride, padding)`` for F.max_pool2d with output at least
    1x1 and padding at most half the kernel (PyTorch's rule); stride may be None."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    stride = draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), (kh, kw), stride, (ph, pw)


# ---- sharding (tests/test_parallel_units.py) ------------------------------------------------------
@st.composite
def sharding_problems(draw):
    """``(n, num_replicas, batch_size, seed)`` for a DistributedSampler: datasets of 0-60
    samples over 1-6 ranks (n may be smaller than the number of ranks), per-rank batch
    sizes 1-5."""
    return (draw(st.integers(0, 60)), draw(st.integers(1, 6)), draw(st.integers(1, 5)),
            draw(st.integers(0, 2**16)))
