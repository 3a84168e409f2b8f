"""The CSV logs of a run folder: log.csv, evals.csv and updates.csv."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd

LOG_COLUMNS = ["step", "epoch", "lr", "train_loss", "train_accuracy", "density", "train_flops", "wall_time_s"]
EVAL_COLUMNS = ["step", "epoch", "test_loss", "test_accuracy", "val_loss", "val_accuracy"]
UPDATE_COLUMNS = ["step", "grown", "grown_fraction", "density"]


class CsvLog:
    """An append-only CSV with a fixed header; a resumed run drops the rows after its checkpoint."""

    def __init__(self, path: Path, columns: list[str], enabled: bool = True):
        self.path, self.columns, self.enabled = path, columns, enabled

    def start(self, step: int) -> None:
        """Create the file with its header, or keep only its rows up to `step` (a resumed run's checkpoint)."""
        if not self.enabled:
            return
        rows = []
        if self.path.exists():
            with self.path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        self._write(rows, "w")

    def append(self, row: dict[str, Any]) -> None:
        if self.enabled:
            self._write([row], "a")

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        new = mode == "w" or not self.path.exists()
        with self.path.open(mode, newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            if new:
                writer.writeheader()
            writer.writerows(rows)


def read_log(path: str | Path, name: str = "log.csv") -> pd.DataFrame:
    """A run folder's log.csv (or evals.csv, updates.csv) as a DataFrame; empty if absent."""
    file = Path(path) / name
    if not file.is_file():
        return pd.DataFrame()
    try:
        return pd.read_csv(file)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return pd.DataFrame()
