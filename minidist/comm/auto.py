"""How ``allreduce(algorithm="auto")`` picks its algorithm: a table of byte thresholds per
number of ranks, as MPICH's own selection does, so that the runtime needs no cost model.

The built-in table is the alpha-beta-gamma model's choice for one shared-memory node (the
"shm" profile) on a grid of sizes (powers of two and 1.5 times them); `minidist.cost`
derives the same table from any profile (`cost.auto_table`, checked equal by a test) and
`cost.use_profile` installs it here. Every rank must install the same table.
"""
from __future__ import annotations

# ranks -> ((from_bytes, algorithm), ...): the last row whose from_bytes <= nbytes wins
SHM_TABLE = {
    2: ((0, "recursive_doubling"), (12288, "ring")),
    3: ((0, "recursive_doubling"), (2048, "ring")),
    4: ((0, "recursive_doubling"), (6144, "rabenseifner")),
    5: ((0, "recursive_doubling"), (6144, "ring")),
    6: ((0, "recursive_doubling"), (6144, "rabenseifner"), (16384, "ring")),
    7: ((0, "recursive_doubling"), (6144, "rabenseifner"), (49152, "ring")),
    8: ((0, "recursive_doubling"), (3072, "rabenseifner")),
    9: ((0, "recursive_doubling"), (3072, "rabenseifner"), (24576, "ring")),
    10: ((0, "recursive_doubling"), (3072, "rabenseifner"), (49152, "ring")),
    11: ((0, "recursive_doubling"), (3072, "rabenseifner"), (98304, "ring")),
    12: ((0, "recursive_doubling"), (3072, "rabenseifner")),
    13: ((0, "recursive_doubling"), (3072, "rabenseifner")),
    14: ((0, "recursive_doubling"), (3072, "rabenseifner")),
    15: ((0, "recursive_doubling"), (3072, "rabenseifner")),
    16: ((0, "recursive_doubling"), (1024, "rabenseifner")),
}
_table = SHM_TABLE
table_version = 0  # counts `set_auto_table` calls (a cached "auto" choice names the table it came from)


def set_auto_table(table: dict | None) -> None:
    """Install `table` (the shape of `SHM_TABLE`) for every later "auto" choice in this
    process; None restores the built-in one."""
    global _table, table_version
    table_version += 1
    if table is not None and 2 not in table:
        raise ValueError(f"an auto table needs a row for 2 ranks (it has rows for {sorted(table)}): "
                         "rows are looked up at the largest size <= N")
    _table = SHM_TABLE if table is None else {int(n): tuple(rows) for n, rows in table.items()}


def choose_allreduce_algorithm(nbytes: int, size: int) -> str:
    """The algorithm ``allreduce(algorithm="auto")`` runs for `nbytes` on `size` ranks:
    the installed table's row for `size` (the largest tabled size past its end)."""
    if size < 2:
        return "recursive_doubling"  # one rank: no message, any algorithm
    rows = _table.get(size) or _table[max(n for n in _table if n <= size)]
    chosen = rows[0][1]
    for from_bytes, algorithm in rows:
        if nbytes >= from_bytes:
            chosen = algorithm
    return chosen
