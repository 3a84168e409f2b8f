"""The argument parser of the suite's command lines (`python -m benchmark`, `python -m analysis`,
`python -m benchmark.gpu_check`, scripts/): flags are matched exactly, never as abbreviations
(`--seed` must not silently mean `--seeds`), and a usage error is one `error: ...` line, exit code 2."""
from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """argparse without abbreviated flags and with a one-line error (the usage is in --help).

    Subparsers made by `add_subparsers().add_parser` are of this class too."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")
