"""A grid of runs: expand it, skip finished runs, resume interrupted ones, run them in parallel."""
from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import itertools
import math
import multiprocessing
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import distributed
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
    if len(values) == 1 and "," not in str(text):
        if values[0] == 0:
            raise ValueError("--seeds 0 is a count of no seeds; pass --seeds 1 (seed 0), --seeds 3 (seeds 0, 1, 2) "
                             "or --seed N for the one seed N")
        return list(range(values[0]))
    return values


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
    """Train one run (in a worker process, a Ray task or in-line) and return its runs.csv row."""
    if threads:
        torch.set_num_threads(threads)
    show = distributed.current().main and position is not None
    bar = tqdm(total=None, desc=cfg.run_id(), position=position, leave=False, disable=None if show else True)

    def progress(step: int, total: int) -> None:
        bar.total = total
        bar.n = step
        if step % 50 == 0 or step == total:
            bar.refresh()

    try:
        metrics = train(cfg, run_dir(out, cfg), progress)
    finally:
        bar.close()
    return run_row(cfg, metrics, str(resolve_device(cfg.device)), distributed.current().world_size)


def _inline(todo: list[RunConfig], out: Path) -> Iterator[dict[str, Any]]:
    for cfg in todo:
        yield _run_one(cfg, out, 0, 1)


def _processes(todo: list[RunConfig], out: Path, workers: int) -> Iterator[dict[str, Any]]:
    threads = max(1, (os.cpu_count() or 1) // workers)
    with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_run_one, c, out, threads, 1 + i % workers) for i, c in enumerate(todo)]
        for job in futures.as_completed(jobs):
            yield job.result()


def _ray(todo: list[RunConfig], out: Path, address: str | None, cpus: float, gpus: float,
         retries: int) -> Iterator[dict[str, Any]]:
    """Each run is a Ray task; a task whose worker dies is retried and resumes from its checkpoint,
    so `out` must be storage every node sees."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False)
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=retries)(_run_one)
    pending = [task.remote(cfg, out.resolve(), max(1, int(cpus)), None) for cfg in todo]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            yield ray.get(ready[0])
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            raise cause if isinstance(cause, (ValueError, OSError)) else err


def run_sweep(configs: list[RunConfig], out: Path, workers: int = 1, report: Callable[[str], None] = print,
              executor: str = "local", ray_address: str | None = None, cpus_per_run: float = 1,
              gpus_per_run: float = 0, retries: int = 3) -> list[dict[str, Any]]:
    """Run every config not already in `out/runs.csv`; rows are appended as runs finish.

    `executor="local"`: in this process, or with workers > 1 in that many processes sharing the CPU
    threads. `executor="ray"`: one Ray task per run with `cpus_per_run`/`gpus_per_run`, on the
    cluster at `ray_address` (None starts a local one). Under torchrun every rank trains every run
    together and only rank 0 writes.
    """
    replicas = distributed.current()
    runs_csv = out / "runs.csv"
    done = finished_ids(runs_csv)
    replicas.barrier()  # every rank has read runs.csv before rank 0 appends to it
    todo = [c for c in configs if c.run_id() not in done]
    say = report if replicas.main else (lambda _: None)
    if len(configs) > len(todo):
        say(f"skipping {len(configs) - len(todo)} finished run(s) already in {runs_csv}")

    def execute(batch: list[RunConfig]) -> Iterator[dict[str, Any]]:
        if executor == "ray":
            return _ray(batch, out, ray_address, cpus_per_run, gpus_per_run, retries)
        if workers > 1:
            return _processes(batch, out, workers)
        return _inline(batch, out)

    first, rest = pretraining_first(todo, done)
    todo = first + rest
    results = itertools.chain.from_iterable(execute(batch) for batch in (first, rest) if batch)
    rows = []
    with tqdm(total=len(todo), desc="sweep", disable=None if replicas.main else True, position=0) as bar:
        for row in results:
            if replicas.main:
                append_row(runs_csv, row)
            rows.append(row)
            bar.update()
            say(f"done {row['run_id']}: test accuracy {row['test_accuracy']:.2f}%, train FLOPs "
                f"{row['train_flops_multiplier']:.3f}x, inference FLOPs {row['inference_flops_multiplier']:.3f}x, "
                f"{row['wall_time_s']:.0f}s" + ("" if math.isfinite(row["test_loss"]) else
                                                f"; diverged (training loss not finite) and stopped after step "
                                                f"{row['steps']}: a lower --lr may help"))
    return rows


def pretraining_first(todo: list[RunConfig], done: set[str]) -> tuple[list[RunConfig], list[RunConfig]]:
    """(the unfinished dense runs that lottery runs of `todo` start from, the other runs): the first are
    trained before the others start (each gets its own runs.csv row), so parallel lottery runs find
    their dense run finished instead of training it concurrently."""
    needed = {d.run_id(): d for c in todo if (d := c.pretrain_config()) and d.run_id() not in done}
    in_grid = {c.run_id() for c in todo}
    first = [c for c in todo if c.run_id() in needed] + [d for i, d in needed.items() if i not in in_grid]
    return first, [c for c in todo if c.run_id() not in needed]


def dry_run_table(configs: list[RunConfig]) -> list[dict[str, Any]]:
    """The grid with each run's planned steps and FLOP multipliers, computed without data or training."""
    return [{"run_id": c.run_id(), **{k: getattr(c, k) for k in ("method", "distribution", "sparsity", "seed")},
             **dataclasses.asdict(plan_run(c))} for c in configs]
