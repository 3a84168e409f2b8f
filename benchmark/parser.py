"""The argument parser of the suite's command lines (`python -m benchmark`, `python -m analysis`,
`sparsebench`, `python -m benchmark.gpu_check`, scripts/): flags are matched exactly, never as
abbreviations (`--seed` must not silently mean `--seeds`), a usage error is one `error: ...` line,
exit code 2, and a subcommand's flags may be added only when that subcommand is used (`arguments=`),
so that `--help` and light commands never import what heavy ones need (torch)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


class Parser(argparse.ArgumentParser):
    """argparse without abbreviated flags and with a one-line error (the usage is in --help).

    `arguments(parser, argv)`, if given, adds this parser's arguments the first time it parses or
    formats its help; `argv` is what it is about to parse (`run --preset X --help` can show preset
    X's values). Subparsers made by `add_subparsers().add_parser` are of this class too."""

    def __init__(self, *args, arguments: Callable[[Parser, Sequence[str]], None] | None = None, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})
        self._arguments = arguments

    def complete(self, argv: Sequence[str] = ()) -> Parser:
        """Add the arguments deferred to first use (once); returns the parser."""
        if self._arguments is not None:
            add, self._arguments = self._arguments, None
            add(self, argv)
        return self

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self.complete(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.complete()
        return super().format_help()

    def format_usage(self) -> str:
        self.complete()
        return super().format_usage()

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")
