"""A grid of runs: expand it, skip finished runs, resume interrupted ones, run each exactly once, in parallel."""
from __future__ import annotations

import concurrent.futures as futures
import contextlib
import dataclasses
import itertools
import math
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import methods

from . import distributed
from .claim import CLAIM_FILE, claim
from .config import RunConfig
from .presets import preset_config
from .provenance import code_fingerprint
from .results import append_row, distribution_cell, read_runs, retire_row, run_row
from .distributed import resolve_device
from .loggers import make_logger
from .memory import available_bytes, dense_state_bytes, distinct_states
from .provenance import resumed_code
from .train import plan_run, train


def bar_width() -> dict[str, Any]:
    """tqdm's width settings: follow the terminal's width, or 80 columns where it has none (a pipe, a
    terminal that reports 0 columns), so a bar is still drawn on one line."""
    return {"dynamic_ncols": True} if shutil.get_terminal_size((0, 0)).columns else {"ncols": 80}


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


def expand_grid(preset: str, method_names: list[str], sparsities: list[float], seeds: list[int],
                **overrides: Any) -> list[RunConfig]:
    """Every (method, sparsity, seed) run; a method that keeps every weight (dense) runs once per seed, at
    sparsity 0."""
    if not method_names:
        raise ValueError("no methods given; pass e.g. --methods rigl,set or --methods all")
    configs, seen = [], set()
    for method in method_names:
        for sparsity in (sparsities if methods.method_class(method).uses_sparsity else [0.0]):
            for seed in seeds:
                cfg = preset_config(preset, **overrides, method=method, sparsity=sparsity, seed=seed)
                if cfg.run_id() not in seen:
                    seen.add(cfg.run_id())
                    configs.append(cfg)
    return configs


def run_dir(out: Path, cfg: RunConfig) -> Path:
    """Where a run lives: named by its settings' key, so a re-run finds it."""
    return out / "runs" / cfg.run_id()


@dataclass
class Outcome:
    """What became of one run of a sweep: `trained` here, already `finished` (its row was there when
    its claim was taken), `busy` (another process holds its claim) or `stale` (see `stale_code`)."""

    run_id: str
    status: str
    row: dict[str, Any] | None = None
    reason: str = ""


def stale_code(folder: Path, row: dict[str, Any] | None) -> str:
    """The code fingerprint that a run's row, or an unfinished run's config.json, records where it is not
    the current training code's ("" where it is, or where nothing was trained): the run is stale."""
    recorded = row.get("code") if row is not None else None  # an empty cell reads as NaN
    code = (recorded if isinstance(recorded, str) and recorded else "unrecorded") if row is not None \
        else resumed_code(folder)
    return "" if code in (None, code_fingerprint()) else code


def _stale_text(code: str, finished: bool) -> str:
    return f"{'finished' if finished else 'started'} by other training code (code {code}, now {code_fingerprint()})"


def _row(runs_csv: Path, run_id: str) -> dict[str, Any] | None:
    if not runs_csv.exists():
        return None
    rows = read_runs(runs_csv)
    match = rows[rows.run_id == run_id]
    return None if match.empty else match.iloc[0].to_dict()


def retire(out: Path, folder: Path, row: dict[str, Any] | None, code: str) -> None:
    """Set a stale run aside before it is trained again: its row moves to runs.stale.csv and its files
    (all but the claim) to out/stale/<run id>-<code>/; nothing is deleted."""
    if row is not None:
        retire_row(out / "runs.csv", row["run_id"])
    dest = out / "stale" / f"{folder.name}-{code}"
    dest.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.name != CLAIM_FILE:
            os.replace(path, dest / path.name)


def _run_one(cfg: RunConfig, out: Path, position: int | None, rerun_stale: bool = False,
             logger: str = "none") -> Outcome:
    """Claim, train and record one run (in a worker process, a Ray task or in-line), sending its logs to
    experiment logger `logger` too. Under torchrun the main rank claims and decides, and every rank trains."""
    replicas = distributed.current()
    folder, runs_csv = run_dir(out, cfg), out / "runs.csv"
    with claim(folder) if replicas.main else contextlib.nullcontext(True) as held:
        outcome = Outcome(cfg.run_id(), "trained")
        if not held:
            outcome = Outcome(cfg.run_id(), "busy")
        elif replicas.main:
            row = _row(runs_csv, cfg.run_id())
            code = stale_code(folder, row)
            if code and rerun_stale:
                retire(out, folder, row, code)
            elif code:
                outcome = Outcome(cfg.run_id(), "stale", reason=_stale_text(code, row is not None))
            elif row is not None:
                outcome = Outcome(cfg.run_id(), "finished", row)
        if not replicas.any(outcome.status == "trained", resolve_device(cfg.device)):
            return outcome
        show = replicas.main and position is not None
        bar = tqdm(total=None, desc=cfg.run_id(), position=position, leave=False, disable=None if show else True,
                   **bar_width())

        def progress(step: int, total: int) -> None:
            bar.total = total
            bar.n = step
            if step % 50 == 0 or step == total:
                bar.refresh()

        tracker = make_logger(logger, out, cfg.run_id(), cfg.settings(), cfg.config_key()) if replicas.main else None
        try:
            metrics = train(cfg, folder, progress, logger=tracker)
        finally:
            bar.close()
            if tracker is not None:
                tracker.close()
        outcome.row = run_row(cfg, metrics, str(resolve_device(cfg.device)), replicas.world_size)
        if replicas.main:
            append_row(runs_csv, outcome.row)
        return outcome


def _inline(todo: list[RunConfig], out: Path, rerun_stale: bool, logger: str) -> Iterator[Outcome]:
    for cfg in todo:
        yield _run_one(cfg, out, 1, rerun_stale, logger)


def _processes(todo: list[RunConfig], out: Path, workers: int, rerun_stale: bool, logger: str) -> Iterator[Outcome]:
    with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_run_one, c, out, 1 + i % workers, rerun_stale, logger) for i, c in enumerate(todo)]
        for job in futures.as_completed(jobs):
            yield job.result()


def _ray(todo: list[RunConfig], out: Path, address: str | None, cpus: float, gpus: float,
         retries: int, rerun_stale: bool, logger: str) -> Iterator[Outcome]:
    """Each run is a Ray task; a task whose worker dies is retried and resumes from its checkpoint
    (the dead worker's claim went with it), so `out` must be storage every node sees."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False)
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=retries)(_run_one)
    pending = [task.remote(cfg, out.resolve(), None, rerun_stale, logger) for cfg in todo]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            yield ray.get(ready[0])
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            raise cause if isinstance(cause, (ValueError, OSError)) else err


def auto_workers(configs: list[RunConfig]) -> int:
    """The processes a local sweep of `configs` uses by default: as many as the CPUs this process may use hold
    runs of their `threads` each (results do not depend on it), and as the available memory holds twice the
    largest run's dense training state each; 1 on a GPU or under torchrun."""
    if not configs or distributed.current().parallel or any(resolve_device(c.device).type != "cpu" for c in configs):
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    largest = max(dense_state_bytes(c)[1] for c in distinct_states(configs))
    return max(1, min(cpus // max(c.threads for c in configs), available_bytes(torch.device("cpu")) // (2 * largest)))


def run_sweep(configs: list[RunConfig], out: Path, workers: int | None = 1, report: Callable[[str], None] = tqdm.write,
              executor: str = "local", ray_address: str | None = None, cpus_per_run: float = 1,
              gpus_per_run: float = 0, retries: int = 3, rerun_stale: bool = False,
              logger: str = "none") -> list[dict[str, Any]]:
    """Train every config that has no row in `out/runs.csv` yet; each run's row is appended by the
    process that trained it, while it holds the run's claim, so a run is trained and counted once
    however many sweeps, workers or retries ask for it. Runs whose row or checkpoint other training
    code wrote are stale: named one line each, and trained again only with `rerun_stale`.

    `executor="local"`: in this process, or with workers > 1 in that many processes (at most one per run to
    train; None: `auto_workers`). `executor="ray"`:
    one Ray task per run with `cpus_per_run`/`gpus_per_run`, on the cluster at `ray_address` (None
    starts a local one). Under torchrun every rank trains every run together and only rank 0 writes.
    Every run trains with its own `threads` setting, so results do not depend on the executor.
    `logger` (none, tensorboard, wandb) also sends each run's logs to that experiment tracker.
    Messages go through `report` (default `tqdm.write`, which never writes over the progress bars);
    "done" lines count the runs (`done <run id> (3/12): ...`): the progress where no bar is drawn.
    Returns the rows of the runs trained here.
    """
    replicas = distributed.current()
    runs_csv = out / "runs.csv"
    rows = {r["run_id"]: r for r in read_runs(runs_csv).to_dict("records")} if runs_csv.exists() else {}
    replicas.barrier()  # every rank has read runs.csv before rank 0 appends to it
    say = report if replicas.main else (lambda _: None)
    stale = {c.run_id(): code for c in configs if (code := stale_code(run_dir(out, c), rows.get(c.run_id())))}
    for run_id, code in stale.items():
        say(f"stale: {run_id} {_stale_text(code, run_id in rows)}; "
            + ("training it again" if rerun_stale else "--rerun-stale trains it again"))
    todo = [c for c in configs if c.run_id() not in rows and c.run_id() not in stale
            or rerun_stale and c.run_id() in stale]
    finished = sum(c.run_id() in rows and c.run_id() not in stale for c in configs)
    if finished:
        say(f"skipping {finished} finished run(s) already in {runs_csv}")

    def execute(batch: list[RunConfig]) -> Iterator[Outcome]:
        if executor == "ray":
            return _ray(batch, out, ray_address, cpus_per_run, gpus_per_run, retries, rerun_stale, logger)
        processes = min(workers or auto_workers(batch), len(batch))
        if processes > 1:
            return _processes(batch, out, processes, rerun_stale, logger)
        return _inline(batch, out, rerun_stale, logger)

    first, rest = pretraining_first(todo, set(rows) - set(stale))
    todo = first + rest
    outcomes = itertools.chain.from_iterable(execute(batch) for batch in (first, rest) if batch)
    trained = []
    with tqdm(total=len(todo), desc="sweep", disable=None if replicas.main else True, position=0,
              **bar_width()) as bar:
        for count, outcome in enumerate(outcomes, 1):
            bar.update()
            if outcome.status != "trained":
                say({"busy": f"skipped {outcome.run_id}: another process is training it and will append its row",
                     "finished": f"skipped {outcome.run_id}: another process finished it meanwhile",
                     "stale": f"skipped {outcome.run_id}: {outcome.reason}; --rerun-stale trains it again"}
                    [outcome.status])
                continue
            row = outcome.row
            trained.append(row)
            say(f"done {row['run_id']} ({count}/{len(todo)}): test accuracy {row['test_accuracy']:.2f}%, train FLOPs "
                f"{row['train_flops_multiplier']:.3f}x, inference FLOPs {row['inference_flops_multiplier']:.3f}x, "
                f"{row['wall_time_s']:.0f}s" + ("" if math.isfinite(row["test_loss"]) else
                                                f"; diverged (training loss not finite) and stopped after step "
                                                f"{row['steps']}: a lower --lr may help"))
    return trained


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
    return [{"run_id": c.run_id(), "method": c.method, "distribution": distribution_cell(c), "sparsity": c.sparsity,
             "seed": c.seed, **dataclasses.asdict(plan_run(c))} for c in configs]
