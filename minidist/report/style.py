"""One look per strategy, in every plot: colour, marker and dash stay with the name.

Colours are the Okabe-Ito palette (distinguishable with colour-blindness); a strategy
keeps its colour in every panel and plot, and lines that coincide stay visible through
their own marker, dash pattern and a small horizontal offset (`dodge`). `series_path` is where a plot writes its numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text

STRATEGY_STYLE = {
    "local": {"color": "#000000", "marker": "o", "linestyle": "-"},
    "dp": {"color": "#E69F00", "marker": "s", "linestyle": "--"},
    "dp-scatter": {"color": "#CC79A7", "marker": "P", "linestyle": "--"},
    "dp-root": {"color": "#D55E00", "marker": "X", "linestyle": "-."},
    "hub": {"color": "#0072B2", "marker": "^", "linestyle": (0, (1, 1))},
    "ddp": {"color": "#009E73", "marker": "D", "linestyle": ":"},
    "ddp-no-overlap": {"color": "#56B4E9", "marker": "v", "linestyle": (0, (5, 2, 1, 2))},
    "ddp-fp16": {"color": "#F0E442", "marker": "*", "linestyle": (0, (3, 1, 1, 1, 1, 1))},
}
_SPARE = ["#999999", "#882255", "#44AA99", "#332288"]
COMPUTE_COLOR = "#D9D9D9"  # the light segment under every strategy's communication
THRESHOLD_COLOR = "#C00000"


def style(strategy: str) -> dict:
    """matplotlib keyword arguments for `strategy`'s lines (the same in every plot)."""
    if strategy in STRATEGY_STYLE:
        return dict(STRATEGY_STYLE[strategy])
    index = sum(map(ord, strategy)) % len(_SPARE)
    return {"color": _SPARE[index], "marker": "h", "linestyle": "-"}


def dodge(index: int, count: int, width: float = 0.24) -> float:
    """Horizontal offset of the `index`-th of `count` curves (within +-width/2 of a step):
    curves lying on top of each other show each strategy's markers side by side."""
    return 0.0 if count < 2 else width * (index / (count - 1) - 0.5)


def series_path(png: Path) -> Path:
    """The JSON file beside a plot that holds the numbers it draws."""
    return Path(png).with_suffix(".json")


def write_series(png: Path, series: dict) -> None:
    write_text(series_path(png), json.dumps(series, indent=1, allow_nan=False) + "\n")
