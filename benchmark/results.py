"""runs.csv (one row per finished run), its aggregation over seeds, and run folders as a DataFrame.

Schema 3 (README "Results"; 3 added `test_bpc`): every row carries `config_key`, the hash of `settings` (a JSON object of
every setting that can change the result except the seed), readable copies of the settings that
tell protocols apart, and `code`, the fingerprint of the training code that produced it. Rows are
averaged only with rows of the same key; a row is appended at most once per run id.
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pandas as pd

import methods

from .config import RunConfig, settings_json
from .files import RERUN, read_json, read_run_config

SCHEMA_VERSION = 3
# settings copied into their own columns, so a reader tells protocols apart without parsing `settings`
SETTING_COLUMNS = [
    "lr", "epochs", "batch_size", "optimizer", "momentum", "nesterov", "weight_decay", "label_smoothing",
    "lr_milestones", "lr_gamma", "warmup_epochs", "alpha", "delta_t", "t_end", "anneal", "dense_first", "dense_last",
    "amp", "threads",
]
RUN_COLUMNS = [
    "run_id", "config_key", "preset", "dataset", "model", "method", "distribution", "sparsity", "multiplier", "seed",
    *SETTING_COLUMNS,
    "steps", "test_accuracy", "best_test_accuracy", "test_loss", "val_accuracy", "test_bpc",
    "train_flops_multiplier", "inference_flops_multiplier", "train_flops", "inference_flops",
    "dense_forward_flops", "init_flops", "pretrain_flops", "global_density", "active_params", "total_params", "width",
    "wall_time_s", "steps_per_s", "device", "world_size", "torch", "commit", "code", "settings", "schema_version",
]
GROUP_COLUMNS = ["dataset", "model", "method", "distribution", "sparsity", "multiplier"]
# settings that are columns of a summary already, or that the seed's rows always share: not a protocol;
# nor is the execution, which `auto` chooses per method (runs of one method that differ in it are labelled)
NOT_PROTOCOL = {"method", "sparsity", "distribution", "layer_sparsity", "multiplier", "execution"}


class ResultsError(ValueError):
    """A runs.csv that cannot be used; the message says which file and what to do."""


def _cell(value: Any) -> Any:
    """A setting as a runs.csv cell: tuples as JSON lists, None (an automatic choice) as `auto`."""
    if value is None:
        return "auto"
    return json.dumps(list(value), separators=(",", ":")) if isinstance(value, tuple) else value


def identity_cells(cfg: RunConfig) -> dict[str, Any]:
    """The cells of a row that its settings decide: run id, key, setting columns, settings, schema version."""
    return {"run_id": cfg.run_id(), "config_key": cfg.config_key(),
            **{name: _cell(getattr(cfg, name)) for name in SETTING_COLUMNS},
            "settings": settings_json(cfg.settings()), "schema_version": SCHEMA_VERSION}


def distribution_cell(cfg: RunConfig) -> str:
    """The `distribution` column: `none` for a method that keeps every weight (dense, small-dense)."""
    return "none" if cfg.method_class.dense_baseline else cfg.distribution


def run_row(cfg: RunConfig, metrics: dict[str, Any], device: str, world_size: int = 1) -> dict[str, Any]:
    """The runs.csv row of a finished run."""
    flops = metrics["flops"]
    return {
        **identity_cells(cfg), "preset": cfg.preset, "dataset": cfg.dataset, "model": cfg.model, "method": cfg.method,
        "distribution": distribution_cell(cfg),
        "sparsity": cfg.sparsity if cfg.method_class.uses_sparsity else 0.0, "multiplier": cfg.multiplier, "seed": cfg.seed,
        "steps": metrics["steps"],
        "test_accuracy": metrics["test_accuracy"], "best_test_accuracy": metrics["best_test_accuracy"],
        "test_loss": metrics["test_loss"], "val_accuracy": metrics["val_accuracy"],
        "test_bpc": metrics.get("test_bpc"),
        "train_flops_multiplier": flops["train_multiplier"], "inference_flops_multiplier": flops["inference_multiplier"],
        "train_flops": flops["train_flops"], "inference_flops": flops["sparse_forward"],
        "dense_forward_flops": flops["dense_forward"], "init_flops": flops["init_flops"],
        "pretrain_flops": flops.get("pretrain_flops", 0.0),
        "global_density": metrics["global_density"], "active_params": metrics["active_params"],
        "total_params": metrics["total_params"], "width": metrics["width"],
        "wall_time_s": round(metrics["wall_time_s"], 3), "steps_per_s": metrics["steps_per_s"],
        "device": device, "world_size": world_size, "torch": metrics["torch"], "commit": metrics["commit"],
        "code": metrics.get("code") or "",
    }


@contextmanager
def _locked(path: Path) -> Iterator[IO[str]]:
    """`path` opened for reading and appending (created if missing) while holding the exclusive lock
    of `.<name>.lock` beside it; a separate lock file lets writers replace `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(path, "a+", newline="") as f:
            yield f


def _split_partial(f: IO[str], path: Path) -> str:
    """The file's complete lines; a partial last line (no newline: a write cut short) is moved to
    `<path>.partial` with a one-line notice and cut off the file."""
    f.seek(0)
    text = f.read()
    if not text or text.endswith("\n"):
        return text
    keep = text[: text.rfind("\n") + 1]
    backup = path.with_name(path.name + ".partial")
    with open(backup, "a") as b:
        b.write(text[len(keep):] + "\n")
    f.truncate(len(keep.encode()))
    _notice(f"{path}: its last line was cut short (a write was interrupted); moved it to {backup}, "
                     "that run is not counted as finished")
    return keep


def _notice(message: str) -> None:
    print(f"notice: {message}", file=sys.stderr)


def repair(path: Path) -> None:
    """Move a partial last line of runs.csv aside (see `_split_partial`); nothing else changes, and a
    complete file is not even locked."""
    path = Path(path)
    with open(path, "rb") as f:
        complete = f.seek(0, os.SEEK_END) == 0 or (f.seek(-1, os.SEEK_END) >= 0 and f.read(1) == b"\n")
    if not complete:
        with _locked(path) as f:
            _split_partial(f, path)


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row under an exclusive lock, writing the header if the file is new.

    The row is written with a single write() of the whole line while the lock is held, so concurrent
    writers (parallel workers, several sweeps, Ray tasks on a shared disk) never interleave or
    duplicate a header. A partial last line is moved aside first; a run id that already has a row
    raises ResultsError (one run, one row).
    """
    with _locked(path) as f:
        text = _split_partial(f, path)
        header = ",".join(RUN_COLUMNS) + "\n"
        if text and not text.startswith(header):
            raise ResultsError(f"{path} has another header than schema version {SCHEMA_VERSION}'s; upgrade the "
                               f"folder once with `python -m benchmark migrate --out {path.parent}`")
        if row["run_id"] in _ids(text):
            raise ResultsError(f"{path} already has a row for run {row['run_id']}; a run is counted once")
        lines = [] if text else [header]
        lines.append(csv_line([row.get(c, "") for c in RUN_COLUMNS]))
        f.seek(0, os.SEEK_END)
        f.write("".join(lines))
        f.flush()


def _ids(text: str) -> set[str]:
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    return set() if header is None else {r[header.index("run_id")] for r in rows if r}


def retire_row(path: Path, run_id: str) -> None:
    """Move the row of `run_id` from runs.csv to `runs.stale.csv` beside it (a stale run about to be
    trained again): runs.csv is replaced atomically, the stale file only ever appended to."""
    with _locked(path) as f:
        text = _split_partial(f, path)
        lines = text.splitlines(keepends=True)
        kept = lines[:1] + [line for line in lines[1:] if _ids(lines[0] + line) != {run_id}]
        moved = [line for line in lines[1:] if line not in kept]
        stale = path.with_name("runs.stale.csv")
        with open(stale, "a", newline="") as out:
            out.write(("" if stale.stat().st_size else lines[0]) + "".join(moved))
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


def csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def read_runs(path: Path) -> pd.DataFrame:
    """Load a runs.csv (moving a partial last line aside), or raise ResultsError saying what is wrong."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path} does not exist; run `python -m benchmark run` first or pass --runs PATH")
    try:
        try:
            repair(path)
        except OSError:  # read-only: leave the file alone, read its complete lines
            pass
        text = path.read_text()
        text = text[: text.rfind("\n") + 1]
        if not text:
            return pd.DataFrame(columns=RUN_COLUMNS)
        df = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path} is not a readable CSV ({str(err).splitlines()[0]}); "
                           "restore it from version control or re-run the sweep into a new --out") from None
    missing = [c for c in ("run_id", "method", "sparsity", "test_accuracy") if c not in df.columns]
    if missing:
        raise ResultsError(f"{path} lacks column(s) {', '.join(missing)}; it is not a runs.csv written by this suite")
    versions = set(df["schema_version"].dropna().astype(int)) if "schema_version" in df.columns else {1}
    if versions != {SCHEMA_VERSION} and len(df):
        raise ResultsError(f"{path} has rows of schema version {', '.join(map(str, sorted(versions)))}, this suite "
                           f"reads version {SCHEMA_VERSION}; upgrade the folder once with "
                           f"`python -m benchmark migrate --out {path.parent}`")
    return df


def diverged(df: pd.DataFrame) -> pd.Series:
    """Rows of runs that diverged: their final test loss is not finite (NaN or inf)."""
    if "test_loss" not in df.columns:
        return pd.Series(False, index=df.index)
    return ~pd.to_numeric(df["test_loss"], errors="coerce").abs().lt(float("inf"))


def check_unique(df: pd.DataFrame) -> None:
    """ResultsError naming both run ids when two rows have the same config key and seed: one training
    counted twice, never two seeds."""
    twice = df[df.duplicated(["config_key", "seed"], keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        same = twice[(twice.config_key == first.config_key) & (twice.seed == first.seed)]
        raise ResultsError(f"runs {' and '.join(same.run_id)} have the same settings (config key "
                           f"{first.config_key}) and seed {first.seed}: one training counted twice; delete the "
                           "extra row from runs.csv")


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "/".join(map(_text, value))
    return "auto" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def is_dense(method: str) -> bool:
    """Whether a method (by the name a row holds) trains a dense model, from its class's traits;
    names this version does not know count as sparse."""
    cls = methods.METHODS.get(method)
    return bool(cls and cls.dense_baseline)


def keeps_every_weight(method: str) -> bool:
    """Whether a method ignores the sparsity (dense: trained once, at sparsity 0), from its class's traits."""
    cls = methods.METHODS.get(method)
    return bool(cls and not cls.uses_sparsity)


def protocol_labels(df: pd.DataFrame) -> pd.Series:
    """Per row, the settings that tell its protocol from the others of its (dataset, model) and of its
    summary group ("lr=0.5, epochs=1"); empty where they all share one protocol (`NOT_PROTOCOL`
    settings and the seed are columns of their own; a dense run has no mask, so its distribution and
    layer sparsities never set it apart)."""
    settings = df["settings"].map(json.loads)
    labels = pd.Series("", index=df.index, dtype=object)
    differing: dict[Any, set[str]] = {i: set() for i in df.index}
    for keys, ignore in ((["dataset", "model"], NOT_PROTOCOL), (GROUP_COLUMNS, {"execution"})):
        for group, index in df.groupby(keys, dropna=False).groups.items():
            values = [settings[i] for i in index]
            baseline = keys is GROUP_COLUMNS and keeps_every_weight(group[GROUP_COLUMNS.index("method")])
            unused = {"distribution", "layer_sparsity"} if baseline else set()
            names = {k for s in values for k in s} - ignore - unused
            changing = {k for k in names if len({json.dumps(s.get(k)) for s in values}) > 1}
            for i in index:
                differing[i] |= changing
    # the execution, only between runs alike in every other setting (so it never splits a protocol in two)
    alike = [json.dumps({k: v for k, v in settings[i].items() if k != "execution"}, sort_keys=True) for i in df.index]
    for _, index in df.assign(_alike=alike).groupby([*GROUP_COLUMNS, "_alike"], dropna=False).groups.items():
        if len({json.dumps(settings[i].get("execution")) for i in index}) > 1:
            for i in index:
                differing[i].add("execution")
    for i in df.index:
        labels[i] = ", ".join(f"{k}={_text(settings[i].get(k))}" for k in sorted(differing[i]))
    return labels


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of accuracy (and of bits per character where runs have it) and FLOP multipliers per (dataset, model, method, distribution,
    sparsity, multiplier) and config key: rows of different settings are never averaged; where a group
    has several keys, or a (dataset, model) several protocols, `protocol` names the settings that differ
    (a `protocol` column of `df`, labelled over more rows, is kept as it is).
    Diverged runs are left out of the means and counted in `diverged`."""
    check_unique(df)
    bad = diverged(df)
    kept = ["test_accuracy", "test_bpc", "train_flops_multiplier", "inference_flops_multiplier"]
    df = df.assign(**{c: df[c].where(~bad) for c in kept if c in df.columns}, diverged=bad,
                   protocol=df["protocol"] if "protocol" in df.columns else protocol_labels(df))
    keys = [*GROUP_COLUMNS, "protocol", "config_key"]
    agg = df.groupby(keys, dropna=False).agg(
        seeds=("test_accuracy", "count"),
        diverged=("diverged", "sum"),
        test_accuracy_mean=("test_accuracy", "mean"),
        test_accuracy_std=("test_accuracy", "std"),
        **({"test_bpc_mean": ("test_bpc", "mean"), "test_bpc_std": ("test_bpc", "std")}
           if "test_bpc" in df.columns and df["test_bpc"].notna().any() else {}),
        train_flops_multiplier=("train_flops_multiplier", "mean"),
        inference_flops_multiplier=("inference_flops_multiplier", "mean"),
        wall_time_s=("wall_time_s", "mean"),
    )
    return agg.reset_index().sort_values(keys, kind="stable").reset_index(drop=True)


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table: accuracy as mean +- std (n seeds), FLOP multipliers beside it, and a
    bits-per-character column where some rows are language models'."""
    bpc = "test_bpc_mean" in summary.columns
    lines = ["| dataset | model | method | distribution | sparsity | x | test accuracy (%) | "
             + ("test bpc | " if bpc else "") + "train FLOPs | inference FLOPs | seeds |",
             "|" + "---|" * (11 if bpc else 10)]
    for r in summary.itertuples():
        std = "" if pd.isna(r.test_accuracy_std) else f" ± {r.test_accuracy_std:.2f}"
        accuracy, train, inference = ("–", "–", "–") if not r.seeds else (
            f"{r.test_accuracy_mean:.2f}{std}", f"{r.train_flops_multiplier:.3f}x", f"{r.inference_flops_multiplier:.3f}x")
        bits = ""
        if bpc:
            bits = "– | " if pd.isna(r.test_bpc_mean) else f"{r.test_bpc_mean:.3f}{_std(r.test_bpc_std, 3)} | "
        method = f"{r.method} ({r.protocol})" if r.protocol else r.method
        lines.append(f"| {r.dataset} | {r.model} | {method} | {r.distribution} | {r.sparsity:g} | {r.multiplier:g} "
                     f"| {accuracy} | {bits}{train} | {inference} | {r.seeds}{_diverged_text(r.diverged)} |")
    return "\n".join(lines) + "\n"


def _std(value: float, digits: int) -> str:
    return "" if pd.isna(value) else f" ± {value:.{digits}f}"


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
        if record.get("config_key") != cfg.config_key():
            raise ResultsError(f"{d} was written by an older version of this suite (its settings key does not "
                               f"match); upgrade its results folder once with `python -m benchmark migrate`")
        try:
            rows.append(run_row(cfg, read_json(metrics_path, RERUN), record["device"], record.get("world_size", 1)))
        except (KeyError, TypeError) as err:
            raise ResultsError(f"{metrics_path} lacks {err} or is not a metrics.json of this suite; {RERUN}") from None
    return pd.DataFrame(rows, columns=RUN_COLUMNS)
