"""The mask contract (spec section 3) for every method, distribution, optimizer and model."""
import pytest
import torch

from conftest import train_step

# the paper's eight; tests/test_new_methods.py runs the same checks on dsr, deepr and the lottery methods
CORE_METHODS = ["dense", "small-dense", "static", "snip", "gmp", "set", "snfs", "rigl"]


def check_contract(sparsifier, optimizer, expected_counts):
    for name, weight, mask, expected in zip(sparsifier.names, sparsifier.weights, sparsifier.masks, expected_counts):
        assert mask.dtype == torch.bool
        assert int(mask.sum()) == expected, name
        assert torch.all(weight[~mask] == 0), name
        for key, value in optimizer.state.get(weight, {}).items():
            if torch.is_tensor(value) and value.shape == weight.shape:
                assert torch.all(value[~mask] == 0), (name, key)


@pytest.mark.parametrize("model", ["mlp", "conv"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("distribution", ["uniform", "er", "erk"])
@pytest.mark.parametrize("method", CORE_METHODS)
def test_exact_counts_zero_weights_and_zero_state_every_step(make_run, method, distribution, optimizer, model):
    net, opt, s = make_run(method, model, optimizer, sparsity=0.8, distribution=distribution, delta_t=25,
                           gmp_every=10, total_steps=300)
    assert s.counts == s.planned_counts(0)
    if method not in ("dense", "small-dense", "gmp"):
        assert s.counts == s.targets
    check_contract(s, opt, s.counts)
    updates = 0
    for t in range(300):
        info = train_step(net, s, opt, t)
        assert list(info.counts) == s.planned_counts(t)
        updates += info.updated
        check_contract(s, opt, s.planned_counts(t + 1))
    assert s.counts == s.targets  # every method ends at the distribution's counts (gmp after gmp_stop)
    expected_updates = {"set": 8, "snfs": 8, "rigl": 8, "gmp": 18}.get(method, 0)  # t in (0, 225) step 25; gmp 60..225
    assert updates == expected_updates
