"""Command-line flags are matched exactly (never as abbreviations), `run --seed N` is one seed, and
`benchmark list` names only flags that exist."""
import argparse
import re

import pytest

from analysis import cli as analysis_cli
from benchmark import cli as benchmark_cli

QUICK = ["--preset", "digits-lenet300", "--steps", "2", "--methods", "static", "--dry-run"]


def call(main, argv: list[str]) -> int:
    """main's exit code, also when argparse exits (usage errors)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """`parser` and every subparser below it, each with all its flags (those added on first use too)."""
    parser.complete()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [parser, *(p for s in subs for child in s.choices.values() for p in parsers(child))]


def test_no_parser_of_either_command_line_accepts_abbreviations():
    found = parsers(benchmark_cli.build_parser()) + parsers(analysis_cli.build_parser())
    assert {p.prog.split()[-1] for p in found} >= {"benchmark", "run", "list", "summarize", "flops", "perf", "export",
                                                   "analysis", "plot", "table", "claims", "landscape"}
    assert [p.prog for p in found if p.allow_abbrev] == []


@pytest.mark.parametrize("main,argv,flag", [
    (benchmark_cli.main, ["run", *QUICK, "--see", "1"], "--see"),
    (benchmark_cli.main, ["run", *QUICK, "--method", "rigl"], "--method"),  # once an abbreviation of --methods
    (benchmark_cli.main, ["flops", "--spars", "0.5"], "--spars"),
    (benchmark_cli.main, ["export", "RUN", "OUT", "--batch", "3"], "--batch"),
    (analysis_cli.main, ["table", "--dig", "3"], "--dig"),
    (analysis_cli.main, ["landscape", "A", "B", "--restart", "C"], "--restart"),
])
def test_an_abbreviated_flag_is_one_error_line(capsys, main, argv, flag):
    assert call(main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: unrecognized arguments: {flag}")


def test_seed_is_exactly_one_seed_and_excludes_seeds(capsys):
    assert benchmark_cli.main(["run", *QUICK, "--seed", "3"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:-1]  # the dry-run table, without its totals line
    assert [r.split()[4] for r in rows] == ["3"]  # the seed column
    assert benchmark_cli.main(["run", *QUICK, "--seeds", "2"]) == 0
    assert [r.split()[4] for r in capsys.readouterr().out.strip().splitlines()[1:-1]] == ["0", "1"]
    assert call(benchmark_cli.main, ["run", *QUICK, "--seed", "1", "--seeds", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --seeds: not allowed with argument --seed" in err


def test_every_flag_that_list_prints_is_a_flag_of_run(capsys):
    assert benchmark_cli.main(["list"]) == 0
    printed = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", capsys.readouterr().out))
    run = next(p for p in parsers(benchmark_cli.build_parser()) if p.prog.endswith(" run"))
    assert {"--seed", "--sparsity", "--delta-t", "--preset"} <= printed
    assert sorted(printed - set(run._option_string_actions)) == []
