"""runs.csv (one row per finished run), its aggregation over seeds, and run folders as a DataFrame."""
from __future__ import annotations

import csv
import fcntl
import io
from pathlib import Path
from typing import Any

import pandas as pd

from .config import RunConfig
from .files import RERUN, read_json, read_run_config

# The runs.csv schema; README "Results" documents each column.
RUN_COLUMNS = [
    "run_id", "preset", "dataset", "model", "method", "distribution", "sparsity", "multiplier", "seed",
    "steps", "batch_size", "test_accuracy", "best_test_accuracy", "test_loss", "val_accuracy",
    "train_flops_multiplier", "inference_flops_multiplier", "train_flops", "inference_flops",
    "dense_forward_flops", "init_flops", "pretrain_flops", "global_density", "active_params", "total_params", "width",
    "wall_time_s", "steps_per_s", "device", "world_size", "torch", "commit",
]
GROUP_COLUMNS = ["dataset", "model", "method", "distribution", "sparsity", "multiplier"]
DENSE_METHODS = ("dense", "small-dense")


class ResultsError(ValueError):
    """A runs.csv that cannot be used; the message says which file and what to do."""


def run_row(cfg: RunConfig, metrics: dict[str, Any], device: str, world_size: int = 1) -> dict[str, Any]:
    """The runs.csv row of a finished run."""
    flops = metrics["flops"]
    return {
        "run_id": metrics["run_id"], "preset": cfg.preset, "dataset": cfg.dataset, "model": cfg.model,
        "method": cfg.method, "distribution": "none" if cfg.method in DENSE_METHODS else cfg.distribution,
        "sparsity": 0.0 if cfg.method == "dense" else cfg.sparsity, "multiplier": cfg.multiplier,
        "seed": cfg.seed, "steps": metrics["steps"], "batch_size": cfg.batch_size,
        "test_accuracy": metrics["test_accuracy"], "best_test_accuracy": metrics["best_test_accuracy"],
        "test_loss": metrics["test_loss"], "val_accuracy": metrics["val_accuracy"],
        "train_flops_multiplier": flops["train_multiplier"], "inference_flops_multiplier": flops["inference_multiplier"],
        "train_flops": flops["train_flops"], "inference_flops": flops["sparse_forward"],
        "dense_forward_flops": flops["dense_forward"], "init_flops": flops["init_flops"],
        "pretrain_flops": flops.get("pretrain_flops", 0.0),
        "global_density": metrics["global_density"], "active_params": metrics["active_params"],
        "total_params": metrics["total_params"], "width": metrics["width"],
        "wall_time_s": round(metrics["wall_time_s"], 3), "steps_per_s": metrics["steps_per_s"],
        "device": device, "world_size": world_size, "torch": metrics["torch"], "commit": metrics["commit"],
    }


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row under an exclusive lock, writing the header if the file is new.

    The row is written with a single write() of the whole line while the lock is held, so
    concurrent writers (parallel workers, several sweeps, Ray tasks on a shared disk) never
    interleave or duplicate a header.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0, 2)
            lines = []
            if f.tell() == 0:
                lines.append(",".join(RUN_COLUMNS) + "\n")
            lines.append(_csv_line([row.get(c, "") for c in RUN_COLUMNS]))
            f.write("".join(lines))
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def read_runs(path: Path) -> pd.DataFrame:
    """Load a runs.csv, or raise ResultsError saying what is wrong with it."""
    if not Path(path).exists():
        raise ResultsError(f"{path} does not exist; run `python -m benchmark run` first or pass --runs PATH")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path} is not a readable CSV ({str(err).splitlines()[0]}); "
                           "restore it from version control or re-run the sweep into a new --out") from None
    missing = [c for c in ("run_id", "method", "sparsity", "test_accuracy") if c not in df.columns]
    if missing:
        raise ResultsError(f"{path} lacks column(s) {', '.join(missing)}; it is not a runs.csv written by this suite")
    return df


def finished_ids(path: Path) -> set[str]:
    """run_ids that already have a row."""
    return set(read_runs(path)["run_id"]) if Path(path).exists() else set()


def diverged(df: pd.DataFrame) -> pd.Series:
    """Rows of runs that diverged: their final test loss is not finite (NaN or inf)."""
    if "test_loss" not in df.columns:
        return pd.Series(False, index=df.index)
    return ~pd.to_numeric(df["test_loss"], errors="coerce").abs().lt(float("inf"))


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of accuracy and FLOP multipliers per (dataset, model, method, distribution,
    sparsity, multiplier). Diverged runs are left out of the means and counted in `diverged`."""
    groups = [c for c in GROUP_COLUMNS if c in df.columns]
    bad = diverged(df)
    kept = ["test_accuracy", "train_flops_multiplier", "inference_flops_multiplier"]
    df = df.assign(**{c: df[c].where(~bad) for c in kept if c in df.columns}, diverged=bad)
    agg = df.groupby(groups, dropna=False).agg(
        seeds=("test_accuracy", "count"),
        diverged=("diverged", "sum"),
        test_accuracy_mean=("test_accuracy", "mean"),
        test_accuracy_std=("test_accuracy", "std"),
        train_flops_multiplier=("train_flops_multiplier", "mean"),
        inference_flops_multiplier=("inference_flops_multiplier", "mean"),
        wall_time_s=("wall_time_s", "mean"),
    )
    return agg.reset_index().sort_values(groups, kind="stable").reset_index(drop=True)


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table: accuracy as mean +- std (n seeds), FLOP multipliers beside it."""
    lines = ["| dataset | model | method | distribution | sparsity | x | test accuracy (%) | train FLOPs | "
             "inference FLOPs | seeds |", "|" + "---|" * 10]
    for r in summary.itertuples():
        std = "" if pd.isna(r.test_accuracy_std) else f" ± {r.test_accuracy_std:.2f}"
        accuracy, train, inference = ("–", "–", "–") if not r.seeds else (
            f"{r.test_accuracy_mean:.2f}{std}", f"{r.train_flops_multiplier:.3f}x", f"{r.inference_flops_multiplier:.3f}x")
        lines.append(f"| {r.dataset} | {r.model} | {r.method} | {r.distribution} | {r.sparsity:g} | {r.multiplier:g} "
                     f"| {accuracy} | {train} | {inference} | {r.seeds}{_diverged_text(r.diverged)} |")
    return "\n".join(lines) + "\n"


def _diverged_text(count: int) -> str:
    return f" (+{count} diverged)" if count else ""


def collect_runs(run_dirs: list[Path]) -> pd.DataFrame:
    """One row per finished run folder (config.json + metrics.json), the shrinkbench-style aggregator."""
    rows = []
    for d in run_dirs:
        metrics_path = d / "metrics.json"
        if not metrics_path.exists():
            continue
        record, cfg = read_run_config(d)
        try:
            rows.append(run_row(cfg, read_json(metrics_path, RERUN), record["device"], record.get("world_size", 1)))
        except (KeyError, TypeError) as err:
            raise ResultsError(f"{metrics_path} lacks {err} or is not a metrics.json of this suite; {RERUN}") from None
    return pd.DataFrame(rows, columns=RUN_COLUMNS)
