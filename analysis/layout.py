"""How a figure is laid out: the package's matplotlib settings around every plotting function, panels,
one legend under them (notes as its title), titles that fit, and the gid every plotted series carries
("source|method|distribution|multiplier|kind") so that tests and notebooks can find it."""
from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from . import style


def styled(func):
    """Run a plotting function under the package's matplotlib settings (style.context)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with style.context():
            return func(*args, **kwargs)
    return wrapper


def gid(source: str, method: str, distribution: str, multiplier: float, kind: str = "series") -> str:
    return f"{source}|{method}|{distribution}|{float(multiplier):g}|{kind}"


def panels(n: int, height: float = style.PANEL_HEIGHT, max_cols: int = 3) -> tuple[Figure, list[Axes]]:
    cols = max(1, min(n, max_cols))
    rows = max(1, math.ceil(n / cols))
    width, _ = style.figure_size(cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width, height * rows), squeeze=False, layout="constrained")
    flat = list(axes.flat)
    for extra in flat[n:]:
        extra.remove()
    return fig, flat[:n]


def legend_key(handle, label: str, position: int) -> tuple:
    """Runs before the paper's numbers, then the method order, distribution, multiplier."""
    artist = handle[0] if isinstance(handle, tuple) else handle
    artist = getattr(artist, "lines", [artist])[0] if hasattr(artist, "lines") else artist
    parts = (artist.get_gid() or "").split("|") if hasattr(artist, "get_gid") else []
    if len(parts) != 5 or parts[0] not in ("runs", "paper"):
        return (2, (0, ""), (0, ""), 0.0, position)
    source, method, distribution, multiplier, _ = parts
    return (int(source == "paper"), style.method_sort_key(method), style.distribution_sort_key(distribution),
            float(multiplier), position)


def wrap(text: str, width_in: float, points: float) -> str:
    """`text` broken into lines that fit `width_in` inches at a font of `points` pt."""
    chars = max(20, int(width_in * 72 / (0.52 * points)))
    return "\n".join(textwrap.fill(part, chars) for part in text.split("\n"))


def legend(fig: Figure, axes: Sequence[Axes], notes: Sequence[str] = ()) -> None:
    """One legend for the figure, under the panels, each label once, in method order, with `notes`
    (what the points are, what was moved) as its title."""
    handles, labels = {}, []
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = h
                labels.append(label)
    if not labels:
        return
    position = {label: i for i, label in enumerate(labels)}
    labels.sort(key=lambda label: legend_key(handles[label], label, position[label]))
    entry = 0.5 + 0.056 * max(map(len, labels))  # inches per legend column at 7 pt (handle + text + gap)
    cols = max(1, min(len(labels), int(fig.get_figwidth() // entry)))
    if fig.get_figwidth() < style.DOUBLE_COLUMN and math.ceil(len(labels) / cols) > 7:
        fig.set_figwidth(style.DOUBLE_COLUMN)  # a long legend: use the full page width instead of a tall figure
        cols = max(1, min(len(labels), int(fig.get_figwidth() // entry)))
    title = wrap("\n".join(notes), fig.get_figwidth(), 7) if notes else None
    rows = math.ceil(len(labels) / cols) + (title.count("\n") + 1 if title else 0)
    # constrained layout puts the legend under the panels: make room for it rather than shrink the panels
    fig.set_figheight(fig.get_figheight() + 0.16 * rows + 0.1)
    fig.legend([handles[label] for label in labels], labels, loc="outside lower center", ncols=cols, title=title,
               handlelength=2.2, columnspacing=1.0, borderaxespad=0.2)


def figure_title(fig: Figure, group: str, what: str) -> None:
    """"group: what" as the figure's title, on two lines (then wrapped) where one is too long for its width
    (call after `legend`, which may widen the figure)."""
    size = plt.rcParams["figure.titlesize"]
    text = f"{group}: {what}"
    fig.suptitle(text if wrap(text, fig.get_figwidth(), size) == text else
                 wrap(f"{group}\n{what}", fig.get_figwidth(), size))


def seeds_note(summ: pd.DataFrame, unit: str = "seeds") -> str:
    """"mean ± std over 3 seeds" ("2–3 seeds" where it varies), naming diverged runs left out."""
    counts = summ["seeds"].astype(int)
    low, high = counts.min(), counts.max()
    if high == 1 and unit == "seeds":
        note = "one seed each (no std)"
    else:
        note = f"mean ± std over {low}{'' if low == high else f'–{high}'} {unit}"
    diverged = int(summ["diverged"].sum()) if "diverged" in summ.columns else 0
    return note + (f" ({diverged} diverged run{'s' if diverged > 1 else ''} left out)" if diverged else "")


def percent(s: float) -> str:
    return f"sparsity {100 * s:g}%"


def series_keys(frame: pd.DataFrame, keys: list[str]) -> list[tuple]:
    pairs = {tuple(r) for r in frame[keys].itertuples(index=False)}
    return sorted(pairs, key=lambda k: (style.method_sort_key(k[0]), *(style.distribution_sort_key(v) if i == 0
                                                                         else (0, str(v)) for i, v in enumerate(k[1:]))))
