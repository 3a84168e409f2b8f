"""`python -m analysis {plot,table,claims,landscape}` (also `sparsebench plot`, ...): figures, tables and
loss landscapes from the results the benchmark writes. Bad input ends with one `error: ...` line on
stderr and exit code 2. A command's flags, and the libraries it needs, are loaded when it is used."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmark.parser import Parser

DEFAULT_FIGURES = "results/figures"
DEFAULT_TABLES = "results/tables"
DEFAULT_LANDSCAPE = "results/landscape"


def _add_runs_flags(p: argparse.ArgumentParser) -> None:
    from .runs import DEFAULT_RUNS, METRICS

    p.add_argument("--runs", default=None, metavar="CSV",
                   help=f"runs CSV written by `python -m benchmark run` (default {DEFAULT_RUNS}; a results folder "
                        "holding runs.csv, or a quoted glob pattern such as 'results/*/runs.csv', works too)")
    p.add_argument("--run-dirs", nargs="+", default=None, metavar="DIR",
                   help="run folders, folders of run folders, or results folders (<dir>/runs/*); without --runs the "
                        "rows are built from these folders' config.json and metrics.json")
    p.add_argument("--dataset", default=None, help="only runs of this dataset (default: every dataset, one set each)")
    p.add_argument("--model", default=None, help="only runs of this model (default: every model, one set each)")
    p.add_argument("--methods", default=None, metavar="A,B", help="only these methods (comma list; default all)")
    p.add_argument("--metric", default="test_accuracy", choices=METRICS,
                   help="accuracy column to report (default test_accuracy: the final test accuracy)")


def build_parser(prog: str = "python -m analysis") -> argparse.ArgumentParser:
    """The parser of every command; each command's flags are added when it is used (`Parser.complete`)."""
    parser = Parser(prog=prog,
                     description="Figures, tables and loss landscapes from sparsebench results "
                                 "(runs.csv and run folders written by `python -m benchmark run`).")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "plot", help="accuracy vs training FLOPs / sparsity / inference FLOPs, layer densities, mask updates",
        description="Draw the figures of a sweep, one set per (dataset, model): accuracy (mean over seeds, std "
                    "error bars) against the training-FLOPs multiplier (one panel per sparsity), against sparsity "
                    "and against the inference-FLOPs multiplier, with the dense baseline as a band; per-layer "
                    "densities and mask-update dynamics from the run folders. Files are "
                    "<figure>-<dataset>-<model>.<format> in --out.",
        arguments=_plot_arguments)

    sub.add_parser(
        "table", help="mean ± std per method, distribution, multiplier and sparsity (Markdown and LaTeX)",
        description="Write table.md and table.tex (booktabs) to --out and print the Markdown: one row per "
                    "(method, distribution, multiplier), per sparsity the accuracy as mean ± std over seeds with "
                    "the training and inference FLOP multipliers beside it, the best sparse accuracy of each "
                    "sparsity in bold (dense is the reference and is never bold).",
        arguments=_table_arguments)

    sub.add_parser(
        "claims", help="the paper's claims checked one by one (reproduced / contradicted / inconclusive)",
        description="Compare methods on a runs CSV (Welch's t-test per sparsity on the seeds' test accuracies, "
                    "Holm-corrected across a claim's sparsities; reproduced, contradicted, inconclusive or too few "
                    "seeds) and, with --landscape, the loss-landscape claims; print a Markdown table (one per "
                    "dataset, model and protocol).",
        arguments=_claims_arguments)

    sub.add_parser(
        "landscape", help="loss along the line and Bezier curves between two solutions; restart experiment",
        description="Linear interpolation between two checkpoints of the same model (coefficients --range, "
                    "default -0.2..1.2 in 29 points) and quadratic Bezier curves whose control point is trained "
                    "to minimise the loss along the curve, restricted to the union of the two masks "
                    "(bezier-sparse) or not (bezier-dense). At each point: training loss on a fixed subset of "
                    "the training set and test accuracy; batch-norm statistics are re-estimated on that subset "
                    "when the model has batch norm. Writes landscape.csv, landscape.json and the figure "
                    "landscape.<format> to --out; with --restart-from, also trains rigl and static from that "
                    "solution (the harness's --init-from) into --out/restart/ and plots their training loss.",
        arguments=_landscape_arguments)
    return parser


def _plot_arguments(plot: argparse.ArgumentParser, _argv) -> None:
    from .plots import FIGURES

    _add_runs_flags(plot)
    plot.add_argument("--out", default=DEFAULT_FIGURES, help=f"folder for the figures (default {DEFAULT_FIGURES})")
    plot.add_argument("--formats", default="pdf,png", help="comma list of pdf, png, svg (default pdf,png)")
    plot.add_argument("--figures", default="all", metavar="A,B",
                      help=f"comma list of {', '.join(FIGURES)}: each file's name starts with its figure's "
                           "(default all)")
    plot.add_argument("--paper", action="store_true",
                      help="overlay the paper's numbers (analysis/data/paper-results.csv) where dataset and model "
                           "match (cifar10/wrn-22-2, imagenet/resnet-50, mnist/lenet-300-100), as black-edged "
                           "markers on dashed lines labelled [paper], each at the sparsity its layer sparsities give")
    plot.add_argument("--paper-csv", default=None, metavar="CSV",
                      help="a different table of reference numbers in the paper-results.csv format")
    plot.add_argument("--landscape", default=None, metavar="DIR",
                      help="also redraw DIR's loss-landscape figure (landscape.<format>) from its landscape.csv, "
                           "landscape.json and restart/restart.csv, without training anything")


def _table_arguments(table: argparse.ArgumentParser, _argv) -> None:
    _add_runs_flags(table)
    table.add_argument("--out", default=DEFAULT_TABLES, help=f"folder for table.md and table.tex "
                                                             f"(default {DEFAULT_TABLES})")
    table.add_argument("--digits", type=int, default=2, help="decimals of accuracies (default 2)")


def _claims_arguments(claims: argparse.ArgumentParser, _argv) -> None:
    _add_runs_flags(claims)
    claims.add_argument("--landscape", default=None, metavar="DIR",
                        help="a folder written by `python -m analysis landscape` (with restart/ if run)")


def _landscape_arguments(land: argparse.ArgumentParser, _argv) -> None:
    land.add_argument("start", help="first solution (coefficient 0): a run folder or its checkpoint.pt")
    land.add_argument("end", help="second solution (coefficient 1): a run folder or its checkpoint.pt")
    land.add_argument("--out", default=DEFAULT_LANDSCAPE, help=f"output folder (default {DEFAULT_LANDSCAPE})")
    land.add_argument("--points", type=int, default=29, help="points on the line (default 29, as the reference "
                                                             "script); Bezier curves use those in [0, 1]")
    land.add_argument("--range", type=float, nargs=2, default=(-0.2, 1.2), metavar=("LOW", "HIGH"),
                      help="coefficient range of the line (default -0.2 1.2)")
    land.add_argument("--paths", default=",".join(("linear", "bezier-sparse", "bezier-dense")), metavar="A,B",
                      help="comma list of linear, bezier-sparse, bezier-dense (default all three)")
    land.add_argument("--train-batches", type=int, default=10,
                      help="training batches (un-augmented, fixed) the loss is measured and BN re-estimated on "
                           "(default 10; 0: the whole training set)")
    land.add_argument("--test-batches", type=int, default=0,
                      help="test batches of 1000 for the accuracy (default 0: the whole test set)")
    land.add_argument("--batch-size", type=int, default=0, help="batch size (default 0: the first run's)")
    land.add_argument("--no-bn-recompute", dest="recompute_bn", action="store_false",
                      help="use the interpolated batch-norm statistics instead of re-estimating them")
    land.add_argument("--bezier-degree", type=int, default=2, help="2: quadratic (default), 3: cubic")
    land.add_argument("--bezier-steps", type=int, default=0,
                      help="training steps of each curve (default 0: --bezier-epochs of the training set)")
    land.add_argument("--bezier-epochs", type=float, default=1.0, help="epochs of curve training when "
                                                                       "--bezier-steps is 0 (default 1)")
    land.add_argument("--bezier-lr", type=float, default=0.0, help="peak lr of curve training, cosine-decayed "
                                                                   "(default 0: the first run's lr)")
    land.add_argument("--seed", type=int, default=0, help="seed of curve training (batch order and t samples)")
    land.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    land.add_argument("--restart-from", default=None, metavar="RUN",
                      help="run folder of the (static) solution to restart rigl and static from")
    land.add_argument("--restart-steps", type=int, default=0,
                      help="steps of each restarted run (default 0: one epoch of the run's training set)")
    land.add_argument("--restart-methods", default="rigl,static", metavar="A,B",
                      help="methods restarted (default rigl,static; any of static, set, snfs, rigl)")
    land.add_argument("--restart-lr", type=float, default=0.0, help="lr of the restarted runs (default: the run's)")
    land.add_argument("--formats", default="pdf,png", help="figure formats (default pdf,png)")


def _csv_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _load(args: argparse.Namespace):
    from .runs import DEFAULT_RUNS, find_run_dirs, load_runs, run_dirs_for, select

    if args.runs == "" or "" in (args.run_dirs or []):
        raise ValueError("--runs or --run-dirs is empty; pass a runs.csv, a results folder or run folders")
    runs_arg = args.runs if args.runs is not None else (None if args.run_dirs else DEFAULT_RUNS)
    df = load_runs(runs_arg, args.run_dirs)
    df = select(df, args.dataset, args.model, _csv_list(args.methods))
    folders = find_run_dirs(args.run_dirs) if args.run_dirs else run_dirs_for(runs_arg, df)
    return df, folders


def cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from benchmark.files import check_out_dir

    from . import plots, style
    from .runs import load_paper

    formats = style.parse_formats(args.formats)
    figures = list(plots.FIGURES) if args.figures == "all" else _csv_list(args.figures) or []
    check_out_dir(args.out)
    df, folders = _load(args)
    paper = load_paper(args.paper_csv) if args.paper_csv else (True if args.paper else None)
    landscape = _landscape_tables(Path(args.landscape)) if args.landscape else None
    written = plots.make_figures(df, folders, args.out, formats, paper, figures, args.metric,
                                 report=lambda m: print(m, file=sys.stderr))
    if landscape:
        written += _landscape_figure(landscape, Path(args.out), formats)
    if not written:
        raise ValueError("no figure could be drawn from these runs (see the notes above)")
    for path in written:
        print(path)
    print(f"{len(written)} file(s) in {args.out}", file=sys.stderr)
    return 0


def _landscape_tables(folder: Path, with_restart: bool = True) -> tuple:
    """(landscape.csv, restart/restart.csv if `with_restart` and it is there, else None, the two endpoints'
    method names) of a `python -m analysis landscape` folder, read and checked before anything is drawn."""
    from benchmark.files import read_json

    from .runs import read_landscape, read_restart

    how = "pass a folder written by `python -m analysis landscape`"
    labels = read_json(folder / "landscape.json", how)
    labels = labels if isinstance(labels, dict) else {}
    start, end = (str(labels.get(k, "")).split()[:1] for k in ("start_label", "end_label"))
    if not (start and end):
        raise ValueError(f"{folder / 'landscape.json'} lacks start_label and end_label; {how}")
    restart_csv = folder / "restart" / "restart.csv"
    restarts = read_restart(restart_csv) if with_restart and restart_csv.exists() else None
    return read_landscape(folder / "landscape.csv"), restarts, (start[0], end[0])


def _landscape_figure(tables: tuple, out: Path, formats: list[str]) -> list[Path]:
    """The landscape figure (with the restart panel when there is a restart table) from `_landscape_tables`."""
    from . import plots, style

    frame, restarts, endpoints = tables
    return style.save_figure(plots.loss_landscape(frame, restarts, endpoints=endpoints), out, "landscape", formats)


def cmd_table(args: argparse.Namespace) -> int:
    from benchmark.files import check_out_dir

    from . import tables

    if args.digits < 0:
        raise ValueError("--digits must be >= 0")
    check_out_dir(args.out)
    df, _ = _load(args)
    paths = tables.write_tables(df, args.out, args.metric, args.digits)
    print(paths["markdown"].read_text())
    print(f"written: {paths['markdown']}, {paths['latex']}", file=sys.stderr)
    return 0


def cmd_landscape(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")

    from benchmark.data import DATASETS
    from benchmark.files import check_out_dir
    from experiments import landscape, restart

    from . import style

    formats = style.parse_formats(args.formats)
    settings = landscape.LandscapeSettings(
        points=args.points, low=args.range[0], high=args.range[1], train_batches=args.train_batches,
        test_batches=args.test_batches, batch_size=args.batch_size, recompute_bn=args.recompute_bn,
        paths=tuple(_csv_list(args.paths) or ()), bezier_degree=args.bezier_degree, bezier_steps=args.bezier_steps,
        bezier_epochs=args.bezier_epochs, bezier_lr=args.bezier_lr, seed=args.seed, device=args.device)
    settings.validate()
    check_out_dir(args.out)
    report = lambda m: print(m, file=sys.stderr)
    out = Path(args.out)
    if args.restart_from:
        methods = _csv_list(args.restart_methods) or []
        steps = args.restart_steps
        if not steps:
            solution = landscape.load_solution(args.restart_from, "cpu")
            cfg = solution.config
            size = cfg.train_subset or round(DATASETS[cfg.dataset].train_size * (1 - cfg.val_fraction))
            steps = max(1, size // cfg.batch_size)
        # checked before the (longer) landscape run, so that bad restart settings fail fast
        restart.restart_configs(args.restart_from, steps, methods, args.restart_lr or None,
                                None if args.device == "auto" else args.device)
    result = landscape.run_landscape(args.start, args.end, settings, out, report=report)
    if args.restart_from:
        report(f"restart: {', '.join(methods)} from {args.restart_from} for {steps} steps into {out / 'restart'}")
        restart.restart(args.restart_from, out / "restart", steps, methods, args.restart_lr or None,
                        None if args.device == "auto" else args.device, report=report)
        result.files.append(out / "restart" / "restart.csv")
    # drawn from the files just written, exactly as `plot --landscape` redraws it
    result.files += _landscape_figure(_landscape_tables(out, with_restart=bool(args.restart_from)), out, formats)
    print(json.dumps(result.summary["barriers"], indent=2))
    for path in result.files:
        print(path)
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    from .claims import check_landscape, check_runs, markdown
    from .runs import group_rows, group_title, groups

    df, _ = _load(args)
    for group in groups(df):
        print(f"{group_title(*group)}\n")
        print(markdown(check_runs(group_rows(df, *group))))
    if args.landscape:
        print("loss landscape\n")
        print(markdown(check_landscape(args.landscape)))
    return 0


COMMANDS = {"plot": cmd_plot, "table": cmd_table, "claims": cmd_claims, "landscape": cmd_landscape}


def main(argv: list[str] | None = None, prog: str = "python -m analysis") -> int:
    """Parse and dispatch; errors in the input end with one line on stderr and exit code 2."""
    args = build_parser(prog).parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0
    except (ValueError, OSError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
