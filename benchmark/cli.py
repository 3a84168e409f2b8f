"""`python -m benchmark {run,list,summarize,flops,perf,export,migrate}`: the suite's command line
(also `sparsebench <command>`, see benchmark.console).

Every `RunConfig` field is a flag of `run` and `flops` (`--delta-t`, `--t-end`, ...); a flag
given overrides the preset (and `run --config FILE`), a flag left out keeps the preset's value.
`--help` and `list` import no torch: a command's flags are added when it is used, and the heavy
modules are imported inside the commands that need them.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import methods

from .catalog import DATASETS, MODEL_FAMILIES, MODEL_NAMES
from .config import RunConfig
from .loggers import LOGGERS
from .parser import Parser
from .presets import DEFAULT_PRESET, PRESET_NOTES, PRESETS, preset_sparsity

GRID_FIELDS = {"method", "sparsity", "seed", "preset"}  # given as --methods, --sparsity, --seeds/--seed, --preset
DEFAULT_METHODS = "dense,static,snip,gmp,set,rigl"
# runs.csv columns `summarize` groups or averages on: each cell must be a number
SUMMARY_NUMBERS = ["sparsity", "multiplier", "seed", "test_accuracy", "test_loss", "train_flops_multiplier",
                   "inference_flops_multiplier", "wall_time_s"]
# commands whose module imports torch: (module with add_parser(subparsers) and run(args), one-line help)
LAZY_COMMANDS = {
    "perf": ("benchmark.perf", "measure training-step overhead, memory and real sparse-kernel inference speed"),
    "export": ("benchmark.export", "write a run's final sparse model with CSR weights, for inference"),
    "migrate": ("benchmark.migrate", "upgrade a results folder to the current runs.csv schema and settings keys"),
}


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def readable(value: Any) -> str:
    """A setting as a person reads it: 6 significant digits, lists comma-separated, empty as `none`."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple | list):
        return ",".join(map(readable, value)) or "none"
    return str(value) or "none"


def preset_in(argv: Sequence[str]) -> str:
    """The known preset named by `--preset` in `argv`, else the default one (for what --help shows)."""
    for flag, value in zip(argv, [*argv[1:], ""]):
        name = value if flag == "--preset" else flag.partition("=")[2] if flag.startswith("--preset=") else None
        if name is not None:
            return name if name in PRESETS else DEFAULT_PRESET
    return DEFAULT_PRESET


def add_config_flags(parser: argparse.ArgumentParser, skip: set[str], preset: str = DEFAULT_PRESET) -> None:
    """One flag per RunConfig field, its help showing the value `preset` uses; defaults are not applied
    here (the preset supplies them)."""
    hints = typing.get_type_hints(RunConfig)
    values = RunConfig(**PRESETS[preset])
    group = parser.add_argument_group(f"run settings (defaults: what preset {preset} uses; a flag overrides it)")
    for f in dataclasses.fields(RunConfig):
        if f.name in skip:
            continue
        kind = hints[f.name]
        help_text = f.metadata.get("help", "") + f" (default {readable(getattr(values, f.name))})"
        flag = "--" + f.name.replace("_", "-")
        if kind in (bool, bool | None):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif typing.get_origin(kind) is tuple:
            group.add_argument(flag, type=_floats, default=argparse.SUPPRESS, metavar="X,Y", help=help_text)
        else:
            group.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig fields the user gave on the command line."""
    names = {f.name for f in dataclasses.fields(RunConfig)} - GRID_FIELDS
    return {k: v for k, v in vars(args).items() if k in names}


def _run_arguments(run: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    run.add_argument("--preset", default=None, help=f"settings to start from (default {DEFAULT_PRESET}); "
                     "see `python -m benchmark list`")
    run.add_argument("--config", default=None, metavar="FILE",
                     help="settings from a TOML, YAML or JSON file, or a run's config.json (its `config` object): "
                          "RunConfig fields (delta_t or delta-t) and the grid's preset, methods, sparsity, seeds; "
                          "the flags given here override it")
    run.add_argument("--methods", default=None,
                     help=f"comma list or 'all' (default {DEFAULT_METHODS}); dense runs once, at sparsity 0")
    run.add_argument("--sparsity", default=None, help="comma list of sparsities in [0, 1) (default: the preset's, "
                                                      "0.9 unless it sets one)")
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", default=None, help="a count (3 = seeds 0,1,2) or a comma list (default 1)")
    seeds.add_argument("--seed", type=int, default=None, help="exactly one seed N (--seeds N means the N seeds 0..N-1)")
    run.add_argument("--out", default="results", help="output folder: runs.csv and runs/<run id>/ (default results)")
    run.add_argument("--workers", default="auto", metavar="N|auto",
                     help="runs trained in parallel processes (default auto: one per CPU this process may use, "
                          "divided by the runs' threads, as many as memory holds, at most one per run; 1 on a GPU "
                          "or under torchrun)")
    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="local: this machine (--workers processes); ray: one Ray task per run (default local)")
    run.add_argument("--ray-address", default=None,
                     help="Ray cluster to join, e.g. auto or ray://host:10001 (default: start a local one)")
    run.add_argument("--cpus-per-run", type=float, default=1, help="CPUs each Ray task asks for (default 1)")
    run.add_argument("--gpus-per-run", type=float, default=0, help="GPUs each Ray task asks for (default 0)")
    run.add_argument("--retries", type=int, default=3,
                     help="times Ray retries a run whose worker died; it resumes from its checkpoint (default 3)")
    run.add_argument("--rerun-stale", action="store_true",
                     help="train again the runs whose row or checkpoint other training code wrote (their old row "
                          "and files are kept in runs.stale.csv and stale/)")
    run.add_argument("--dry-run", action="store_true", help="print the grid, its planned FLOPs and totals; train nothing")
    run.add_argument("--logger", choices=LOGGERS, default="none",
                     help="also log every run to TensorBoard (<out>/tensorboard/<run id>/) or Weights & Biases "
                          "(<out>/wandb/; WANDB_MODE=offline needs no account); needs the extra of that name "
                          "(pip install -e '.[tensorboard]'); not a setting of the runs (default none)")
    add_config_flags(run, GRID_FIELDS, preset_in(argv))


def _flops_arguments(flops: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    flops.add_argument("--preset", default=DEFAULT_PRESET, help=f"default {DEFAULT_PRESET}")
    flops.add_argument("--method", default="rigl", help="method name (default rigl)")
    flops.add_argument("--sparsity", type=float, default=None, help="default: the preset's (0.9 unless it sets one)")
    flops.add_argument("--json", action="store_true", help="print JSON instead of text")
    flops.add_argument("--extra", action="store_true",
                       help="also report, separately, the forward FLOPs the paper leaves out (batch norm, "
                            "activations, pooling, additions) of the dense model")
    add_config_flags(flops, GRID_FIELDS, preset_in(argv))


class _Into:
    """Stands in for `add_subparsers()` so that a module's `add_parser(subparsers)` fills a parser that
    exists already (made lazily, with its one-line help from LAZY_COMMANDS)."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser

    def add_parser(self, _name: str, **settings: Any) -> argparse.ArgumentParser:
        for key, value in settings.items():
            setattr(self.parser, key, value)
        return self.parser


def _module_arguments(module: str) -> Any:
    return lambda parser, _argv: importlib.import_module(module).add_parser(_Into(parser))


def build_parser(prog: str = "python -m benchmark") -> argparse.ArgumentParser:
    """The parser of every command; each command's flags are added when it is used (`Parser.complete`)."""
    parser = Parser(
        prog=prog,
        description="Train sparse networks (RigL, SET, SNFS, SNIP, static, GMP, dense, small-dense) side by side, "
                    "count their FLOPs, and write results CSVs.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="train a grid of (method, sparsity, seed) runs", arguments=_run_arguments,
                   description="Train every (method, sparsity, seed) of the grid; finished runs are skipped, "
                               "interrupted ones resume from their checkpoint.")
    sub.add_parser("list", help="presets (with the values they set), models, datasets, methods and their defaults")
    summarize = sub.add_parser("summarize", help="mean +- std over seeds of a runs.csv, as a table, CSV and Markdown")
    summarize.add_argument("--runs", default="results/runs.csv", help="runs CSV (default results/runs.csv)")
    summarize.add_argument("--out", default=None, help="folder for summary.csv and summary.md (default: beside --runs)")
    sub.add_parser("flops", help="training and inference FLOPs of a run, without training or data",
                   arguments=_flops_arguments,
                   description="Step the method's schedule on the model's shapes and print its FLOPs and "
                               "multipliers (the paper's accounting: multiply-add = 2 FLOPs, conv/linear only).")
    for name, (module, help_text) in LAZY_COMMANDS.items():
        sub.add_parser(name, help=help_text, arguments=_module_arguments(module))
    return parser


def _methods(text: str) -> list[str]:
    names = list(methods.METHODS) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    for name in names:
        methods.method_class(name)
    return names


def _sparsities(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--sparsity takes comma-separated numbers in [0, 1), got {text!r}") from None
    if not values:
        raise ValueError("--sparsity is empty; pass e.g. --sparsity 0.8,0.9")
    for v in values:
        methods.distributions.check_sparsity(v)
    return values


def _check_executor(args: argparse.Namespace) -> None:
    """ValueError naming the flag for a bad number of workers or bad Ray resources; `args.workers` becomes a
    count, or None for auto (`sweep.auto_workers`)."""
    if args.workers == "auto":
        args.workers = None
    elif not args.workers.lstrip("-").isdigit():
        raise ValueError(f"--workers takes a count or auto, got {args.workers!r}")
    else:
        args.workers = int(args.workers)
    checks = [
        (args.workers is None or args.workers >= 1, "--workers must be >= 1 or auto"),
        (math.isfinite(args.cpus_per_run) and args.cpus_per_run > 0, "--cpus-per-run must be a number > 0"),
        (math.isfinite(args.gpus_per_run) and args.gpus_per_run >= 0, "--gpus-per-run must be a number >= 0"),
        (args.retries >= 0, "--retries must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def _grid(args: argparse.Namespace) -> tuple[str, str, str, list[int], dict[str, Any]]:
    """(preset, methods, sparsities, seeds, overrides) of `run`: the flags given, then `--config FILE`,
    then the defaults."""
    from .settings_file import grid_text, read_settings
    from .sweep import parse_seeds

    grid, settings = read_settings(args.config) if args.config is not None else ({}, {})

    def pick(flag: str | None, key: str, default: str) -> str:
        """The flag if given (even empty: that is an error of its own), else the file's value, else `default`."""
        return flag if flag is not None else grid_text(grid, key) or default

    preset = pick(args.preset, "preset", DEFAULT_PRESET)
    names = pick(args.methods, "methods", DEFAULT_METHODS)
    sparsity = pick(args.sparsity, "sparsity", f"{preset_sparsity(preset):g}")
    seeds = [args.seed] if args.seed is not None else parse_seeds(pick(args.seeds, "seeds", "1"))
    return preset, names, sparsity, seeds, {**settings, **overrides_from(args)}


def cmd_run(args: argparse.Namespace) -> int:
    """Check every setting, the device and --out before any folder is made, then train the grid."""
    from tqdm.auto import tqdm

    from . import distributed
    from .distributed import resolve_device
    from .files import check_out_dir
    from .loggers import check_logger
    from .results import read_runs, summarize, summary_markdown
    from .sweep import expand_grid, run_sweep

    preset, names, sparsity_text, seeds, overrides = _grid(args)
    configs = expand_grid(preset, _methods(names), _sparsities(sparsity_text), seeds, **overrides)
    _check_executor(args)
    check_logger(args.logger)
    replicas = distributed.setup(configs[0].device)
    if replicas.parallel and ((args.workers or 1) > 1 or args.executor != "local"):
        raise ValueError("under torchrun every process trains the same run: use --workers 1 --executor local")
    say = tqdm.write if replicas.main else (lambda *_: None)
    out = Path(args.out)
    if args.dry_run:
        return _dry_run(configs)
    from .memory import check_fits, distinct_states

    device = resolve_device(configs[0].device)
    for cfg in distinct_states(configs):
        check_fits(cfg, device)
    if replicas.main:
        check_out_dir(args.out)
    sparsity = (f"layer sparsity {','.join(f'{v:g}' for v in configs[0].layer_sparsity)}"
                if configs[0].layer_sparsity else f"sparsity {sparsity_text}")
    say(f"{len(configs)} run(s): preset {preset}, methods {names}, {sparsity}, "
        f"seeds {','.join(map(str, seeds))}; results in {out}/runs.csv"
        + (f"; data-parallel over {replicas.world_size} processes" if replicas.parallel else ""))
    run_sweep(configs, out, args.workers, say, executor=args.executor, ray_address=args.ray_address,
              cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run, retries=args.retries,
              rerun_stale=args.rerun_stale, logger=args.logger)
    if replicas.main:
        ids = {c.run_id() for c in configs}
        df = read_runs(out / "runs.csv")
        print()
        print(summary_markdown(summarize(df[df.run_id.isin(ids)])))
        print(f"rows: {out / 'runs.csv'}; run folders: {out / 'runs'}/; "
              f"summary over all rows: python -m benchmark summarize --runs {out / 'runs.csv'}")
    return 0


def _dry_run(configs: list[RunConfig]) -> int:
    """The grid with each run's planned steps and FLOPs (distribution as runs.csv writes it), then totals."""
    import pandas as pd

    from .sweep import dry_run_table

    table = pd.DataFrame(dry_run_table(configs))
    columns = ["run_id", "method", "distribution", "sparsity", "seed", "steps", "train_multiplier",
               "inference_multiplier", "train_flops"]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"total: {len(table)} run(s), {table.steps.sum()} steps, {table.train_flops.sum():.4g} training FLOPs "
          "(no time estimate: step times are not known before a run)")
    return 0


def cmd_list(_: argparse.Namespace) -> int:
    """Presets with the values they set, names, and method defaults: imports no torch."""
    print("presets (python -m benchmark run --preset NAME; `run --preset NAME --help` shows every value it uses):")
    width = max(map(len, PRESETS))
    for name, settings in PRESETS.items():
        print(f"  {name:{width}s} {PRESET_NOTES[name]}")
        print("      " + ", ".join(f"{k}={readable(v)}" for k, v in settings.items()))
    print("\nmodels:   " + ", ".join(MODEL_NAMES))
    for family, meaning in MODEL_FAMILIES.items():
        print(f"  {family}: {meaning}")
    print("datasets: " + ", ".join(f"{k} ({v.num_classes} classes, {'x'.join(map(str, v.input_shape))})"
                                   for k, v in DATASETS.items()))
    print("methods:  " + ", ".join(methods.METHODS))
    print("distributions: " + ", ".join(methods.DISTRIBUTIONS)
          + f", {methods.distributions.CUSTOM} (one sparsity per layer: --layer-sparsity)")
    print("\nmethod defaults (any preset may override):")
    defaults = methods.SparsityConfig()
    for f in dataclasses.fields(defaults):
        print(f"  --{f.name.replace('_', '-'):22s} {readable(getattr(defaults, f.name))}")
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    """Everything is read and computed before summary.csv and summary.md are written, each in one step."""
    from .files import check_numbers, check_out_dir, replace_atomic, write_text_atomic
    from .results import read_runs, summarize, summary_markdown

    if not args.runs:
        raise ValueError("--runs is empty; pass a runs.csv or the results folder holding it")
    runs = Path(args.runs)
    runs = runs / "runs.csv" if runs.is_dir() else runs
    out = runs.parent if args.out is None else args.out
    check_out_dir(out)
    df = read_runs(runs)
    if df.empty:
        raise ValueError(f"{runs} has no rows; run `python -m benchmark run` first or pass another --runs")
    check_numbers(df, runs, SUMMARY_NUMBERS)
    summary = summarize(df)
    markdown = summary_markdown(summary)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    replace_atomic(out / "summary.csv", lambda tmp: summary.to_csv(tmp, index=False))
    write_text_atomic(out / "summary.md", markdown)
    print(markdown)
    print(f"written: {out / 'summary.csv'}, {out / 'summary.md'}")
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    from .flops import extra_flops
    from .models import build_model
    from .presets import preset_config
    from .train import plan_run

    cfg = preset_config(args.preset, **overrides_from(args), method=args.method,
                        sparsity=preset_sparsity(args.preset) if args.sparsity is None else args.sparsity)
    summary = dataclasses.asdict(plan_run(cfg))
    extra = {}
    if args.extra:
        info = DATASETS[cfg.dataset]
        extra = extra_flops(build_model(cfg.model, info.num_classes, info.input_shape), info.input_shape)
    if args.json:
        print(json.dumps({"preset": args.preset, "method": cfg.method, "distribution": cfg.distribution,
                          "sparsity": cfg.sparsity, "multiplier": cfg.multiplier, **summary,
                          **({"extra_forward_flops": extra} if args.extra else {})}, indent=2))
        return 0
    print(f"{cfg.method} on {cfg.model}/{cfg.dataset} ({args.preset}), {cfg.distribution}, sparsity {cfg.sparsity:g}, "
          f"{cfg.multiplier:g}x, {summary['steps']} steps at batch {cfg.batch_size}")
    print(f"  dense forward f_D          {summary['dense_forward']:.4g} FLOPs per sample")
    print(f"  sparse forward f_S         {summary['sparse_forward']:.4g} FLOPs per sample (inference)")
    print(f"  training FLOPs             {summary['train_flops']:.4g} "
          f"({summary['train_flops_per_sample']:.4g} per sample)")
    print(f"  training FLOPs multiplier  {summary['train_multiplier']:.4f}x of dense at 1x")
    print(f"  inference multiplier       {summary['inference_multiplier']:.4f}x")
    if summary["init_flops"]:
        print(f"  SNIP scoring (separate)    {summary['init_flops']:.4g} FLOPs")
    if summary["pretrain_flops"]:
        print(f"  dense pre-training         {summary['pretrain_flops']:.4g} FLOPs (lottery; included above)")
    if args.extra:
        print("  left out of the numbers above (dense forward, per sample, one FLOP per elementary op):")
        for op, value in sorted(extra.items(), key=lambda kv: -kv[1]):
            print(f"    {op:24s} {value:.4g}")
        print(f"    {'total':24s} {sum(extra.values()):.4g} ({sum(extra.values()) / summary['dense_forward']:.2%} of f_D)")
    return 0


COMMANDS = {"run": cmd_run, "list": cmd_list, "summarize": cmd_summarize, "flops": cmd_flops}


def main(argv: list[str] | None = None, prog: str = "python -m benchmark") -> int:
    """Parse and dispatch; bad input ends with one line on stderr and exit code 2."""
    args = build_parser(prog).parse_args(argv)
    command = COMMANDS.get(args.command) or importlib.import_module(LAZY_COMMANDS[args.command][0]).run
    try:
        return command(args)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as err:
        train = sys.modules.get(f"{__package__}.train")  # only a command that imported it can be interrupted
        if train is not None and isinstance(err, train.RunInterrupted):
            print(f"interrupted: {err}; run the same command again to resume", file=sys.stderr)
            return 130
        if not isinstance(err, ValueError | OSError):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
