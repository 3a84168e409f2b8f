"""FLOP accounting (spec section 5): measured forward FLOPs, per-step counting from live masks,
the schedule-only plan, the spec's closed forms, and the paper's ImageNet/ResNet-50 numbers."""
from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import methods
from benchmark import flops

REL = 1e-6


def lenet_300_100() -> nn.Module:
    return nn.Sequential(OrderedDict(
        flatten=nn.Flatten(), fc1=nn.Linear(784, 300), relu1=nn.ReLU(),
        fc2=nn.Linear(300, 100), relu2=nn.ReLU(), fc3=nn.Linear(100, 10),
    ))


def lenet_5() -> nn.Module:
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 20, 5), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(20, 50, 5), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(), fc1=nn.Linear(800, 500), relu3=nn.ReLU(), fc2=nn.Linear(500, 10),
    ))


def close(a: float, b: float, rel: float = REL) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


# ----- forward FLOPs ----------------------------------------------------------------------------


def test_mlp_forward_flops_are_two_per_multiply_add():
    measured = flops.forward_flops(lenet_300_100(), (1, 28, 28))
    assert measured == {"fc1": 2 * 784 * 300, "fc2": 2 * 300 * 100, "fc3": 2 * 100 * 10}
    assert flops.dense_forward(lenet_300_100(), (784,)) == 2 * (784 * 300 + 300 * 100 + 100 * 10)


def test_conv_forward_flops_match_hand_count_and_exclude_other_ops():
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1), bn1=nn.BatchNorm2d(8), relu1=nn.ReLU(),  # 16x16 -> 16x16
        conv2=nn.Conv2d(8, 16, 5, stride=2, bias=False), relu2=nn.ReLU(),  # 16x16 -> 6x6
        dw=nn.Conv2d(16, 16, 3, padding=1, groups=16),  # depthwise, 6x6
        pool=nn.MaxPool2d(2), flatten=nn.Flatten(),  # 3x3
        fc=nn.Linear(16 * 3 * 3, 10),
    ))
    expected = {
        "conv1": 2 * 8 * 3 * 3 * 3 * 16 * 16,
        "conv2": 2 * 16 * 8 * 5 * 5 * 6 * 6,
        "dw": 2 * 16 * 1 * 3 * 3 * 6 * 6,
        "fc": 2 * 144 * 10,
    }
    assert flops.forward_flops(model, (3, 16, 16)) == expected
    extra = flops.extra_flops(model, (3, 16, 16))
    assert extra["batch_norm"] == 2 * 8 * 16 * 16  # eval-mode scale and shift
    assert extra["max_pool2d"] == 16 * 3 * 3 * 4
    assert "conv" not in extra and "linear" not in extra


def _flop_counter_mode_total(model: nn.Module, input_shape) -> float:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape))
    ops = counter.get_flop_counts()["Global"]
    layer_ops = {torch.ops.aten.convolution, torch.ops.aten.addmm, torch.ops.aten.mm}
    assert set(ops) <= layer_ops, f"unexpected ops {set(ops) - layer_ops}"
    return float(sum(ops.values()))


@pytest.mark.parametrize("name, build, input_shape", [
    ("lenet-5", lenet_5, (1, 28, 28)),
    ("resnet18", lambda: torchvision.models.resnet18(num_classes=10), (3, 32, 32)),
    ("resnet50-small-input", lambda: torchvision.models.resnet50(num_classes=10), (3, 64, 64)),
])
def test_forward_flops_agree_with_torch_flop_counter(name, build, input_shape):
    torch.manual_seed(0)
    model = build()
    assert sum(flops.forward_flops(model, input_shape).values()) == _flop_counter_mode_total(model, input_shape)


def test_forward_flops_restores_modes_and_is_silent():
    model = torchvision.models.resnet18(num_classes=10)
    model.train()
    model.layer1.eval()  # a mixed state must come back exactly
    before = {name: m.training for name, m in model.named_modules()}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flops.forward_flops(model, (3, 32, 32))
    assert caught == []
    assert {name: m.training for name, m in model.named_modules()} == before
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())  # BN statistics untouched


# ----- counter ----------------------------------------------------------------------------------


def test_counter_scales_sparse_layers_only():
    model = lenet_300_100()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    # fc1 dense (as uniform's first layer), fc2 and fc3 sparse
    s = methods.create("static", model, opt, total_steps=10, sparsity=0.9, distribution="uniform")
    counter = flops.FlopCounter.for_sparsifier(s, (784,))
    f_d = 2 * (784 * 300 + 300 * 100 + 100 * 10)
    assert counter.model_dense_forward == counter.reference_forward == f_d
    assert counter.forward(s.sizes) == f_d
    assert close(counter.forward(s.counts), 2 * 784 * 300 + 2 * (3000 + 100))  # round(0.1 * N) per sparse layer
    # a conv/linear module that is not a sparse layer counts fully
    only_fc2 = flops.FlopCounter(flops.forward_flops(model, (784,)), ["fc2"], [300 * 100])
    assert only_fc2.forward([0]) == 2 * (784 * 300 + 100 * 10)
    assert only_fc2.train_step([15000], False) == 3 * (f_d - 30000)
    assert only_fc2.train_step([15000], True) == 2 * (f_d - 30000) + f_d
    assert only_fc2.dense_step() == 3 * f_d
    with pytest.raises(ValueError, match="no forward FLOPs"):
        flops.FlopCounter({"fc1": 1.0}, ["fc2"], [10])


# ----- real runs, plans and the spec's closed forms ---------------------------------------------

STEPS, DELTA_T, T_END = 300, 10, 0.5
GMP = dict(gmp_start=0.2, gmp_stop=0.6, gmp_every=20)  # prune at 60, 80, ..., 180


def _make(method: str, **overrides):
    torch.manual_seed(0)
    model = lenet_300_100()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(123)
    batch = (torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g))
    settings = dict(total_steps=STEPS, sparsity=0.9, distribution="erk", delta_t=DELTA_T, t_end=T_END, **GMP)
    settings.update(overrides)
    return model, opt, methods.create(method, model, opt, init_batches=[batch], **settings)


def _train(model, opt, sparsifier, counter):
    acc = counter.accumulator()
    g = torch.Generator().manual_seed(7)
    planned_ok = True
    for t in range(sparsifier.total_steps):
        x, y = torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        info = sparsifier.step()
        planned_ok &= list(info.counts) == sparsifier.planned_counts(t)
        acc.step(info)
    return acc, planned_ok


def _closed_form(method: str, sparsifier, f_s: float, f_d: float, counter) -> float:
    """Total per-sample training FLOPs from the spec's formulas (section 5), without the sparsifier's schedule."""
    if method in ("static", "set", "snip"):
        return STEPS * 3 * f_s
    if method == "dense":
        return STEPS * 3 * f_d
    if method == "snfs":
        return STEPS * (2 * f_s + f_d)
    if method == "rigl":
        t_end = math.floor(T_END * STEPS)
        updates = (t_end - 1) // DELTA_T  # update steps t = delta_t, 2 delta_t, ... < t_end
        # 3 f_S on ordinary steps, 2 f_S + f_D on update steps
        return (STEPS - updates) * 3 * f_s + updates * (2 * f_s + f_d)
    if method == "gmp":
        start, stop, every = (math.floor(GMP["gmp_start"] * STEPS), math.floor(GMP["gmp_stop"] * STEPS),
                              GMP["gmp_every"])
        prunes = sorted(set(range(start, stop + 1, every)) | {stop})
        total = 0.0
        for t in range(STEPS):
            done = [p for p in prunes if p < t]  # pruning after step p changes the masks from step p + 1
            if not done:
                counts = sparsifier.sizes
            else:
                p = (done[-1] - start) / (stop - start)
                counts = [k + round((n - k) * (1 - p) ** 3) for n, k in zip(sparsifier.sizes, sparsifier.targets)]
            total += 3 * counter.forward(counts)
        return total
    raise AssertionError(method)


@pytest.mark.parametrize("method", ["dense", "static", "snip", "set", "snfs", "rigl", "gmp"])
def test_real_run_equals_plan_and_closed_form(method):
    model, opt, sparsifier = _make(method)
    counter = flops.FlopCounter.for_sparsifier(sparsifier, (1, 28, 28))
    planned = flops.plan(sparsifier, counter, reference_steps=STEPS)
    acc, planned_counts_ok = _train(model, opt, sparsifier, counter)
    run = acc.summary(STEPS, sparsifier.counts)
    assert planned_counts_ok, "the live counts of some step differ from planned_counts"
    assert run.steps == planned.steps == STEPS
    for field in ("train_flops_per_sample", "sparse_forward", "train_multiplier", "inference_multiplier"):
        assert close(getattr(run, field), getattr(planned, field)), field
    f_d = counter.model_dense_forward
    f_s = counter.forward(sparsifier.targets)
    assert close(run.sparse_forward, f_s)
    assert close(run.train_flops_per_sample, _closed_form(method, sparsifier, f_s, f_d, counter))
    if method == "dense":
        assert run.train_multiplier == pytest.approx(1.0, rel=REL) and run.inference_multiplier == 1.0
    if method == "rigl":  # while updates run: (3 f_S (delta_t - 1) + 2 f_S + f_D) / delta_t per step
        assert run.train_flops_per_sample > STEPS * 3 * f_s


def test_plan_of_160k_steps_is_fast_and_equals_the_per_step_sum():
    for method in ("rigl", "gmp", "snfs"):
        _, _, s = _make(method, total_steps=160_000, t_end=0.75, delta_t=100, gmp_start=0.3,
                        gmp_stop=0.8, gmp_every=1000)
        counter = flops.FlopCounter(flops.forward_flops(lenet_300_100(), (784,)), s.names, s.sizes)
        start = time.perf_counter()
        summary = flops.plan(s, counter, reference_steps=32_000)
        assert time.perf_counter() - start < 5.0
        naive = sum(counter.train_step(s.planned_counts(t), s.uses_dense_gradient(t)) for t in range(160_000))
        assert close(summary.train_flops_per_sample, naive), method
        assert summary.train_multiplier == pytest.approx(naive / (32_000 * counter.dense_step()), rel=REL)


def test_summary_is_json_and_reports_snip_init_and_absolute_flops_separately():
    _, _, s = _make("snip")
    counter = flops.FlopCounter(flops.forward_flops(lenet_300_100(), (784,)), s.names, s.sizes)
    without = flops.plan(s, counter, reference_steps=STEPS)
    summary = flops.plan(s, counter, reference_steps=STEPS, snip_init_samples=200, batch_size=100)
    json.dumps(dataclasses.asdict(summary))
    assert summary.train_flops_per_sample == without.train_flops_per_sample  # init never in train FLOPs
    assert summary.init_flops == 3 * counter.model_dense_forward * 200
    assert summary.init_flops_per_sample == summary.init_flops / 100
    assert summary.train_flops == summary.train_flops_per_sample * 100
    assert summary.total_flops() == summary.train_flops + summary.init_flops
    assert without.init_flops == 0 and without.train_flops is None


def test_accumulator_resumes_from_state_dict():
    _, _, s = _make("rigl")
    counter = flops.FlopCounter(flops.forward_flops(lenet_300_100(), (784,)), s.names, s.sizes)
    whole, first = counter.accumulator(), counter.accumulator()
    for t in range(STEPS):
        whole.add(s.planned_counts(t), s.uses_dense_gradient(t))
        if t < 123:
            first.add(s.planned_counts(t), s.uses_dense_gradient(t))
    resumed = counter.accumulator()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for t in range(123, STEPS):
        resumed.add(s.planned_counts(t), s.uses_dense_gradient(t))
    assert resumed.steps == whole.steps and close(resumed.total, whole.total)
