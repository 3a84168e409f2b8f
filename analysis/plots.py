"""Figures of a sweep: accuracy against training FLOPs, sparsity and inference FLOPs (with the
paper's numbers as an optional overlay), per-layer densities and mask-update dynamics.

Every function takes runs (one row per run, as `load_runs` gives) or run folders of ONE
(dataset, model) pair and returns a matplotlib Figure; `save_figure` writes it. Accuracies
are the mean over seeds with the standard deviation as error bars (none for one seed).

Each plotted series has a gid "source|method|distribution|multiplier|kind" (source "runs" or
"paper"; kind "series", "band" or "point") so that tests and notebooks can find it.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from . import style
from .runs import RunRecord, group_rows, group_tag, group_title, groups, load_paper, paper_rows, read_run, summary
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
                   "val_accuracy": "validation accuracy (%)"}
FIGURES = ("train-flops", "sparsity", "inference-flops", "layer-density", "mask-updates")


def _styled(func):
    """Run a plotting function under the package's matplotlib settings (style.context)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with style.context():
            return func(*args, **kwargs)
    return wrapper


def gid(source: str, method: str, distribution: str, multiplier: float, kind: str = "series") -> str:
    return f"{source}|{method}|{distribution}|{float(multiplier):g}|{kind}"


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


def _panels(n: int, height: float = style.PANEL_HEIGHT, max_cols: int = 3) -> tuple[Figure, list[Axes]]:
    cols = max(1, min(n, max_cols))
    rows = max(1, math.ceil(n / cols))
    width, _ = style.figure_size(cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width, height * rows), squeeze=False, layout="constrained")
    flat = list(axes.flat)
    for extra in flat[n:]:
        extra.remove()
    return fig, flat[:n]


def _legend_key(handle, label: str, position: int) -> tuple:
    """Runs before the paper's numbers, then the method order, distribution, multiplier."""
    artist = handle[0] if isinstance(handle, tuple) else handle
    artist = getattr(artist, "lines", [artist])[0] if hasattr(artist, "lines") else artist
    parts = (artist.get_gid() or "").split("|") if hasattr(artist, "get_gid") else []
    if len(parts) != 5 or parts[0] not in ("runs", "paper"):
        return (2, (0, ""), (0, ""), 0.0, position)
    source, method, distribution, multiplier, _ = parts
    return (int(source == "paper"), style.method_sort_key(method), style.distribution_sort_key(distribution),
            float(multiplier), position)


def _legend(fig: Figure, axes: Sequence[Axes], title: str | None = None) -> None:
    """One legend for the figure, under the panels, each label once, in method order."""
    handles, labels = {}, []
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = h
                labels.append(label)
    if not labels:
        return
    position = {label: i for i, label in enumerate(labels)}
    labels.sort(key=lambda label: _legend_key(handles[label], label, position[label]))
    entry = 0.5 + 0.056 * max(map(len, labels))  # inches per legend column at 7 pt (handle + text + gap)
    cols = max(1, min(len(labels), int(fig.get_figwidth() // entry)))
    if fig.get_figwidth() < style.DOUBLE_COLUMN and math.ceil(len(labels) / cols) > 7:
        fig.set_figwidth(style.DOUBLE_COLUMN)  # a long legend: use the full page width instead of a tall figure
        cols = max(1, min(len(labels), int(fig.get_figwidth() // entry)))
    rows = math.ceil(len(labels) / cols) + (1 if title else 0)
    # constrained layout puts the legend under the panels: make room for it rather than shrink the panels
    fig.set_figheight(fig.get_figheight() + 0.16 * rows + 0.1)
    fig.legend([handles[label] for label in labels], labels, loc="outside lower center", ncols=cols, title=title,
               handlelength=2.2, columnspacing=1.0, borderaxespad=0.2)


def _series_style(method: str, distribution: str, paper: bool, multiplier: float = 1.0) -> dict:
    kwargs = dict(color=style.method_color(method), marker=style.method_marker(method),
                  linestyle=style.distribution_linestyle(distribution), capsize=2, elinewidth=0.7)
    if float(multiplier) != 1.0:  # longer training: half-filled markers, a thicker line
        kwargs.update(style.MULTIPLIER_STYLE)
    if paper:
        kwargs.update(linestyle=style.PAPER_LINESTYLE, markerfacecolor="none", markeredgewidth=1.0, alpha=0.9)
    return kwargs


def _errorbar(ax: Axes, x, y, yerr, method: str, distribution: str, multiplier: float, paper: bool = False,
              label: str | None = None) -> None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    yerr = None if yerr is None else np.nan_to_num(np.asarray(yerr, float))
    if yerr is not None and not yerr.any():
        yerr = None
    label = label or style.series_label(method, distribution, multiplier, paper)
    container = ax.errorbar(x, y, yerr=yerr, label=label, **_series_style(method, distribution, paper, multiplier))
    container.lines[0].set_gid(gid("paper" if paper else "runs", method, distribution, multiplier))


def _dense_band(ax: Axes, summ: pd.DataFrame, flops_column: str | None = None) -> None:
    """The dense baseline as a horizontal band (mean +- std over seeds), and a point at its FLOPs."""
    dense = summ[summ["method"] == "dense"]
    if dense.empty:
        return
    row = dense.loc[(dense["multiplier"] - 1.0).abs().idxmin()]
    mean, std = row["test_accuracy_mean"], row["test_accuracy_std"]
    std = 0.0 if pd.isna(std) else std
    color = style.method_color("dense")
    if std > 0:
        ax.axhspan(mean - std, mean + std, color=color, alpha=0.12, linewidth=0, label="_nolegend_")
    line = ax.axhline(mean, color=color, linewidth=0.9, label="Dense (mean ± std)" if std > 0 else "Dense")
    line.set_gid(gid("runs", "dense", "none", row["multiplier"], "band"))
    if flops_column:
        for r in dense.itertuples():
            (point,) = ax.plot(getattr(r, flops_column), r.test_accuracy_mean, marker=style.method_marker("dense"),
                               color=color, linestyle="none", label="_nolegend_")
            point.set_gid(gid("runs", "dense", "none", r.multiplier, "point"))


def _paper_dense(ax: Axes, paper: pd.DataFrame) -> None:
    dense = paper[paper["method"] == "dense"]
    if dense.empty:
        return
    line = ax.axhline(dense["top1_accuracy"].iloc[0], color=style.method_color("dense"), linewidth=0.9,
                      linestyle=style.PAPER_LINESTYLE, label="Dense [paper]")
    line.set_gid(gid("paper", "dense", "none", 1.0, "band"))


def _series_keys(frame: pd.DataFrame, keys: list[str]) -> list[tuple]:
    pairs = {tuple(r) for r in frame[keys].itertuples(index=False)}
    return sorted(pairs, key=lambda k: (style.method_sort_key(k[0]), *(style.distribution_sort_key(v) if i == 0
                                                                         else (0, str(v)) for i, v in enumerate(k[1:]))))


def _sparse_levels(summ: pd.DataFrame, paper: pd.DataFrame) -> list[float]:
    levels = sorted({round(float(s), 6) for s in summ.loc[summ["method"] != "dense", "sparsity"]})
    return [s for s in levels if s > 0]


def _percent(s: float) -> str:
    return f"sparsity {100 * s:g}%"


@_styled
def accuracy_vs_train_flops(runs: pd.DataFrame, paper: pd.DataFrame | bool | None = None,
                            metric: str = "test_accuracy") -> Figure:
    """Accuracy against the training-FLOPs multiplier (x dense), one panel per sparsity (the paper's
    figure 2, left). A line joins a method's runs at different multipliers (1x, 2x, ...); points
    above 1x are marked with their multiplier. The dense baseline is the grey band."""
    dataset, model, title = _one_group(runs)
    summ = summary(runs, metric)
    ref = _paper_for(paper, dataset, model)
    levels = _sparse_levels(summ, ref)
    if not levels:
        raise ValueError("no sparse runs to plot against training FLOPs")
    fig, axes = _panels(len(levels))
    for ax, level in zip(axes, levels):
        _dense_band(ax, summ, "train_flops_multiplier")
        here = summ[(summ["method"] != "dense") & np.isclose(summ["sparsity"], level)]
        for method, distribution in _series_keys(here, ["method", "distribution"]):
            s = here[(here["method"] == method) & (here["distribution"] == distribution)]
            s = s.sort_values("train_flops_multiplier")
            _errorbar(ax, s["train_flops_multiplier"], s["test_accuracy_mean"], s["test_accuracy_std"],
                      method, distribution, 1.0)
            for r in s.itertuples():
                if r.multiplier != 1.0:
                    ax.annotate(f"{r.multiplier:g}x", (r.train_flops_multiplier, r.test_accuracy_mean), fontsize=6,
                                xytext=(3, -8), textcoords="offset points", color=style.method_color(method))
        if not ref.empty:
            _paper_dense(ax, ref)
            p = ref[(ref["method"] != "dense") & np.isclose(ref["sparsity"], level) & ref["train_flops_x"].notna()]
            for method, distribution in _series_keys(p, ["method", "distribution"]):
                s = p[(p["method"] == method) & (p["distribution"] == distribution)].sort_values("train_flops_x")
                _errorbar(ax, s["train_flops_x"], s["top1_accuracy"], s["top1_std"], method, distribution, 1.0, True)
        ax.set_title(_percent(level))
        ax.set_xlabel("training FLOPs (× dense)")
        ax.set_ylabel(ACCURACY_LABELS[metric])
    fig.suptitle(f"{title}: accuracy vs training FLOPs")
    _legend(fig, axes)
    return fig


@_styled
def accuracy_vs_sparsity(runs: pd.DataFrame, paper: pd.DataFrame | bool | None = None,
                         metric: str = "test_accuracy") -> Figure:
    """Accuracy against sparsity, one line per (method, distribution, multiplier) (the paper's figure 4);
    the dense baseline is a horizontal band (mean +- std over seeds)."""
    dataset, model, title = _one_group(runs)
    summ = summary(runs, metric)
    ref = _paper_for(paper, dataset, model)
    fig, axes = _panels(1, height=2.6)
    ax = axes[0]
    _dense_band(ax, summ)
    sparse = summ[summ["method"] != "dense"]
    for method, distribution, multiplier in _series_keys(sparse, ["method", "distribution", "multiplier"]):
        s = sparse[(sparse["method"] == method) & (sparse["distribution"] == distribution)
                   & (sparse["multiplier"] == multiplier)].sort_values("sparsity")
        _errorbar(ax, s["sparsity"], s["test_accuracy_mean"], s["test_accuracy_std"], method, distribution, multiplier)
    if not ref.empty:
        _paper_dense(ax, ref)
        p = ref[(ref["method"] != "dense") & (ref["sparsity"] > 0)]
        for method, distribution, multiplier in _series_keys(p, ["method", "distribution", "train_multiplier"]):
            s = p[(p["method"] == method) & (p["distribution"] == distribution)
                  & (p["train_multiplier"] == multiplier)].sort_values("sparsity")
            _errorbar(ax, s["sparsity"], s["top1_accuracy"], s["top1_std"], method, distribution, multiplier, True)
    ticks = sorted({round(float(v), 4) for v in sparse["sparsity"]} | ({round(float(v), 4) for v in ref["sparsity"]
                                                                         if v > 0} if not ref.empty else set()))
    if 0 < len(ticks) <= 8:
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel("sparsity")
    ax.set_ylabel(ACCURACY_LABELS[metric])
    ax.set_title(title)
    _legend(fig, axes)
    return fig


@_styled
def accuracy_vs_inference_flops(runs: pd.DataFrame, paper: pd.DataFrame | bool | None = None,
                                metric: str = "test_accuracy") -> Figure:
    """Accuracy against the inference-FLOPs multiplier (f_S / f_D of the final model), one line per
    (method, distribution, multiplier) through its sparsities; dense is the band and the point at 1."""
    dataset, model, title = _one_group(runs)
    summ = summary(runs, metric)
    ref = _paper_for(paper, dataset, model)
    fig, axes = _panels(1, height=2.6)
    ax = axes[0]
    _dense_band(ax, summ, "inference_flops_multiplier")
    sparse = summ[summ["method"] != "dense"]
    for method, distribution, multiplier in _series_keys(sparse, ["method", "distribution", "multiplier"]):
        s = sparse[(sparse["method"] == method) & (sparse["distribution"] == distribution)
                   & (sparse["multiplier"] == multiplier)].sort_values("inference_flops_multiplier")
        _errorbar(ax, s["inference_flops_multiplier"], s["test_accuracy_mean"], s["test_accuracy_std"],
                  method, distribution, multiplier)
    if not ref.empty:
        _paper_dense(ax, ref)
        p = ref[(ref["method"] != "dense") & ref["test_flops_x"].notna()]
        for method, distribution, multiplier in _series_keys(p, ["method", "distribution", "train_multiplier"]):
            s = p[(p["method"] == method) & (p["distribution"] == distribution)
                  & (p["train_multiplier"] == multiplier)].sort_values("test_flops_x")
            _errorbar(ax, s["test_flops_x"], s["top1_accuracy"], s["top1_std"], method, distribution, multiplier, True)
    ax.set_xlabel("inference FLOPs (× dense)")
    ax.set_ylabel(ACCURACY_LABELS[metric])
    ax.set_title(title)
    _legend(fig, axes)
    return fig


def _records(run_dirs: Iterable[str | Path | RunRecord]) -> list[RunRecord]:
    return [r if isinstance(r, RunRecord) else read_run(r) for r in run_dirs]


@_styled
def layer_density(run_dirs: Iterable[str | Path | RunRecord]) -> Figure:
    """Final density of every sparse layer, bars per distribution (uniform / ER / ERK), one panel per
    sparsity; from the run folders' metrics.json (layer_density). Runs sharing a distribution and a
    sparsity are averaged (fixed-count methods give them identical densities)."""
    rows = []
    for rec in _records(run_dirs):
        if rec.metrics is None or rec.method in ("dense", "small-dense") or not rec.metrics.get("layer_density"):
            continue
        for i, (layer, density) in enumerate(rec.metrics["layer_density"].items()):
            rows.append(dict(distribution=rec.distribution, sparsity=round(rec.sparsity, 6), layer=layer, order=i,
                             density=density))
    if not rows:
        raise ValueError("no finished sparse run folders with layer densities (metrics.json) to plot")
    df = pd.DataFrame(rows)
    levels = sorted(df["sparsity"].unique())
    fig, axes = _panels(len(levels), height=2.3, max_cols=2)
    for ax, level in zip(axes, levels):
        here = df[df["sparsity"] == level]
        layers = here.groupby("layer")["order"].min().sort_values().index.tolist()
        dists = sorted(here["distribution"].unique(), key=style.distribution_sort_key)
        width = 0.8 / len(dists)
        x = np.arange(len(layers))
        for j, dist in enumerate(dists):
            mean = here[here["distribution"] == dist].groupby("layer")["density"].mean().reindex(layers)
            bars = ax.bar(x + (j - (len(dists) - 1) / 2) * width, mean.to_numpy(), width,
                          color=style.DISTRIBUTION_COLORS.get(dist, style.SPARE_COLORS[j % len(style.SPARE_COLORS)]),
                          edgecolor="#333333", linewidth=0.4, label=style.DISTRIBUTION_LABELS.get(dist, dist) or dist)
            for patch in bars.patches:
                patch.set_gid(f"distribution|{dist}|{level:g}")
        ax.axhline(1 - level, color="#555555", linewidth=0.7, linestyle=":", label="global density 1 - s")
        if len(layers) <= 16:
            ax.set_xticks(x, layers, rotation=45 if max(map(len, layers)) > 6 else 0, ha="right"
                          if max(map(len, layers)) > 6 else "center")
            ax.set_xlabel("sparse layer")
        else:
            step = max(1, len(layers) // 12)
            ax.set_xticks(x[::step], [str(i) for i in x[::step]])
            ax.set_xlabel("sparse layer (forward order)")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("layer density")
        ax.set_title(_percent(level))
    _legend(fig, axes, title="distribution")
    return fig


@_styled
def mask_updates(run_dirs: Iterable[str | Path | RunRecord], x: str = "step") -> Figure:
    """Connections grown per mask update, as a fraction of the active connections (updates.csv's
    grown_fraction), against the training step (x="step") or the fraction of training done
    (x="progress", which lines up runs of different lengths); one line per dynamic (method,
    distribution, multiplier), mean over seeds, one panel per sparsity. Methods that never grow
    (GMP only prunes) are left out."""
    if x not in ("step", "progress"):
        raise ValueError(f"x must be 'step' or 'progress', got {x!r}")
    rows = []
    for rec in _records(run_dirs):
        u = rec.updates
        if u.empty or "grown_fraction" not in u.columns or not (u.get("grown", u["grown_fraction"]) > 0).any():
            continue
        total = rec.total_steps or float(u["step"].max())
        rows.append(pd.DataFrame({"method": rec.method, "distribution": rec.distribution,
                                  "multiplier": rec.multiplier, "sparsity": round(rec.sparsity, 6),
                                  "x": u["step"] / total if x == "progress" else u["step"],
                                  "grown_fraction": u["grown_fraction"]}))
    if not rows:
        raise ValueError("no run folders with mask updates that grow connections (updates.csv of set/snfs/rigl runs)")
    df = pd.concat(rows, ignore_index=True)
    levels = sorted(df["sparsity"].unique())
    fig, axes = _panels(len(levels), height=2.3, max_cols=2)
    for ax, level in zip(axes, levels):
        here = df[df["sparsity"] == level]
        for method, distribution, multiplier in _series_keys(here, ["method", "distribution", "multiplier"]):
            s = here[(here["method"] == method) & (here["distribution"] == distribution)
                     & (here["multiplier"] == multiplier)]
            mean = s.groupby("x")["grown_fraction"].mean()
            kw = {"color": style.method_color(method), "marker": style.method_marker(method), "markersize": 3,
                  "linestyle": style.distribution_linestyle(distribution),
                  "markevery": max(1, len(mean) // 12)}  # methods updating every step (DeepR): fewer markers
            if multiplier != 1.0:
                kw.update(style.MULTIPLIER_STYLE)
            (line,) = ax.plot(mean.index, 100 * mean.to_numpy(), label=style.series_label(method, distribution,
                                                                                         multiplier), **kw)
            line.set_gid(gid("runs", method, distribution, multiplier))
        if x == "progress":
            ax.set_xlim(0, 1)
        else:
            ax.set_xlim(left=0)
        ax.set_xlabel("fraction of training" if x == "progress" else "training step")
        ax.set_ylabel("grown per update (% of active)")
        ax.set_title(_percent(level))
    _legend(fig, axes)
    return fig


@_styled
def loss_landscape(landscape: pd.DataFrame, restart: pd.DataFrame | None = None, metric: str = "train_loss",
                   endpoints: tuple[str, str] | None = None) -> Figure:
    """The paper's figure 6: left, `metric` (training loss) along the linear path and the Bezier
    curves between two solutions; right (when `restart` rows are given), training loss of the runs
    restarted from a solution, per method."""
    if landscape.empty or not {"coefficient", "path", metric} <= set(landscape.columns):
        raise ValueError(f"a landscape table needs columns coefficient, path and {metric}")
    panels = 2 if restart is not None and not restart.empty else 1
    fig, axes = _panels(panels, height=2.4)
    ax = axes[0]
    order = [p for p in style.PATH_STYLES if p in set(landscape["path"])] + \
        sorted(set(landscape["path"]) - set(style.PATH_STYLES))
    for path in order:
        s = landscape[landscape["path"] == path].sort_values("coefficient")
        kw = style.PATH_STYLES.get(path, dict(color="#777777", linestyle="-", marker="."))
        (line,) = ax.plot(s["coefficient"], s[metric], markersize=2.5, label=path, **kw)
        line.set_gid(f"path|{path}")
    for x in (0.0, 1.0):
        ax.axvline(x, color="#999999", linewidth=0.6, linestyle=":")
    bn = bool(landscape.get("bn_recomputed", pd.Series([False])).any())
    ax.set_xlabel("interpolation coefficient" if not endpoints else
                  f"coefficient (0: {endpoints[0]}, 1: {endpoints[1]})")
    names = {"train_loss": "training loss", "test_loss": "test loss", "test_accuracy": "test accuracy (%)",
             "train_accuracy": "training accuracy (%)"}
    ax.set_ylabel(names.get(metric, metric.replace("_", " ")) + (" (BN re-estimated)" if bn else ""))
    ax.set_title("paths between the two solutions")
    ax.legend(loc="best")
    if panels == 2:
        ax2 = axes[1]
        for method in sorted(restart["method"].unique(), key=style.method_sort_key):
            s = restart[restart["method"] == method].sort_values("step")
            (line,) = ax2.plot(s["step"], s["train_loss"], color=style.method_color(method),
                               marker=style.method_marker(method), markersize=2.5,
                               label=f"{style.method_label(method)} (restart)")
            line.set_gid(gid("runs", method, "", 1.0, "restart"))
        if "start_loss" in restart.columns and restart["start_loss"].notna().any():
            ax2.axhline(restart["start_loss"].dropna().iloc[0], color="#555555", linewidth=0.8, linestyle=":",
                        label="before the restart")
        ax2.set_xlabel("steps after the restart")
        ax2.set_ylabel("training loss")
        ax2.set_title("restarting from the static solution")
        ax2.legend(loc="best")
    return fig


PLOTTERS = {
    "train-flops": ("accuracy-vs-train-flops", accuracy_vs_train_flops),
    "sparsity": ("accuracy-vs-sparsity", accuracy_vs_sparsity),
    "inference-flops": ("accuracy-vs-inference-flops", accuracy_vs_inference_flops),
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
    unknown = [f for f in figures if f not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    formats = style.parse_formats(formats)
    paper_table = load_paper() if paper is True else paper
    written: list[Path] = []
    records = _records(run_dirs)
    for dataset, model, protocol in groups(runs):
        subset = group_rows(runs, dataset, model, protocol)
        tag = group_tag(dataset, model, protocol)
        if paper_table is not None and paper_table is not False and paper_rows(paper_table, dataset, model).empty:
            report(f"note: the paper has no numbers for {dataset}/{model}; no overlay on its figures")
        ids = set(subset["run_id"])
        folders = [r for r in records if r.record.get("run_id", r.path.name) in ids or r.path.name in ids]
        with style.context():
            for name in figures:
                try:
                    if name in PLOTTERS:
                        stem, plot = PLOTTERS[name]
                        fig = plot(subset, paper=paper_table, metric=metric)
                    elif name == "layer-density":
                        stem, fig = "layer-density", layer_density(folders)
                    else:
                        stem, fig = "mask-updates", mask_updates(folders)
                except ValueError as err:
                    report(f"skipped {name} for {group_title(dataset, model, protocol)}: {err}")
                    continue
                written += save_figure(fig, out, f"{stem}-{tag}", formats)
                plt.close(fig)
    return written
