"""Reading the files a run leaves and writing outputs, with one-line errors that name the file and the
fix: JSON files, a run folder's settings (config.json, validated before anything is built from them),
numbers in CSV columns, output folders (checked without creating them) and whole-file replacement."""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from .config import RunConfig

RERUN = "restore it, or delete the run folder and run `python -m benchmark run` again"
# What every config.json written by `python -m benchmark run` holds and its readers need: the record's
# keys, and the settings that name a run (fields added later default to what older runs did).
RECORD_KEYS = ("run_id", "config", "width", "device")
CONFIG_KEYS = ("method", "dataset", "model", "sparsity", "distribution", "seed", "multiplier", "batch_size")


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """The content of JSON file `path`; ValueError naming the file and `fix` if it is missing, unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist; {fix}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is unreadable ({getattr(err, 'strerror', None) or err}); {fix}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); {fix}") from None


def read_run_config(run_dir: str | os.PathLike) -> tuple[dict[str, Any], RunConfig]:
    """(config.json's record, its validated RunConfig) of a run folder; ValueError naming the file and the fix
    if the record lacks a key, names a setting this code does not know, or holds a bad value."""
    path = Path(run_dir) / "config.json"
    record = read_json(path, RERUN)
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ValueError(f"{path} holds no run settings ('config'); it was not written by `python -m benchmark run`: "
                         f"{RERUN}")
    settings = record["config"]
    missing = [k for k in RECORD_KEYS if k not in record] + [f"config.{k}" for k in CONFIG_KEYS if k not in settings]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; {RERUN}")
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(RunConfig)})
    if unknown:
        raise ValueError(f"{path} has setting(s) {', '.join(unknown)} unknown to this version of sparsebench; read "
                         f"it with the version that wrote it (commit {record.get('commit', 'unknown')})")
    try:
        cfg = RunConfig(**settings)
        cfg.validate()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} holds a bad setting ({err}); {RERUN}") from None
    return record, cfg


def check_numbers(df: pd.DataFrame, path: str | os.PathLike, columns: list[str]) -> None:
    """ValueError naming the file, row and column of the first cell of `columns` that holds something other
    than a number (empty cells and nan pass: an unset validation accuracy, a diverged run's loss)."""
    for column in [c for c in columns if c in df.columns]:
        bad = pd.to_numeric(df[column], errors="coerce").isna() & df[column].notna()
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise ValueError(f"{path} line {row + 2} has {column} {df[column].iloc[row]!r}, not a number; restore "
                             "the file from version control or delete that line")


def replace_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` to a temporary file beside `path`, then rename it to `path`: a crash never leaves half a
    file, a failure no temporary one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path`'s content with `text` in one step (see `replace_atomic`)."""
    replace_atomic(path, lambda tmp: tmp.write_text(text))


def check_out_dir(out: str | os.PathLike, flag: str = "--out") -> None:
    """Raise ValueError naming `flag` unless `out` is a folder this process can write in, or one it can
    create; nothing is created (a probe file in the nearest existing folder is removed at once)."""
    if not os.fspath(out):
        raise ValueError(f"{flag} is empty; pass a folder")
    out = Path(out)
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{flag} {out}: {existing} is a file, not a folder; pass a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {out} is not writable ({err.strerror}); pass a folder you can write to") from None
