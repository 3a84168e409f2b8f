"""Checking inputs and writing outputs, with one-line errors that name the file and the fix: numbers in
CSV columns, output folders (checked without creating them) and whole-file replacement."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

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
