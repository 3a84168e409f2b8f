"""The paper's claims checked one by one against a runs.csv (and a landscape folder).

Each claim is tested at every sparsity it covers with Welch's t-test on the seeds' test accuracies
(difference of means, 95% confidence interval, p-value), Holm-corrected across those sparsities, and
judged by one symmetric rule (`analysis.stats`): *reproduced*, *contradicted*, *inconclusive*, or
*too few seeds* (fewer than two on either side).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.results import diverged

from .runs import read_landscape, read_restart
from .stats import MARGIN, Test, compare, contrast, decide


@dataclass
class Check:
    claim: str
    verdict: str
    evidence: str


def _cell(df: pd.DataFrame, method: str, sparsity: float, distribution: str = "erk",
          multiplier: float = 1.0) -> pd.Series:
    rows = df[(df.method == method) & (df.sparsity.round(6) == round(sparsity, 6))
              & (df.distribution == distribution) & (df.multiplier == multiplier)]
    return rows.test_accuracy


def _check(claim: str, tests: list[Test], notes: list[str] | None = None, digits: int = 2) -> Check:
    """The verdict of a claim's tests, with each level's evidence (and a note after it)."""
    verdict = decide(tests)
    holm = sum(t.enough for t in tests) > 1
    notes = notes or [""] * len(tests)
    return Check(claim, verdict, "; ".join(t.text(holm, digits) + (f", {n}" if n else "")
                                           for t, n in zip(tests, notes)))


Level = tuple[float, str]  # (sparsity, distribution) at which methods are compared


def _levels(df: pd.DataFrame) -> list[Level]:
    """The sparsities compared, each with its distribution: ERK where the sweep ran it, else the
    sweep's own non-uniform one (custom layer sparsities, ER)."""
    sparse = df[df.sparsity > 0]
    levels = []
    for s in sorted(sparse.sparsity.unique()):
        here = set(sparse[sparse.sparsity == s].distribution) - {"uniform", "none"}
        if here:
            levels.append((s, "erk" if "erk" in here else sorted(here)[0]))
    return levels


def _name(level: Level) -> str:
    s, distribution = level
    return f"{s:g}" if distribution == "erk" else f"{s:g} ({distribution})"


def _ordered(df: pd.DataFrame, better: str, worse: str, levels: list[Level]) -> list[Test]:
    return [compare(_cell(df, better, *level), _cell(df, worse, *level), _name(level)) for level in levels
            if not _cell(df, better, *level).empty and not _cell(df, worse, *level).empty]


def check_runs(df: pd.DataFrame) -> list[Check]:
    """The sweep claims of the paper on the runs of one (dataset, model) and protocol (`runs.groups`):
    a ValueError if a compared cell mixes settings keys."""
    if "config_key" in df.columns:
        cells = df.groupby(["method", "distribution", "sparsity", "multiplier"])["config_key"].nunique()
        if (cells > 1).any():
            method, distribution, sparsity, multiplier = cells[cells > 1].index[0]
            raise ValueError(f"{method} at {distribution} {sparsity:g}, {multiplier:g}x has runs of "
                             f"{cells.max()} different settings; check claims one protocol at a time "
                             "(analysis.runs.groups)")
    df = df[~diverged(df)]
    levels = _levels(df)
    checks = [_check(f"{better} >= {worse} at the same sparsity (ERK unless marked)", _ordered(df, better, worse, levels))
              for better, worse in (("rigl", "set"), ("set", "static"), ("rigl", "static"))]
    snip = [compare(_cell(df, "snip", *level), _cell(df, "static", *level), _name(level), kind="close")
            for level in levels if not _cell(df, "snip", *level).empty and not _cell(df, "static", *level).empty]
    checks.append(_check(f"snip close to static (within {MARGIN:g} points: two one-sided tests)", snip))
    erk_levels = [level for level in levels if level[1] == "erk"]
    for method in ("rigl", "static"):
        tests, notes = [], []
        for s, _ in erk_levels:
            erk, uni = _cell(df, method, s), _cell(df, method, s, "uniform")
            if erk.empty or uni.empty:
                continue
            tests.append(compare(erk, uni, f"{s:g}"))
            one_x = (df.method == method) & (df.sparsity == s) & (df.multiplier == 1)
            f_erk = df[one_x & (df.distribution == "erk")].train_flops_multiplier
            f_uni = df[one_x & (df.distribution == "uniform")].train_flops_multiplier
            notes.append(f"at {f_erk.mean() / f_uni.mean():.2f}x the FLOPs")
        checks.append(_check(f"ERK better than uniform for {method}, at higher training FLOPs", tests, notes))
    twice = [compare(_cell(df, "rigl", *level, multiplier=2.0), _cell(df, "rigl", *level), _name(level))
             for level in levels if not _cell(df, "rigl", *level, multiplier=2.0).empty
             and not _cell(df, "rigl", *level).empty]
    checks.append(_check("rigl 2x better than rigl 1x", twice))
    tests, notes = [], []
    for level in levels:
        g, r = _cell(df, "gmp", *level), _cell(df, "rigl", *level)
        if g.empty or r.empty:
            continue
        tests.append(compare(g, r, _name(level)))
        s, distribution = level
        at = (df.sparsity == s) & (df.distribution == distribution) & (df.multiplier == 1)
        notes.append(f"FLOPs {df[at & (df.method == 'gmp')].train_flops_multiplier.mean():.3f}x vs "
                     f"{df[at & (df.method == 'rigl')].train_flops_multiplier.mean():.3f}x")
    checks.append(_check("gmp >= rigl (1x) at the same sparsity, at higher training FLOPs", tests, notes))
    gaps = [(level, _cell(df, "rigl", *level), _cell(df, "static", *level))
            for level in (erk_levels if len(erk_levels) >= 2 else levels)]  # one distribution's trend if any
    gaps = [g for g in gaps if not g[1].empty and not g[2].empty]
    if len(gaps) >= 2:
        (low, r_low, s_low), (high, r_high, s_high) = gaps[0], gaps[-1]
        label = f"gap at {_name(high)} - gap at {_name(low)}"
        checks.append(_check("the rigl - static gap grows with sparsity",
                             [contrast([r_high, s_high, r_low, s_low], [1, -1, -1, 1], label)]))
    else:  # a trend needs two sparsities
        checks.append(Check("the rigl - static gap grows with sparsity", "not run",
                            "; ".join(f"{_name(level)}: {r.mean() - s.mean():+.2f}" for level, r, s in gaps)))
    return checks


def check_landscape(folder: str | Path) -> list[Check]:
    """The loss-landscape claims: barriers on the linear and sparse paths, none on the dense path,
    and RigL escaping the static solution (lower final training loss than static after the restart)."""
    folder = Path(folder)
    df = read_landscape(folder / "landscape.csv")
    inside = df[(df.coefficient >= 0) & (df.coefficient <= 1)]
    barriers = {}
    for path, rows in inside.groupby("path"):
        ends = rows.sort_values("coefficient").train_loss.iloc[[0, -1]]
        barriers[path] = rows.train_loss.max() - ends.max()
    text = ", ".join(f"{p} {b:.3f}" for p, b in barriers.items())
    checks = []
    if "linear" in barriers:
        checks.append(Check("the linear path has a loss barrier (max loss above the worse end)",
                            "reproduced" if barriers["linear"] > 0.05 else "contradicted", f"barriers: {text}"))
    if "bezier-sparse" in barriers and "bezier-dense" in barriers:
        ok = barriers["bezier-sparse"] > 0.05 and barriers["bezier-dense"] <= 0.05
        checks.append(Check("the sparse Bezier path shows a barrier, the dense one is nearly flat (<= 0.05)",
                            "reproduced" if ok else "contradicted", f"barriers: {text}"))
    restart = next((p for p in (folder / "restart" / "restart.csv", folder / "restart.csv") if p.exists()), None)
    if restart is not None:
        r = read_restart(restart).sort_values("step")
        tails = {m: g.train_loss.tail(max(2, len(g) // 5)) for m, g in r.groupby("method")}
        if {"rigl", "static"} <= set(tails):
            test = compare(tails["static"], tails["rigl"], "static - rigl")  # positive: rigl's loss is lower
            note = f"rigl {tails['rigl'].mean():.4f}, static {tails['static'].mean():.4f} (log rows, not seeds)"
            checks.append(_check("restarted from the static solution, rigl's training loss (last 20% of the "
                                 "restart) falls below static's", [test], [note], digits=4))
    return checks


def markdown(checks: list[Check]) -> str:
    """The checks as a Markdown table."""
    lines = ["| claim | verdict | evidence per sparsity: difference of mean test accuracies in points [95% CI], "
             "Welch p (Holm-adjusted across sparsities), seeds |", "|---|---|---|"]
    lines += [f"| {c.claim} | **{c.verdict}** | {c.evidence} |" for c in checks]
    return "\n".join(lines) + "\n"
