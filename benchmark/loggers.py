"""Optional experiment trackers (`run --logger tensorboard|wandb`): what log.csv, evals.csv and
updates.csv hold, plus the FLOP counters, sent live to TensorBoard or Weights & Biases.

A logger only reads what the training loop records, so it never changes a result and is not a
setting of the run (not in its config key). TensorBoard writes to `<out>/tensorboard/<run id>/`;
W&B to its own folder (`WANDB_MODE=offline` needs no account; `wandb sync` uploads later).
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

LOGGERS = ("none", "tensorboard", "wandb")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_logger(name: str) -> None:
    """ValueError naming the fix unless logger `name` is known and its package is installed."""
    if name not in LOGGERS:
        raise ValueError(f"unknown logger {name!r}; use one of {', '.join(LOGGERS)}")
    package = PACKAGES.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise ValueError(f"--logger {name} needs the {package} package: pip install -e '.[{name}]' "
                         f"(or `pip install {package}`)")


class RunLogger:
    """Receives the rows the training loop writes (`log`, `evals`, `updates`) and the FLOP summary."""

    def log(self, table: str, row: dict[str, Any]) -> None:
        """One row of `table` (log, evals or updates), at its `step`."""

    def finish(self, metrics: dict[str, Any]) -> None:
        """The run's final metrics (FLOP counters included); closes the logger."""

    def close(self) -> None:
        """Flush and close (also after an interruption or an error; closing twice is harmless)."""


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a row other than its step."""
    return {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, int | float)
            and not isinstance(v, bool) and math.isfinite(v)}


def _final(metrics: dict[str, Any]) -> dict[str, float]:
    """The final metrics and FLOP counters worth a scalar each (`flops/train_flops`, ...)."""
    flat = {**{k: metrics[k] for k in ("test_accuracy", "best_test_accuracy", "test_loss", "val_accuracy",
                                       "global_density", "active_params", "total_params", "wall_time_s")
               if k in metrics},
            **{f"flops/{k}": v for k, v in metrics.get("flops", {}).items()}}
    return _scalars(flat)


class TensorBoardLogger(RunLogger):
    """Scalars `<table>/<column>` (e.g. `log/train_loss`, `evals/test_accuracy`, `updates/grown`) at each
    row's step, and `final/<metric>` at the last step; written with tensorboard's own event writer."""

    def __init__(self, folder: Path, run_id: str, settings: dict[str, Any]):
        self.folder, self.writer, self.step = folder, None, 0
        self.header = f"{run_id}\n\n" + "\n".join(f"    {k} = {v}" for k, v in sorted(settings.items()))

    def _event(self, summary, step: int) -> None:
        """Write one event; the event file (with the settings as text) is made with the first one, so a run
        that fails before its first log row leaves no file."""
        import time

        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        if self.writer is None:
            self.writer = EventFileWriter(str(self.folder))
            self._text("settings", self.header)
        self.writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))

    def _text(self, tag: str, text: str) -> None:
        from tensorboard.plugins.text.summary_v2 import text_pb

        self._event(text_pb(tag, text), 0)

    def _scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._event(Summary(value=[Summary.Value(tag=tag, simple_value=value)]), step)

    def log(self, table: str, row: dict[str, Any]) -> None:
        self.step = max(self.step, int(row["step"]))
        for key, value in _scalars(row).items():
            self._scalar(f"{table}/{key}", value, int(row["step"]))

    def finish(self, metrics: dict[str, Any]) -> None:
        for key, value in _final(metrics).items():
            self._scalar(f"final/{key}", value, self.step)
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WandbLogger(RunLogger):
    """One W&B run per training run (name = run id, group = config key, config = its settings); rows are
    logged as `<table>/<column>` at their step, the final metrics into the run's summary."""

    def __init__(self, folder: Path, run_id: str, settings: dict[str, Any], group: str):
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project="sparsebench", name=run_id, group=group, config=settings, dir=str(folder),
                              reinit=True)

    def log(self, table: str, row: dict[str, Any]) -> None:
        self.run.log({f"{table}/{k}": v for k, v in _scalars(row).items()}, step=int(row["step"]))

    def finish(self, metrics: dict[str, Any]) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in _final(metrics).items()})
        self.close()

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def make_logger(name: str, out: Path, run_id: str, settings: dict[str, Any], group: str) -> RunLogger:
    """Logger `name` for one run whose sweep writes to `out`: TensorBoard events in
    `out/tensorboard/<run id>/`, W&B files in `out/wandb/`; `none` logs nothing."""
    check_logger(name)
    if name == "tensorboard":
        return TensorBoardLogger(out / "tensorboard" / run_id, run_id, settings)
    if name == "wandb":
        return WandbLogger(out / "wandb", run_id, settings, group)
    return RunLogger()
