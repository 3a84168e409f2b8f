"""DSR, DeepR and lottery tickets (Lottery+Static, Lottery+RigL): the mask contract, determinism, each
method's defining behaviour, and the lottery pipeline of the harness end to end."""
import io
import json

import pandas as pd
import pytest
import torch

import methods
from benchmark.cli import main
from benchmark.presets import preset_config
from benchmark.data import DATASETS
from benchmark.train import RunInterrupted, plan_run, setup_run, train
from conftest import MODELS, continue_run, tiny_mlp, train_step
from test_invariants import check_contract

NEW = ["dsr", "deepr", "lottery-static", "lottery-rigl"]
OPTIONS = dict(sparsity=0.8, distribution="erk", delta_t=25, total_steps=300)


def build(make_run, method, model="mlp", optimizer="sgd", seed=0, **options):
    """make_run, with lottery methods given the ticket of the initial weights (same counts as a trained one)."""
    if issubclass(methods.method_class(method), methods.LotteryTicket):
        torch.manual_seed(seed)
        net = MODELS[model]()
        config = methods.make_config(**{k: v for k, v in options.items() if k != "total_steps"})
        options["masks"] = methods.ticket_masks(net, net.state_dict(), config)
    return make_run(method, model, optimizer, seed=seed, **options)


@pytest.mark.parametrize("model", ["mlp", "conv"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("method", NEW)
def test_exact_counts_zero_weights_and_zero_state_every_step(make_run, method, optimizer, model):
    net, opt, s = build(make_run, method, model, optimizer, **OPTIONS)
    total = sum(s.targets)
    assert s.counts == s.targets == s.planned_counts(0)
    check_contract(s, opt, s.targets)
    updates = 0
    for t in range(300):
        before = list(s.counts)
        info = train_step(net, s, opt, t)
        assert list(info.counts) == before  # FLOPs are charged from the live counts
        updates += info.updated
        check_contract(s, opt, s.counts)
        assert sum(s.counts) == total  # DSR moves weights between layers; the total stays exact
        if method != "dsr":
            assert s.counts == s.targets == s.planned_counts(t + 1)
    assert s.planned_counts(300) == s.targets  # DSR's plan keeps the initial counts (an estimate)
    assert updates == {"dsr": 8, "lottery-rigl": 8, "deepr": 300}.get(method, 0)


def run(make_run, method, steps, seed=0, start=None):
    net_opt_s = build(make_run, method, "conv", "sgd", seed=seed, sparsity=0.8, distribution="erk", delta_t=20,
                      total_steps=200)
    return continue_run(*net_opt_s, steps, start)


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("method", NEW)
def test_same_seed_is_bit_identical_and_a_state_dict_round_trip_continues_exactly(make_run, method):
    full, _, s_full = run(make_run, method, 200)
    again, _, s_again = run(make_run, method, 200)
    assert same(s_full.masks, s_again.masks) and same(full.state_dict().values(), again.state_dict().values())
    other, _, _ = run(make_run, method, 200, seed=1)
    assert not same(full.state_dict().values(), other.state_dict().values())

    half, opt, s_half = run(make_run, method, 110)
    buffer = io.BytesIO()
    torch.save({"model": half.state_dict(), "optimizer": opt.state_dict(), "sparsifier": s_half.state_dict()}, buffer)
    buffer.seek(0)
    resumed, _, s_resumed = run(make_run, method, 90, seed=7, start=buffer)
    assert s_resumed.t == 200 and same(s_full.masks, s_resumed.masks)
    assert same(full.state_dict().values(), resumed.state_dict().values())


def test_dsr_prunes_by_global_threshold_and_regrows_in_proportion_to_survivors():
    torch.manual_seed(0)
    net = tiny_mlp()  # sparse layers of 2048, 512 and 160 weights: 1024, 256 and 80 active at 50%
    opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9)  # lr 0: weights stay as set
    s = methods.create("dsr", net, opt, total_steps=1000, sparsity=0.5, distribution="uniform", dense_first=False,
                       delta_t=10)
    with torch.no_grad():
        for w, m in zip(s.weights, s.masks):
            w.copy_(m.float())
        tiny = s.masks[1].flatten().nonzero().flatten()[:100]
        s.weights[1].view(-1)[tiny] = 1e-5  # below the initial threshold 1e-3: exactly these are pruned
    for w in s.weights:
        w.grad = torch.ones_like(w)  # momentum buffers become 1 on active weights
    before = [m.clone() for m in s.masks]
    s.t = 10
    info = s.step()

    # 100 pruned, regrown in proportion to survivors 1024 : 156 : 80 = 81.3 : 12.4 : 6.3 -> 81, 13, 6
    assert info.updated and s.counts == [1024 + 81, 156 + 13, 80 + 6] and sum(s.counts) == 1360
    momentum = opt.state[s.weights[1]]["momentum_buffer"].view(-1)
    assert torch.all(s.weights[1].view(-1)[tiny] == 0) and torch.all(momentum[tiny] == 0)  # pruned (or regrown at 0)
    assert s.threshold == 5e-4  # 100 pruned > 1.1 * K (K = 1% of the 2778 parameters): H halves
    for w, m, old in zip(s.weights, s.masks, before):
        grown = m & ~old
        momentum = opt.state[w]["momentum_buffer"]
        assert torch.all(w[grown] == 0) and torch.all(momentum[grown] == 0) and torch.all(momentum[~m] == 0)
    assert s.densities()["3"] == 169 / 512 and s.planned_counts(11) == [1024, 256, 80]


def test_deepr_keeps_every_sign_and_replaces_connections_that_cross_zero():
    torch.manual_seed(0)
    net = tiny_mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    s = methods.create("deepr", net, opt, total_steps=100, sparsity=0.8, distribution="uniform", dense_first=False)
    signs = [p.clone() for p in s.positive]
    died = 0
    for t in range(100):
        info = train_step(net, s, opt, t)
        died += info.grown
        for w, m, positive in zip(s.weights, s.masks, s.positive):
            assert torch.all(torch.where(positive, w >= 0, w <= 0)[m])  # no active weight has the wrong sign
        assert s.counts == s.targets and same(signs, s.positive)
    assert died > 0  # connections did cross zero (lr 0.5) and were replaced

    s.temperature = s.l1 = 0.0  # only the gradient moves weights now
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    s.optimizer = opt
    p = (s.masks[0] & s.positive[0]).flatten().nonzero()[0]
    with torch.no_grad():
        s.weights[0].view(-1)[p] = 0.01
    for w in s.weights:
        w.grad = torch.zeros_like(w)
    s.weights[0].grad.view(-1)[p] = 1.0  # the step takes it to -0.99: across zero
    before = s.masks[0].clone()
    s.step()
    w = s.weights[0].view(-1)
    assert w[p] == 0 and s.counts == s.targets
    assert not s.masks[0].view(-1)[p] or not before.view(-1)[p]  # dormant (unless drawn again, then at 0)
    grown = s.masks[0] & ~before
    assert int(grown.sum()) + int(s.masks[0].view(-1)[p]) == 1 and torch.all(s.weights[0][grown] == 0)


def test_lottery_methods_need_masks_and_take_the_distribution_counts():
    net = tiny_mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for name in ("lottery-static", "lottery-rigl"):
        with pytest.raises(ValueError, match=f"{name} needs masks from a trained dense run; run it through "
                                             "python -m benchmark run"):
            methods.create(name, net, opt, total_steps=10)
    config = methods.make_config(sparsity=0.9, distribution="erk")
    trained = {k: torch.randn_like(v) for k, v in net.state_dict().items()}
    ticket = methods.ticket_masks(net, trained, config)
    static = methods.create("static", net, opt, total_steps=10, config=config)
    assert [int(m.sum()) for m in ticket.values()] == static.targets
    for name, mask in ticket.items():
        w = trained[f"{name}.weight"].abs()
        assert w[mask].min() > w[~mask].max()


GRID = ["--preset", "digits-lenet300", "--epochs", "2", "--log-every", "5"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The issue's command, once: dsr, deepr, lottery-static and lottery-rigl on digits for 2 epochs."""
    out = tmp_path_factory.mktemp("sweep")
    assert main(["run", *GRID, "--methods", "dsr,deepr,lottery-static,lottery-rigl", "--out", str(out)]) == 0
    return out, pd.read_csv(out / "runs.csv").set_index("method")


def lottery_config(method="lottery-static"):
    return preset_config("digits-lenet300", method=method, sparsity=0.9, epochs=2, log_every=5)


def test_the_sweep_trains_the_dense_run_first_and_charges_it_to_the_lottery_runs(sweep):
    out, runs = sweep
    assert list(runs.index) == ["dense", "dsr", "deepr", "lottery-static", "lottery-rigl"] and (runs.steps == 56).all()
    dense = runs.loc["dense"]
    assert dense.run_id == lottery_config().pretrain_config().run_id()
    for name in ("lottery-static", "lottery-rigl"):
        row = runs.loc[name]
        metrics = json.loads((out / "runs" / row.run_id / "metrics.json").read_text())
        assert row.pretrain_flops == dense.train_flops == metrics["flops"]["pretrain_flops"] and row.init_flops == 0
        assert metrics["pretrain_run"] == dense.run_id and metrics["rewind_step"] == 1
        log = pd.read_csv(out / "runs" / row.run_id / "log.csv")
        assert log.train_flops.iloc[-1] == pytest.approx(row.train_flops)
        assert plan_run(lottery_config(name)).train_flops == pytest.approx(row.train_flops)
    static, rigl = runs.loc["lottery-static"], runs.loc["lottery-rigl"]
    assert static.train_flops == pytest.approx(dense.train_flops + runs.loc["deepr"].train_flops)  # 3 f_S a step
    assert rigl.train_flops > static.train_flops  # RigL's dense-gradient update steps
    assert plan_run(lottery_config("deepr")).train_flops == pytest.approx(runs.loc["deepr"].train_flops)
    assert set(pd.read_csv(out / "runs" / runs.loc["deepr"].run_id / "updates.csv").step) == set(range(1, 57))


def test_lottery_ticket_is_the_dense_runs_top_weights_rewound_to_step_k(sweep, tmp_path):
    out, runs = sweep
    cfg = lottery_config()
    dense_dir = out / "runs" / runs.loc["dense"].run_id
    final = torch.load(dense_dir / "checkpoint.pt", weights_only=True)["model"]
    rewound = torch.load(dense_dir / "rewind.pt", weights_only=True)
    with pytest.raises(RunInterrupted):  # the dense run cut after step k = 1% of 56 = 1
        train(cfg.pretrain_config(), tmp_path / "dense", stop_after=1)
    step_k = torch.load(tmp_path / "dense" / "checkpoint.pt", weights_only=True)["model"]
    assert same(rewound.values(), step_k.values())

    info = DATASETS["digits"]
    run = setup_run(cfg, info.num_classes, info.input_shape, 28, torch.device("cpu"), [], dense_dir)
    masks = dict(zip(run.sparsifier.names, run.sparsifier.masks))
    assert [int(m.sum()) for m in masks.values()] == run.sparsifier.targets == [1920, 3000, 100]
    for name, value in run.model.state_dict().items():
        layer = name.removesuffix(".weight")
        if layer in masks:
            assert torch.equal(value, step_k[name] * masks[layer])
            w = final[name].abs()
            assert w[masks[layer]].min() >= w[~masks[layer]].max()
        else:
            assert torch.equal(value, step_k[name])


def test_an_interrupted_lottery_run_resumes_to_the_same_metrics(sweep, tmp_path):
    out, runs = sweep
    cfg = lottery_config("lottery-rigl")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / runs.loc["dense"].run_id).symlink_to(out / "runs" / runs.loc["dense"].run_id)
    with pytest.raises(RunInterrupted):
        train(cfg, tmp_path / "runs" / "cut", stop_after=23)
    resumed = train(cfg, tmp_path / "runs" / "cut")
    whole = json.loads((out / "runs" / runs.loc["lottery-rigl"].run_id / "metrics.json").read_text())
    timing = {"wall_time_s", "steps_per_s"}
    assert {k: v for k, v in resumed.items() if k not in timing} == {k: v for k, v in whole.items() if k not in timing}


def test_deepr_resumes_bit_identically_across_a_learning_rate_milestone(tmp_path):
    cfg = preset_config("digits-lenet300", method="deepr", sparsity=0.8, epochs=2, lr_milestones=(1,), log_every=5)
    whole = train(cfg, tmp_path / "whole")
    with pytest.raises(RunInterrupted):
        train(cfg, tmp_path / "cut", stop_after=23)  # resumed with a fresh optimizer, before the lr drop at 28
    resumed = train(cfg, tmp_path / "cut")
    timing = {"wall_time_s", "steps_per_s"}
    assert {k: v for k, v in resumed.items() if k not in timing} == {k: v for k, v in whole.items() if k not in timing}
