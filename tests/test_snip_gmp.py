"""SNIP's saliency masks and GMP's cubic schedule."""
import pytest
import torch
from torch import nn

import methods
from conftest import batch, tiny_convnet, tiny_mlp, train_step


def saliency(model, batches):
    model.zero_grad()
    for x, y in batches:
        nn.functional.cross_entropy(model(x), y).backward()
    return [(m.weight.grad * m.weight).abs() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


@pytest.mark.parametrize("build", [tiny_mlp, tiny_convnet])
def test_snip_per_layer_keeps_exactly_the_top_saliency_weights(build):
    torch.manual_seed(0)
    model = build()
    batches = [batch(1), batch(2)]
    expected = saliency(model, batches)
    model.zero_grad()
    buffers = [b.clone() for b in model.buffers()]
    s = methods.create("snip", model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10,
                       sparsity=0.8, distribution="erk", init_batches=batches)
    for sal, mask, k in zip(expected, s.masks, s.targets):
        assert int(mask.sum()) == k
        assert sal[mask].min() > sal[~mask].max()
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))  # batch-norm statistics untouched
    assert all(p.grad is None for p in model.parameters())


def test_snip_global_uses_one_threshold_over_all_layers():
    torch.manual_seed(0)
    model = tiny_mlp()
    expected = saliency(model, [batch(1)])
    model.zero_grad()
    s = methods.create("snip", model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10,
                       sparsity=0.9, distribution="uniform", dense_first=False, snip_scope="global",
                       init_batches=[batch(1)])
    kept = torch.cat([sal[m] for sal, m in zip(expected, s.masks)])
    dropped = torch.cat([sal[~m] for sal, m in zip(expected, s.masks)])
    assert kept.min() > dropped.max()
    assert sum(s.counts) == sum(s.targets)
    assert s.counts != s.targets  # layers get different densities under one threshold


def test_snip_needs_batches():
    model = tiny_mlp()
    with pytest.raises(ValueError, match="snip needs init_batches"):
        methods.create("snip", model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10)


def test_gmp_follows_the_cubic_schedule():
    torch.manual_seed(0)
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    s = methods.create("gmp", model, opt, total_steps=1000, sparsity=0.9, distribution="uniform",
                       dense_first=False, gmp_start=0.2, gmp_stop=0.75, gmp_every=10)
    sizes, finals = s.sizes, s.targets
    seen = {}
    for t in range(1000):
        info = train_step(model, s, opt, t)
        seen[t] = list(info.counts)
        if info.updated:
            for n, final, count in zip(sizes, finals, s.counts):
                p = (t - 200) / 550
                assert count == round(n - 0.9 * (1 - (1 - p) ** 3) * n) or count == final + round((n - final) * (1 - p) ** 3)
    assert all(seen[t] == sizes for t in range(201))  # dense until pruning starts (pruning at 200 removes nothing)
    p = (490 - 200) / 550  # step 500 trains with the masks of the prune at step 490
    assert seen[500] == [final + round((n - final) * (1 - p) ** 3) for n, final in zip(sizes, finals)]
    assert seen[751] == finals and s.counts == finals  # the target is reached at gmp_stop
    sparsity = 1 - sum(seen[751]) / sum(sizes)
    assert sparsity == pytest.approx(0.9, abs=1e-3)
