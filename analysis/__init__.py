"""Figures, tables and loss-landscape experiments from the results the benchmark writes.

    python -m analysis plot --runs results/runs.csv --out results/figures [--paper]
    python -m analysis table --runs results/runs.csv --out results/tables
    python -m analysis landscape RUN_A RUN_B --out results/landscape [--restart-from RUN]  (runs experiments/)

The same functions back the notebooks in notebooks/. They are imported on first use (pandas and
matplotlib take a second), so that the command line's --help stays fast.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from methods.lazy import lazy_getattr

if TYPE_CHECKING:  # what `__getattr__` imports on first use
    from benchmark.logs import read_log

    from . import plots, style, tables
    from .runs import (
        find_run_dirs,
        group_rows,
        group_title,
        groups,
        load_paper,
        load_runs,
        paper_rows,
        read_landscape,
        read_restart,
        read_run,
        run_dirs_for,
        runs_files,
        select,
        summary,
    )

_RUNS = ("find_run_dirs", "group_rows", "group_title", "groups", "load_paper", "load_runs", "paper_rows",
         "read_landscape", "read_restart", "read_run", "run_dirs_for", "runs_files", "select", "summary")
_LAZY = {"read_log": "benchmark.logs", **{name: f"{__name__}.runs" for name in _RUNS}}


__getattr__ = lazy_getattr(__name__, globals(), _LAZY)


__all__ = [
    "find_run_dirs",
    "group_rows",
    "group_title",
    "groups",
    "load_paper",
    "load_runs",
    "paper_rows",
    "plots",
    "read_landscape",
    "read_log",
    "read_restart",
    "read_run",
    "run_dirs_for",
    "runs_files",
    "select",
    "style",
    "summary",
    "tables",
]
