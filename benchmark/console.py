"""`sparsebench <command>`: the console command (installed by `pip install -e .`, see [project.scripts]
in pyproject.toml) that runs every command of both command lines: `python -m benchmark`'s (run,
list, summarize, flops, perf, export, migrate) and `python -m analysis`'s (plot, table, claims,
landscape), with the same flags. The two share no command name; `COMMANDS` refuses a clash (each
name must mean one command), so a future one must be renamed in one of them, not shadowed.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib import metadata

from analysis import cli as analysis_cli

from . import cli as benchmark_cli

PROG = "sparsebench"
Main = Callable[..., int]


def _commands(build: Callable[..., argparse.ArgumentParser]) -> dict[str, str]:
    """Command name -> one-line help of a command line's parser (its flags are not loaded)."""
    sub = next(a for a in build(PROG)._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest: action.help or "" for action in sub._choices_actions}


def commands() -> dict[str, tuple[Main, str]]:
    """Every command of both command lines -> (the main that runs it, its one-line help); ValueError if
    the two command lines share a name."""
    found: dict[str, tuple[Main, str]] = {}
    for main, build in ((benchmark_cli.main, benchmark_cli.build_parser), (analysis_cli.main, analysis_cli.build_parser)):
        for name, help_text in _commands(build).items():
            if name in found:
                raise ValueError(f"command {name!r} is both `python -m benchmark {name}` and "
                                 f"`python -m analysis {name}`; rename one of them")
            found[name] = (main, help_text)
    return found


def usage(table: dict[str, tuple[Main, str]]) -> str:
    width = max(map(len, table))
    lines = [f"  {name:{width}s}  {help_text}" for name, (_, help_text) in table.items()]
    return (f"usage: {PROG} COMMAND [flags]   ({PROG} COMMAND --help for a command's flags)\n\n"
            "Sparse-training benchmark: train and measure (python -m benchmark), then draw and check "
            "(python -m analysis).\n\ncommands:\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run `sparsebench COMMAND ...` as the command line that owns COMMAND; a missing or unknown command
    is one `error:` line, exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    table = commands()
    if argv and argv[0] in ("-h", "--help"):
        print(usage(table), end="")
        return 0
    if argv and argv[0] == "--version":
        try:
            print(f"{PROG} {metadata.version('sparsebench')}")
        except metadata.PackageNotFoundError:
            print(f"{PROG} (not installed: run `bash scripts/setup.sh`)")
        return 0
    if not argv or argv[0] not in table:
        given = f"unknown command {argv[0]!r}" if argv else "no command given"
        print(f"error: {given}; choose one of {', '.join(table)} (see `{PROG} --help`)", file=sys.stderr)
        return 2
    return table[argv[0]][0](argv, prog=PROG)
