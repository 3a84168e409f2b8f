"""One place for how figures look: a fixed colour, marker and label per method, figure sizes
for a two-column paper, fonts, and saving to PDF/PNG/SVG without clipping.

Colours come from seaborn's colour-blind-safe "colorblind" palette (Okabe-Ito hues, written out) plus
colour-blind-safe hues of Paul Tol's palette (indigo, wine, olive); every method keeps its colour in every figure,
a marker per method keeps the series apart in greyscale print as well, and the marker's fill and the line
style tell a method's distributions apart.
"""
from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure

# seaborn.color_palette("colorblind").as_hex(), written out so that no library version changes a colour
COLORBLIND = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc",
              "#ca9161", "#fbafe4", "#949494", "#ece133", "#56b4e9"]
TOL_INDIGO, TOL_WINE, TOL_OLIVE = "#332288", "#882255", "#999933"

METHOD_ORDER = ["dense", "small-dense", "static", "snip", "gmp", "set", "snfs", "rigl",
                "dsr", "deepr", "lottery-static", "lottery-rigl"]
METHOD_COLORS: dict[str, str] = {
    "dense": "#000000",
    "small-dense": COLORBLIND[7],     # grey
    "static": COLORBLIND[0],          # blue
    "snip": COLORBLIND[9],            # sky blue
    "gmp": COLORBLIND[5],             # brown
    "set": COLORBLIND[2],             # green
    "snfs": COLORBLIND[4],            # purple
    "rigl": COLORBLIND[3],            # vermillion
    "dsr": COLORBLIND[1],             # orange
    "deepr": TOL_INDIGO,
    "lottery-static": TOL_WINE,
    "lottery-rigl": TOL_OLIVE,
}
METHOD_MARKERS: dict[str, str] = {
    "dense": "o", "small-dense": "s", "static": "v", "snip": "<", "gmp": "D", "set": "^", "snfs": "P",
    "rigl": "o", "dsr": "X", "deepr": "h", "lottery-static": ">", "lottery-rigl": "*",
}
METHOD_LABELS: dict[str, str] = {
    "dense": "Dense", "small-dense": "Small-Dense", "static": "Static", "snip": "SNIP", "gmp": "GMP",
    "set": "SET", "snfs": "SNFS", "rigl": "RigL", "dsr": "DSR", "deepr": "DeepR",
    "lottery-static": "Lottery+Static", "lottery-rigl": "Lottery+RigL",
}
# colours for methods outside the table (picked by a stable hash, never a method's colour above)
SPARE_COLORS = [COLORBLIND[6], COLORBLIND[8], "#117733", "#aa4499", "#88ccee"]
SPARE_MARKERS = ["d", "p", "8", "H", "1"]

DISTRIBUTION_LABELS = {"uniform": "uniform", "er": "ER", "erk": "ERK", "global": "global", "none": "", "": ""}
DISTRIBUTION_LINESTYLES = {"uniform": "-", "er": ":", "erk": "-.", "global": (0, (3, 1, 1, 1, 1, 1))}
# the marker's fill tells the distributions of one method apart (its colour and shape stay the method's):
# filled for uniform, half-filled (the rest white) for the others
DISTRIBUTION_FILLSTYLES = {"erk": "left", "er": "bottom", "global": "right", "custom": "top"}
DISTRIBUTION_COLORS = {"uniform": "#bbbbbb", "er": "#77aadd", "erk": "#ee8866"}  # Tol "light": bars only
MULTIPLIER_STYLE = dict(linewidth=1.8, markersize=6.0)  # runs at 2x, 5x, ...: a thicker line, larger markers
PAPER_LINESTYLE = "--"  # the paper's numbers: dashed lines, larger markers outlined in black
PAPER_STYLE = dict(linestyle=PAPER_LINESTYLE, markeredgecolor="black", markeredgewidth=0.8, markersize=6.0, alpha=0.9)
PATH_STYLES = {  # loss-landscape paths (not methods, so not method colours)
    "linear": dict(color="#222222", linestyle="-", marker="o"),
    "bezier-sparse": dict(color=TOL_WINE, linestyle="--", marker="s"),
    "bezier-dense": dict(color="#44aa99", linestyle="-.", marker="^"),
}

SINGLE_COLUMN = 3.3  # inches: one column of a two-column paper
DOUBLE_COLUMN = 6.9  # inches: full width of a two-column paper
PANEL_HEIGHT = 2.4
FORMATS = ("pdf", "png", "svg")
DPI = 300

RC = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.title_fontsize": 7, "figure.titlesize": 9,
    "lines.linewidth": 1.2, "lines.markersize": 4.5, "errorbar.capsize": 2,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "grid.linewidth": 0.5, "axes.linewidth": 0.6, "legend.frameon": False,
    "savefig.dpi": DPI, "savefig.bbox": "tight", "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",  # editable text in PDF/SVG
    "figure.dpi": 110,
}


def _spare(name: str, choices: Sequence[str]) -> str:
    return choices[int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(choices)]


def method_color(method: str) -> str:
    """The method's colour (the same in every figure); unknown names get a stable spare colour."""
    return METHOD_COLORS.get(method) or _spare(method, SPARE_COLORS)


def method_marker(method: str) -> str:
    return METHOD_MARKERS.get(method) or _spare(method, SPARE_MARKERS)


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def method_sort_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def distribution_sort_key(distribution: str) -> tuple[int, str]:
    order = ["none", "", "uniform", "er", "erk", "global"]
    return (order.index(distribution) if distribution in order else len(order), str(distribution))


def distribution_linestyle(distribution: str) -> str | tuple:
    return DISTRIBUTION_LINESTYLES.get(str(distribution), "-")


def distribution_fillstyle(distribution: str) -> str:
    return DISTRIBUTION_FILLSTYLES.get(str(distribution), "full")


def series_label(method: str, distribution: str = "", multiplier: float = 1.0, paper: bool = False) -> str:
    """e.g. "RigL (ERK) 2x", "Static (uniform) [paper]"."""
    label = method_label(method)
    dist = DISTRIBUTION_LABELS.get(str(distribution), str(distribution))
    if dist and method not in ("dense", "small-dense"):
        label += f" ({dist})"
    if multiplier and float(multiplier) != 1.0:
        label += f" {float(multiplier):g}x"
    return label + (" [paper]" if paper else "")


@contextlib.contextmanager
def context() -> Iterator[None]:
    """matplotlib settings of every figure of the package (fonts 7-9 pt, thin lines, light grid)."""
    interactive = mpl.is_interactive()
    try:
        with mpl.rc_context(RC):
            try:
                yield
            finally:
                # a backend first loaded inside the block (IPython's inline backend is loaded on the first
                # figure) may switch interactive mode on; rc_context would undo that and stop the display
                interactive = mpl.is_interactive()
    finally:
        mpl.interactive(interactive)


def figure_size(panels: int = 1, width: str | float = "auto", height: float = PANEL_HEIGHT) -> tuple[float, float]:
    """(width, height) in inches: single column for one panel, double column for more."""
    if width == "auto":
        width = SINGLE_COLUMN if panels <= 1 else DOUBLE_COLUMN
    elif width == "single":
        width = SINGLE_COLUMN
    elif width == "double":
        width = DOUBLE_COLUMN
    return float(width), height


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """'pdf,png' -> ('pdf', 'png'); ValueError naming the known formats otherwise."""
    items = [f.strip().lower().lstrip(".") for f in (text.split(",") if isinstance(text, str) else text)]
    items = [f for f in items if f]
    unknown = [f for f in items if f not in FORMATS]
    if unknown or not items:
        raise ValueError(f"unknown figure format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(items))


def save_figure(fig: Figure, out: str | Path, name: str, formats: Sequence[str] = ("pdf", "png")) -> list[Path]:
    """Write `fig` as out/name.<format> for each format, cropped to its contents (nothing clipped)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with context():
        for fmt in parse_formats(formats):
            path = out / f"{name}.{fmt}"
            fig.savefig(path, format=fmt, dpi=DPI, bbox_inches="tight", pad_inches=0.02)
            paths.append(path)
    return paths
