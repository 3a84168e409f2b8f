"""analysis: figures, tables and the `python -m analysis` command line, on the real fixture sweep
(tests/fixtures/sweep, made by tests/fixtures/make_fixtures.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

import analysis
from analysis import plots, style, tables
from analysis.cli import main

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "sweep"
RUNS_CSV = FIXTURE / "runs.csv"


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return analysis.load_runs(RUNS_CSV)


@pytest.fixture(scope="module")
def folders(runs) -> list[Path]:
    return analysis.run_dirs_for(RUNS_CSV, runs)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def series(fig, source: str = "runs", kind: str = "series") -> dict[int, dict[tuple, object]]:
    """{panel index: {(method, distribution, multiplier): line}} of the plotted series."""
    out = {}
    for i, ax in enumerate(a for a in fig.axes if a.get_label() != "<colorbar>"):
        found = {}
        for line in ax.get_lines():
            parts = (line.get_gid() or "").split("|")
            if len(parts) == 5 and parts[0] == source and parts[4] == kind:
                found[(parts[1], parts[2], float(parts[3]))] = line
        out[i] = found
    return out


def mean_std(runs: pd.DataFrame, **where) -> tuple[float, float]:
    sel = runs
    for k, v in where.items():
        sel = sel[np.isclose(sel[k], v)] if isinstance(v, float) else sel[sel[k] == v]
    return sel["test_accuracy"].mean(), sel["test_accuracy"].std()


# ---- loading ----

def test_load_runs_reads_the_fixture(runs):
    raw = pd.read_csv(RUNS_CSV)
    assert len(runs) == len(raw) == 40
    assert set(runs["method"]) == {"dense", "small-dense", "static", "snip", "gmp", "set", "rigl"}
    assert analysis.groups(runs) == [("digits", "lenet-300-100", "")]  # one protocol: no label


def test_load_runs_from_run_folders():
    df = analysis.load_runs(run_dirs=[FIXTURE])
    assert len(df) == len(list((FIXTURE / "runs").iterdir())) == 10
    assert set(df["distribution"]) == {"uniform", "er", "erk"}


def test_select_names_what_exists(runs):
    with pytest.raises(ValueError, match="the runs have digits"):
        analysis.select(runs, dataset="cifar10")
    with pytest.raises(ValueError, match="the runs have 0.8, 0.9"):
        analysis.select(runs, sparsities=[0.5])


def test_select_by_sparsity_keeps_the_dense_baseline(runs):
    picked = analysis.select(runs, methods=["dense", "rigl"], sparsities=[0.9])
    assert sorted(set(zip(picked.method, picked.sparsity))) == [("dense", 0.0), ("rigl", 0.9)]
    assert len(picked) == 2 + 6  # dense: 2 seeds; rigl at 0.9: uniform 1x and 2x, ERK; 2 seeds each


def test_load_runs_reads_several_files_and_labels_protocols_over_all_of_them():
    pattern = str(REPO / "results" / "*" / "runs.csv")
    files = sorted((REPO / "results").glob("*/runs.csv"))
    df = analysis.load_runs([pattern])
    assert len(df) == sum(len(pd.read_csv(f)) for f in files) > 200
    mnist = [g for g in analysis.groups(df) if g[:2] == ("mnist", "lenet-300-100")]
    # the full (200 epochs) and shortened (20 epochs) protocols, each with its own dense runs, and the SNFS
    # paper's (100 epochs, no dense run in that sweep)
    assert len(mnist) == 3
    by_epochs = {int(analysis.group_rows(df, *g)["epochs"].iloc[0]): g for g in mnist}
    assert sorted(by_epochs) == [20, 100, 200]
    for epochs, dense in ((200, 3), (20, 3), (100, 0)):
        rows = analysis.group_rows(df, *by_epochs[epochs])
        assert set(rows["epochs"]) == {epochs} and (rows["method"] == "dense").sum() == dense
    assert analysis.groups(analysis.select(df, "fashion-mnist", "lenet-5")) == [("fashion-mnist", "lenet-5", "")]
    folders = analysis.run_dirs_for([pattern], analysis.select(df, "fashion-mnist", "lenet-5"))
    assert len(folders) == 22 and all(f.parent.parent.name == "fashion-mnist-lenet5" for f in folders)
    with pytest.raises(analysis.runs.ResultsError, match="no file matches .*nowhere"):
        analysis.load_runs([pattern, str(REPO / "nowhere" / "*.csv")])


def test_paper_rows_sit_at_the_layer_sparsities_the_paper_runs():
    rows = analysis.paper_rows(analysis.load_paper(), "mnist", "lenet-300-100")
    rigl = rows[rows["method"] == "rigl"].iloc[0]
    # the paper's "87%": layer sparsities 0.98/0.882/dense of 784x300, 300x100, 100x10 keep 9244 of 266200 weights
    assert (rigl["reported_sparsity"], rigl["sparsity"], rigl["top1_accuracy"]) == (0.87, 0.9653, 98.56)
    assert "rigl+" not in set(rows["method"])  # not a method here, and no layer sparsities to place it by
    snip = rows[rows["method"] == "snip"]
    assert list(snip["sparsity"]) == list(snip["reported_sparsity"]) == [0.95, 0.98]


# ---- figures ----

def test_accuracy_vs_train_flops_has_a_panel_per_sparsity_and_a_line_per_method(runs):
    fig = plots.accuracy_vs_train_flops(runs)
    assert len(fig.axes) == 2  # sparsities 0.8 and 0.9
    found = series(fig)
    for panel, level in enumerate((0.8, 0.9)):
        sparse = runs[(runs["method"] != "dense") & np.isclose(runs["sparsity"], level)]
        expected = {(m, d, 1.0) for m, d in zip(sparse["method"], sparse["distribution"])}
        assert set(found[panel]) == expected
        assert series(fig, kind="band")[panel], "dense band missing"
    # RigL (uniform) at 90%: one point per multiplier, x = training FLOPs multiplier, y = mean over seeds
    line = found[1][("rigl", "uniform", 1.0)]
    sel = runs[(runs.method == "rigl") & (runs.distribution == "uniform") & np.isclose(runs.sparsity, 0.9)]
    by_mult = sel.groupby("multiplier").agg(x=("train_flops_multiplier", "mean"), y=("test_accuracy", "mean"))
    np.testing.assert_allclose(line.get_xdata(), by_mult["x"].to_numpy())
    np.testing.assert_allclose(line.get_ydata(), by_mult["y"].to_numpy())
    assert fig.get_figwidth() == pytest.approx(style.DOUBLE_COLUMN)


def test_accuracy_vs_sparsity_has_dense_band_and_one_line_per_series(runs):
    fig = plots.accuracy_vs_sparsity(runs)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    sparse = runs[runs["method"] != "dense"]
    expected = {(m, d, float(x)) for m, d, x in zip(sparse.method, sparse.distribution, sparse.multiplier)}
    found = series(fig)[0]
    assert set(found) == expected
    mean, std = mean_std(runs, method="dense")
    (band,) = series(fig, kind="band")[0].values()
    assert band.get_ydata()[0] == pytest.approx(mean)
    spans = [p for p in ax.patches if np.isclose(p.get_y(), mean - std) and np.isclose(p.get_height(), 2 * std)]
    assert spans, "no mean ± std band for dense"
    rigl = found[("rigl", "uniform", 1.0)]
    np.testing.assert_allclose(rigl.get_xdata(), [0.8, 0.9])
    np.testing.assert_allclose(rigl.get_ydata(), [mean_std(runs, method="rigl", distribution="uniform",
                                                           multiplier=1.0, sparsity=s)[0] for s in (0.8, 0.9)])
    labels = ax.get_legend_handles_labels()[1]
    assert "RigL (uniform) 2x" in labels and "Static (ERK)" in labels


def test_accuracy_vs_inference_flops(runs):
    fig = plots.accuracy_vs_inference_flops(runs)
    found = series(fig)[0]
    line = found[("static", "uniform", 1.0)]
    sel = runs[(runs.method == "static") & (runs.distribution == "uniform") & (runs.multiplier == 1.0)]
    np.testing.assert_allclose(sorted(line.get_xdata()), sorted(sel.groupby("sparsity")["inference_flops_multiplier"]
                                                               .mean()))
    assert series(fig, kind="point")[0], "dense point at its inference FLOPs missing"


def test_paper_overlay_is_drawn_distinctly_where_dataset_and_model_match(runs):
    paper = analysis.load_paper()
    cifar = runs.assign(dataset="cifar10", model="wrn-22-2")
    fig = plots.accuracy_vs_sparsity(cifar, paper=True)
    overlay = series(fig, "paper")[0]
    line = overlay[("rigl", "erk", 1.0)]
    ref = paper[(paper.dataset == "cifar10") & (paper.method == "rigl") & (paper.train_multiplier == 1)]
    np.testing.assert_allclose(line.get_xdata(), ref.sort_values("sparsity")["sparsity"])
    np.testing.assert_allclose(line.get_ydata(), ref.sort_values("sparsity")["top1_accuracy"])
    assert to_hex(line.get_markeredgecolor()) == "#000000" and line.get_linestyle() == "--"
    labels = {c.lines[0]: c.get_label() for c in fig.axes[0].containers}
    assert labels[line] == "RigL (ERK) [paper]"
    run_line = series(fig)[0][("rigl", "erk", 1.0)]
    assert to_hex(run_line.get_markeredgecolor()) == style.method_color("rigl") and run_line.get_linestyle() != "--"
    assert line.get_markersize() > run_line.get_markersize()
    assert series(fig, "paper", "band")[0], "the paper's dense accuracy is missing"
    # ImageNet ResNet-50: the harness calls it resnet-50, the paper resnet50
    fig = plots.accuracy_vs_train_flops(runs.assign(dataset="imagenet", model="resnet-50"), paper=paper)
    overlay = series(fig, "paper")
    assert ("rigl", "uniform", 1.0) in overlay[0] and ("rigl", "erk", 1.0) in overlay[1]
    xs = overlay[0][("rigl", "uniform", 1.0)].get_xdata()
    np.testing.assert_allclose(xs, [0.23, 1.14])  # RigL 1x and 5x at 80%
    # digits has no paper numbers: nothing is overlaid
    fig = plots.accuracy_vs_sparsity(runs, paper=True)
    assert not series(fig, "paper")[0]


def test_layer_density_bars_are_the_runs_layer_densities(folders):
    fig = plots.layer_density(folders)
    assert len(fig.axes) == 2
    erk = next(d for d in folders if json.loads((d / "config.json").read_text())["config"]["distribution"] == "erk")
    densities = json.loads((erk / "metrics.json").read_text())["layer_density"]
    bars = [p for p in fig.axes[1].patches if p.get_gid() == "distribution|erk|0.9"]
    np.testing.assert_allclose([b.get_height() for b in bars], list(densities.values()))
    labels = fig.legends[0].get_texts()
    assert {t.get_text() for t in labels} >= {"uniform", "ER", "ERK"}


def test_mask_updates_plot_grown_fraction_of_dynamic_runs(folders):
    fig = plots.mask_updates(folders)
    assert len(fig.axes) == 2
    found = series(fig)
    assert set(found[1]) == {("rigl", "uniform", 1.0), ("rigl", "uniform", 2.0), ("rigl", "erk", 1.0),
                             ("set", "uniform", 1.0)}
    assert all(key[0] != "gmp" for panel in found.values() for key in panel)  # GMP never grows
    rigl = next(d for d in folders if d.name.startswith("rigl-s0.8"))
    updates = pd.read_csv(rigl / "updates.csv")
    line = found[0][("rigl", "uniform", 1.0)]
    np.testing.assert_allclose(line.get_xdata(), updates["step"])
    np.testing.assert_allclose(line.get_ydata(), 100 * updates["grown_fraction"])
    total = json.loads((rigl / "config.json").read_text())["total_steps"]
    line = series(plots.mask_updates(folders, x="progress"))[0][("rigl", "uniform", 1.0)]
    np.testing.assert_allclose(line.get_xdata(), updates["step"] / total)


# ---- figures of the committed sweeps, as a reviewer reads them ----

COMMITTED = REPO / "results"


@pytest.fixture(scope="module")
def fmnist() -> tuple[pd.DataFrame, list[Path]]:
    """The committed Fashion-MNIST LeNet-300-100 sweep (3 seeds) and its run folders."""
    path = COMMITTED / "fashion-mnist-lenet300" / "runs.csv"
    return analysis.load_runs(path), analysis.run_dirs_for(path)


def _notes(ax) -> list[str]:
    return [t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("below-note|")]


def test_flop_axes_are_logarithmic_where_the_multipliers_span_decades(fmnist, runs):
    df, _ = fmnist
    train, inference = plots.accuracy_vs_train_flops(df), plots.accuracy_vs_inference_flops(df)
    assert [ax.get_xscale() for ax in train.axes + inference.axes] == ["log"] * 5
    # 98%: static at 0.02x to dense at 1x; 80%: 0.2x to 1x
    assert [t.get_text() for t in train.axes[3].get_xticklabels()] == ["0.02x", "0.1x", "0.2x", "1x"]
    assert [t.get_text() for t in train.axes[0].get_xticklabels()] == ["0.2x", "0.5x", "1x"]
    low, high = train.axes[3].get_xlim()
    assert low < 0.02 and high > 1
    # RigL at 80% alone (1x: 0.2x, 2x: 0.4x dense FLOPs) spans a factor of 2: a linear axis
    ax = plots.accuracy_vs_train_flops(analysis.select(runs, methods=["rigl"], sparsities=[0.8])).axes[0]
    assert ax.get_xscale() == "linear"


def test_points_far_below_the_others_are_left_out_of_the_y_range_and_named(fmnist, runs):
    df, _ = fmnist
    fig = plots.accuracy_vs_sparsity(df)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    small = df[(df.method == "small-dense") & np.isclose(df.sparsity, 0.98)].test_accuracy
    assert small.mean() + small.std() < low  # 45.6 ± 24.6: the whole error bar
    assert 84 < low < 86 and 89.8 < high < 90.5  # the others' means ± std span 85.44 to 89.83
    assert sorted(_notes(ax)) == ["Small-Dense at 0.98: 45.6 ± 24.6 (below the axis)",
                                  "Static (uniform) at 0.98: 78.1 ± 3.2 (below the axis)"]
    outside = {("small-dense", 0.98), ("static-uniform", 0.98)}
    for (method, distribution, _), line in series(fig)[0].items():
        name = method if distribution == "none" else f"{method}-{distribution}"
        ys = [y for x, y in zip(line.get_xdata(), line.get_ydata()) if (name, round(x, 2)) not in outside]
        assert all(low < y < high for y in ys), method
    # at 98% the panel against training FLOPs does the same; at 80% small-dense (88.2) is 0.7 below
    # the others, no outlier, and stays
    train = plots.accuracy_vs_train_flops(df)
    assert len(_notes(train.axes[3])) == 2 and _notes(train.axes[0]) == []
    small80 = df[(df.method == "small-dense") & np.isclose(df.sparsity, 0.8)].test_accuracy
    assert train.axes[0].get_ylim()[0] < small80.mean() - small80.std()
    # with a handful of points there is no bulk to protect: a point 20 below the others stays in range
    few = analysis.select(runs, methods=["dense", "set", "snip"], sparsities=[0.8])
    few = few.assign(test_accuracy=few.test_accuracy - 20 * (few.method == "snip"))
    ax = plots.accuracy_vs_sparsity(few).axes[0]
    assert _notes(ax) == [] and ax.get_ylim()[0] < few[few.method == "snip"].test_accuracy.min()


def test_every_figure_has_a_title_and_says_over_how_many_seeds(fmnist):
    df, folders = fmnist
    figures = {"accuracy vs training FLOPs": plots.accuracy_vs_train_flops(df),
               "accuracy vs sparsity": plots.accuracy_vs_sparsity(df),
               "accuracy vs inference FLOPs": plots.accuracy_vs_inference_flops(df),
               "final density of each layer": plots.layer_density(folders),
               "connections grown per mask update": plots.mask_updates(folders)}
    for what, fig in figures.items():
        assert fig.get_suptitle() == f"fashion-mnist / lenet-300-100: {what}"
        note = " ".join(fig.legends[0].get_title().get_text().split())
        expected = ("distribution; bars: mean ± std over 6–33 runs (every sparse method and seed)"
                    if what.startswith("final") else "mean ± std over 3 seeds")
        assert note == expected, what
    short = analysis.load_runs(COMMITTED / "mnist-lenet300-short" / "runs.csv")  # dense: 1 of 3 seeds diverged
    note = plots.accuracy_vs_sparsity(short).legends[0].get_title().get_text()
    assert note == "mean ± std over 2–3 seeds (1 diverged run left out)"


def test_uniform_and_erk_series_of_one_method_differ_in_marker_fill(fmnist):
    df, _ = fmnist
    panel = series(plots.accuracy_vs_train_flops(df))[3]  # 98%
    for method in ("rigl", "static"):
        uniform, erk = panel[(method, "uniform", 1.0)], panel[(method, "erk", 1.0)]
        assert to_hex(uniform.get_color()) == to_hex(erk.get_color()) == style.method_color(method)
        assert uniform.get_marker() == erk.get_marker()
        assert (uniform.get_fillstyle(), erk.get_fillstyle()) == ("full", "left")
        assert uniform.get_linestyle() != erk.get_linestyle()


def test_paper_mnist_rigl_point_sits_at_the_layer_sparsities_run():
    short = analysis.load_runs(COMMITTED / "mnist-lenet300-short" / "runs.csv")
    fig = plots.accuracy_vs_sparsity(short, paper=True)
    overlay = series(fig, "paper")[0]
    rigl = overlay[("rigl", "", 1.0)]
    assert (list(rigl.get_xdata()), list(rigl.get_ydata())) == ([0.9653], [98.56])
    assert not any(key[0] == "rigl+" for key in overlay)
    assert set(short.loc[short.distribution == "custom", "sparsity"]) == {0.9653}  # where the runs sit
    note = " ".join(fig.legends[0].get_title().get_text().split())
    assert ("RigL [paper] at 0.9653: the paper calls it 87% sparse, but its layer sparsities 0.98/0.882/dense "
            "keep 3.47% of the weights") in note


def test_every_method_has_one_colour_in_every_figure(runs, folders):
    figures = [plots.accuracy_vs_train_flops(runs), plots.accuracy_vs_sparsity(runs),
               plots.accuracy_vs_inference_flops(runs), plots.mask_updates(folders),
               plots.accuracy_vs_sparsity(runs.assign(dataset="cifar10", model="wrn-22-2"), paper=True)]
    seen: dict[str, set[str]] = {}
    for fig in figures:
        for source in ("runs", "paper"):
            for kind in ("series", "band", "point"):
                for panel in series(fig, source, kind).values():
                    for (method, _, _), line in panel.items():
                        seen.setdefault(method, set()).add(to_hex(line.get_color()))
    assert set(seen) >= {"dense", "small-dense", "static", "snip", "gmp", "set", "rigl"}
    for method, colours in seen.items():
        assert colours == {to_hex(style.method_color(method))}, method
    palette = [style.method_color(m) for m in style.METHOD_ORDER]
    assert len(set(palette)) == len(palette), "two methods share a colour"
    assert {"dsr", "deepr", "lottery-static", "lottery-rigl"} <= set(style.METHOD_COLORS)
    assert style.method_color("new-method") == style.method_color("new-method")  # stable fallback
    assert style.method_color("new-method") not in palette


def test_saved_files_are_real_pdf_png_svg(tmp_path, runs):
    fig = plots.accuracy_vs_sparsity(runs)
    paths = style.save_figure(fig, tmp_path, "fig", ["pdf", "png", "svg"])
    assert [p.suffix for p in paths] == [".pdf", ".png", ".svg"]
    assert paths[0].read_bytes()[:4] == b"%PDF"
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in paths[2].read_bytes()[:2000]
    # tight bounding box: the saved image holds the legend below the axes (nothing clipped)
    image = plt.imread(paths[1])
    height_in = image.shape[0] / style.DPI
    assert height_in >= fig.axes[0].get_window_extent().height / fig.dpi
    with pytest.raises(ValueError, match="choose from pdf, png, svg"):
        style.parse_formats("jpg")


def test_make_figures_writes_every_figure(tmp_path, runs, folders):
    notes = []
    written = plots.make_figures(runs, folders, tmp_path, ("png",), paper=True, report=notes.append)
    names = sorted(p.name for p in written)
    assert names == sorted(f"{stem}-digits-lenet-300-100.png" for stem in
                           ("accuracy-vs-train-flops", "accuracy-vs-sparsity", "accuracy-vs-inference-flops",
                            "layer-density", "mask-updates"))
    assert all(p.stat().st_size > 5000 for p in written)
    assert any("no numbers for digits" in n for n in notes)
    # without run folders the folder-based figures are skipped with a note, the rest still drawn
    notes.clear()
    written = plots.make_figures(runs, [], tmp_path / "b", ("png",), report=notes.append)
    assert len(written) == 3 and len(notes) == 2


# ---- tables ----

def test_markdown_table_has_mean_std_flops_and_bold_best(runs):
    md = tables.markdown_table(runs)
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:3]): [c.strip() for c in line.strip("|").split("|")]
            for line in md.splitlines() if line.startswith("| ") and not line.startswith("| Method")}
    mean, std = mean_std(runs, method="rigl", distribution="uniform", multiplier=1.0, sparsity=0.9)
    sel = runs[(runs.method == "rigl") & (runs.distribution == "uniform") & (runs.multiplier == 1.0)
               & np.isclose(runs.sparsity, 0.9)]
    cells = rows[("RigL", "uniform", "1x")]
    assert cells[6].strip("*") == f"{mean:.2f} ± {std:.2f}"  # the 90% block: accuracy, train FLOPs, test FLOPs
    assert cells[7] == f"{sel.train_flops_multiplier.mean():.2f}x"
    assert cells[8] == f"{sel.inference_flops_multiplier.mean():.2f}x"
    for block, level in ((3, 0.8), (6, 0.9)):
        sparse = runs[(runs.method != "dense") & np.isclose(runs.sparsity, level)]
        means = sparse.groupby(["method", "distribution", "multiplier"])["test_accuracy"].mean().round(2)
        best = {(style.method_label(m), style.DISTRIBUTION_LABELS[d] or "–", f"{x:g}x")
                for (m, d, x), v in means.items() if v == means.max()}
        bold = {key for key, cells in rows.items() if cells[block].startswith("**")}
        assert bold == best
    dense = rows[("Dense", "–", "1x")]
    assert not dense[3].startswith("**")  # the dense reference is never bold


def test_diverged_runs_are_left_out_of_means_and_named(runs):
    snip = runs[(runs.method == "snip") & np.isclose(runs.sparsity, 0.8)]
    broken = runs.copy()
    first = snip.index[0]
    broken.loc[first, ["test_accuracy", "test_loss"]] = [9.8, float("nan")]  # a run whose loss went NaN
    rest = snip.test_accuracy.drop(first)
    cell = tables.accuracy_table(broken).query("method == 'snip' and sparsity == 0.8").iloc[0]
    assert (cell.seeds, cell.diverged) == (len(snip) - 1, 1)
    assert len(rest) == 1 and cell["mean"] == rest.iloc[0] and np.isnan(cell["std"])  # the fixture has 2 seeds
    assert f"| {rest.iloc[0]:.2f} (1 seed; 1 diverged) |" in tables.markdown_table(broken)
    summary = analysis.summary(broken).query("method == 'snip' and sparsity == 0.8").iloc[0]
    assert (summary.seeds, summary.diverged) == (len(snip) - 1, 1)


def test_latex_table_uses_booktabs(runs):
    tex = tables.latex_table(runs)
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){4-6}", r"\begin{tabular}{lllrrrrrr}"):
        assert rule in tex
    bold_md = tables.markdown_table(runs).count("**") // 2
    assert tex.count(r"\textbf{") == bold_md >= 2  # one per sparsity, more where rounded means tie
    mean, std = mean_std(runs, method="snip", sparsity=0.8)
    assert f"{mean:.2f} $\\pm$ {std:.2f}" in tex


def test_write_tables(tmp_path, runs):
    paths = tables.write_tables(runs, tmp_path)
    assert paths["markdown"].read_text().startswith("### digits / lenet-300-100")
    assert r"\bottomrule" in paths["latex"].read_text()


# ---- command line ----

def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_cli_plot_writes_figures_through_python_m(tmp_path):
    out = tmp_path / "figures"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "analysis", "plot", "--runs", str(RUNS_CSV), "--out", str(out),
                           "--formats", "png,pdf", "--paper"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.iterdir())
    assert len(files) == 10 and all(f.stat().st_size > 1000 for f in files)
    assert sorted(proc.stdout.split()) == sorted(str(f) for f in files)


@pytest.mark.parametrize("content", [None, b"\x89\xdf\x00garbage\xff" * 40, b"", b"a,b\n1,2\n"])
def test_cli_bad_runs_csv_is_one_line_and_exit_2(tmp_path, capsys, content):
    path = tmp_path / "runs.csv"
    if content is not None:
        path.write_bytes(content)
    assert main(["plot", "--runs", str(path), "--out", str(tmp_path / "f")]) == 2
    line = _one_error_line(capsys)
    assert str(path) in line
    assert not (tmp_path / "f").exists()
    assert main(["table", "--runs", str(path), "--out", str(tmp_path / "t")]) == 2
    _one_error_line(capsys)


def test_cli_reads_a_glob_of_runs_csv_files_and_names_one_that_matches_nothing(tmp_path, capsys):
    pattern = str(REPO / "results" / "fashion-mnist-lenet*" / "runs.csv")
    assert main(["table", "--runs", pattern, "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "### fashion-mnist / lenet-300-100" in out and "### fashion-mnist / lenet-5" in out
    assert main(["table", "--runs", str(tmp_path / "*" / "runs.csv"), "--out", str(tmp_path / "u")]) == 2
    assert "no file matches" in _one_error_line(capsys) and not (tmp_path / "u").exists()


def test_cli_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["plot", "--bogus"])
    assert stop.value.code == 2
    _one_error_line(capsys)
    assert main(["plot", "--runs", str(RUNS_CSV), "--formats", "jpg"]) == 2
    assert "jpg" in _one_error_line(capsys)
    assert main(["plot", "--runs", str(RUNS_CSV), "--figures", "nope"]) == 2
    _one_error_line(capsys)
    assert main(["table", "--runs", str(RUNS_CSV), "--model", "resnet-50"]) == 2
    assert "lenet-300-100" in _one_error_line(capsys)


def test_cli_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert all(cmd in text for cmd in ("plot", "table", "landscape"))
    for cmd, flags in (("plot", ["--runs", "--run-dirs", "--out", "--paper", "--formats", "--figures"]),
                       ("table", ["--runs", "--out", "--digits"]),
                       ("landscape", ["--points", "--train-batches", "--restart-from", "--no-bn-recompute"])):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = capsys.readouterr().out
        assert all(f in text for f in flags), cmd


def test_cli_table_prints_markdown_and_writes_files(tmp_path, capsys):
    assert main(["table", "--runs", str(RUNS_CSV), "--out", str(tmp_path), "--methods", "rigl,static,dense"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### digits / lenet-300-100")
    assert "| RigL | uniform | 1x |" in out and "SNIP" not in out
    assert (tmp_path / "table.md").read_text() == out.rstrip("\n") + "\n" or (tmp_path / "table.md").exists()
    assert r"\toprule" in (tmp_path / "table.tex").read_text()


def test_cli_plot_from_run_folders(tmp_path, capsys):
    assert main(["plot", "--run-dirs", str(FIXTURE / "runs"), "--out", str(tmp_path), "--formats", "png",
                 "--figures", "layer-density,mask-updates"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer-density-digits-lenet-300-100.png",
                                                         "mask-updates-digits-lenet-300-100.png"]
