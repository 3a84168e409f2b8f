"""`python -m benchmark migrate --out DIR`: bring a results folder to the current runs.csv schema
and settings keys, once.

Each run's settings are read from its `config.json`; a setting the run predates takes the value it
was trained with (`LEGACY_SETTINGS`). Folders whose key changed are renamed to their new run id,
their config.json and metrics.json record it, and every row of runs.csv is rewritten with the new
columns (its measured values unchanged). JSON records that name a renamed folder (a lottery run's
`pretrain_run`, a landscape's `start`/`end`) are updated; recorded settings (`init_from`) are not.
The old runs.csv is kept as `runs.csv.before-migrate`; a migrated folder migrates to itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .config import RunConfig
from .files import read_json, write_text_atomic
from .results import RUN_COLUMNS, SCHEMA_VERSION, ResultsError, csv_line, identity_cells

# The value a run recorded before a setting existed was trained with. Add a line with each new setting.
LEGACY_SETTINGS: dict[str, Any] = {
    "layer_sparsity": [], "dsr_threshold": 1e-3, "dsr_prune_fraction": 0.01, "dsr_tolerance": 0.1,
    "deepr_l1": 1e-5, "deepr_temperature": 2.5e-11,
    "threads": 1,  # sweeps before schema 2 ran --workers 2 on 2 cores: one thread per run
    "inputs": "standardized", "init": "default", "bias_decay": True, "dense_lr_milestones": [],
    "update_at_start": False, "execution": "masked",
    "structure": "",  # N:M structured masks: runs before it were unstructured
    "grad_clip": 0.0,  # gradient clipping: runs before it were not clipped
}
BACKUP_SUFFIX = ".before-migrate"


def settings_of(folder: Path) -> RunConfig:
    """The run's settings from its config.json, with `LEGACY_SETTINGS` for those it predates."""
    record = _read_json(folder / "config.json")
    recorded = record.get("config")
    if not isinstance(recorded, dict):
        raise ResultsError(f"{folder / 'config.json'} has no settings object `config`; it is not a run folder "
                           "of this suite")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(recorded) - known)
    missing = sorted(known - set(recorded) - set(LEGACY_SETTINGS))
    if unknown or missing:
        raise ResultsError(f"{folder / 'config.json'} has settings this suite does not know ({', '.join(unknown)}) or "
                           f"lacks some without a legacy value ({', '.join(missing)}); migrate it with the "
                           "version of the suite that wrote it first")
    return RunConfig(**{**LEGACY_SETTINGS, **recorded})


def _read_json(path: Path) -> dict[str, Any]:
    return read_json(path, "restore it from the folder's source")


def _write_json(path: Path, value: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(value, indent=2))


def _folders(out: Path) -> dict[str, Path]:
    """Run folders under out/runs by every id they answer to: their folder name, and the run id their
    config.json records (which differ only when a migration was interrupted before the renames)."""
    runs = out / "runs"
    if not runs.is_dir():
        raise ResultsError(f"{out} has no runs/ folder; pass the folder that holds runs.csv and runs/")
    found = {}
    for d in sorted(runs.iterdir()):
        if (d / "config.json").is_file():
            found[d.name] = d
            found.setdefault(_read_json(d / "config.json").get("run_id", d.name), d)
    return found


def migrate(out: Path) -> dict[str, str]:
    """Migrate results folder `out` in place; returns {old run id: new run id} of renamed folders.

    Order: every folder's JSON records, then runs.csv (atomically), then the renames; an interrupted
    migration is finished by running it again."""
    out = Path(out)
    folders = _folders(out)
    configs = {d: settings_of(d) for d in set(folders.values())}
    runs_csv = out / "runs.csv"
    rows = pd.read_csv(runs_csv, dtype=str, keep_default_na=False).to_dict("records") if runs_csv.exists() else []
    orphans = sorted({r["run_id"] for r in rows} - set(folders))
    if orphans:
        raise ResultsError(f"{runs_csv} has rows whose run folder is missing ({', '.join(orphans[:3])}"
                           f"{', ...' if len(orphans) > 3 else ''}): their settings cannot be read; "
                           "copy the run folders next to it first")
    new_ids = [cfg.run_id() for cfg in configs.values()]
    if len(set(new_ids)) < len(new_ids):
        twice = sorted({i for i in new_ids if new_ids.count(i) > 1})
        raise ResultsError(f"run folders of {out} have the same settings and seed ({', '.join(twice)}); keep one "
                           "folder of each and run migrate again")
    renamed = {d.name: cfg.run_id() for d, cfg in configs.items() if cfg.run_id() != d.name}
    new_rows = []
    for row in rows:
        folder = folders[row["run_id"]]
        metrics = _read_json(folder / "metrics.json")
        new_rows.append({**row, **identity_cells(configs[folder]), "code": metrics.get("code") or ""})
    for folder, cfg in configs.items():
        record = _read_json(folder / "config.json")
        _write_json(folder / "config.json", {**record, "run_id": cfg.run_id(), "config_key": cfg.config_key(),
                                             "config": dataclasses.asdict(cfg)})
        if (folder / "metrics.json").is_file():
            metrics = _read_json(folder / "metrics.json")
            metrics["run_id"] = cfg.run_id()
            if metrics.get("pretrain_run") in renamed:
                metrics["pretrain_run"] = renamed[metrics["pretrain_run"]]
            _write_json(folder / "metrics.json", metrics)
    text = ",".join(RUN_COLUMNS) + "\n" + "".join(csv_line([r.get(c, "") for c in RUN_COLUMNS]) for r in new_rows)
    if rows and text != runs_csv.read_text():
        backup = runs_csv.with_name(runs_csv.name + BACKUP_SUFFIX)
        if not backup.exists():
            backup.write_bytes(runs_csv.read_bytes())
        write_text_atomic(runs_csv, text)
    for old, new in renamed.items():
        os.replace(out / "runs" / old, out / "runs" / new)
    _update_references(out, renamed)
    return renamed


def _update_references(out: Path, renamed: dict[str, str]) -> None:
    """Rewrite `runs/<old id>` paths in the JSON records under `out` other than run folders' own."""
    if not renamed:
        return
    for path in out.rglob("*.json"):
        if path.parent.parent == out / "runs" or path.name == "config.json":
            continue
        text = path.read_text()
        new = text
        for old, run_id in renamed.items():
            new = new.replace(f"runs/{old}", f"runs/{run_id}")
        if new != text:
            path.write_text(new)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `migrate` subcommand."""
    parser = subparsers.add_parser(
        "migrate",  # its one-line help is in benchmark.cli.LAZY_COMMANDS
        description="Rewrite runs.csv in the current schema (config keys, settings columns) from each run's "
                    "config.json, and rename run folders whose settings key changed. Safe to run twice.")
    parser.add_argument("--out", required=True, help="the results folder holding runs.csv and runs/")
    return parser


def run(args: argparse.Namespace) -> int:
    """`python -m benchmark migrate --out DIR`."""
    out = Path(args.out)
    renamed = migrate(out)
    print(f"migrated {out}: runs.csv in schema version {SCHEMA_VERSION}, {len(renamed)} run folder(s) renamed "
          f"to their settings key" + (f"; the previous runs.csv is {out}/runs.csv{BACKUP_SUFFIX}" if renamed else ""))
    return 0
