"""Compact sparse layers (`methods.compact`): models too large to hold densely train on their active weights
only, with the dense model's products, RigL's growth by the largest dense gradient and exact counts; the
harness refuses such a model before allocating it."""
import resource

import pytest
import torch
from torch import nn

import benchmark.memory
from benchmark.cli import main
from examples.huge_sparse_mlp import main as example_main
from methods.compact import CompactLinear, CompactRigL, compact_mlp, sample_positions


def test_positions_are_exact_distinct_sorted_and_uniform():
    g = torch.Generator().manual_seed(0)
    hits = torch.zeros(20)
    for _ in range(2000):
        p = sample_positions(20, 5, g)
        assert p.numel() == 5 and bool((p[1:] > p[:-1]).all()) and 0 <= int(p[0]) and int(p[-1]) < 20
        hits[p] += 1
    # each position is chosen with probability 1/4: 500 of 2000 draws, standard deviation 19.4
    assert hits.sum() == 10000 and 420 < hits.min() and hits.max() < 580
    big = sample_positions(10**12, 1000, g)  # O(count): a trillion positions cost nothing
    assert big.numel() == 1000 and big.unique().numel() == 1000 and int(big[-1]) < 10**12


def _layer_and_batch():
    torch.manual_seed(0)
    layer = CompactLinear(30, 20, 60, torch.Generator().manual_seed(1))
    x = torch.randn(8, 30, requires_grad=True)
    return layer, x


def test_a_compact_layer_computes_the_masked_dense_layer():
    layer, x = _layer_and_batch()
    weight = layer.dense_weight().requires_grad_()
    assert int((weight != 0).sum()) == 60 and layer.count == 60
    x_ref = x.detach().clone().requires_grad_()
    target = torch.randn(8, 20)
    ((layer(x) - target) ** 2).sum().backward()
    ((nn.functional.linear(x_ref, weight, layer.bias.detach()) - target) ** 2).sum().backward()
    positions = layer.structure.positions
    torch.testing.assert_close(layer.values.grad, weight.grad.view(-1)[positions], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)


def test_growth_takes_the_largest_dense_gradients_outside_the_kept_weights_block_by_block():
    layer, x = _layer_and_batch()
    weight = layer.dense_weight().requires_grad_()
    target = torch.randn(8, 20)
    ((layer(x) - target) ** 2).sum().backward()
    ((nn.functional.linear(x.detach(), weight, layer.bias.detach()) - target) ** 2).sum().backward()
    kept = layer.structure.positions[::2]  # 30 of the 60 active positions
    scores = weight.grad.abs().view(-1).clone()
    scores[kept] = -1
    expected = set(scores.topk(7).indices.tolist())
    for block_bytes in (4 * 30, 4 * 30 * 7, 2**20):  # one row per block, 7 rows, the whole layer
        assert set(layer.largest_gradient(7, kept, block_bytes).tolist()) == expected


def test_drop_grow_drops_the_smallest_grows_the_largest_gradient_and_carries_kept_state():
    layer, x = _layer_and_batch()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    weight = layer.dense_weight().requires_grad_()
    target = torch.randn(8, 20)
    ((layer(x) - target) ** 2).sum().backward()
    ((nn.functional.linear(x.detach(), weight, layer.bias.detach()) - target) ** 2).sum().backward()
    momentum = torch.randn(60)
    optimizer.state[layer.values]["momentum_buffer"] = momentum.clone()
    positions, values = layer.structure.positions.clone(), layer.values.detach().clone()
    kept = positions[values.abs().argsort()[10:]].sort().values  # all but the 10 of smallest magnitude
    scores = weight.grad.abs().view(-1).clone()
    scores[kept] = -1
    grown = scores.topk(10).indices
    layer.drop_grow(10, optimizer, block_bytes=4 * 30 * 3)
    new = layer.structure.positions
    assert torch.equal(new, torch.cat([kept, grown]).sort().values) and layer.count == 60
    at_kept = torch.searchsorted(new, kept)
    was = torch.searchsorted(positions, kept)
    assert torch.equal(layer.values.detach()[at_kept], values[was])
    assert torch.equal(optimizer.state[layer.values]["momentum_buffer"][at_kept], momentum[was])
    regrown = ~torch.isin(new, kept)
    assert bool((layer.values.detach()[regrown] == 0).all())
    assert bool((optimizer.state[layer.values]["momentum_buffer"][regrown] == 0).all())


def test_compact_rigl_updates_on_its_schedule_with_exact_counts():
    model = compact_mlp([64, 100, 100, 10], 0.9, "uniform", seed=3)
    compact = [m for m in model if isinstance(m, CompactLinear)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rigl = CompactRigL(model, optimizer, total_steps=8, delta_t=3, t_end=1.0)
    assert rigl.counts() == [640, 1000, 100]  # round(0.1 * 6400), round(0.1 * 10000), round(0.1 * 1000)
    x, y = torch.randn(16, 64), torch.randint(10, (16,))
    for t in range(8):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        before = [m.structure.positions.clone() for m in compact]
        assert rigl.step() == (t in (3, 6)) and rigl.counts() == [640, 1000, 100]
        # drop fraction 0.3 / 2 * (1 + cos(pi t / 8)): 0.2074 at t = 3, 0.0439 at t = 6 (k = 132, 207, 20; 28, 43, 4)
        changed = [int((~torch.isin(m.structure.positions, b)).sum()) for m, b in zip(compact, before)]
        assert all(0 <= c <= k for c, k in zip(changed, {3: (132, 207, 20), 6: (28, 43, 4)}.get(t, (0, 0, 0))))
        assert (sum(changed) > 0) == (t in (3, 6))


def test_the_example_trains_a_small_instance_of_the_huge_model(capsys):
    assert example_main(["--dataset", "digits", "--hidden", "300", "--layers", "2", "--steps", "16",
                         "--delta-t", "5", "--batch-size", "50", "--sparsity", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "mlp-300x2 on digits: 112,810 weights dense" in out  # 64*300+300 + 300*300+300 + 300*10+10
    assert out.count("(mask update)") == 2 and "per-layer counts exact: True" in out


def test_the_harness_refuses_a_model_whose_dense_state_does_not_fit_before_allocating(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(benchmark.memory, "available_bytes", lambda device: 24 * 2**30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = main(["run", "--model", "mlp-40000x3", "--dataset", "mnist", "--methods", "rigl", "--sparsity", "0.99",
                 "--execution", "sparse", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: model mlp-40000x3 has 3,231,880,010 ")
    assert "needs 36.1 GiB and cpu has 24.0 GiB available" in err and "sparse-kernel execution" in err
    assert not (tmp_path / "out").exists()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 2**20  # KiB: under 1 GiB more, of 36


@pytest.mark.parametrize("argv, message", [
    (["--hidden", "0"], "--hidden must be >= 1"),
    (["--sparsity", "1"], "need --sparsity in [0, 1)"),
])
def test_the_example_refuses_bad_numbers(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        example_main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and message in err
