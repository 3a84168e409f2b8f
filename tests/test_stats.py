"""Claim statistics: Welch's t-test, Holm's correction and the symmetric verdict rule, against values
computed independently (Welch's formulas by hand, the t distribution's tail by numerical integration)."""
import pytest

from analysis.stats import compare, contrast, decide, holm

RIGL, STATIC = [98.5, 98.6, 98.4], [97.0, 97.1, 96.9]


def test_welch_difference_interval_and_p_value():
    test = compare(RIGL, STATIC, "0.9")
    # se = sqrt(0.01/3 + 0.01/3) = 0.0816497, df = 4, t = 18.3712
    assert test.diff == pytest.approx(1.5)
    assert test.p == pytest.approx(5.16504e-05, rel=1e-4)
    assert (test.low, test.high) == (pytest.approx(1.273304, abs=1e-5), pytest.approx(1.726696, abs=1e-5))
    unequal = compare([90.1, 90.5, 89.9, 90.3], [89.7, 90.0], "x")  # df = 2.5617, t = 1.76852
    assert unequal.p == pytest.approx(0.190599, rel=1e-4) and (unequal.n_a, unequal.n_b) == (4, 2)


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2, 0.6]) == pytest.approx([0.4, 0.6])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_the_rule_is_symmetric():
    assert decide([compare(RIGL, STATIC, "a")]) == "reproduced"
    assert decide([compare(STATIC, RIGL, "a")]) == "contradicted"
    both = [compare(RIGL, STATIC, "a"), compare(STATIC, RIGL, "b")]
    assert decide(both) == "inconclusive"
    assert (both[0].supports, both[1].contradicts) == (True, True)
    # p = 0.19: neither way
    assert decide([compare([90.1, 90.5, 89.9, 90.3], [89.7, 90.0], "x")]) == "inconclusive"


def test_holm_decides_whether_a_level_counts():
    # p = 0.0213 (df 4, t = 3.674) alone is significant; beside a level with p = 1 Holm doubles it: 0.043
    a, b = [90.3, 90.5, 90.4], [90.0, 90.1, 90.2]
    single = compare(a, b, "0.9")
    assert single.p == pytest.approx(0.021311, rel=1e-3)
    tests = [compare(a, b, "0.9"), compare([1.0, 2.0], [1.0, 2.0], "0.8")]
    assert decide(tests) == "reproduced" and tests[0].p_holm == pytest.approx(2 * single.p)


def test_too_few_seeds_is_never_a_verdict():
    assert decide([compare([99.0], [90.0, 91.0], "0.9")]) == "too few seeds"
    assert decide([]) == "not run"
    one = compare([99.0], [90.0, 91.0], "0.9")
    assert one.text(holm=False) == "0.9: +8.50, n=1/2: too few seeds"


def test_equivalence_by_two_one_sided_tests():
    close = compare(STATIC, [97.05, 97.15, 96.95], "0.9", kind="close")
    # d = -0.05: t = 5.511 against -0.5 (p 0.0026443), t = -6.736 against +0.5 (p 0.0012654)
    assert close.p_decision == pytest.approx(0.0026443, rel=1e-3) and close.favourable
    assert decide([close]) == "reproduced"
    apart = compare(RIGL, STATIC, "0.9", kind="close")  # 1.5 points apart, well beyond the margin
    assert decide([apart]) == "contradicted" and apart.text(holm=False).startswith("0.9: +1.50 [+1.27, +1.73], p(beyond")


def test_a_difference_of_differences_uses_welch_satterthwaite():
    gap = contrast([RIGL, STATIC, [97.0, 97.2, 96.8], [96.9, 97.0, 97.1]], [1, -1, -1, 1], "gap")
    # 1.5 - 0.0 = 1.5; se^2 = 3 (0.01/3) + 0.04/3; df = se^4 / (3 (0.01/3)^2 / 2 + (0.04/3)^2 / 2) = 5.158
    assert gap.diff == pytest.approx(1.5)
    assert gap.p == pytest.approx(0.000156603, rel=1e-3)
