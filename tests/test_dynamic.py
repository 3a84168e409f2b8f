"""Drop/grow behaviour of SET, SNFS and RigL, and the update schedule."""
import math

import pytest
import torch
from torch import nn

import methods
from methods.schedules import DropGrowSchedule


def single_layer(method, *, lr=0.0, **overrides):
    """A 10x10 linear layer at 50% sparsity whose step 100 is a mask update (delta_t 100, t_end 750)."""
    torch.manual_seed(0)
    layer = nn.Linear(10, 10, bias=False)
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9)
    s = methods.create(method, layer, opt, total_steps=1000, sparsity=0.5, distribution="uniform",
                       dense_first=False, **overrides)
    return layer, opt, s


def set_weights_by_rank(layer, mask):
    """Active weights get magnitudes 1..50 in a scrambled but known order; returns that order."""
    active = mask.flatten().nonzero().flatten()
    order = active[torch.randperm(len(active), generator=torch.Generator().manual_seed(1))]
    w = torch.zeros(100)
    w[order] = torch.arange(1, len(order) + 1, dtype=torch.float) * torch.tensor([1.0, -1.0]).repeat(25)
    layer.weight.data.copy_(w.view(10, 10))
    return order  # order[:k] are the k smallest magnitudes


def test_rigl_drops_smallest_and_grows_largest_dense_gradient():
    layer, opt, s = single_layer("rigl")
    mask = s.masks[0].clone()
    order = set_weights_by_rank(layer, mask)
    inactive = (~mask).flatten().nonzero().flatten()
    grad = torch.zeros(100)
    grad[inactive] = torch.linspace(0.1, 5.0, len(inactive)) * torch.tensor([1.0, -1.0]).repeat(25)
    opt.state[layer.weight]["momentum_buffer"] = torch.ones(10, 10) * mask  # stale momentum on active weights
    s.t = 100
    layer.weight.grad = grad.view(10, 10).clone()
    info = s.step()

    k = int(0.3 / 2 * (1 + math.cos(math.pi * 100 / 750)) * 50)
    assert info.updated and info.dense_backward and info.grown == k == 14
    new = s.masks[0].flatten()
    dropped, grown = order[:k], inactive[-k:]  # largest |grad| are the last inactive positions
    assert not new[dropped].any() and new[grown].all()
    assert int(new.sum()) == 50
    assert torch.all(layer.weight.flatten()[grown] == 0)
    momentum = opt.state[layer.weight]["momentum_buffer"].flatten()
    assert torch.all(momentum[grown] == 0) and torch.all(momentum[dropped] == 0)
    kept = order[k:]
    assert torch.all(layer.weight.flatten()[kept] == torch.arange(k + 1, 51).float() * torch.tensor([1.0, -1.0]).repeat(25)[k:])


def test_rigl_regrown_connection_keeps_its_value():
    layer, opt, s = single_layer("rigl")
    order = set_weights_by_rank(layer, s.masks[0])
    before = layer.weight.detach().clone()
    grad = (~s.masks[0]).flatten().float()  # inactive positions outrank the other dropped ones
    grad[order[:3]] = 100.0  # the three smallest weights are dropped, then win the grow score
    s.t = 100
    layer.weight.grad = grad.view(10, 10)
    info = s.step()
    assert s.masks[0].flatten()[order[:3]].all()
    assert torch.equal(layer.weight.flatten()[order[:3]], before.flatten()[order[:3]])
    assert info.grown == 14 - 3


def test_snfs_grows_where_gradient_momentum_is_largest():
    layer, opt, s = single_layer("snfs")
    mask = s.masks[0].clone()
    inactive = (~mask).flatten().nonzero().flatten()
    favourite = inactive[:14]
    for t in range(101):
        grad = torch.full((100,), 0.01)
        grad[favourite] = 1.0 if t < 90 else 0.0  # the average remembers them after they stop
        layer.weight.grad = grad.view(10, 10)
        info = s.step()
    assert info.updated and info.dense_backward
    assert s.masks[0].flatten()[favourite].all()


def test_set_growth_is_random_but_keyed_on_seed():
    masks = []
    for seed in (0, 0, 1):
        layer, opt, s = single_layer("set", seed=seed)
        set_weights_by_rank(layer, s.masks[0])
        s.t = 100
        layer.weight.grad = torch.zeros(10, 10)
        s.step()
        masks.append(s.masks[0])
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


@pytest.mark.parametrize("anneal,expected", [
    ("cosine", lambda t: 0.3 / 2 * (1 + math.cos(math.pi * t / 750))),
    ("linear", lambda t: 0.3 * (1 - t / 750)),
    ("constant", lambda t: 0.3),
])
def test_drop_fraction_follows_anneal(anneal, expected):
    schedule = DropGrowSchedule(delta_t=100, t_end=750, alpha=0.3, anneal=anneal)
    for t in (100, 200, 300, 500, 700):
        assert schedule.fraction(t) == pytest.approx(expected(t), rel=1e-12)
        assert schedule.drop_count(t, 1000) == int(expected(t) * 1000)
    assert schedule.fraction(0) == pytest.approx(0.3)


def test_updates_every_delta_t_and_never_after_t_end():
    layer, opt, s = single_layer("rigl", delta_t=50, t_end=0.3)
    updated = []
    for t in range(1000):
        layer.weight.grad = torch.randn(10, 10, generator=torch.Generator().manual_seed(t))
        if s.step().updated:
            updated.append(t)
    assert updated == [50, 100, 150, 200, 250]


def test_skip_step_on_update_leaves_weights_untouched_on_update_steps():
    layer, opt, s = single_layer("rigl", lr=0.1, skip_step_on_update=True, alpha=0.0)
    s.t = 100
    before = layer.weight.detach().clone()
    layer.weight.grad = torch.ones(10, 10)
    assert s.step().updated
    assert torch.equal(layer.weight, before)
    layer.weight.grad = torch.ones(10, 10)
    s.step()  # step 101 is ordinary: the optimizer moves the active weights
    assert torch.equal(layer.weight != before, s.masks[0])


def reference_rigl_masks(weight: torch.Tensor, mask: torch.Tensor, grad: torch.Tensor, k: int) -> torch.Tensor:
    """RigL's update as the paper writes it, on dense tensors and without any of the fast path's
    machinery: drop the k active weights of smallest magnitude, then grow the k positions, among those
    not kept, of largest gradient magnitude."""
    drop_score = torch.where(mask, weight.abs(), torch.inf).flatten()
    kept = mask.flatten().clone()
    kept[drop_score.topk(k, largest=False).indices] = False
    grow_score = torch.where(kept, -torch.inf, grad.abs().flatten())
    new = kept.clone()
    new[grow_score.topk(k).indices] = True
    return new.view_as(mask)


def test_rigl_matches_the_plain_reference_update():
    torch.manual_seed(3)
    layer = nn.Linear(60, 40, bias=False)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)  # plain SGD: w - 0.1 g on the active weights
    s = methods.create("rigl", layer, opt, total_steps=1000, sparsity=0.8, distribution="uniform", dense_first=False,
                       delta_t=10, t_end=0.5)
    updates = 0
    for t in range(200):
        layer.weight.grad = torch.randn(40, 60)  # continuous values: no ties for either top-k
        before, grad = s.masks[0].clone(), layer.weight.grad.clone()
        weight = layer.weight.detach() - 0.1 * grad * before  # what the update sees: after the optimizer step
        k = s.schedule.drop_count(t, int(before.sum())) if s.is_update_step(t) else 0
        info = s.step()
        if info.updated:
            updates += 1
            assert torch.equal(s.masks[0], reference_rigl_masks(weight, before, grad, k)), t
    assert updates == 19 and int(s.masks[0].sum()) == 480  # updates after steps 10, 20, ..., 190; 20% of 2400
