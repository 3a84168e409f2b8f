"""Figures of a sweep: accuracy against training FLOPs, sparsity and inference FLOPs (with the
paper's numbers as an optional overlay); `make_figures` also draws the run-folder figures of
`folder_plots` (per-layer densities, mask-update dynamics), which this module exports too.

Every function takes runs (one row per run, as `load_runs` gives) or run folders of ONE
(dataset, model) pair and returns a matplotlib Figure with a title; `save_figure` writes it.
Accuracies are the mean over seeds with the standard deviation as error bars (none for one seed),
and each figure says over how many seeds. FLOP axes are logarithmic where the values span a factor
of `LOG_SPAN` or more. Accuracy axes cover the bulk of the points: the few points so far below them
that showing them would squeeze the others into a third of the axis are marked by an arrow at the
bottom edge, with their value written above it.

Each plotted series has a gid "source|method|distribution|multiplier|kind" (source "runs" or
"paper"; kind "series", "band" or "point"; `layout.gid`) so that tests and notebooks can find it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from . import style
from .folder_plots import folder_records, layer_density, loss_landscape, mask_updates
from .layout import figure_title, gid, legend, panels, percent, seeds_note, series_keys, styled
from .runs import (LOWER_IS_BETTER, group_metric, group_rows, group_tag, group_title, groups, keeps_every_weight,
                   load_paper, paper_rows, summary)
from .style import save_figure

__all__ = [
    "FIGURES",
    "accuracy_vs_inference_flops",
    "accuracy_vs_sparsity",
    "accuracy_vs_train_flops",
    "layer_density",
    "loss_landscape",
    "make_figures",
    "mask_updates",
    "save_figure",
]

ACCURACY_LABELS = {"test_accuracy": "test accuracy (%)", "best_test_accuracy": "best test accuracy (%)",
                   "val_accuracy": "validation accuracy (%)",
                   "test_bpc": "test bits per character (lower is better)"}
# each figure's name is the start of its files' names (<figure>-<dataset>-<model>.<format>)
FIGURES = ("accuracy-vs-train-flops", "accuracy-vs-sparsity", "accuracy-vs-inference-flops", "layer-density",
           "mask-updates")
FIGURE_ALIASES = {"train-flops": "accuracy-vs-train-flops", "sparsity": "accuracy-vs-sparsity",
                  "inference-flops": "accuracy-vs-inference-flops"}  # the earlier names, still accepted
LOG_SPAN = 5.0  # a FLOP axis whose values span this factor or more is logarithmic: on a linear axis from 0 the
#                 smallest would sit in its first fifth, and the sparse methods crowd together there
SQUEEZE = 3.0  # points whose showing would stretch the y range the others need more than this are left out of it,
BULK = 5  # while at least this many points, and three quarters of them, stay in it


class _Point(NamedTuple):
    """One plotted mean with its std, for the y range: `name` ("Small-Dense at 0.98") and `color` label
    it when it falls below the range; x None for a reference line (dense), which is never left out."""

    x: float | None
    y: float
    err: float
    name: str = ""
    color: str = ""


def _one_group(runs: pd.DataFrame) -> tuple[str, str, str]:
    """(dataset, model, title) of runs that must be of one dataset, model and protocol."""
    found = groups(runs)
    if len(found) != 1:
        names = "; ".join(group_title(*g) for g in found) or "none"
        raise ValueError(f"expected runs of one dataset/model and protocol, found {names}; select one "
                         "(--dataset/--model, or runs of one protocol)")
    dataset, model, _ = found[0]
    return dataset, model, group_title(*found[0])


def _paper_for(paper: pd.DataFrame | bool | None, dataset: str, model: str) -> pd.DataFrame:
    if paper is None or paper is False:
        return pd.DataFrame()
    table = load_paper() if paper is True else paper
    return paper_rows(table, dataset, model)


def _series_style(method: str, distribution: str, paper: bool, multiplier: float = 1.0) -> dict:
    kwargs = dict(color=style.method_color(method), marker=style.method_marker(method),
                  linestyle=style.distribution_linestyle(distribution),
                  fillstyle=style.distribution_fillstyle(distribution), markerfacecoloralt="white",
                  capsize=2, elinewidth=0.7)
    if float(multiplier) != 1.0:
        kwargs.update(style.MULTIPLIER_STYLE)
    if paper:
        kwargs.update(style.PAPER_STYLE)
    return kwargs


def _errorbar(ax: Axes, x, y, yerr, method: str, distribution: str, multiplier: float, points: list[_Point],
              sparsity=None, paper: bool = False) -> None:
    """One series with std error bars; its points are added to `points` for the y range, named by the
    series' label and, where the axes do not show it, their `sparsity` (one value per point)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    err = np.zeros_like(y) if yerr is None else np.nan_to_num(np.asarray(yerr, float))
    label = style.series_label(method, distribution, multiplier, paper)
    container = ax.errorbar(x, y, yerr=err if err.any() else None, label=label,
                            **_series_style(method, distribution, paper, multiplier))
    container.lines[0].set_gid(gid("paper" if paper else "runs", method, distribution, multiplier))
    names = [label] * len(y) if sparsity is None else [f"{label} at {s:g}" for s in sparsity]
    points += [_Point(*p, style.method_color(method)) for p in zip(x, y, err, names)]


def _baseline(frame: pd.DataFrame) -> pd.Series:
    """Rows of the dense baseline: methods that keep every weight (a class trait, not a name)."""
    return frame["method"].map(keeps_every_weight)


def _dense_band(ax: Axes, summ: pd.DataFrame, points: list[_Point], flops_column: str | None = None) -> None:
    """The dense baseline as a horizontal band (mean +- std over seeds), and a point at its FLOPs."""
    dense = summ[_baseline(summ)]
    if dense.empty:
        return
    row = dense.loc[(dense["multiplier"] - 1.0).abs().idxmin()]
    mean, std = row["test_accuracy_mean"], row["test_accuracy_std"]
    std = 0.0 if pd.isna(std) else std
    name = row["method"]
    color = style.method_color(name)
    if std > 0:
        ax.axhspan(mean - std, mean + std, color=color, alpha=0.12, linewidth=0, label="_nolegend_")
    line = ax.axhline(mean, color=color, linewidth=0.9, label=style.method_label(name))
    line.set_gid(gid("runs", name, "none", row["multiplier"], "band"))
    points.append(_Point(None, mean, std))
    if flops_column:
        for r in dense.itertuples():
            (point,) = ax.plot(getattr(r, flops_column), r.test_accuracy_mean, marker=style.method_marker(name),
                               color=color, linestyle="none", label="_nolegend_")
            point.set_gid(gid("runs", name, "none", r.multiplier, "point"))


def _paper_dense(ax: Axes, paper: pd.DataFrame, points: list[_Point]) -> None:
    dense = paper[_baseline(paper)]
    if dense.empty:
        return
    name = dense["method"].iloc[0]
    line = ax.axhline(dense["top1_accuracy"].iloc[0], color=style.method_color(name), linewidth=0.9,
                      linestyle=style.PAPER_LINESTYLE, label=f"{style.method_label(name)} [paper]")
    line.set_gid(gid("paper", name, "none", 1.0, "band"))
    points.append(_Point(None, dense["top1_accuracy"].iloc[0], 0.0))


def _paper_notes(paper: pd.DataFrame) -> list[str]:
    """Why a plotted row of the paper's sits at another sparsity than the paper states (`paper_rows`)."""
    moved = paper[paper["placement"] != ""] if "placement" in paper.columns else paper.iloc[:0]
    return [f"{style.series_label(r.method, r.distribution, r.train_multiplier, True)} at {r.sparsity:g}: "
            f"{r.placement}" for r in moved.itertuples()]


def _measure(metric: str) -> str:
    """What a figure's y axis measures, for its title."""
    return "bits per character" if metric in LOWER_IS_BETTER else "accuracy"


def _fit_y(ax: Axes, points: Sequence[_Point]) -> None:
    """Leave the lowest points out of the y range while showing them would more than SQUEEZE-fold the
    range the others need (mean ± std), while BULK points and three quarters of them stay in range, and
    mark each with an arrow at the bottom edge and a note of its value ("Small-Dense: 39.4 ± 18.4 (below
    the axis)"); the others' error bars stay whole."""
    high = max((p.y + p.err for p in points), default=0.0)
    kept = sorted(points, key=lambda p: p.y - p.err)
    below: list[_Point] = []
    while len(kept) > BULK and len(below) < len(points) // 4 and kept[0].x is not None:
        rest_low = kept[1].y - kept[1].err
        if kept[0].y >= rest_low or high - (kept[0].y - kept[0].err) <= SQUEEZE * (high - rest_low):
            break
        below.append(kept.pop(0))
    if not below:
        return
    low = kept[0].y - kept[0].err
    strip = 0.05 + 0.065 * len(below)  # the notes stand in a strip under the kept points, a text line (~6%) each
    span = (high - low) / (1 - 0.05 - strip)
    bottom = low - strip * span
    ax.set_ylim(bottom, high + 0.05 * span)
    left, right = ax.get_xlim()
    log = ax.get_xscale() == "log"
    for i, p in enumerate(below):
        (arrow,) = ax.plot(p.x, bottom, marker="v", color=p.color, markersize=5, linestyle="none", clip_on=False,
                           label="_nolegend_")
        arrow.set_gid(f"below|{p.name}")
        right_half = (np.log(p.x / left) / np.log(right / left) if log else (p.x - left) / (right - left)) > 0.5
        note = ax.text(0.97 if right_half else 0.03, 0.045 + 0.065 * (len(below) - 1 - i),
                       f"{p.name}: {p.y:.1f} ± {p.err:.1f} (below the axis)", transform=ax.transAxes, fontsize=6,
                       color=p.color, ha="right" if right_half else "left", va="bottom",
                       bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=0.4))
        note.set_gid(f"below-note|{p.name}")


def _drawn_x(ax: Axes) -> np.ndarray:
    """The positive x of the series and points on `ax` (not of the bands, whose x are axes coordinates)."""
    lines = [line for line in ax.get_lines() if (line.get_gid() or "|band").split("|")[-1] != "band"]
    xs = np.array([x for line in lines for x in np.atleast_1d(line.get_xdata())], float)
    return xs[np.isfinite(xs) & (xs > 0)]


def _flops_axes(axes: Sequence[Axes]) -> None:
    """FLOP multipliers on the x axes: logarithmic when the points drawn on them span LOG_SPAN or more,
    with ticks at 1, 2, 5 x 10^k (1, 2 or 1 where that is too many) labelled "0.02x", "0.1x", "1x"; linear
    otherwise, labelled the same way."""
    every = np.concatenate([_drawn_x(ax) for ax in axes])
    if len(every) == 0 or every.max() / every.min() < LOG_SPAN:
        for ax in axes:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda t, _: f"{t:g}x"))
        return
    for ax in axes:
        xs = _drawn_x(ax)
        lo, hi = (xs.min(), xs.max()) if len(xs) else (every.min(), every.max())
        ax.set_xscale("log")
        for steps in ((1, 2, 5), (1, 2), (1,)):  # the finest that keeps to five labels (a panel's width)
            ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                     for m in steps if lo / 1.3 <= m * 10.0 ** e <= hi * 1.3]
            if len(ticks) <= 5:
                break
        ax.set_xlim(lo / 1.3, hi * 1.3)
        ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())


def _sparse_levels(summ: pd.DataFrame) -> list[float]:
    levels = sorted({round(float(s), 6) for s in summ.loc[~_baseline(summ), "sparsity"]})
    return [s for s in levels if s > 0]


@styled
def accuracy_vs_train_flops(runs: pd.DataFrame, paper: pd.DataFrame | bool | None = None,
                            metric: str = "test_accuracy") -> Figure:
    """Accuracy against the training-FLOPs multiplier (x dense), one panel per sparsity (the paper's
    figure 2, left). A line joins a method's runs at different multipliers (1x, 2x, ...); points
    above 1x are marked with their multiplier. The dense baseline is the grey band."""
    dataset, model, title = _one_group(runs)
    summ = summary(runs, metric)
    ref = _paper_for(paper, dataset, model)
    levels = _sparse_levels(summ)
    if not levels:
        raise ValueError("no sparse runs to plot against training FLOPs")
    fig, axes = panels(len(levels))
    notes, panel_points = [], []
    for ax, level in zip(axes, levels):
        points: list[_Point] = []
        _dense_band(ax, summ, points, "train_flops_multiplier")
        here = summ[(~_baseline(summ)) & np.isclose(summ["sparsity"], level)]
        for method, distribution in series_keys(here, ["method", "distribution"]):
            s = here[(here["method"] == method) & (here["distribution"] == distribution)]
            s = s.sort_values("train_flops_multiplier")
            _errorbar(ax, s["train_flops_multiplier"], s["test_accuracy_mean"], s["test_accuracy_std"],
                      method, distribution, 1.0, points)
            for r in s.itertuples():
                if r.multiplier != 1.0:
                    ax.annotate(f"{r.multiplier:g}x", (r.train_flops_multiplier, r.test_accuracy_mean), fontsize=6,
                                xytext=(3, -8), textcoords="offset points", color=style.method_color(method))
        if not ref.empty:
            _paper_dense(ax, ref, points)
            p = ref[(~_baseline(ref)) & np.isclose(ref["sparsity"], level) & ref["train_flops_x"].notna()]
            for method, distribution in series_keys(p, ["method", "distribution"]):
                s = p[(p["method"] == method) & (p["distribution"] == distribution)].sort_values("train_flops_x")
                _errorbar(ax, s["train_flops_x"], s["top1_accuracy"], s["top1_std"], method, distribution, 1.0,
                          points, paper=True)
            notes += _paper_notes(p)
        ax.set_title(percent(level))
        ax.set_xlabel("training FLOPs (× dense)")
        ax.set_ylabel(ACCURACY_LABELS[metric])
        panel_points.append(points)
    _flops_axes(axes)
    for ax, points in zip(axes, panel_points):
        if metric not in LOWER_IS_BETTER:  # the range-fitting leaves out the lowest points: there the best
            _fit_y(ax, points)
    legend(fig, axes, [seeds_note(summ), *dict.fromkeys(notes)])
    figure_title(fig, title, f"{_measure(metric)} vs training FLOPs")
    return fig


@styled
def accuracy_vs_sparsity(runs: pd.DataFrame, paper: pd.DataFrame | bool | None = None,
                         metric: str = "test_accuracy") -> Figure:
    """Accuracy against sparsity, one line per (method, distribution, multiplier) (the paper's figure 4);
    the dense baseline is a horizontal band (mean +- std over seeds)."""
    dataset, model, title = _one_group(runs)
    summ = summary(runs, metric)
    ref = _paper_for(paper, dataset, model)
    fig, axes = panels(1, height=2.6)
    ax = axes[0]
    points: list[_Point] = []
    _dense_band(ax, summ, points)
    sparse = summ[~_baseline(summ)]
    for method, distribution, multiplier in series_keys(sparse, ["method", "distribution", "multiplier"]):
        s = sparse[(sparse["method"] == method) & (sparse["distribution"] == distribution)
                   & (sparse["multiplier"] == multiplier)].sort_values("sparsity")
        _errorbar(ax, s["sparsity"], s["test_accuracy_mean"], s["test_accuracy_std"], method, distribution,
                  multiplier, points, s["sparsity"])
    notes = []
    if not ref.empty:
        _paper_dense(ax, ref, points)
        p = ref[(~_baseline(ref)) & (ref["sparsity"] > 0)]
        for method, distribution, multiplier in series_keys(p, ["method", "distribution", "train_multiplier"]):
            s = p[(p["method"] == method) & (p["distribution"] == distribution)
                  & (p["train_multiplier"] == multiplier)].sort_values("sparsity")
            _errorbar(ax, s["sparsity"], s["top1_accuracy"], s["top1_std"], method, distribution, multiplier,
                      points, s["sparsity"], True)
        notes = _paper_notes(p)
    ticks = sorted({round(float(v), 4) for v in sparse["sparsity"]} | ({round(float(v), 4) for v in ref["sparsity"]
                                                                         if v > 0} if not ref.empty else set()))
    if 0 < len(ticks) <= 8:
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel("sparsity")
    ax.set_ylabel(ACCURACY_LABELS[metric])
    if metric not in LOWER_IS_BETTER:
        _fit_y(ax, points)
    legend(fig, axes, [seeds_note(summ), *notes])
    figure_title(fig, title, f"{_measure(metric)} vs sparsity")
    return fig


@styled
def accuracy_vs_inference_flops(runs: pd.DataFrame, paper: pd.DataFrame | bool | None = None,
                                metric: str = "test_accuracy") -> Figure:
    """Accuracy against the inference-FLOPs multiplier (f_S / f_D of the final model), one line per
    (method, distribution, multiplier) through its sparsities; dense is the band and the point at 1."""
    dataset, model, title = _one_group(runs)
    summ = summary(runs, metric)
    ref = _paper_for(paper, dataset, model)
    fig, axes = panels(1, height=2.6)
    ax = axes[0]
    points: list[_Point] = []
    _dense_band(ax, summ, points, "inference_flops_multiplier")
    sparse = summ[~_baseline(summ)]
    for method, distribution, multiplier in series_keys(sparse, ["method", "distribution", "multiplier"]):
        s = sparse[(sparse["method"] == method) & (sparse["distribution"] == distribution)
                   & (sparse["multiplier"] == multiplier)].sort_values("inference_flops_multiplier")
        _errorbar(ax, s["inference_flops_multiplier"], s["test_accuracy_mean"], s["test_accuracy_std"],
                  method, distribution, multiplier, points, s["sparsity"])
    notes = []
    if not ref.empty:
        _paper_dense(ax, ref, points)
        p = ref[(~_baseline(ref)) & ref["test_flops_x"].notna()]
        for method, distribution, multiplier in series_keys(p, ["method", "distribution", "train_multiplier"]):
            s = p[(p["method"] == method) & (p["distribution"] == distribution)
                  & (p["train_multiplier"] == multiplier)].sort_values("test_flops_x")
            _errorbar(ax, s["test_flops_x"], s["top1_accuracy"], s["top1_std"], method, distribution, multiplier,
                      points, s["sparsity"], True)
        notes = _paper_notes(p)
    ax.set_xlabel("inference FLOPs (× dense)")
    ax.set_ylabel(ACCURACY_LABELS[metric])
    _flops_axes(axes)
    if metric not in LOWER_IS_BETTER:
        _fit_y(ax, points)
    legend(fig, axes, [seeds_note(summ), *notes])
    figure_title(fig, title, f"{_measure(metric)} vs inference FLOPs")
    return fig


PLOTTERS = {
    "accuracy-vs-train-flops": accuracy_vs_train_flops,
    "accuracy-vs-sparsity": accuracy_vs_sparsity,
    "accuracy-vs-inference-flops": accuracy_vs_inference_flops,
}


def make_figures(runs: pd.DataFrame, run_dirs: Sequence[str | Path] = (), out: str | Path = "results/figures",
                 formats: Sequence[str] = ("pdf", "png"), paper: pd.DataFrame | bool | None = None,
                 figures: Sequence[str] = FIGURES, metric: str = "test_accuracy",
                 report=print) -> list[Path]:
    """Draw and save every figure in `figures` for each (dataset, model) in the runs; return the files.

    Figures that lack their input (no sparse runs, no run folders, no mask updates) are skipped with
    a note through `report`. Files are named <figure>-<dataset>-<model>.<format>, with the protocol's
    settings after the model where the runs of a dataset and model have several protocols.
    """
    figures = [FIGURE_ALIASES.get(f, f) for f in figures]
    unknown = [f for f in figures if f not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    formats = style.parse_formats(formats)
    paper_table = load_paper() if paper is True else paper
    written: list[Path] = []
    records = folder_records(run_dirs)
    for dataset, model, protocol in groups(runs):
        subset = group_rows(runs, dataset, model, protocol)
        tag = group_tag(dataset, model, protocol)
        if paper_table is not None and paper_table is not False and paper_rows(paper_table, dataset, model).empty:
            report(f"note: the paper has no numbers for {dataset}/{model}; no overlay on its figures")
        ids, title = set(subset["run_id"]), group_title(dataset, model, protocol)
        folders = [r for r in records if r.record.get("run_id", r.path.name) in ids or r.path.name in ids]
        with style.context():
            for name in figures:
                try:
                    if name in PLOTTERS:
                        shown = group_metric(subset, metric)
                        fig = PLOTTERS[name](subset, paper=paper_table, metric=shown)
                        stem = name.replace("accuracy", "bpc") if shown in LOWER_IS_BETTER else name
                    elif name == "layer-density":
                        stem, fig = name, layer_density(folders, title=title)
                    else:
                        stem, fig = name, mask_updates(folders, title=title)
                except ValueError as err:
                    report(f"skipped {name} for {title}: {err}")
                    continue
                written += save_figure(fig, out, f"{stem}-{tag}", formats)
                plt.close(fig)
    return written
