"""The closed-form counts of counts.py, on their own (no MPI launch): conservation, the
textbook values where they apply, and independent re-derivations of the uneven cases.
(tests/test_comm_collectives.py checks them against the real ledgers on 1..5 and 7 ranks.)"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

from minidist.comm.auto import choose_allreduce_algorithm, set_auto_table
from minidist.cost.counts import COUNTED_COLLECTIVES, ceil_log2, message_counts, rounds
from minidist.comm.rooted import HEADER_BYTES
from strategies import collective_count_cases

KEYS = ("messages_sent", "messages_received", "bytes_sent", "bytes_received")


def everyone(collective, size, count, itemsize=8, root=0, algorithm=None):
    return [message_counts(collective, size, r, count, itemsize, root, algorithm) for r in range(size)]


@settings(max_examples=300, deadline=None)
@given(collective_count_cases())
def test_what_is_sent_is_received(case):
    collective, algorithm, size, count, itemsize, root = case
    per_rank = everyone(collective, size, count, itemsize, root, algorithm)
    assert sum(c["messages_sent"] for c in per_rank) == sum(c["messages_received"] for c in per_rank)
    assert sum(c["bytes_sent"] for c in per_rank) == sum(c["bytes_received"] for c in per_rank)
    assert all(c[k] >= 0 and isinstance(c[k], int) for c in per_rank for k in KEYS)


@settings(max_examples=200, deadline=None)
@given(collective_count_cases())
def test_message_counts_do_not_depend_on_the_length(case):
    """Empty chunks are still sent, so only bytes change with count."""
    collective, algorithm, size, count, itemsize, root = case
    for rank in {0, root, size - 1}:
        a = message_counts(collective, size, rank, count, itemsize, root, algorithm)
        b = message_counts(collective, size, rank, 0, itemsize, root, algorithm)
        assert (a["messages_sent"], a["messages_received"]) == (b["messages_sent"], b["messages_received"])


@pytest.mark.parametrize("size", [2, 3, 4, 5, 8, 12, 33])
def test_ring_moves_two_n_minus_one_over_n_of_the_buffer(size):
    count = 6 * size
    for c in everyone("ring_allreduce", size, count, itemsize=4):
        assert c["messages_sent"] == c["messages_received"] == 2 * (size - 1)
        assert c["bytes_sent"] == c["bytes_received"] == 2 * (size - 1) * count * 4 // size
    for name in ("ring_reduce_scatter", "ring_allgather"):
        for c in everyone(name, size, count, itemsize=4):
            assert c["bytes_sent"] == c["bytes_received"] == (size - 1) * count * 4 // size


@pytest.mark.parametrize("size,count", [(3, 7), (4, 2), (5, 3), (7, 100003), (6, 1), (9, 0)])
def test_uneven_ring_counts_match_the_chunks_each_step_carries(size, count):
    """Independent re-derivation: walk the ring's steps, adding np.array_split's chunk
    lengths (reduce-scatter: rank r sends chunk r-s-1 at step s; all-gather: chunk r-s)."""
    lengths = [len(c) for c in np.array_split(np.empty(count), size)]
    for r in range(size):
        rs_sent = sum(lengths[(r - s - 1) % size] for s in range(size - 1))
        rs_recv = sum(lengths[(r - s - 2) % size] for s in range(size - 1))
        ag_sent = sum(lengths[(r - s) % size] for s in range(size - 1))
        ag_recv = sum(lengths[(r - s - 1) % size] for s in range(size - 1))
        got = message_counts("ring_allreduce", size, r, count, 1)
        assert (got["bytes_sent"], got["bytes_received"]) == (rs_sent + ag_sent, rs_recv + ag_recv)
        got = message_counts("ring_reduce_scatter", size, r, count, 1)
        assert (got["bytes_sent"], got["bytes_received"]) == (rs_sent, rs_recv)


@pytest.mark.parametrize("size", [1, 2, 3, 6, 9])
def test_rooted_linear_counts(size):
    nbytes = 10 * 8
    for root in range(size):
        for name in ("gather_to_root", "reduce_to_root"):
            c = everyone(name, size, 10, 8, root, "linear" if name == "reduce_to_root" else None)
            assert c[root]["messages_received"] == size - 1 and c[root]["bytes_received"] == (size - 1) * nbytes
            assert all(c[r]["messages_sent"] == 1 for r in range(size) if r != root)
        c = everyone("broadcast", size, 10, 8, root, "linear")
        assert c[root]["messages_sent"] == size - 1 and c[root]["bytes_sent"] == (size - 1) * nbytes


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 13, 16, 33])
def test_binomial_tree_shape(size):
    for root in sorted({0, size // 2, size - 1}):
        bcast = everyone("broadcast", size, 5, 8, root, "binomial")
        assert bcast[root]["messages_sent"] == ceil_log2(size)
        assert sum(c["messages_sent"] for c in bcast) == size - 1
        assert max(c["messages_sent"] for c in bcast) <= ceil_log2(size)
        assert all(bcast[r]["messages_received"] == 1 for r in range(size) if r != root)
        reduce = everyone("reduce_to_root", size, 5, 8, root, "binomial")
        assert [(c["messages_sent"], c["messages_received"]) for c in reduce] == \
               [(c["messages_received"], c["messages_sent"]) for c in bcast]  # the mirror image
    assert rounds("broadcast", size, "binomial") == math.ceil(math.log2(size))


def test_scatter_counts_the_header():
    c = everyone("scatter", 4, 10, 24, root=1)  # 10 rows of 24 bytes: pieces 3, 3, 2, 2 rows
    assert c[1] == {"messages_sent": 6, "messages_received": 0,
                    "bytes_sent": 3 * HEADER_BYTES + (10 - 3) * 24, "bytes_received": 0}
    assert c[3] == {"messages_sent": 0, "messages_received": 2, "bytes_sent": 0,
                    "bytes_received": HEADER_BYTES + 2 * 24}


@pytest.mark.parametrize("size", [2, 4, 8, 16])
def test_rabenseifner_and_recursive_doubling_on_powers_of_two(size):
    count, L = 16 * size, int(math.log2(size))
    for c in everyone("rabenseifner_allreduce", size, count, itemsize=1):
        assert c["messages_sent"] == c["messages_received"] == 2 * L
        assert c["bytes_sent"] == c["bytes_received"] == 2 * (size - 1) * count // size
    for c in everyone("recursive_doubling_allreduce", size, count, itemsize=1):
        assert c["messages_sent"] == L and c["bytes_sent"] == L * count


@pytest.mark.parametrize("size", [3, 5, 6, 7, 12])
def test_folding_for_other_sizes(size):
    p = 1 << (size.bit_length() - 1)
    rem, L = size - p, int(math.log2(p))
    for name, core in (("recursive_doubling_allreduce", L), ("rabenseifner_allreduce", 2 * L)):
        c = everyone(name, size, 40, 8)
        assert c[0] == {"messages_sent": 1, "messages_received": 1, "bytes_sent": 320, "bytes_received": 320}
        assert c[1]["messages_sent"] == core + 1  # folds in, runs the core, hands back
        assert c[size - 1]["messages_sent"] == core
        assert rounds(name, size) == core + 2 and rem > 0


def test_auto_allreduce_counts_follow_the_chosen_algorithm(monkeypatch):
    """With the built-in table, "auto" follows the "shm" profile: recursive doubling for a tiny
    buffer, a bandwidth-optimal algorithm for a large one; the counts are that one's."""
    set_auto_table(None)
    small, large = 16, (1 << 20) // 8 + 1
    assert choose_allreduce_algorithm(small * 8, 4) == "recursive_doubling"
    assert choose_allreduce_algorithm(large * 8, 4) in ("ring", "rabenseifner")
    for count in (small, large):
        name = {"recursive_doubling": "recursive_doubling_allreduce", "ring": "ring_allreduce",
                "rabenseifner": "rabenseifner_allreduce"}[choose_allreduce_algorithm(count * 8, 4)]
        for rank in range(4):
            assert message_counts("allreduce", 4, rank, count, 8) == message_counts(name, 4, rank, count, 8)


@pytest.mark.parametrize("size", [1, 2, 5, 8])
def test_rounds(size):
    assert rounds("ring_allreduce", size) == 2 * (size - 1)
    assert rounds("ring_allgather", size) == rounds("ring_reduce_scatter", size) == size - 1
    assert rounds("broadcast", size, "linear") == rounds("gather_to_root", size) == size - 1
    assert rounds("barrier", size) == ceil_log2(size)
    assert rounds("allreduce", size, "ring") == rounds("ring_allreduce", size)


def test_one_rank_moves_nothing():
    for name in COUNTED_COLLECTIVES:
        algorithm = "linear" if name in ("broadcast", "reduce_to_root") else None
        assert set(message_counts(name, 1, 0, 99, 8, algorithm=algorithm).values()) == {0}


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown collective 'alltoall'"):
        message_counts("alltoall", 4, 0, 10, 8)
    with pytest.raises(ValueError, match="rank=4"):
        message_counts("ring_allreduce", 4, 4, 10, 8)
    with pytest.raises(ValueError, match="root=9"):
        message_counts("broadcast", 4, 0, 10, 8, root=9)
    with pytest.raises(ValueError, match="'tree'"):
        message_counts("broadcast", 4, 0, 10, 8, algorithm="tree")
    with pytest.raises(ValueError, match="'mpi'"):
        message_counts("allreduce", 4, 0, 10, 8, algorithm="mpi")
    with pytest.raises(ValueError, match="algorithm"):
        rounds("allreduce", 4)


def test_an_auto_table_without_a_row_for_two_ranks_is_refused():
    with pytest.raises(ValueError, match="needs a row for 2 ranks"):
        set_auto_table({4: ((0, "ring"),)})
    assert choose_allreduce_algorithm(8, 2) == "recursive_doubling"  # the built-in table stays
