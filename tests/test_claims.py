"""`python -m analysis claims`: verdicts computed from the runs, with their evidence."""
from pathlib import Path

import pandas as pd

from analysis.claims import check_landscape, check_runs, markdown

FIXTURES = Path(__file__).parent / "fixtures"


def test_rigl_vs_static_is_welchs_test_on_the_seeds():
    df = pd.read_csv(FIXTURES / "sweep" / "runs.csv")
    checks = {c.claim.split(" at ")[0]: c for c in check_runs(df)}
    # rigl 93.889, 94.167 and static 90.833, 88.333 at ERK 0.9: d = 4.444, se = 1.2577, df = 1.0247, t = 3.534,
    # p = 0.1708 (the t tail integrated numerically): not significant with two seeds a side
    check = checks["rigl >= static"]
    assert check.evidence.startswith("0.9: +4.44 [") and check.evidence.endswith("], p=0.17, n=2/2")
    assert check.verdict == "inconclusive"
    assert checks["rigl >= set"].verdict == "not run"  # the fixture has no ERK set runs


def test_runs_at_given_layer_sparsities_are_compared_at_their_own_level():
    rows = [dict(method=m, distribution="custom", sparsity=0.9653, multiplier=1.0, seed=i, test_accuracy=acc,
                 test_loss=0.1, train_flops_multiplier=0.036)
            for m, accs in (("rigl", (98.5, 98.6, 98.4)), ("static", (97.0, 97.1, 96.9))) for i, acc in enumerate(accs)]
    rows.append(dict(rows[0], method="set", test_loss=float("nan")))  # a diverged run counts for nothing
    checks = {c.claim.split(" at ")[0]: c for c in check_runs(pd.DataFrame(rows))}
    # d = 1.5, se = sqrt(0.01/3 + 0.01/3) = 0.0816, df = 4: t = 18.37, p = 5.2e-05, 95% CI 1.5 -+ 2.776 se
    assert checks["rigl >= static"].evidence == "0.9653 (custom): +1.50 [+1.27, +1.73], p=5.2e-05, n=3/3"
    assert checks["rigl >= static"].verdict == "reproduced"
    assert checks["rigl >= set"].verdict == "not run"
    gap = checks["the rigl - static gap grows with sparsity"]
    assert (gap.verdict, gap.evidence) == ("not run", "0.9653 (custom): +1.50")  # one level is no trend


def test_one_seed_is_too_few_for_a_verdict():
    rows = [dict(method=m, distribution="erk", sparsity=0.9, multiplier=1.0, seed=0, test_accuracy=acc,
                 test_loss=0.1, train_flops_multiplier=0.1) for m, acc in (("rigl", 99.0), ("static", 90.0))]
    check = {c.claim.split(" at ")[0]: c for c in check_runs(pd.DataFrame(rows))}["rigl >= static"]
    assert (check.verdict, check.evidence) == ("too few seeds", "0.9: +9.00, n=1/1: too few seeds")


def test_landscape_barriers_and_restart_verdicts():
    checks = check_landscape(FIXTURES / "landscape")
    df = pd.read_csv(FIXTURES / "landscape" / "landscape.csv")
    line = df[(df.path == "linear") & df.coefficient.between(0, 1)].sort_values("coefficient")
    barrier = line.train_loss.max() - max(line.train_loss.iloc[0], line.train_loss.iloc[-1])
    assert f"linear {barrier:.3f}" in checks[0].evidence
    assert checks[0].verdict == ("reproduced" if barrier > 0.05 else "contradicted")
    restart = pd.read_csv(FIXTURES / "landscape" / "restart.csv").sort_values("step")
    tails = {m: g.train_loss.tail(max(2, len(g) // 5)) for m, g in restart.groupby("method")}
    diff = tails["static"].mean() - tails["rigl"].mean()
    assert "restart" in checks[-1].claim and checks[-1].evidence.startswith(f"static - rigl: {diff:+.4f} [")
    table = markdown(checks)
    assert table.count("\n") == 2 + len(checks) and table.count("|") == 4 * (2 + len(checks))
