"""Figures of run folders and experiments: per-layer densities and mask-update dynamics (from the
folders' metrics.json and updates.csv), and the loss landscape with the restart experiment."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import style
from .layout import figure_title, gid, legend, panels, percent, seeds_note, series_keys, styled
from .runs import RunRecord, is_dense, read_run


def folder_records(run_dirs: Iterable[str | Path | RunRecord]) -> list[RunRecord]:
    return [r if isinstance(r, RunRecord) else read_run(r) for r in run_dirs]


def _folders_title(records: Sequence[RunRecord], title: str | None) -> str:
    """`title`, or "dataset / model" of the run folders."""
    if title:
        return title
    pairs = sorted({(r.config.get("dataset", "?"), r.config.get("model", "?")) for r in records})
    return "; ".join(f"{d} / {m}" for d, m in pairs)


@styled
def layer_density(run_dirs: Iterable[str | Path | RunRecord], title: str | None = None) -> Figure:
    """Final density of every sparse layer, bars per distribution (uniform / ER / ERK) labelled with
    their value, one panel per sparsity; from the run folders' metrics.json (layer_density). Runs
    sharing a distribution and a sparsity are averaged, with their std as error bars (fixed-count
    methods give them identical densities; DSR moves weights between layers). `title` defaults to
    the folders' dataset / model."""
    rows = []
    records = folder_records(run_dirs)
    for rec in records:
        if rec.metrics is None or is_dense(rec.method) or not rec.metrics.get("layer_density"):
            continue
        for i, (layer, density) in enumerate(rec.metrics["layer_density"].items()):
            rows.append(dict(distribution=rec.distribution, sparsity=round(rec.sparsity, 6), layer=layer, order=i,
                             density=density, run=str(rec.path)))
    if not rows:
        raise ValueError("no finished sparse run folders with layer densities (metrics.json) to plot")
    df = pd.DataFrame(rows)
    levels = sorted(df["sparsity"].unique())
    fig, axes = panels(len(levels), height=2.3, max_cols=2)
    for ax, level in zip(axes, levels):
        here = df[df["sparsity"] == level]
        layers = here.groupby("layer")["order"].min().sort_values().index.tolist()
        dists = sorted(here["distribution"].unique(), key=style.distribution_sort_key)
        width = 0.8 / len(dists)
        x = np.arange(len(layers))
        for j, dist in enumerate(dists):
            stats = here[here["distribution"] == dist].groupby("layer")["density"].agg(["mean", "std"]).reindex(layers)
            std = stats["std"].fillna(0).to_numpy()
            bars = ax.bar(x + (j - (len(dists) - 1) / 2) * width, stats["mean"].to_numpy(), width,
                          yerr=std if std.any() else None, error_kw=dict(elinewidth=0.6, capsize=1.5),
                          color=style.DISTRIBUTION_COLORS.get(dist, style.SPARE_COLORS[j % len(style.SPARE_COLORS)]),
                          edgecolor="#333333", linewidth=0.4, label=style.DISTRIBUTION_LABELS.get(dist, dist) or dist)
            for patch in bars.patches:
                patch.set_gid(f"distribution|{dist}|{level:g}")
            if len(layers) * len(dists) <= 12:  # room for the values above the bars
                ax.bar_label(bars, [f"{v:.2g}" for v in stats["mean"]], fontsize=5.5, padding=1)
        ax.axhline(1 - level, color="#555555", linewidth=0.7, linestyle=":", label="global density 1 - s")
        if len(layers) <= 16:
            ax.set_xticks(x, layers, rotation=45 if max(map(len, layers)) > 6 else 0, ha="right"
                          if max(map(len, layers)) > 6 else "center")
            ax.set_xlabel("sparse layer")
        else:
            step = max(1, len(layers) // 12)
            ax.set_xticks(x[::step], [str(i) for i in x[::step]])
            ax.set_xlabel("sparse layer (forward order)")
        ax.set_ylim(0, 1.12)
        ax.set_ylabel("layer density")
        ax.set_title(percent(level))
    counts = df.groupby(["distribution", "sparsity"])["run"].nunique().rename("seeds").to_frame()
    legend(fig, axes, ["distribution; bars: " + seeds_note(counts, "runs (every sparse method and seed)")])
    figure_title(fig, _folders_title(records, title), "final density of each layer")
    return fig


@styled
def mask_updates(run_dirs: Iterable[str | Path | RunRecord], x: str = "step", title: str | None = None) -> Figure:
    """Connections grown per mask update, as a fraction of the active connections (updates.csv's
    grown_fraction), against the training step (x="step") or the fraction of training done
    (x="progress", which lines up runs of different lengths); one line per dynamic (method,
    distribution, multiplier), mean over seeds with a ± std band, one panel per sparsity. Methods that
    never grow (GMP only prunes) are left out. `title` defaults to the folders' dataset / model."""
    if x not in ("step", "progress"):
        raise ValueError(f"x must be 'step' or 'progress', got {x!r}")
    rows = []
    records = folder_records(run_dirs)
    for rec in records:
        u = rec.updates
        if u.empty or "grown_fraction" not in u.columns or not (u.get("grown", u["grown_fraction"]) > 0).any():
            continue
        total = rec.total_steps or float(u["step"].max())
        rows.append(pd.DataFrame({"method": rec.method, "distribution": rec.distribution,
                                  "multiplier": rec.multiplier, "sparsity": round(rec.sparsity, 6),
                                  "x": u["step"] / total if x == "progress" else u["step"],
                                  "grown_fraction": u["grown_fraction"], "run": str(rec.path)}))
    if not rows:
        raise ValueError("no run folders with mask updates that grow connections (updates.csv of set/snfs/rigl runs)")
    df = pd.concat(rows, ignore_index=True)
    levels = sorted(df["sparsity"].unique())
    fig, axes = panels(len(levels), height=2.3, max_cols=2)
    for ax, level in zip(axes, levels):
        here = df[df["sparsity"] == level]
        for method, distribution, multiplier in series_keys(here, ["method", "distribution", "multiplier"]):
            s = here[(here["method"] == method) & (here["distribution"] == distribution)
                     & (here["multiplier"] == multiplier)]
            stats = 100 * s.groupby("x")["grown_fraction"].agg(["mean", "std"]).fillna(0)
            kw = {"color": style.method_color(method), "marker": style.method_marker(method), "markersize": 3,
                  "linestyle": style.distribution_linestyle(distribution),
                  "fillstyle": style.distribution_fillstyle(distribution), "markerfacecoloralt": "white",
                  "markevery": max(1, len(stats) // 12)}  # methods updating every step (DeepR): fewer markers
            if multiplier != 1.0:
                kw["linewidth"] = style.MULTIPLIER_STYLE["linewidth"]
            (line,) = ax.plot(stats.index, stats["mean"], label=style.series_label(method, distribution, multiplier),
                              **kw)
            line.set_gid(gid("runs", method, distribution, multiplier))
            if stats["std"].any():
                ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                                color=kw["color"], alpha=0.15, linewidth=0, label="_nolegend_")
        if x == "progress":
            ax.set_xlim(0, 1)
        else:
            ax.set_xlim(left=0)
        ax.set_xlabel("fraction of training" if x == "progress" else "training step")
        ax.set_ylabel("grown per update (% of active)")
        ax.set_title(percent(level))
    counts = df.groupby(["method", "distribution", "multiplier", "sparsity"])["run"].nunique().rename("seeds")
    legend(fig, axes, [seeds_note(counts.to_frame())])
    figure_title(fig, _folders_title(records, title), "connections grown per mask update")
    return fig


@styled
def loss_landscape(landscape: pd.DataFrame, restart: pd.DataFrame | None = None, metric: str = "train_loss",
                   endpoints: tuple[str, str] | None = None) -> Figure:
    """The paper's figure 6: left, `metric` (training loss) along the linear path and the Bezier
    curves between two solutions; right (when `restart` rows are given), training loss of the runs
    restarted from a solution, per method."""
    if landscape.empty or not {"coefficient", "path", metric} <= set(landscape.columns):
        raise ValueError(f"a landscape table needs columns coefficient, path and {metric}")
    count = 2 if restart is not None and not restart.empty else 1
    fig, axes = panels(count, height=2.4)
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
    if count == 2:
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
