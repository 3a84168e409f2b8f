"""Write REPRODUCTION.md from the committed results: every number in it comes from a runs.csv,
sweep-times.csv or landscape folder under results/, through the same functions as `python -m analysis`.

    .venv/bin/python scripts/reproduction_report.py [--check]

`--check` writes nothing and exits 1 if REPRODUCTION.md differs from what the results give
(tests/test_results.py runs it).
"""
from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.claims import check_landscape, check_runs, markdown  # noqa: E402
from analysis.runs import group_rows, group_title, groups, load_paper, load_runs  # noqa: E402
from analysis.tables import markdown_table  # noqa: E402
from benchmark.parser import Parser  # noqa: E402
from benchmark.results import diverged  # noqa: E402

RESULTS = ROOT / "results"
TEMPLATE = Path(__file__).with_name("reproduction_template.md")
MASKED = "masked"  # <sweep>/masked: a sweep's runs as first trained masked-dense, before its preset chose execution auto
EXECUTION = "mnist-lenet300/execution"  # one run of the full protocol trained again, masked-dense and on sparse kernels
SWEEPS = {  # folder: what it holds, for the timing table
    "mnist-lenet300": "1. MNIST LeNet-300-100, the paper's full protocol, at its layer sparsities",
    EXECUTION: "1. MNIST LeNet-300-100, the paper's full protocol, one run both ways",
    "mnist-lenet300-snfs": "1b. MNIST LeNet-300-100, the SNFS paper's protocol",
    "mnist-lenet300-short": "1. MNIST LeNet-300-100, shortened protocol",
    "fashion-mnist-lenet300": "2. Fashion-MNIST LeNet-300-100 (and 2b, 4)",
    "fashion-mnist-lenet5": "3. Fashion-MNIST LeNet-5",
    "fortunes-gru": "5. Character-level GRU, fortunes corpus",
}


def folders() -> list[str]:
    """Every results folder the report reads: each sweep, and beside it its masked-dense record where it has one."""
    return [f for sweep in SWEEPS for f in (sweep, f"{sweep}/{MASKED}") if started(f)]


def started(sweep: str) -> bool:
    """Whether the sweep has finished runs yet (a queued sweep has no runs.csv)."""
    return (RESULTS / sweep / "runs.csv").exists()


@functools.cache
def runs(sweep: str) -> pd.DataFrame:
    """A sweep's runs.csv, read once (callers filter, never modify it)."""
    return load_runs(RESULTS / sweep / "runs.csv")


def table(sweep: str) -> str:
    """The sweep's accuracy table, without its heading (the template has one)."""
    return markdown_table(runs(sweep)).split("\n", 2)[2].strip()


def claims(sweep: str) -> str:
    """The claim checks of a sweep, one table per protocol (titled where the sweep holds several)."""
    found = groups(runs(sweep))
    return "\n\n".join((f"{group_title(*g)}\n\n" if len(found) > 1 else "")
                       + markdown(check_runs(group_rows(runs(sweep), *g))).strip() for g in found)


def timing() -> str:
    lines = ["| sweep | runs | wall clock (targets of `scripts/reproduce.sh`) | summed training time of its runs |",
             "|---|---:|---|---:|"]
    for sweep in folders():
        base = sweep.removesuffix(f"/{MASKED}")
        label = SWEEPS[base] + (", masked-dense (before execution auto)" if sweep != base else "")
        df = runs(sweep)
        times = RESULTS / sweep / "sweep-times.csv"
        walls = "; ".join(f"`{r.target}` {r.wall_s / 60:.0f} min on {r.workers} workers ({r.started_utc[:10]})"
                          for r in pd.read_csv(times).itertuples()) if times.exists() else "see below"
        lines.append(f"| {label} | {len(df)} | {walls} | {df.wall_time_s.sum() / 60:.0f} min |")
    return "\n".join(lines)


def software() -> str:
    parts = []
    for sweep in folders():
        df = runs(sweep)
        commits = ", ".join(f"`{c}`" for c in sorted(df.commit.astype(str).unique()))
        parts.append(f"  - `results/{sweep}`: torch {', '.join(sorted(df.torch.unique()))}; "
                     f"device {', '.join(sorted(df.device.unique()))}; commits {commits}")
    return "\n".join(parts)


def diverged_runs() -> str:
    lines = []
    for sweep in folders():
        df = runs(sweep)
        for r in df[diverged(df)].itertuples():
            log = pd.read_csv(RESULTS / sweep / "runs" / r.run_id / "log.csv")
            first = log[~log.train_loss.abs().lt(math.inf)].step.iloc[0]
            lines.append(f"- `{sweep}/{r.run_id}`: training loss NaN from the log row at step {first} "
                         f"(lr {log.lr.iloc[0]:g}); final test accuracy {r.test_accuracy:.2f}%; trained "
                         f"{r.steps} steps")
    return "\n".join(lines) or "- none"


def collapsed_runs() -> str:
    """Runs whose loss stayed finite but whose last logged training loss is above their first: they unlearned."""
    lines = []
    for sweep in folders():
        df = runs(sweep)
        for r in df[~diverged(df)].itertuples():
            log = pd.read_csv(RESULTS / sweep / "runs" / r.run_id / "log.csv")
            start, end = log.train_loss.iloc[0], log.train_loss.iloc[-1]
            if end > start:
                jump = log[log.train_loss > start].step.iloc[0]
                lines.append(f"- `{sweep}/{r.run_id}`: training loss {start:.3f} at step {log.step.iloc[0]}, above it "
                             f"from step {jump} (lr {log.lr[log.step == jump].iloc[0]:g}), {end:.3f} at the end; final "
                             f"test accuracy {r.test_accuracy:.2f}%")
    return "\n".join(lines) or "- none"


def paper_vs_ours() -> str:
    """The paper's MNIST rows beside the closest runs of this suite."""
    paper = load_paper()
    paper = paper[paper.dataset == "mnist"]
    full, short = runs("mnist-lenet300"), runs("mnist-lenet300-short")
    full, short = full[~diverged(full)], short[~diverged(short)]
    lines = ["| paper row | paper: test accuracy (error) | training / inference FLOPs | closest run here | "
             "here: test accuracy (error), mean ± std | training / inference FLOPs (mean) | differences in setup |",
             "|---|---|---|---|---|---|---|"]

    def ours(df: pd.DataFrame, **where) -> tuple[str, str]:
        sel = df
        for k, v in where.items():
            sel = sel[sel[k].round(6) == round(v, 6)] if isinstance(v, float) else sel[sel[k] == v]
        acc = sel.test_accuracy
        return (f"{acc.mean():.2f} ± {acc.std():.2f} ({100 - acc.mean():.2f}%), {len(acc)} seeds",
                f"{sel.train_flops.mean() / 1e9:.1f} GFLOPs / {sel.inference_flops.mean() / 1e3:.1f} KFLOPs")

    for r in paper.itertuples():
        flops = r.note.split("; ", 1)[1] if r.source == "rigl-paper-appB" else "–"
        if r.method == "rigl":
            acc, fl = ours(full, method="rigl")
            here = "`mnist-lenet300`, rigl, layer sparsities 0.98 / 0.882 / dense (overall 0.9653)"
            density = full[full.method == "rigl"].global_density.mean()
            setup = (f"the reference code's protocol; the paper calls this {r.sparsity:.0%} sparse, but these "
                     f"layer sparsities keep {density:.2%} of the weights ({1 - density:.2%} sparse)")
        elif r.method == "rigl+":
            continue  # RigL+ (RigL with a different drop criterion) is not a method of this suite
        elif r.model == "lenet-300-100":
            acc, fl = ours(short, method="snip", distribution="erk", sparsity=float(r.sparsity))
            here = f"`mnist-lenet300-short`, snip (per layer, ERK) at {r.sparsity:g}"
            setup = ("SNIP paper: global SNIP, lr 0.1, wd 5e-4, 10% of training data held out; here: the RigL "
                     "paper's schedule shortened 10x, layer-wise SNIP")
        else:
            continue  # LeNet-5-Caffe on MNIST is not run here
        lines.append(f"| {r.source} {r.method} at {r.sparsity:g} | {r.top1_accuracy:.2f} "
                     f"({100 - r.top1_accuracy:.2f}%) | {flops} | {here} | {acc} | {fl} | {setup} |")
    return "\n".join(lines)


SNFS_PAPER = ROOT / "analysis" / "data" / "snfs-paper-results.csv"


def snfs_table() -> str:
    """Our runs of the SNFS paper's protocol beside the numbers its repository holds for them."""
    if not started("mnist-lenet300-snfs"):
        return "No runs yet: `bash scripts/reproduce.sh mnist-snfs` runs after sweep 1 (it resumes across sessions)."
    ours, paper = runs("mnist-lenet300-snfs"), pd.read_csv(SNFS_PAPER)
    ours = ours[~diverged(ours)]
    levels = sorted(ours.sparsity.unique())
    lines = ["| method | " + " | ".join(f"{1 - s:.0%} weights: here | SNFS repo" for s in levels) + " |",
             "|---|" + "---:|---:|" * len(levels)]
    for method in ("snfs", "set", "dsr", "deepr"):
        cells = []
        for level in levels:
            acc = ours[(ours.method == method) & (ours.sparsity.round(6) == round(level, 6))].test_accuracy
            here = f"{acc.mean():.2f} ± {acc.std():.2f} ({len(acc)})" if len(acc) > 1 else "–"
            row = paper[(paper.method == method) & (paper.sparsity.round(6) == round(level, 6))]
            theirs = "–" if row.empty else f"{row.top1_accuracy.iloc[0]:.2f}" + (
                "" if pd.isna(row.top1_se.iloc[0]) else f" ± {row.top1_se.iloc[0]:.2f}")
            cells += [here, theirs]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    spread = [f"{method} at {1 - level:.0%} weights: seeds " + " / ".join(
                  f"{r.seed}: {r.test_accuracy:.2f}" for r in rows.sort_values("seed").itertuples())
              for (method, level), rows in ours.groupby(["method", "sparsity"]) if rows.test_accuracy.std() > 1]
    dense = paper[paper.method == "dense"].iloc[0]
    legend = (f"Test accuracy (%): here mean ± std (seeds), the repository's mean ± standard error. Its dense "
              f"LeNet-300-100: {dense.top1_accuracy:.2f} ± {dense.top1_se:.2f}.")
    notes = [f"One seed far from the others (test accuracy %), {s}: a run that finished that way, without "
             "diverging (its loss stayed finite)." for s in spread]
    return "\n\n".join(["\n".join(lines), legend, *notes])


def execution_table() -> str:
    """The same run trained masked-dense and on sparse kernels, side by side (`mnist-execution`)."""
    if not started(EXECUTION):
        return "Not run yet: `bash scripts/reproduce.sh mnist-execution`."
    df = runs(EXECUTION).copy()
    df["execution"] = [json.loads(cell)["execution"] for cell in df.settings]
    df = df.sort_values(["method", "seed", "execution"])  # masked before sparse
    lines = ["| method | seed | execution | wall time | steps per second | test accuracy (%) |", "|---|---:|---|---:|---:|---:|"]
    for r in df.itertuples():
        lines.append(f"| {r.method} | {r.seed} | {r.execution} | {r.wall_time_s / 60:.1f} min | "
                     f"{r.steps_per_s:.0f} | {r.test_accuracy:.2f} |")
    for folder in ("mnist-lenet300", f"mnist-lenet300/{MASKED}"):
        sweep = runs(folder).set_index("run_id") if started(folder) else pd.DataFrame(index=pd.Index([]))
        for r in df[df.run_id.isin(sweep.index)].itertuples():
            lines.append(f"\nThe {r.execution} run has the settings key of the row `{r.run_id}` of `results/{folder}` "
                         f"(commit {sweep.commit[r.run_id]}): test accuracy {sweep.test_accuracy[r.run_id]:.2f} there, "
                         f"{r.test_accuracy:.2f} here on commit {r.commit}.")
    walls = df.groupby("execution").wall_time_s.sum()
    if {"masked", "sparse"} <= set(walls.index):
        lines.append(f"\nSparse kernels: {walls['masked'] / walls['sparse']:.2f}x the speed of masked-dense training "
                     "(wall clock of the whole run, evaluation included).")
    return "\n".join(lines)


def both_ways() -> str:
    """Per sweep and method, the runs of `<sweep>/masked` beside the same settings and seeds trained on sparse kernels:
    wall time per run and test accuracy each way, and the paired difference of accuracy with its t-test."""
    lines = ["| sweep | method | pairs | wall time per run: masked / sparse kernels | speed | test accuracy (%): "
             "masked / sparse kernels | sparse - masked (points), mean ± std | paired t-test p |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]

    def keyed(df: pd.DataFrame) -> pd.DataFrame:  # settings but the execution, and the seed: the same run either way
        df = df[~diverged(df)]
        return df.assign(pair=[json.dumps({k: v for k, v in json.loads(cell).items() if k != "execution"},
                                          sort_keys=True) + f"/{seed}" for cell, seed in zip(df.settings, df.seed)])

    for sweep in SWEEPS:
        if not started(f"{sweep}/{MASKED}"):
            continue
        pairs = keyed(runs(f"{sweep}/{MASKED}")).merge(keyed(runs(sweep)), on="pair", suffixes=("_m", "_s"))
        for method, p in pairs.groupby("method_m"):
            diff = p.test_accuracy_s - p.test_accuracy_m
            test = stats.ttest_rel(p.test_accuracy_s, p.test_accuracy_m).pvalue if len(p) > 1 and diff.any() else math.nan
            walls = p.wall_time_s_m.mean(), p.wall_time_s_s.mean()
            lines.append(f"| `{sweep}` | {method} | {len(p)} | {walls[0]:.0f} / {walls[1]:.0f} s | "
                         f"{walls[0] / walls[1]:.2f}x | {p.test_accuracy_m.mean():.2f} / {p.test_accuracy_s.mean():.2f} | "
                         f"{diff.mean():+.2f} ± {diff.std():.2f} | {test:.2g} |")
        total = pairs.wall_time_s_m.sum(), pairs.wall_time_s_s.sum()
        lines.append(f"| `{sweep}` | all | {len(pairs)} | {total[0] / 60:.1f} / {total[1] / 60:.1f} min in all | "
                     f"{total[0] / total[1]:.2f}x | – | – | – |")
    return "\n".join(lines)


def progress(sweep: str, planned: int) -> str:
    """The status cell of a sweep that may still be running (it resumes across sessions)."""
    done = len(runs(sweep)) if started(sweep) else 0
    if not done:
        return f"**queued**: {planned} runs"
    return f"**done**: {done} runs" if done >= planned else f"**running**: {done} of {planned} runs so far"


def render() -> str:
    counts = {sweep: len(runs(sweep)) for sweep in filter(started, SWEEPS)}
    fm = runs("fashion-mnist-lenet300")
    new = fm.method.isin(["dsr", "deepr", "lottery-static", "lottery-rigl"]).sum()
    values = dict(
        status_full=progress("mnist-lenet300", 30), status_gru=progress("fortunes-gru", 7),
        table_gru=table("fortunes-gru") if started("fortunes-gru") else "No runs yet.",
        status_snfs=progress("mnist-lenet300-snfs", 36), table_snfs=snfs_table(),
        n_short=counts["mnist-lenet300-short"],
        n_fmnist=len(fm) - new, n_new=new, n_lenet5=counts["fashion-mnist-lenet5"],
        n_total=sum(counts.values()), timing=timing(), software=software(),
        table_fmnist=table("fashion-mnist-lenet300"), claims_fmnist=claims("fashion-mnist-lenet300"),
        table_lenet5=table("fashion-mnist-lenet5"), claims_lenet5=claims("fashion-mnist-lenet5"),
        table_full=table("mnist-lenet300"), claims_full=claims("mnist-lenet300"),
        table_short=table("mnist-lenet300-short"), claims_short=claims("mnist-lenet300-short"),
        paper_vs_ours=paper_vs_ours(), diverged=diverged_runs(), collapsed=collapsed_runs(), table_execution=execution_table(),
        both_ways=both_ways(),
        claims_landscape=markdown(check_landscape(RESULTS / "fashion-mnist-lenet300" / "landscape")).strip(),
    )
    return TEMPLATE.read_text().format(**values)


def main() -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if REPRODUCTION.md is not up to date")
    args = parser.parse_args()
    text, target = render(), ROOT / "REPRODUCTION.md"
    if args.check:
        if not target.exists() or target.read_text() != text:
            print("REPRODUCTION.md is out of date: run .venv/bin/python scripts/reproduction_report.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
