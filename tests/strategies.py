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
    """``(collective, algorithm, size, nbytes, profile)`` for `minidist.comm.costmodel`:
    every modelled collective and variant, 1..5000 ranks, 0..1 GiB, a named profile or
    that profile with a node-wide bandwidth limit and 1..64 ranks per node."""
    from minidist.comm.costmodel import COLLECTIVES
    from minidist.comm.profiles import PROFILES

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
