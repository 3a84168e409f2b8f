"""The statistics behind claim verdicts: Welch's t-test per sparsity, Holm's correction across the
sparsities of one claim, and one symmetric rule.

A claim is tested at each level it covers. A level *supports* it when the test rejects the null in
the claimed direction at `ALPHA` after Holm's correction, and *contradicts* it when it rejects in
the other direction. The verdict is *reproduced* when some level supports and none contradicts,
*contradicted* when some contradicts and none supports, *inconclusive* otherwise, and *too few
seeds* when no level has two seeds on both sides (a variance needs two).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
MARGIN = 0.5  # accuracy points within which two methods count as close (equivalence claims)


@dataclass
class Test:
    """One level of a claim: the difference of means A - B, its 95% confidence interval (Welch),
    the two-sided p-value, and Holm's adjusted p-value of the claim's decision at this level."""

    label: str
    n_a: int
    n_b: int
    diff: float
    low: float = math.nan
    high: float = math.nan
    p: float = math.nan
    p_decision: float = math.nan  # p-value of the test that decides (for equivalence: TOST, or "apart")
    favourable: bool = False  # the deciding test speaks for the claim (A > B; or A close to B)
    decision: str = "p"  # what p_decision tests: the two-sided difference, or (equivalence) "within"/"beyond"
    p_holm: float = math.nan
    supports: bool = False
    contradicts: bool = False

    @property
    def enough(self) -> bool:
        return self.n_a >= 2 and self.n_b >= 2

    def text(self, holm: bool, digits: int = 2) -> str:
        """"0.9: +0.76 [+0.50, +1.02], p=0.003 (Holm 0.006), n=3/3" (Holm's p where the claim has several)."""
        if not self.enough:
            return f"{self.label}: {self.diff:+.{digits}f}, n={self.n_a}/{self.n_b}: too few seeds"
        adjusted = f" (Holm {self.p_holm:.2g})" if holm else ""
        return (f"{self.label}: {self.diff:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}], "
                f"{self.decision}={self.p_decision:.2g}{adjusted}, n={self.n_a}/{self.n_b}")


def _welch(a: np.ndarray, b: np.ndarray, alternative: str = "two-sided", shift: float = 0.0) -> tuple[float, float]:
    """(p-value, t) of Welch's test of mean(a) - mean(b) against `shift`; with no variance on either side
    the difference is exact: p is 0 if it lies on the alternative's side of `shift`, else 1."""
    d = a.mean() - b.mean() - shift
    if a.var(ddof=1) + b.var(ddof=1) == 0:
        side = {"two-sided": d != 0, "greater": d > 0, "less": d < 0}[alternative]
        return (0.0 if side else 1.0), math.copysign(math.inf, d) if d else 0.0
    result = stats.ttest_ind(a - shift, b, equal_var=False, alternative=alternative)
    return float(result.pvalue), float(result.statistic)


def compare(a: Sequence[float], b: Sequence[float], label: str, kind: str = "better") -> Test:
    """One level of a claim about A against B. `kind` "better": A > B (two-sided Welch test);
    "close": |A - B| < MARGIN (supported by the two one-sided tests of equivalence, contradicted by
    a one-sided test that the difference lies beyond the margin)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    test = Test(label, len(a), len(b), float(a.mean() - b.mean()) if len(a) and len(b) else math.nan)
    if not test.enough:
        return test
    test.p, _ = _welch(a, b)
    if a.var(ddof=1) + b.var(ddof=1) == 0:
        test.low = test.high = test.diff
    else:
        ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(1 - ALPHA)
        test.low, test.high = float(ci.low), float(ci.high)
    if kind == "better":
        test.p_decision, test.favourable = test.p, test.diff > 0
    else:
        inside = max(_welch(a, b, "greater", -MARGIN)[0], _welch(a, b, "less", MARGIN)[0])
        outside = min(_welch(a, b, "greater", MARGIN)[0], _welch(a, b, "less", -MARGIN)[0])
        test.p_decision, test.favourable = min(inside, outside), inside < outside
        test.decision = f"p({'within' if test.favourable else 'beyond'} ±{MARGIN:g})"
    return test


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (monotone, capped at 1), in the given order."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def decide(tests: list[Test]) -> str:
    """Holm-adjust the tests of one claim in place, mark each level, and return the verdict."""
    if not tests:
        return "not run"
    usable = [t for t in tests if t.enough]
    if not usable:
        return "too few seeds"
    for t, p in zip(usable, holm([t.p_decision for t in usable])):
        t.p_holm = p
        t.supports, t.contradicts = p < ALPHA and t.favourable, p < ALPHA and not t.favourable
    support, against = any(t.supports for t in usable), any(t.contradicts for t in usable)
    if support and not against:
        return "reproduced"
    if against and not support:
        return "contradicted"
    return "inconclusive"


def contrast(groups: Sequence[Sequence[float]], signs: Sequence[float], label: str) -> Test:
    """A linear combination of group means (sum of sign * mean), e.g. a difference of differences,
    with Welch-Satterthwaite degrees of freedom, its 95% interval and two-sided p-value."""
    arrays = [np.asarray(g, float) for g in groups]
    value = float(sum(s * g.mean() for s, g in zip(signs, arrays)))
    small = min(len(g) for g in arrays)
    test = Test(label, small, small, value)
    if small < 2:
        return test
    parts = [g.var(ddof=1) / len(g) for g in arrays]
    se = math.sqrt(sum(parts))
    if se == 0:
        test.low = test.high = value
        test.p = test.p_decision = 0.0 if value else 1.0
        test.favourable = value > 0
        return test
    df = se ** 4 / sum(v ** 2 / (len(g) - 1) for v, g in zip(parts, arrays))
    test.p = test.p_decision = float(2 * stats.t.sf(abs(value) / se, df))
    test.favourable = value > 0
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
    test.low, test.high = value - half, value + half
    return test
