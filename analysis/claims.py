"""The paper's claims checked one by one against a runs.csv (and a landscape folder).

Each comparison is a difference of mean test accuracies over seeds with its standard error
`sqrt(s_a^2 / n_a + s_b^2 / n_b)`; a claim that A beats B is *reproduced* when the difference
exceeds two standard errors, *not reproduced* when it is below minus two, else *inconclusive*.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.results import diverged

from .runs import read_landscape, read_restart


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


def _compare(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    se = math.sqrt((a.var(ddof=1) if len(a) > 1 else 0.0) / len(a) + (b.var(ddof=1) if len(b) > 1 else 0.0) / len(b))
    return a.mean() - b.mean(), se


def _verdict(diffs: list[tuple[float, float]]) -> str:
    if all(d > 2 * se for d, se in diffs):
        return "reproduced"
    if any(d < -2 * se for d, se in diffs):
        return "not reproduced"
    return "inconclusive"


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


def _ordered(df: pd.DataFrame, better: str, worse: str, levels: list[Level]) -> tuple[str, str]:
    diffs, parts = [], []
    for level in levels:
        a, b = _cell(df, better, *level), _cell(df, worse, *level)
        if a.empty or b.empty:
            continue
        d, se = _compare(a, b)
        diffs.append((d, se))
        parts.append(f"{_name(level)}: {d:+.2f} ± {se:.2f}")
    return (_verdict(diffs) if diffs else "not run"), "; ".join(parts)


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
    checks = []
    for better, worse in (("rigl", "set"), ("set", "static"), ("rigl", "static")):
        verdict, evidence = _ordered(df, better, worse, levels)
        checks.append(Check(f"{better} >= {worse} at the same sparsity (ERK unless marked; accuracy difference ± s.e. per sparsity)",
                            verdict, evidence))
    snip = [(level, _compare(_cell(df, "snip", *level), _cell(df, "static", *level))) for level in levels
            if not _cell(df, "snip", *level).empty and not _cell(df, "static", *level).empty]
    close = all(abs(d) <= max(2 * se, 0.5) for _, (d, se) in snip)
    checks.append(Check("snip close to static (abs. difference <= max(2 s.e., 0.5 points))",
                        ("reproduced" if close else "not reproduced") if snip else "not run",
                        "; ".join(f"{_name(level)}: {d:+.2f} ± {se:.2f}" for level, (d, se) in snip)))
    erk_levels = [level for level in levels if level[1] == "erk"]
    for method in ("rigl", "static"):
        parts, pairs = [], []
        for s, _ in erk_levels:
            erk, uni = _cell(df, method, s), _cell(df, method, s, "uniform")
            if erk.empty or uni.empty:
                continue
            pairs.append(_compare(erk, uni))
            one_x = (df.method == method) & (df.sparsity == s) & (df.multiplier == 1)
            f_erk = df[one_x & (df.distribution == "erk")].train_flops_multiplier
            f_uni = df[one_x & (df.distribution == "uniform")].train_flops_multiplier
            parts.append(f"{s:g}: {pairs[-1][0]:+.2f} ± {pairs[-1][1]:.2f} at {f_erk.mean() / f_uni.mean():.2f}x the FLOPs")
        checks.append(Check(f"ERK better than uniform for {method}, at higher training FLOPs",
                            _verdict(pairs) if pairs else "not run", "; ".join(parts)))
    parts, pairs = [], []
    for level in levels:
        two, one = _cell(df, "rigl", *level, multiplier=2.0), _cell(df, "rigl", *level)
        if not two.empty and not one.empty:
            pairs.append(_compare(two, one))
            parts.append(f"{_name(level)}: {pairs[-1][0]:+.2f} ± {pairs[-1][1]:.2f}")
    checks.append(Check("rigl 2x better than rigl 1x", _verdict(pairs) if pairs else "not run", "; ".join(parts)))
    parts, pairs = [], []
    for level in levels:
        g, r = _cell(df, "gmp", *level), _cell(df, "rigl", *level)
        if g.empty or r.empty:
            continue
        pairs.append(_compare(g, r))
        s, distribution = level
        at = (df.sparsity == s) & (df.distribution == distribution) & (df.multiplier == 1)
        fg = df[at & (df.method == "gmp")].train_flops_multiplier.mean()
        fr = df[at & (df.method == "rigl")].train_flops_multiplier.mean()
        parts.append(f"{_name(level)}: gmp - rigl {pairs[-1][0]:+.2f} ± {pairs[-1][1]:.2f}, FLOPs {fg:.3f}x vs "
                     f"{fr:.3f}x")
    strong = bool(pairs) and all(d > -2 * se for d, se in pairs)
    checks.append(Check("gmp strong (not below rigl) but with higher training FLOPs",
                        ("reproduced" if strong else "not reproduced") if pairs else "not run", "; ".join(parts)))
    gaps = []
    for level in erk_levels if len(erk_levels) >= 2 else levels:  # one distribution's trend where there is one
        r, st = _cell(df, "rigl", *level), _cell(df, "static", *level)
        if not r.empty and not st.empty:
            gaps.append((level, *_compare(r, st)))
    evidence = "; ".join(f"{_name(level)}: {g:+.2f}" for level, g, _ in gaps)
    if len(gaps) >= 2:
        low, high = gaps[0], gaps[-1]
        d = high[1] - low[1]
        se = math.hypot(high[2], low[2])
        verdict, evidence = _verdict([(d, se)]), f"{evidence} (change {d:+.2f} ± {se:.2f})"
    else:
        verdict = "not run"  # a trend needs two sparsities
    checks.append(Check("the rigl - static gap grows with sparsity", verdict, evidence))
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
                            "reproduced" if barriers["linear"] > 0.05 else "not reproduced", f"barriers: {text}"))
    if "bezier-sparse" in barriers and "bezier-dense" in barriers:
        ok = barriers["bezier-sparse"] > 0.05 and barriers["bezier-dense"] <= 0.05
        checks.append(Check("the sparse Bezier path shows a barrier, the dense one is nearly flat (<= 0.05)",
                            "reproduced" if ok else "not reproduced", f"barriers: {text}"))
    restart = next((p for p in (folder / "restart" / "restart.csv", folder / "restart.csv") if p.exists()), None)
    if restart is not None:
        r = read_restart(restart).sort_values("step")
        tails = {m: g.train_loss.tail(max(2, len(g) // 5)) for m, g in r.groupby("method")}
        if {"rigl", "static"} <= set(tails):
            d, se = _compare(tails["static"], tails["rigl"])  # positive: rigl's loss is lower
            checks.append(Check("restarted from the static solution, rigl's training loss falls below static's",
                                _verdict([(d, se)]),
                                f"logged training loss over the last 20% of the restart: rigl "
                                f"{tails['rigl'].mean():.4f}, static {tails['static'].mean():.4f} "
                                f"(difference {d:+.4f} ± {se:.4f})"))
    return checks


def markdown(checks: list[Check]) -> str:
    """The checks as a Markdown table."""
    lines = ["| claim | verdict | evidence (difference of mean test accuracy ± standard error, points) |",
             "|---|---|---|"]
    lines += [f"| {c.claim} | **{c.verdict}** | {c.evidence} |" for c in checks]
    return "\n".join(lines) + "\n"
