"""A grid of runs: expand it, skip finished runs, resume interrupted ones, run them in parallel."""
from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .config import RunConfig, preset_config
from .results import append_row, finished_ids, run_row
from .train import plan_run, resolve_device, train


def parse_seeds(text: str) -> list[int]:
    """`3` means seeds 0, 1, 2; `0,4,7` means exactly those."""
    parts = [p for p in str(text).split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--seeds takes a count (3) or a comma list (0,1,2), got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise ValueError(f"--seeds takes a count (3) or a comma list (0,1,2) of non-negative seeds, got {text!r}")
    return list(range(values[0])) if len(values) == 1 and "," not in str(text) else values


def expand_grid(preset: str, methods: list[str], sparsities: list[float], seeds: list[int],
                **overrides: Any) -> list[RunConfig]:
    """Every (method, sparsity, seed) run; dense is run once per seed, at sparsity 0."""
    if not methods:
        raise ValueError("no methods given; pass e.g. --methods rigl,set or --methods all")
    configs, seen = [], set()
    for method in methods:
        for sparsity in ([0.0] if method == "dense" else sparsities):
            for seed in seeds:
                cfg = preset_config(preset, **overrides, method=method, sparsity=sparsity, seed=seed)
                if cfg.run_id() not in seen:
                    seen.add(cfg.run_id())
                    configs.append(cfg)
    return configs


def run_dir(out: Path, cfg: RunConfig) -> Path:
    """Where a run lives: named by its settings' hash, so a re-run finds it."""
    return out / "runs" / cfg.run_id()


def _run_one(cfg: RunConfig, out: Path, threads: int, position: int | None) -> dict[str, Any]:
    """Train one run (in a worker process or in-line) and return its runs.csv row."""
    if threads:
        torch.set_num_threads(threads)
    bar = tqdm(total=None, desc=cfg.run_id(), position=position, leave=False, disable=None)

    def progress(step: int, total: int) -> None:
        bar.total = total
        bar.n = step
        if step % 50 == 0 or step == total:
            bar.refresh()

    try:
        metrics = train(cfg, run_dir(out, cfg), progress)
    finally:
        bar.close()
    return run_row(cfg, metrics, str(resolve_device(cfg.device)))


def run_sweep(configs: list[RunConfig], out: Path, workers: int = 1,
              report: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every config not already in `out/runs.csv`; rows are appended as runs finish.

    With workers > 1 runs go to that many processes, each with an equal share of the CPU threads.
    """
    runs_csv = out / "runs.csv"
    done = finished_ids(runs_csv)
    todo = [c for c in configs if c.run_id() not in done]
    skipped = len(configs) - len(todo)
    if skipped:
        report(f"skipping {skipped} finished run(s) already in {runs_csv}")
    rows = []
    sweep_bar = tqdm(total=len(todo), desc="sweep", disable=None, position=0)

    def finished(row: dict[str, Any]) -> None:
        append_row(runs_csv, row)
        rows.append(row)
        sweep_bar.update()
        report(f"done {row['run_id']}: test accuracy {row['test_accuracy']:.2f}%, train FLOPs "
               f"{row['train_flops_multiplier']:.3f}x, inference FLOPs {row['inference_flops_multiplier']:.3f}x, "
               f"{row['wall_time_s']:.0f}s")

    try:
        if workers <= 1:
            for cfg in todo:
                finished(_run_one(cfg, out, 0, 1))
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            context = multiprocessing.get_context("spawn")
            with futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                jobs = [pool.submit(_run_one, c, out, threads, 1 + i % workers) for i, c in enumerate(todo)]
                for job in futures.as_completed(jobs):
                    finished(job.result())
    finally:
        sweep_bar.close()
    return rows


def dry_run_table(configs: list[RunConfig]) -> list[dict[str, Any]]:
    """The grid with each run's planned steps and FLOP multipliers, computed without data or training."""
    return [{"run_id": c.run_id(), **{k: getattr(c, k) for k in ("method", "distribution", "sparsity", "seed")},
             **dataclasses.asdict(plan_run(c))} for c in configs]
