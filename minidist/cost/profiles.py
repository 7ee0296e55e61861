"""Hardware profiles for the alpha-beta-gamma cost model, as plain data.

A profile says what one message costs on a fabric:

- ``alpha``: seconds per message (latency plus per-message software cost),
- ``beta``: seconds per byte through one rank's link (1 / link bandwidth),
- ``gamma``: seconds per byte of the reduced vector (the ``a += b`` arithmetic),
- ``eager_max`` and ``rendezvous_alpha`` (optional, calibrated profiles): MPI libraries
  send small messages eagerly and larger ones after a handshake (rendezvous), which adds
  a fixed cost per message; a message of more than ``eager_max`` bytes then costs
  ``rendezvous_alpha + m * beta`` instead of ``alpha + m * beta``. ``None`` (the named
  profiles): one alpha for every size;
- ``ranks_per_node`` and ``node_bw``: ranks placed on one machine share its memory (or
  its NIC); while ``c`` of them move bytes at once, the node carries ``c`` times the
  traffic, so a step can go no faster than ``c * bytes / node_bw``. ``node_bw=None`` means
  no shared limit (one rank per node, or each rank with its own links).

The named profiles below are nominal figures from vendor specifications and well-known
published measurements, each with its source; they are for projections, not promises.
`minidist.comm.calibrate.calibrate` measures the machine you run on instead.
Profiles are saved as JSON (never pickle) with `save_profile` / `load_profile`.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..atomic import write_text

__all__ = ["Profile", "PROFILES", "get_profile", "save_profile", "load_profile"]


@dataclass(frozen=True)
class Profile:
    """Alpha-beta-gamma parameters of one fabric (SI units: seconds, bytes, bytes/s).

    Args:
        name: short identifier, e.g. ``"ib-hdr"`` or ``"calibrated"``.
        alpha: seconds per message.
        beta: seconds per byte on one rank's link.
        gamma: seconds per byte reduced (elementwise sum of two vectors of that size).
        ranks_per_node: ranks that share one node's memory bandwidth (or NIC).
        node_bw: bytes/s the node carries in total for all its ranks; ``None`` = no limit.
        source: where the numbers come from (spec sheet, paper, or calibration run).
        eager_max: largest message (bytes) that costs `alpha`; larger ones cost
            `rendezvous_alpha`. ``None``: `alpha` for every size.
        rendezvous_alpha: seconds per message above `eager_max` (set with it).
        call_overhead: seconds per collective call beyond its messages (a Python
            collective's checks, scratch and bookkeeping; 0 for the named profiles,
            measured by `minidist.cost.machine`).
    """

    name: str
    alpha: float
    beta: float
    gamma: float
    ranks_per_node: int = 1
    node_bw: float | None = None
    source: str = ""
    eager_max: int | None = None
    rendezvous_alpha: float | None = None
    call_overhead: float = 0.0

    def __post_init__(self):
        for field in ("alpha", "beta", "gamma", "call_overhead"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"profile {self.name!r}: {field} must be a finite number >= 0 "
                                 f"(got {value!r}); it is seconds per message/byte")
        if not (isinstance(self.ranks_per_node, int) and self.ranks_per_node >= 1):
            raise ValueError(f"profile {self.name!r}: ranks_per_node must be an int >= 1 "
                             f"(got {self.ranks_per_node!r})")
        if self.node_bw is not None and not (math.isfinite(self.node_bw) and self.node_bw > 0):
            raise ValueError(f"profile {self.name!r}: node_bw must be > 0 bytes/s or None for "
                             f"no node-wide limit (got {self.node_bw!r})")

        if (self.eager_max is None) != (self.rendezvous_alpha is None):
            raise ValueError(f"profile {self.name!r}: eager_max and rendezvous_alpha go together "
                             f"(got eager_max={self.eager_max!r}, rendezvous_alpha="
                             f"{self.rendezvous_alpha!r}); give both, or neither for one alpha")
        if self.eager_max is not None and not (
                isinstance(self.eager_max, int) and self.eager_max >= 0
                and isinstance(self.rendezvous_alpha, (int, float))
                and math.isfinite(self.rendezvous_alpha) and self.rendezvous_alpha >= 0):
            raise ValueError(f"profile {self.name!r}: eager_max must be an int >= 0 bytes and "
                             f"rendezvous_alpha a finite number >= 0 seconds (got "
                             f"{self.eager_max!r}, {self.rendezvous_alpha!r})")

    def alpha_for(self, nbytes) -> float:
        """Seconds per message of `nbytes`: `alpha`, or `rendezvous_alpha` above `eager_max`."""
        if self.eager_max is not None and nbytes > self.eager_max:
            return self.rendezvous_alpha
        return self.alpha

    @property
    def bandwidth(self) -> float:
        """Link bandwidth in bytes/s (1 / beta)."""
        return math.inf if self.beta == 0 else 1.0 / self.beta

    def with_(self, **changes) -> "Profile":
        """A copy with some fields replaced (profiles are immutable)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Profile":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown profile fields {sorted(unknown)}; expected {sorted(known)}")
        return cls(**data)


GB = 1e9

# Each entry: nominal numbers, with where they come from. "Nominal" means a spec-sheet or
# typical published figure, not a measurement on any particular machine.
PROFILES: dict[str, Profile] = {
    "shm": Profile(
        "shm", alpha=0.5e-6, beta=1 / (10 * GB), gamma=1 / (10 * GB),
        ranks_per_node=16, node_bw=40 * GB,
        source="Shared memory on one x86 node (MPICH ch4 POSIX). alpha: OSU osu_latency "
               "intra-node small-message latency is typically 0.2-0.5 us; beta: ~10 GB/s "
               "large-message intra-node bandwidth (osu_bw, copy through shared cells); "
               "gamma: one core's float32 add, memory-bound, ~10 GB/s of output (nominal); "
               "node_bw: fitted to a measured 16-rank Python ring all-reduce of 64 MiB "
               "(76 ms on a 16-core machine vs 24 ms with 2 ranks)."),
    "pcie": Profile(
        "pcie", alpha=10e-6, beta=1 / (12 * GB), gamma=1 / (500 * GB),
        ranks_per_node=8, node_bw=50 * GB,
        source="GPU to GPU through host memory over PCIe 4.0 x16 (31.5 GB/s per direction "
               "by spec, ~25 GB/s achieved per copy; staging through the host halves it). "
               "alpha: ~10 us for a device-host-device copy pair (nominal cudaMemcpy "
               "latency); gamma: reduction on a GPU with ~1.5 TB/s HBM (3 bytes moved per "
               "byte reduced); node_bw: nominal root-complex / host-memory limit, depends on "
               "the board's PCIe switch topology."),
    "nvlink": Profile(
        "nvlink", alpha=3e-6, beta=1 / (240 * GB), gamma=1 / (500 * GB),
        ranks_per_node=8, node_bw=None,
        source="NVLink 3 through NVSwitch (DGX A100): 300 GB/s per direction per GPU by spec; "
               "nccl-tests all_reduce_perf busbw ~230-240 GB/s on 8 A100s (NVIDIA's published "
               "figures). alpha: nominal per-step latency of NCCL's ring; each GPU has its "
               "own links, so no shared node limit."),
    "10gbe": Profile(
        "10gbe", alpha=25e-6, beta=1 / (1.15 * GB), gamma=1 / (10 * GB),
        ranks_per_node=1, node_bw=None,
        source="10 Gigabit Ethernet with MPI over TCP: 1.25 GB/s line rate, ~1.15 GB/s "
               "achieved by TCP; ~20-30 us MPI ping-pong latency over kernel TCP (typical "
               "published osu_latency figures). gamma: one CPU core's float32 add, ~10 GB/s "
               "(nominal). One rank per node."),
    "100gbe": Profile(
        "100gbe", alpha=5e-6, beta=1 / (11.5 * GB), gamma=1 / (10 * GB),
        ranks_per_node=1, node_bw=None,
        source="100 Gigabit Ethernet with RoCE v2: 12.5 GB/s line rate, ~11.5 GB/s achieved; "
               "alpha ~2-5 us with RDMA (nominal; kernel TCP is ~3x worse). gamma: one CPU "
               "core's float32 add, ~10 GB/s (nominal). One rank per node."),
    "ib-hdr": Profile(
        "ib-hdr", alpha=1.0e-6, beta=1 / (24 * GB), gamma=1 / (10 * GB),
        ranks_per_node=1, node_bw=None,
        source="InfiniBand HDR (200 Gb/s = 25 GB/s, ConnectX-6): ~24 GB/s osu_bw and "
               "~1 us osu_latency are the published MVAPICH/NVIDIA figures. gamma: one CPU "
               "core's float32 add, ~10 GB/s (nominal). One rank per node."),
}


def get_profile(profile: "Profile | str") -> Profile:
    """A `Profile` from itself or from a name in `PROFILES`."""
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except (KeyError, TypeError):
        raise ValueError(f"unknown profile {profile!r}; expected a Profile or one of "
                         f"{sorted(PROFILES)}") from None


def save_profile(profile: Profile, path: "str | Path") -> None:
    """Write `profile` to `path` as JSON, atomically (a killed write leaves the old file)."""
    write_text(path, json.dumps(profile.to_dict(), indent=2, allow_nan=False) + "\n")


def load_profile(path: "str | Path") -> Profile:
    """Read a profile written by `save_profile` (validated on load); a corrupt or
    truncated file raises ValueError naming the file and the line."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}:{exc.colno}: not a valid profile JSON file ({exc.msg}); "
                         "is it truncated? write it again with save_profile or minidist calibrate") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text profile JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}:1: expected a JSON object with profile fields, got "
                         f"{type(data).__name__}")
    try:
        return Profile.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a valid profile: {exc}") from None
