"""The sparse-kernel execution (`execution="sparse"`) trains the same model as masked-dense execution.

Tolerance: the kernels add each output's products in another order than the dense GEMM (row by row over
the active weights instead of MKL's blocked order), so float32 results differ by rounding: a sum of n
products differs by at most about n * 2^-24 relative (n <= 64 here: 4e-6), in practice a few 1e-8,
and the difference compounds slowly over a few dozen steps. Losses are compared step by step with a
relative tolerance of 1e-5 and final weights with an absolute one of 1e-5 (weights are O(0.1)). Masks
must be equal after every update: the grow and drop scores (|dense gradient|, |weight|) of these seeded
runs have no near-ties at the top-k boundary closer than the rounding differences (checked: they pass
with margin), so no choice flips; counts are exact.
"""
import copy

import pytest
import torch
from torch import nn

import methods
from methods import sparse_kernels as sk
from methods.sparse_execution import SparseKernelLinear, SparseKernels

STEPS = 30


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))


def convnet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def train(execution, method="rigl", optimizer="sgd", model=mlp, steps=STEPS, batch=20, **settings):
    """(model, sparsifier, optimizer, losses, masks after each update) of a seeded run."""
    torch.manual_seed(0)
    net = model()
    opt = (torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
           if optimizer == "sgd" else torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=5e-4))
    settings = {"sparsity": 0.9, "delta_t": 5, "distribution": "uniform", "dense_first": False, **settings}
    s = methods.create(method, net, opt, total_steps=steps, execution=execution, **settings)
    g = torch.Generator().manual_seed(1)
    losses, masks = [], []
    for _ in range(steps):
        x, y = torch.randn(batch, 1, 8, 8, generator=g), torch.randint(0, 10, (batch,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        info = s.step()
        losses.append(loss.item())
        if info.updated:
            masks.append([m.clone() for m in s.masks])
            assert s.counts == [int(m.sum()) for m in s.masks]
    return net, s, opt, losses, masks


def assert_same_training(a, b):
    net_a, s_a, _, losses_a, masks_a = a
    net_b, s_b, _, losses_b, masks_b = b
    assert losses_b == pytest.approx(losses_a, rel=1e-5)
    assert len(masks_a) == len(masks_b)
    for update_a, update_b in zip(masks_a, masks_b):
        assert all(torch.equal(m, n) for m, n in zip(update_a, update_b))
    assert s_a.counts == s_b.counts
    for (name, p), q in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        assert torch.allclose(p, q, rtol=0, atol=1e-5), name


@pytest.mark.parametrize("method,optimizer", [("rigl", "sgd"), ("rigl", "adamw"), ("set", "sgd"), ("static", "sgd"),
                                              ("snfs", "sgd"), ("gmp", "sgd"), ("dsr", "adamw")])
def test_the_same_model_trains_as_with_masked_dense_execution(method, optimizer):
    masked = train("masked", method, optimizer)
    sparse = train("sparse", method, optimizer)
    assert sparse[1].execution.kernel_layers() == [0, 1, 2]  # every layer ends on kernels at 90%
    assert_same_training(masked, sparse)


def test_kernel_layers_hold_only_active_values_gradients_and_optimizer_state():
    net, s, opt, _, _ = train("sparse", "rigl", steps=12)
    params = {id(p) for group in opt.param_groups for p in group["params"]}
    for i in s.execution.kernel_layers():
        layer, weight = s.execution.layers[i], s.weights[i]
        assert id(weight) not in params and id(layer.values) in params and weight.grad is None
        assert layer.values.numel() == s.counts[i] == layer.values.grad.numel()
        assert opt.state[layer.values]["momentum_buffer"].numel() == s.counts[i]
        # the dense weight mirrors the values: trained values at the active positions, zeros elsewhere
        assert torch.equal(weight.detach().view(-1)[layer.structure.positions], layer.values.detach())
        assert int((weight != 0).sum()) <= s.counts[i] and not weight[~s.masks[i]].any()
        assert isinstance(s.execution.modules[i], SparseKernelLinear)


def test_layers_denser_than_max_density_conv_layers_and_deepr_train_masked_dense():
    net, s, *_ = train("sparse", "static", model=convnet, distribution="custom",
                       layer_sparsity=(0.9, 0.5, 0.9), steps=3)
    assert s.execution.kernel_layers() == [2]  # the conv and the 50%-dense Linear layer stay masked-dense
    assert [type(m) for m in net if isinstance(m, nn.Linear)] == [nn.Linear, SparseKernelLinear]
    masked, sparse = train("masked", "deepr", steps=8), train("sparse", "deepr", steps=8)
    assert sparse[1].execution.kernel_layers() == []  # deepr writes weights outside the optimizer
    assert_same_training(masked, sparse)


def test_gmp_moves_layers_onto_kernels_when_pruning_crosses_max_density():
    torch.manual_seed(0)
    net = mlp()
    s = methods.create("gmp", net, torch.optim.SGD(net.parameters(), lr=0.1), total_steps=STEPS, execution="sparse",
                       sparsity=0.9)
    assert s.execution.kernel_layers() == []  # dense phase: dense kernels
    net, s, opt, _, _ = train("sparse", "gmp")
    assert s.execution.kernel_layers() == [0, 1, 2] and SparseKernels.max_density == 0.4


def test_a_checkpoint_resumes_the_same_training(tmp_path):
    straight = train("sparse", "rigl", steps=20)[3]
    assert _run_split(tmp_path) == straight  # bit for bit: the same kernels, state in the same order


def _run_split(tmp_path):
    """Train 10 steps, checkpoint, build everything anew, load, train 10 more: the 20 losses."""
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(20, 1, 8, 8, generator=g), torch.randint(0, 10, (20,), generator=g)) for _ in range(20)]

    def build():
        torch.manual_seed(0)
        net = mlp()
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        s = methods.create("rigl", net, opt, total_steps=20, execution="sparse", sparsity=0.9, delta_t=5,
                           distribution="uniform", dense_first=False)
        return net, opt, s

    def steps(net, opt, s, batches):
        out = []
        for x, y in batches:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            s.step()
            out.append(loss.item())
        return out

    net, opt, s = build()
    losses = steps(net, opt, s, data[:10])
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "sparsifier": s.state_dict()},
               tmp_path / "ckpt.pt")
    net, opt, s = build()
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    net.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    s.load_state_dict(ckpt["sparsifier"])
    return losses + steps(net, opt, s, data[10:])


def test_copies_of_the_model_compute_densely_with_the_mirrored_weights():
    net, s, *_ = train("sparse", "rigl", steps=7)
    x = torch.randn(5, 1, 8, 8)
    clone = copy.deepcopy(net)
    with torch.no_grad():
        assert torch.allclose(clone(x), net(x), atol=1e-6)
    assert clone[1].__dict__.get("_sparse_handle") is None


def test_the_torch_fallback_trains_the_same_model(monkeypatch):
    compiled = train("sparse", "rigl", steps=12)
    monkeypatch.setattr(sk, "_fast", lambda *tensors: False)
    fallback = train("sparse", "rigl", steps=12)
    assert_same_training(compiled, fallback)


@pytest.mark.parametrize("n", [1, 8, 16, 20, 100, 150])
@pytest.mark.parametrize("fast", [True, False])
def test_kernels_compute_the_dense_products(n, fast, monkeypatch):
    if not fast:
        monkeypatch.setattr(sk, "_fast", lambda *tensors: False)
    g = torch.Generator().manual_seed(n)
    out, inp = 37, 53
    mask = torch.rand(out, inp, generator=g) < 0.2
    mask[3] = False  # an empty row
    mask[:, 5] = False  # an empty column
    w = torch.randn(out, inp, generator=g) * mask
    positions = mask.view(-1).nonzero().squeeze(1)
    s = sk.Structure(positions, (out, inp))
    values = w.view(-1)[positions].contiguous()
    x, gy, bias = torch.randn(n, inp, generator=g), torch.randn(n, out, generator=g), torch.randn(out, generator=g)
    xt, gt = x.t().contiguous(), gy.t().contiguous()
    assert torch.allclose(sk.forward(s, values, xt, bias), (x @ w.t() + bias).t(), atol=1e-5)
    assert torch.allclose(sk.forward(s, values, xt, None), (x @ w.t()).t(), atol=1e-5)
    assert torch.allclose(sk.input_grad(s, values, gt), (gy @ w).t(), atol=1e-5)
    assert torch.allclose(sk.weight_grad(s, gt, xt), (gy.t() @ x).view(-1)[positions], atol=1e-4)
    dense = torch.zeros(out, inp)
    sk.scatter(s, values, dense)
    assert torch.equal(dense, w)


def test_the_kernels_build_from_source(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_KERNELS_DIR", str(tmp_path))
    path = sk.build()
    assert path.parent == tmp_path and path.exists() and sk.build() == path  # cached: built once
