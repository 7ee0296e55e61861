"""The labs' PNG plots: one colour and marker per strategy (or variant) everywhere, axes
with units, drawn from the same numbers as the printed table. Matplotlib's Agg backend,
small files (dpi 80), written atomically.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from minidist.report.style import STRATEGY_STYLE  # noqa: E402  (strategies look as in the reports)

STYLES = {  # name: (colour, marker); strategies take theirs from STRATEGY_STYLE
    **{name: (s["color"], s["marker"]) for name, s in STRATEGY_STYLE.items()},
    "batch": ("tab:blue", "o"), "sync": ("tab:green", "^"), "layer": ("tab:purple", "D"),
    "none": ("tab:gray", "x"), "batch-global": ("black", "+"),
    "before": ("tab:blue", "o"), "after": ("tab:orange", "s"),
    "affine": ("tab:blue", "o"), "no-affine": ("tab:orange", "s"),
    "input": ("tab:gray", "x"), "BatchNorm": ("tab:blue", "o"), "LayerNorm": ("tab:purple", "D"),
    "sigmoid no BN": ("tab:olive", "o"), "sigmoid + BN": ("tab:blue", "o"),
    "relu no BN": ("tab:red", "s"), "relu + BN": ("tab:green", "s"),
    "shm": ("black", "x"), "pcie": ("tab:brown", "P"), "nvlink": ("tab:green", "^"),
    "10gbe": ("tab:red", "v"), "100gbe": ("tab:orange", "s"), "ib-hdr": ("tab:blue", "o"),
}
_EXTRA = [("tab:brown", "P"), ("tab:pink", "*"), ("tab:olive", "h"), ("tab:cyan", "<"), ("navy", ">")]
_ASSIGNED: dict = {}  # other names: the next unused extra style, the same all run long


def style(name: str) -> dict:
    """Matplotlib keywords for `name`: its colour and marker (its own, its first word's, or
    the next unused extra one)."""
    base = name.split(" ")[0]
    if name not in STYLES and base not in STYLES and name not in _ASSIGNED:
        _ASSIGNED[name] = _EXTRA[len(_ASSIGNED) % len(_EXTRA)]
    colour, marker = STYLES.get(name) or STYLES.get(base) or _ASSIGNED[name]
    return {"color": colour, "marker": marker, "label": name}


def lines(ax, series: dict, xlabel: str, ylabel: str, title: str = "", logx=False, logy=False,
          linestyles: dict | None = None) -> None:
    """Draw ``{name: (x, y)}`` or ``{name: (x, y, yerr)}`` on `ax` (error bars: spread over seeds)."""
    for name, values in series.items():
        x, y = values[0], values[1]
        kw = dict(style(name), markersize=4, linewidth=1.2)
        if linestyles and name in linestyles:
            kw["linestyle"] = linestyles[name]
        if len(values) > 2 and values[2] is not None:
            ax.errorbar(x, y, yerr=values[2], capsize=2, **kw)
        else:
            ax.plot(x, y, **kw)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    if logx:
        ax.set_xscale("log", base=2 if logx == 2 else 10)
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def save(draw, path: str, ncols: int = 1, size=(6.0, 4.0)) -> str:
    """Call ``draw(figure)``, save the PNG to `path` (atomically) and return the path."""
    fig = plt.figure(figsize=size)
    try:
        draw(fig)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
    finally:
        plt.close(fig)
    from common import write_atomic
    write_atomic(path, buf.getvalue())
    return path
