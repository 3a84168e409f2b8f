"""The paper's restart experiment (section 4.4): continue a (static) solution with rigl and with static
through the harness's --init-from, and collect their training-loss curves from log.csv."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from benchmark.checkpoints import checkpoint_file
from benchmark.config import RunConfig
from benchmark.files import read_run_config
from benchmark.logs import read_log

RESTART_COLUMNS = ["method", "step", "train_loss", "run_id", "start_loss"]


def restart_configs(start_run: str | Path, steps: int, methods: Sequence[str] = ("rigl", "static"),
                    lr: float | None = None, device: str | None = None) -> list[RunConfig]:
    """Run settings that continue `start_run`'s final weights and masks with each method for `steps` steps."""
    start_run = Path(start_run).resolve()
    checkpoint = checkpoint_file(start_run)  # raises if there is no checkpoint
    if steps < 1:
        raise ValueError("--restart-steps must be >= 1")
    _, base = read_run_config(checkpoint.parent)
    log_every = max(1, min(base.log_every, steps // 20 or 1))
    configs = []
    for method in methods:
        cfg = dataclasses.replace(base, method=method, init_from=str(start_run), steps=steps, multiplier=1.0,
                                  log_every=log_every, checkpoint_every=steps, eval_every=steps)
        if lr:
            cfg.lr = lr
        if device:
            cfg.device = device
        cfg.validate()
        configs.append(cfg)
    return configs


def restart_losses(out: str | Path, configs: Sequence[RunConfig], start_run: str | Path | None = None) -> pd.DataFrame:
    """Training-loss curves (log.csv) of restarted runs: columns method, step, train_loss, run_id, start_loss
    (the last logged training loss of the run they started from, if known)."""
    start_loss = math.nan
    if start_run is not None:
        log = read_log(Path(start_run) if Path(start_run).is_dir() else Path(start_run).parent)
        if not log.empty and "train_loss" in log.columns:
            start_loss = float(log["train_loss"].iloc[-1])
    frames = []
    for cfg in configs:
        log = read_log(Path(out) / "runs" / cfg.run_id())
        if log.empty:
            continue
        frames.append(pd.DataFrame(dict(method=cfg.method, step=log["step"], train_loss=log["train_loss"],
                                        run_id=cfg.run_id(), start_loss=start_loss)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RESTART_COLUMNS)


def restart(start_run: str | Path, out: str | Path, steps: int, methods: Sequence[str] = ("rigl", "static"),
            lr: float | None = None, device: str | None = None,
            report: Callable[[str], None] = print) -> pd.DataFrame:
    """The paper's restart experiment: train each method from `start_run`'s final weights and masks
    (the harness's --init-from) for `steps` steps into out/ (runs.csv and runs/), and return their
    training-loss curves; out/restart.csv gets the same table. Finished restarts are not re-run."""
    from benchmark.sweep import run_sweep

    out = Path(out)
    configs = restart_configs(start_run, steps, methods, lr, device)
    run_sweep(configs, out, report=report)
    frame = restart_losses(out, configs, start_run)
    frame.to_csv(out / "restart.csv", index=False)
    return frame
