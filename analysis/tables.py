"""Result tables in the paper's layout: one row per (method, distribution, multiplier), one block of
columns per sparsity with accuracy (mean ± std over seeds) and the training and inference FLOP
multipliers beside it; the best sparse accuracy of each sparsity in bold. Markdown and LaTeX
(booktabs)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import style
from .runs import (
    LOWER_IS_BETTER,
    group_metric,
    group_rows,
    group_title,
    groups,
    keeps_every_weight,
    summary,
)

__all__ = ["TableCell", "accuracy_table", "latex_table", "markdown_table", "write_tables"]

METRIC_NAMES = {"test_accuracy": "test accuracy", "best_test_accuracy": "best test accuracy",
                "val_accuracy": "validation accuracy", "test_bpc": "test bits per character"}
METRIC_UNITS = {"test_bpc": ""}  # others: " (%)"


@dataclass
class TableCell:
    mean: float
    std: float  # NaN for one seed
    seeds: int
    train_flops: float
    inference_flops: float
    diverged: int = 0  # seeds left out of mean and std because their loss went NaN
    best: bool = False


@dataclass
class _Block:
    dataset: str
    model: str
    protocol: str
    levels: list[float]
    rows: list[tuple[str, str, float]]  # (method, distribution, multiplier)
    cells: dict[tuple[tuple[str, str, float], float], TableCell]
    seeds: tuple[int, int]


def _blocks(runs: pd.DataFrame, metric: str, digits: int) -> list[_Block]:
    summ = summary(runs, metric)
    blocks = []
    for dataset, model, protocol in groups(summ):
        g = group_rows(summ, dataset, model, protocol)
        baseline = {m for m in g["method"] if keeps_every_weight(m)}
        levels = sorted({round(float(s), 6) for s in g.loc[~g["method"].isin(baseline), "sparsity"] if s > 0}) or [0.0]
        keys = sorted({(r.method, r.distribution, float(r.multiplier)) for r in g.itertuples()},
                      key=lambda k: (style.method_sort_key(k[0]), style.distribution_sort_key(k[1]), k[2]))
        cells: dict = {}
        for r in g.itertuples():
            key = (r.method, r.distribution, float(r.multiplier))
            cell = TableCell(r.test_accuracy_mean, r.test_accuracy_std, int(r.seeds), r.train_flops_multiplier,
                             r.inference_flops_multiplier, int(r.diverged))
            # dense does not depend on sparsity: the same cell in every sparsity block
            for level in (levels if r.method in baseline else [round(float(r.sparsity), 6)]):
                cells[(key, level)] = cell
        for level in levels:
            sparse = [(k, c) for (k, lv), c in cells.items() if lv == level and k[0] not in baseline]
            if sparse:
                top = (min if metric in LOWER_IS_BETTER else max)(round(c.mean, digits) for _, c in sparse)
                for k, c in sparse:
                    if round(c.mean, digits) == top:
                        cells[(k, level)] = TableCell(**{**c.__dict__, "best": True})
        blocks.append(_Block(dataset, model, protocol, levels, keys, cells, (int(g["seeds"].min()), int(g["seeds"].max()))))
    return blocks


def accuracy_table(runs: pd.DataFrame, metric: str = "test_accuracy") -> pd.DataFrame:
    """The numbers of the tables as a DataFrame: one row per (dataset, model, method, distribution,
    multiplier, sparsity) with mean, std, seeds, FLOP multipliers and `best` (bold in the tables).
    Language models' runs show bits per character where test accuracy is asked for (`group_metric`)."""
    metric = group_metric(runs, metric)
    rows = []
    for b in _blocks(runs, metric, 2):
        for (key, level), c in b.cells.items():
            rows.append(dict(dataset=b.dataset, model=b.model, protocol=b.protocol, method=key[0], distribution=key[1],
                             multiplier=key[2], sparsity=level, **c.__dict__))
    return pd.DataFrame(rows)


def _flops(value: float) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.3f}x"


def _accuracy(c: TableCell, digits: int, pm: str) -> str:
    text = f"{c.mean:.{digits}f}"
    if not pd.isna(c.std):
        text += f"{pm}{c.std:.{digits}f}"
    if c.diverged:
        text += f" ({c.seeds} seed{'s' if c.seeds != 1 else ''}; {c.diverged} diverged)"
    return text


def _seeds_text(seeds: tuple[int, int]) -> str:
    low, high = seeds
    return f"{low} seed{'s' if low != 1 else ''}" if low == high else f"{low}–{high} seeds"


def markdown_table(runs: pd.DataFrame, metric: str = "test_accuracy", digits: int = 2) -> str:
    """Markdown: a heading and a table per (dataset, model); accuracy as mean ± std, best sparse one per
    sparsity in bold, training and inference FLOPs (× dense) beside it."""
    metric = group_metric(runs, metric)
    out = []
    for b in _blocks(runs, metric, digits):
        out.append(f"### {group_title(b.dataset, b.model, b.protocol)}\n")
        out.append(f"{METRIC_NAMES[metric].capitalize()}{METRIC_UNITS.get(metric, ' (%)')} as mean ± std over {_seeds_text(b.seeds)}; "
                   "FLOPs are multiples of the dense model's (training: whole run; inference: per sample). "
                   "Bold: best sparse result at each sparsity.\n")
        header = ["Method", "Distribution", "Mult."]
        for level in b.levels:
            header += [f"{100 * level:g}%: {'bpc' if metric in LOWER_IS_BETTER else 'accuracy'}", "train FLOPs", "test FLOPs"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * 3 + "---:|" * (3 * len(b.levels)))
        for key in b.rows:
            method, distribution, multiplier = key
            line = [style.method_label(method), style.DISTRIBUTION_LABELS.get(distribution, distribution) or "–",
                    f"{multiplier:g}x"]
            for level in b.levels:
                c = b.cells.get((key, level))
                if c is None:
                    line += ["–", "–", "–"]
                    continue
                acc = _accuracy(c, digits, " ± ")
                line += [f"**{acc}**" if c.best else acc, _flops(c.train_flops), _flops(c.inference_flops)]
            out.append("| " + " | ".join(line) + " |")
        out.append("")
    return "\n".join(out)


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(a, b)
    return text


def _tex_flops(value: float) -> str:
    text = _flops(value)
    return "--" if text == "–" else text[:-1] + r"$\times$"


def latex_table(runs: pd.DataFrame, metric: str = "test_accuracy", digits: int = 2) -> str:
    """LaTeX (booktabs: \\toprule, \\midrule, \\bottomrule; needs \\usepackage{booktabs}), one table
    environment per (dataset, model), laid out like markdown_table."""
    metric = group_metric(runs, metric)
    out = [r"% needs \usepackage{booktabs}"]
    for b in _blocks(runs, metric, digits):
        n = len(b.levels)
        out += [r"\begin{table}[t]", r"\centering", r"\small",
                rf"\caption{{{_tex(group_title(b.dataset, b.model, b.protocol))}: {METRIC_NAMES[metric]} (\%), mean $\pm$ std over "
                rf"{_tex(_seeds_text(b.seeds))}, and FLOPs of training and inference as multiples of the dense "
                r"model's. Bold: best sparse result at each sparsity.}",
                r"\begin{tabular}{lll" + "rrr" * n + "}", r"\toprule"]
        out.append(" & & & " + " & ".join(rf"\multicolumn{{3}}{{c}}{{Sparsity {100 * lv:g}\%}}" for lv in b.levels)
                   + r" \\")
        out.append(" ".join(rf"\cmidrule(lr){{{4 + 3 * i}-{6 + 3 * i}}}" for i in range(n)))
        out.append(r"Method & Distribution & Mult. & " + " & ".join([r"Top-1 (\%) & FLOPs train & FLOPs test"] * n)
                   + r" \\")
        out.append(r"\midrule")
        for key in b.rows:
            method, distribution, multiplier = key
            line = [_tex(style.method_label(method)),
                    _tex(style.DISTRIBUTION_LABELS.get(distribution, distribution)) or "--", f"{multiplier:g}$\\times$"]
            for level in b.levels:
                c = b.cells.get((key, level))
                if c is None:
                    line += ["--", "--", "--"]
                    continue
                acc = _accuracy(c, digits, r" $\pm$ ")
                line += [rf"\textbf{{{acc}}}" if c.best else acc, _tex_flops(c.train_flops),
                         _tex_flops(c.inference_flops)]
            out.append(" & ".join(line) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def write_tables(runs: pd.DataFrame, out: str | Path, metric: str = "test_accuracy", digits: int = 2,
                 name: str = "table") -> dict[str, Path]:
    """Write out/<name>.md and out/<name>.tex; return {"markdown": path, "latex": path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / f"{name}.md", "latex": out / f"{name}.tex"}
    paths["markdown"].write_text(markdown_table(runs, metric, digits))
    paths["latex"].write_text(latex_table(runs, metric, digits))
    return paths
