"""`python -m analysis claims`: verdicts computed from the runs, with their evidence."""
import math
from pathlib import Path

import pandas as pd

from analysis.claims import check_landscape, check_runs, markdown

FIXTURES = Path(__file__).parent / "fixtures"


def test_rigl_vs_static_difference_and_standard_error_come_from_the_seeds():
    df = pd.read_csv(FIXTURES / "sweep" / "runs.csv")
    checks = {c.claim.split(" at ")[0]: c for c in check_runs(df)}
    rigl = df[(df.method == "rigl") & (df.sparsity == 0.9) & (df.distribution == "erk") & (df.multiplier == 1)]
    static = df[(df.method == "static") & (df.sparsity == 0.9) & (df.distribution == "erk")]
    diff = rigl.test_accuracy.mean() - static.test_accuracy.mean()
    se = math.sqrt(rigl.test_accuracy.var() / len(rigl) + static.test_accuracy.var() / len(static))
    check = checks["rigl >= static"]
    assert check.evidence == f"0.9: {diff:+.2f} ± {se:.2f}"
    assert check.verdict == ("reproduced" if diff > 2 * se else "not reproduced" if diff < -2 * se else "inconclusive")
    assert checks["rigl >= set"].verdict == "not run"  # the fixture has no ERK set runs


def test_runs_at_given_layer_sparsities_are_compared_at_their_own_level():
    rows = [dict(method=m, distribution="custom", sparsity=0.9653, multiplier=1.0, seed=i, test_accuracy=acc,
                 test_loss=0.1, train_flops_multiplier=0.036)
            for m, accs in (("rigl", (98.5, 98.6, 98.4)), ("static", (97.0, 97.1, 96.9))) for i, acc in enumerate(accs)]
    rows.append(dict(rows[0], method="set", test_loss=float("nan")))  # a diverged run counts for nothing
    checks = {c.claim.split(" at ")[0]: c for c in check_runs(pd.DataFrame(rows))}
    assert checks["rigl >= static"].evidence == "0.9653 (custom): +1.50 ± 0.08"  # s.e. sqrt(0.01/3 + 0.01/3)
    assert checks["rigl >= static"].verdict == "reproduced"
    assert checks["rigl >= set"].verdict == "not run"
    gap = checks["the rigl - static gap grows with sparsity"]
    assert (gap.verdict, gap.evidence) == ("not run", "0.9653 (custom): +1.50")  # one level is no trend


def test_landscape_barriers_and_restart_verdicts():
    checks = check_landscape(FIXTURES / "landscape")
    df = pd.read_csv(FIXTURES / "landscape" / "landscape.csv")
    line = df[(df.path == "linear") & df.coefficient.between(0, 1)].sort_values("coefficient")
    barrier = line.train_loss.max() - max(line.train_loss.iloc[0], line.train_loss.iloc[-1])
    assert f"linear {barrier:.3f}" in checks[0].evidence
    assert checks[0].verdict == ("reproduced" if barrier > 0.05 else "not reproduced")
    restart = pd.read_csv(FIXTURES / "landscape" / "restart.csv").sort_values("step")
    tails = {m: g.train_loss.tail(max(2, len(g) // 5)) for m, g in restart.groupby("method")}
    diff = tails["static"].mean() - tails["rigl"].mean()
    assert "restart" in checks[-1].claim and f"(difference {diff:+.4f} ±" in checks[-1].evidence
    table = markdown(checks)
    assert table.count("\n") == 2 + len(checks) and table.count("|") == 4 * (2 + len(checks))
