"""Reading what the harness wrote: runs.csv rows, run folders (config, metrics, mask updates,
logs) and the paper's numbers, with clear errors for missing or unusable input."""
from __future__ import annotations

import glob
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.config import RunConfig
from benchmark.files import RERUN, check_numbers, read_json, read_run_config
from benchmark.results import (
    is_dense,
    keeps_every_weight,
    ResultsError,
    check_unique,
    collect_runs,
    protocol_labels,
    read_runs,
    summarize,
)

PACKAGE_DIR = Path(__file__).resolve().parent
PAPER_CSV = PACKAGE_DIR / "data" / "paper-results.csv"
PAPER_COLUMNS = ["dataset", "model", "method", "distribution", "train_multiplier", "sparsity", "top1_accuracy",
                 "top1_std", "train_flops_x", "test_flops_x"]
DEFAULT_RUNS = Path("results/runs.csv")
NUMERIC_COLUMNS = ["sparsity", "multiplier", "seed", "steps", "test_accuracy", "best_test_accuracy", "test_loss",
                   "val_accuracy", "test_bpc", "train_flops_multiplier", "inference_flops_multiplier", "train_flops",
                   "inference_flops", "global_density"]
NEEDED_COLUMNS = ["run_id", "config_key", "dataset", "model", "method", "distribution", "sparsity", "multiplier",
                  "seed", "test_accuracy", "train_flops_multiplier", "inference_flops_multiplier", "settings"]
METRICS = ("test_accuracy", "best_test_accuracy", "val_accuracy", "test_bpc")
LOWER_IS_BETTER = {"test_bpc"}  # bits per character of language models: the fewer the better
# harness name -> the paper's name, where they differ (paper-results.csv uses the paper's)
PAPER_MODEL_NAMES = {"resnet-50": "resnet50", "lenet-5": "lenet-5-caffe"}
PAPER_DATASET_NAMES: dict[str, str] = {}
# Rows of paper-results.csv whose `sparsity` is not the overall sparsity of what the paper's code trains:
# (source, method) -> the layer sparsities it runs. The paper calls its MNIST LeNet-300-100 RigL run 87% sparse,
# but layer sparsities 0.98/0.882/dense keep 3.47% of the weights (overall sparsity 0.9653), which is where this
# suite's runs at those layer sparsities sit; `paper_rows` places the row there and keeps the paper's number
# in `reported_sparsity`.
PAPER_LAYER_SPARSITY: dict[tuple[str, str], tuple[float, ...]] = {
    ("rigl-paper-appB", "rigl"): (0.98, 0.882, 0.0),
}
# Rows no run of this suite can sit beside: (source, method) -> why they are left out of the overlay.
PAPER_NOT_OVERLAID = {
    ("rigl-paper-appB", "rigl+"): "RigL+ is not a method of this suite, and the paper gives no layer sparsities "
                                  "that would place its 88.6% on this suite's axis",
}


RunsSource = str | Path | Sequence[str | Path]


def runs_files(runs: RunsSource) -> list[Path]:
    """The runs.csv files named by `runs`: a path, a results folder holding runs.csv, a glob pattern
    ("results/*/runs.csv"), or a list of those; ResultsError when a pattern matches nothing."""
    items = [runs] if isinstance(runs, (str, Path)) else list(runs)
    if not items:
        raise ResultsError("no runs.csv given; pass a runs.csv, a results folder or a glob pattern")
    files: list[Path] = []
    for item in items:
        if any(c in str(item) for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(item)))
            if not matches:
                raise ResultsError(f"no file matches {item}; check the pattern (relative to {Path.cwd()})")
        else:
            matches = [Path(item)]
        files += [m / "runs.csv" if m.is_dir() else m for m in matches]
    return list(dict.fromkeys(files))


def load_runs(runs: RunsSource | pd.DataFrame | None = None, run_dirs: list[str | Path] | None = None) -> pd.DataFrame:
    """Runs as a DataFrame (one row per finished run), from runs.csv files or from run folders.

    `runs` may be a path to runs.csv, a results folder holding one, a glob pattern, a list of those
    (`runs_files`; their rows together), or a DataFrame (returned checked). With `run_dirs` and no
    `runs`, rows are built from the folders' config.json and metrics.json
    (benchmark.results.collect_runs). A `protocol` column labels each row with the settings that tell
    its protocol apart over all the rows (`benchmark.results.protocol_labels`; empty where a
    (dataset, model) has one protocol). Raises ResultsError (a ValueError) with a one-line reason
    when the input is missing, corrupt, lacks the columns the analysis needs, or counts one
    training twice.
    """
    if isinstance(runs, pd.DataFrame):
        df, source = runs.copy(), "the DataFrame"
    elif runs is None and run_dirs:
        folders = find_run_dirs(run_dirs)
        df, source = collect_runs(folders), ", ".join(str(d) for d in run_dirs)
        if df.empty:
            raise ResultsError(f"no finished run (config.json + metrics.json) under {source}")
    else:
        files = runs_files(runs if runs is not None else DEFAULT_RUNS)
        df = pd.concat([read_runs(f) for f in files], ignore_index=True)
        source = ", ".join(map(str, files))
    missing = [c for c in NEEDED_COLUMNS if c not in df.columns]
    if missing:
        raise ResultsError(f"{source} lacks column(s) {', '.join(missing)}; it is not a runs.csv written by this suite")
    check_numbers(df, source, NUMERIC_COLUMNS)
    for column in NUMERIC_COLUMNS:
        if column in df.columns:
            df[column] = pd.to_numeric(df[column], errors="coerce")
    df["distribution"] = df["distribution"].fillna("none").astype(str)
    for column in ("dataset", "model", "method"):
        df[column] = df[column].astype(str)
    df = df[df["test_accuracy"].notna() & df["sparsity"].notna() & df["multiplier"].notna()]
    if df.empty:
        raise ResultsError(f"{source} has no usable rows (test_accuracy, sparsity and multiplier must be numbers)")
    check_unique(df)
    if "protocol" not in df.columns:  # a DataFrame loaded before keeps the labels of all its rows
        df = df.assign(protocol=protocol_labels(df))
    return df.reset_index(drop=True)


def select(df: pd.DataFrame, dataset: str | None = None, model: str | None = None,
           methods: list[str] | None = None, sparsities: list[float] | None = None) -> pd.DataFrame:
    """Rows of one dataset/model/method set and of some sparsities (dense runs stay: they are every
    sparsity's baseline); ValueError listing what there is when nothing matches."""
    out = df
    for column, wanted in (("dataset", dataset), ("model", model)):
        if wanted:
            out = out[out[column] == wanted]
            if out.empty:
                raise ValueError(f"no runs with {column} {wanted!r}; the runs have {', '.join(sorted(df[column].unique()))}")
    if methods:
        out = out[out["method"].isin(methods)]
        if out.empty:
            raise ValueError(f"no runs of method(s) {', '.join(methods)}; the runs have "
                             f"{', '.join(sorted(df['method'].unique()))}")
    if sparsities:
        wanted = out["sparsity"].map(lambda s: any(math.isclose(s, w, abs_tol=1e-6) for w in sparsities))
        sparse = ~out["method"].map(keeps_every_weight)
        if not (wanted & sparse).any():
            have = ", ".join(f"{s:g}" for s in sorted(out.loc[sparse, "sparsity"].unique()))
            raise ValueError(f"no sparse runs at sparsity {', '.join(f'{s:g}' for s in sparsities)}; the runs have {have}")
        out = out[wanted | ~sparse]
    return out


def groups(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(dataset, model, protocol) of the runs, sorted: the units that figures, tables and claims
    compare methods within (protocol "" where a dataset and model have one)."""
    protocols = df["protocol"] if "protocol" in df.columns else [""] * len(df)
    return sorted({(str(d), str(m), str(p)) for d, m, p in zip(df["dataset"], df["model"], protocols)})


def group_rows(df: pd.DataFrame, dataset: str, model: str, protocol: str) -> pd.DataFrame:
    """The rows of one group of `groups(df)`."""
    rows = df[(df["dataset"] == dataset) & (df["model"] == model)]
    return rows[rows["protocol"] == protocol] if "protocol" in rows.columns else rows


def group_title(dataset: str, model: str, protocol: str) -> str:
    """"dataset / model", with the protocol's settings in brackets where it has any."""
    return f"{dataset} / {model}" + (f" ({protocol})" if protocol else "")


def group_tag(dataset: str, model: str, protocol: str) -> str:
    """A file-name part for one group: dataset-model, then the protocol's settings (lr0.5-epochs1)."""
    extra = re.sub(r"[^A-Za-z0-9.]+", "-", protocol.replace("=", "")).strip("-")
    return f"{dataset}-{model}" + (f"-{extra}" if extra else "")


def group_metric(rows: pd.DataFrame, metric: str) -> str:
    """The metric to show for one group's rows: bits per character for language models (rows that all have
    `test_bpc`) when the metric asked for is the default test accuracy, else `metric`."""
    if metric == "test_accuracy" and "test_bpc" in rows.columns and len(rows) and rows["test_bpc"].notna().all():
        return "test_bpc"
    return metric


def summary(df: pd.DataFrame, metric: str = "test_accuracy") -> pd.DataFrame:
    """benchmark.results.summarize of the runs, with `metric` (test, best test or validation accuracy)
    in the accuracy columns: mean/std over seeds per (dataset, model, method, distribution, sparsity,
    multiplier); std is NaN for a single seed."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    if metric not in df.columns or df[metric].isna().all():
        raise ValueError(f"the runs have no {metric} values (val_accuracy needs runs with --val-fraction > 0, "
                         "test_bpc runs on a text dataset)")
    data = df.assign(test_accuracy=df[metric])
    for column in ("seed", "wall_time_s"):
        if column not in data.columns:
            data[column] = 0 if column == "seed" else math.nan
    data = data[data["test_accuracy"].notna()]
    return summarize(data)


# ---- run folders ----

def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run folders (holding config.json) named by `paths`: a run folder itself, a folder of run
    folders, or a results folder whose runs/ holds them. ResultsError when a path is missing."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise ResultsError(f"run folder {path} {'is a file' if path.exists() else 'does not exist'}; pass run "
                               "folders, or the folder holding them")
        if (path / "config.json").is_file():
            found.append(path)
            continue
        parent = path / "runs" if (path / "runs").is_dir() else path
        found.extend(sorted(d for d in parent.iterdir() if (d / "config.json").is_file()))
    return list(dict.fromkeys(found))


def run_dirs_for(runs: RunsSource, df: pd.DataFrame | None = None) -> list[Path]:
    """Run folders next to the runs.csv files named by `runs` (`runs_files`: <dir>/runs/<run_id>/),
    restricted to the rows of `df` if given; folders that are not there are left out (runs.csv may be
    copied without them)."""
    ids = set(df["run_id"]) if df is not None else None
    found = []
    for path in runs_files(runs):
        base = path.parent / "runs"
        if base.is_dir():
            found += [d for d in sorted(base.iterdir())
                      if (d / "config.json").is_file() and (ids is None or d.name in ids)]
    return found


@dataclass
class RunRecord:
    """One run folder: its settings, final metrics (if finished) and mask-update log."""

    path: Path
    config: dict[str, Any]
    record: dict[str, Any]
    metrics: dict[str, Any] | None
    updates: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def method(self) -> str:
        return self.config["method"]

    @property
    def distribution(self) -> str:
        return "none" if is_dense(self.method) else self.config.get("distribution", "uniform")

    @property
    def sparsity(self) -> float:
        return 0.0 if keeps_every_weight(self.method) else float(self.config.get("sparsity", 0.0))

    @property
    def multiplier(self) -> float:
        return float(self.config.get("multiplier", 1.0))

    @property
    def total_steps(self) -> int | None:
        steps = self.record.get("total_steps") or (self.metrics or {}).get("steps")
        return int(steps) if steps else None


def read_run(path: str | Path) -> RunRecord:
    """Read config.json, metrics.json (None if the run has not finished) and updates.csv of a run folder."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ResultsError(f"{path} is not a run folder (no config.json)")
    record, _ = read_run_config(path)
    metrics = read_json(path / "metrics.json", RERUN) if (path / "metrics.json").is_file() else None
    updates = pd.DataFrame()
    if (path / "updates.csv").is_file():
        try:
            updates = pd.read_csv(path / "updates.csv")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            updates = pd.DataFrame()
    return RunRecord(path, record["config"], record, metrics, updates)


# ---- the paper's numbers ----

def load_paper(path: str | Path = PAPER_CSV) -> pd.DataFrame:
    """analysis/data/paper-results.csv: the paper's accuracies and FLOP multipliers."""
    paper = _read_table(path, PAPER_COLUMNS, "table of reference numbers in the paper-results.csv format",
                        f"pass a CSV with the columns of {PAPER_CSV.name}")
    paper["distribution"] = paper["distribution"].fillna("").astype(str)
    return paper


def paper_rows(paper: pd.DataFrame, dataset: str, model: str) -> pd.DataFrame:
    """The paper's rows for a harness (dataset, model), mapping names ("resnet-50" -> "resnet50"), placed
    on this suite's sparsity axis: `sparsity` is the overall sparsity of the layer sparsities the paper's
    code runs (`PAPER_LAYER_SPARSITY`), `reported_sparsity` the paper's number and `placement` says why
    they differ (empty where they do not); rows in `PAPER_NOT_OVERLAID` are left out."""
    d = PAPER_DATASET_NAMES.get(dataset, dataset)
    m = PAPER_MODEL_NAMES.get(model, model)
    rows = paper[(paper["dataset"] == d) & (paper["model"] == m)].reset_index(drop=True)
    keys = list(zip(rows.get("source", pd.Series("", index=rows.index)), rows["method"]))
    placed = {k: _run_sparsity(dataset, model, PAPER_LAYER_SPARSITY[k]) for k in keys if k in PAPER_LAYER_SPARSITY}
    rows = rows.assign(
        reported_sparsity=rows["sparsity"],
        sparsity=[placed.get(k, s) for k, s in zip(keys, rows["sparsity"])],
        placement=[f"the paper calls it {s:.0%} sparse, but its layer sparsities "
                   f"{'/'.join(f'{v:g}' if v else 'dense' for v in PAPER_LAYER_SPARSITY[k])} keep "
                   f"{1 - placed[k]:.2%} of the weights" if k in placed else ""
                   for k, s in zip(keys, rows["sparsity"])])
    return rows[[k not in PAPER_NOT_OVERLAID for k in keys]].reset_index(drop=True)


def _run_sparsity(dataset: str, model: str, layer_sparsity: tuple[float, ...]) -> float:
    """Overall sparsity of `model` at these layer sparsities, as a run of this suite records it."""
    config = RunConfig(dataset=dataset, model=model, distribution="custom", layer_sparsity=layer_sparsity)
    return config.implied_sparsity()


# ---- loss-landscape outputs ----

LANDSCAPE_COLUMNS = ["coefficient", "path", "train_loss", "test_accuracy", "bn_recomputed"]
RESTART_COLUMNS = ["method", "step", "train_loss"]


def _read_table(path: str | Path, columns: list[str], what: str, how: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path} does not exist; {how}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path} is not a readable CSV ({str(err).splitlines()[0]}); {how}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ResultsError(f"{path} lacks column(s) {', '.join(missing)}; it is not a {what}")
    return df


def read_landscape(path: str | Path) -> pd.DataFrame:
    """landscape.csv of `python -m analysis landscape` (coefficient, path, train_loss, test_accuracy,
    bn_recomputed, ...)."""
    return _read_table(path, LANDSCAPE_COLUMNS, "landscape.csv written by `python -m analysis landscape`",
                       "run `python -m analysis landscape RUN_A RUN_B` first")


def read_restart(path: str | Path) -> pd.DataFrame:
    """restart.csv of `python -m analysis landscape --restart-from RUN` (method, step, train_loss, ...)."""
    return _read_table(path, RESTART_COLUMNS, "restart.csv written by `python -m analysis landscape --restart-from`",
                       "run `python -m analysis landscape ... --restart-from RUN` first")
