import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from methods import SparsityConfig, layer_counts
from methods.distributions import explicit_counts

MLP = [(20, 10), (20, 20), (5, 20)]  # sizes 200, 400, 100


def test_uniform_is_round_of_each_layer_and_keeps_forced_dense_layers():
    assert layer_counts(MLP, 0.9, "uniform") == [20, 40, 10]
    assert layer_counts(MLP, 0.9, "uniform", dense=[0]) == [200, 40, 10]
    assert layer_counts([(3, 3)], 0.5, "uniform") == [round(0.5 * 9)]


def test_erk_matches_hand_computed_densities():
    # raw ER densities (n_in + n_out) / (n_in n_out): 30/200, 40/400, 25/100; eps = 350 / 95
    # ideal counts 110.53, 147.37, 92.11: floors sum to 349, the one left goes to the largest remainder
    assert layer_counts(MLP, 0.5, "erk") == [111, 147, 92]
    assert layer_counts(MLP, 0.5, "er") == [111, 147, 92]  # ER = ERK for linear layers


def test_erk_overflow_makes_small_layer_dense_and_still_meets_target():
    # at S=0.3 the last layer would get density 1.29: it becomes dense (100), the other two
    # share 390 with eps = 390 / 70: 167.14 and 222.86 -> 167 + 223
    counts = layer_counts(MLP, 0.3, "erk")
    assert counts == [167, 223, 100]
    assert sum(counts) == round(0.7 * 700)


def test_erk_kernel_term_and_er_ignoring_kernel_for_conv():
    shapes = [(8, 3, 3, 3), (16, 8, 3, 3), (10, 256)]
    erk_raw = [(3 + 8 + 6) / 216, (8 + 16 + 6) / 1152, (256 + 10) / 2560]
    er_raw = [(3 + 8) / 24, (8 + 16) / 128, (256 + 10) / 2560]
    sizes = [216, 1152, 2560]
    for name, raw in (("erk", erk_raw), ("er", er_raw)):
        counts = layer_counts(shapes, 0.8, name)
        eps = round(0.2 * sum(sizes)) / sum(r * n for r, n in zip(raw, sizes))
        assert all(abs(c - eps * r * n) < 1 for c, r, n in zip(counts, raw, sizes)), name
        assert sum(counts) == round(0.2 * sum(sizes))


def test_forced_dense_layers_are_charged_to_the_erk_budget():
    counts = layer_counts(MLP, 0.5, "erk", dense=[1])
    assert counts[1] == 400 and sum(counts) == 350


shape = st.tuples(st.integers(1, 64), st.integers(1, 64)) | st.tuples(
    st.integers(1, 32), st.integers(1, 32), st.integers(1, 5), st.integers(1, 5))


@settings(max_examples=200, deadline=None)
@given(st.lists(shape, min_size=1, max_size=6), st.floats(0, 0.999), st.sampled_from(["er", "erk"]))
def test_er_erk_total_is_exact_and_no_layer_exceeds_density_one(shapes, sparsity, distribution):
    counts = layer_counts(shapes, sparsity, distribution)
    sizes = [math.prod(s) for s in shapes]
    assert sum(counts) == round((1 - sparsity) * sum(sizes))
    assert all(0 <= c <= n for c, n in zip(counts, sizes))


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5, "0.9", None])
def test_bad_sparsity_names_the_fix(sparsity):
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        layer_counts(MLP, sparsity)


def test_unknown_distribution_lists_known_ones():
    with pytest.raises(ValueError, match="known distributions: uniform, er, erk"):
        layer_counts(MLP, 0.5, "gaussian")


def test_explicit_layer_sparsities_round_each_layer_and_reject_a_wrong_length():
    lenet = [(300, 784), (100, 300), (10, 100)]  # the paper's MNIST LeNet-300-100 at 0.98, 0.882, dense
    assert explicit_counts(lenet, (0.98, 0.882, 0.0)) == [4704, 3540, 1000]
    assert SparsityConfig(distribution="custom", layer_sparsity=(0.98, 0.882, 0.0)).layer_counts(lenet) == [
        4704, 3540, 1000]
    with pytest.raises(ValueError, match=r"has 2 value\(s\) but the model has 3 sparse layer\(s\); pass one"):
        explicit_counts(lenet, (0.98, 0.882))
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        SparsityConfig(distribution="custom", layer_sparsity=(0.98, 1.0, 0.0)).validate()


@pytest.mark.parametrize("config", [SparsityConfig(distribution="custom"),
                                    SparsityConfig(distribution="erk", layer_sparsity=(0.5, 0.5, 0.5))])
def test_custom_distribution_and_layer_sparsity_go_together(config):
    with pytest.raises(ValueError, match="distribution custom goes with layer_sparsity"):
        config.validate()
