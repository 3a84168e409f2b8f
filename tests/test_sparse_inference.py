"""The exported model's sparse inference: SparseSequential runs consecutive sparse Linear layers (their
ReLUs and the Flatten before them) as one kernel call, through every batch-size path of the C kernels
(sample by sample below 4, padded to 16 below 16, blocks of 128 above), and agrees with the masked dense
model and with the torch fallback. No timing assertions."""
import copy
import pickle
from collections import OrderedDict

import pytest
import torch
from torch import nn

import methods
from benchmark.export import SparseLinear, SparseSequential, masked_dense, sparsify
from benchmark.models import build_model
from methods import sparse_kernels as sk


def sparse_lenet(sparsity=0.95):
    torch.manual_seed(0)
    model = build_model("lenet-300-100", 10, (1, 8, 8))
    s = methods.create("static", model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=1,
                       sparsity=sparsity, distribution="erk")
    masks = dict(zip(s.names, s.masks))
    return masked_dense(model, masks), sparsify(model, masks)


def test_a_hand_computed_chain_with_relu():
    # h = relu(W1 x + b1) = relu([1 - 6 + 0.5, 6 - 1]) = [0, 5]; y = W2 h + b2 = [-5 + 0.25, 10 - 0.5]
    w1 = torch.tensor([[1.0, 0.0, -2.0], [0.0, 3.0, 0.0]])
    w2 = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(3, 2), relu=nn.ReLU(), fc2=nn.Linear(2, 2)))
    with torch.no_grad():
        model.fc1.weight.copy_(w1), model.fc1.bias.copy_(torch.tensor([0.5, -1.0]))
        model.fc2.weight.copy_(w2), model.fc2.bias.copy_(torch.tensor([0.25, -0.5]))
    sparse = sparsify(model, {"fc1": w1 != 0, "fc2": w2 != 0})
    assert isinstance(sparse, SparseSequential) and sparse.fc1.values.tolist() == [1.0, -2.0, 3.0]
    assert sparse._plan() == [(False, [(sparse.fc1, True), (sparse.fc2, False)])]  # one kernel call
    x = torch.tensor([[1.0, 2.0, 3.0]] * 20)
    for n in (1, 2, 3, 5, 16, 20):  # sample by sample, padded to 16, blocked with an overlapping last vector
        assert sparse(x[:n]).tolist() == [[-4.75, 9.5]] * n


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 15, 16, 17, 100, 129, 300])
def test_every_batch_path_matches_the_masked_dense_model(batch):
    reference, sparse = sparse_lenet()
    steps = sparse._plan()
    assert len(steps) == 1 and steps[0][0] is True  # Flatten, fc1, relu1, fc2, relu2, fc3: one call
    assert [relu for _, relu in steps[0][1]] == [True, True, False]
    x = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        y, expected = sparse(x), reference(x)
    assert y.shape == (batch, 10)
    assert (y - expected).abs().max().item() <= 1e-5


def test_the_torch_fallback_computes_the_same(monkeypatch):
    reference, sparse = sparse_lenet(0.8)
    x = torch.randn(33, 1, 8, 8)
    with torch.no_grad():
        fast = sparse(x)
        monkeypatch.setattr(sk, "_fast", lambda *tensors: False)
        fallback = copy.deepcopy(sparse)(x)  # a copy holds no kernel arguments: it prepares its own
    assert (fast - fallback).abs().max().item() <= 1e-5
    assert (fallback - reference(x)).abs().max().item() <= 1e-5


def test_moved_or_replaced_weights_are_used_and_copies_work():
    reference, sparse = sparse_lenet()
    x = torch.randn(7, 1, 8, 8)
    with torch.no_grad():
        sparse(x)  # prepares the kernel arguments
        doubled = sparse.double()  # float64: the torch path, on the new tensors
        assert (doubled(x.double()) - reference.double()(x.double())).abs().max().item() <= 1e-10
        sparse.float()
        state = {k: v.clone() for k, v in sparse.state_dict().items()}
        state["fc3.bias"] += 1.0
        sparse.load_state_dict(state, assign=True)  # new tensors: the next call prepares again
        assert (sparse(x) - reference.float()(x) - 1.0).abs().max().item() <= 1e-5
        again = pickle.loads(pickle.dumps(sparse))
        assert torch.equal(again(x), sparse(x))


def test_a_lone_sparse_linear_and_bad_shapes():
    torch.manual_seed(0)
    layer = nn.Linear(20, 6)
    mask = torch.rand(6, 20) < 0.3
    sparse = SparseLinear.from_dense(layer, mask)
    x = torch.randn(2, 5, 20)  # leading dimensions are kept
    with torch.no_grad():
        expected = nn.functional.linear(x, layer.weight * mask, layer.bias)
        assert (sparse(x) - expected).abs().max().item() <= 1e-5
    chain = sk.InferenceChain([(sparse.crow, sparse.col, sparse.values, sparse.bias, False)], 20)
    with pytest.raises(ValueError, match=r"expected inputs of shape \(n, 20\), got \(3, 19\)"):
        chain(torch.randn(3, 19))
