"""The perf command, real sparse kernels against the masked dense model, the export round trip, and the
exact keyed selection the fast mask updates rely on. No timing assertions."""
import argparse
import json
import math

import pytest
import torch
from torch import nn

import methods
from benchmark import export, perf
from benchmark.export import SparseConv2d, SparseLinear, export_sparse, load_sparse, masked_dense, sparsify
from benchmark.models import build_model
from benchmark.perf.setups import model_setup
from benchmark.perf.sparse_training import wants_sparse_training
from methods.selection import choose_subset, keyed_generator, sample_positions, topk_indices


def parse(command: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    perf.add_parser(sub)
    export.add_parser(sub)
    return parser.parse_args([command, *argv])


def test_perf_command_runs_and_prints_json(capsys):
    args = parse("perf", ["--models", "lenet-300-100", "--methods", "static,rigl,snfs", "--rounds", "1",
                          "--sparsities", "0.9,0.98", "--threads", "1", "--json"])
    assert perf.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    model = report["models"]["lenet-300-100"]
    variants = model["training"]["variants"]
    assert set(variants) == {"dense", "static", "rigl", "rigl update", "snfs", "snfs update"}
    assert model["training"]["rounds"] == 1  # --rounds 1: each ratio is that round's medians' ratio
    dense_ms = model["training"]["dense_step_ms"]
    assert variants["dense"]["step_ms"] == dense_ms and variants["dense"]["ratio"] == 1.0
    for row in variants.values():
        assert row["ratio"] == pytest.approx(row["step_ms"] / dense_ms)
    assert variants["rigl"]["flops_multiplier"] == pytest.approx(0.1, abs=0.01)  # 3 f_S / 3 f_D at 90%
    assert variants["rigl update"]["cost_dense_steps"] == variants["rigl update"]["added_fraction"]
    assert all("added_ms" in row for label, row in variants.items() if label != "dense")
    memory = model["training"]["memory"]
    assert memory["dense_state_total"] > 0
    held = memory["methods"]["snfs"]["held_bytes"]
    assert held["masks"] == 266200  # one byte per weight of LeNet-300-100's three layers
    assert held["momentum"] == 4 * 266200
    assert memory["methods"]["static"]["held_bytes"] == {"masks": 266200, "active_indices": 0}
    assert memory["methods"]["static"]["bytes_per_sparse_weight"] == 1.0  # the bool masks, nothing else
    big = report["large_update"]  # rigl's update on a 4096 x 4096 layer at --train-sparsity 0.9 (uniform)
    assert big["layer"] == [4096, 4096] and big["active"] == 1677722 and big["updates"] == 4
    assert big["ns_per_weight"] == pytest.approx(1e6 * big["update_ms"] / 4096**2)
    inference = model["inference"]
    assert {(row["sparsity"], row["batch"]) for row in inference} == {(s, b) for s in (0.9, 0.98) for b in (1, 256)}
    for row in inference:
        assert row["dense_ms"] > 0 and row["sparse_ms"] > 0 and row["speedup"] > 0
        assert row["max_abs_diff"] <= 1e-5 and row["within_tolerance"]
        assert row["sparse_linear_layers"]  # ERK leaves LeNet-300-100's first two layers sparse
        assert row["sparse_weight_bytes"] < row["dense_weight_bytes"]


def test_perf_rejects_bad_input():
    with pytest.raises(ValueError, match="perf knows models"):
        perf.run(parse("perf", ["--models", "vgg"]))
    with pytest.raises(ValueError, match="unknown method"):
        perf.run(parse("perf", ["--models", "lenet-5", "--methods", "rigl2"]))
    with pytest.raises(ValueError, match="sparsity must be"):
        perf.run(parse("perf", ["--models", "lenet-5", "--sparsities", "1.5"]))


@pytest.mark.parametrize("name,shape", [("lenet-300-100", (1, 28, 28)), ("lenet-5", (1, 28, 28))])
@pytest.mark.parametrize("sparsity", [0.8, 0.98])
def test_sparse_kernels_match_the_masked_dense_model(name, shape, sparsity):
    torch.manual_seed(0)
    model = build_model(name, 10, shape)
    s = methods.create("static", model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=1,
                       sparsity=sparsity, distribution="erk")
    masks = dict(zip(s.names, s.masks))
    reference = masked_dense(model, masks)
    sparse = sparsify(model, masks, convs=True)
    kinds = {type(m) for m in sparse.modules()}
    assert SparseLinear in kinds and (SparseConv2d in kinds) == (name == "lenet-5")
    for batch in (1, 7, 256):
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            assert (sparse(x) - reference(x)).abs().max().item() <= 1e-5


def test_sparse_conv_handles_stride_padding_and_no_bias():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
    mask = torch.rand(conv.weight.shape) < 0.3
    sparse = SparseConv2d.from_dense(conv, mask)
    with torch.no_grad():
        conv.weight.mul_(mask)
        x = torch.randn(3, 4, 9, 9)
        assert (sparse(x) - conv(x)).abs().max().item() <= 1e-5


def trained_run(tmp_path, method="rigl"):
    """A finished run folder of the CLI (digits, a few hundred steps)."""
    from benchmark.cli import main

    out = tmp_path / "results"
    code = main(["run", "--preset", "digits-lenet300", "--methods", method, "--sparsity", "0.9", "--epochs", "1",
                 "--out", str(out), "--device", "cpu", "--log-every", "10"])
    assert code == 0
    (run_dir,) = (out / "runs").iterdir()
    return run_dir


def test_export_load_round_trip_gives_equal_outputs(tmp_path, capsys):
    run_dir = trained_run(tmp_path)
    path = tmp_path / "model.sparse.pt"
    summary = export_sparse(run_dir, path)
    assert summary["sparse_layers"] and 0 < summary["nnz"] < summary["sparse_weights"]
    model, masks, meta = export.load_run(run_dir)
    reference = masked_dense(model, masks)
    loaded = load_sparse(path)
    assert any(isinstance(m, SparseLinear) for m in loaded.modules())
    x = torch.randn(16, *meta["input_shape"])
    with torch.no_grad():
        assert (loaded(x) - reference(x)).abs().max().item() <= 1e-5
    assert torch.load(path, weights_only=True)["format"] == export.FORMAT  # plain tensors: safe to load
    # the command line does the same, from the checkpoint file too, and checks the outputs itself
    assert export.run(parse("export", [str(run_dir / "checkpoint.pt"), str(tmp_path / "again.pt")])) == 0
    assert "max |sparse - masked dense|" in capsys.readouterr().out


def test_export_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        export_sparse(tmp_path / "missing", tmp_path / "out.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"something": 1}, bad)
    with pytest.raises(ValueError, match="not a sparse model file"):
        load_sparse(bad)


# ----- the exact keyed selection behind the fast updates -------------------------------------


@pytest.mark.parametrize("n", [10, 5000, 70000])
def test_topk_indices_is_exact_keyed_and_order_independent_under_ties(n):
    torch.manual_seed(0)
    score = torch.randint(0, 4, (n,)).float()  # heavy ties at every boundary
    for k in (0, 1, n // 50, n // 3, n - 1, n):
        chosen = topk_indices(score, k, keyed_generator(0, 1, 2, "t"))
        assert chosen.numel() == k == chosen.unique().numel()
        if 0 < k < n:
            kth = score[chosen].min()
            assert int((score > kth).sum()) == int((score[chosen] > kth).sum())  # everything above is in
        again = topk_indices(score, k, keyed_generator(0, 1, 2, "t"))
        assert torch.equal(chosen.sort().values, again.sort().values)
        perm = torch.randperm(n)  # the same entries gathered in another order pick the same positions
        shuffled = perm[topk_indices(score[perm], k, keyed_generator(0, 1, 2, "t"), positions=perm)]
        assert torch.equal(chosen.sort().values, shuffled.sort().values)


def test_tie_breaking_and_sampling_are_uniform():
    hits = torch.zeros(20)
    subset = torch.zeros(20)
    allowed = torch.ones(20, dtype=torch.bool)
    allowed[::4] = False
    drawn = torch.zeros(20)
    for seed in range(2000):
        hits[topk_indices(torch.zeros(20), 5, keyed_generator(seed, 0, 0, "u"))] += 1
        subset[choose_subset(20, 12, keyed_generator(seed, 0, 0, "u"))] += 1
        drawn[sample_positions(allowed, 15, 3, keyed_generator(seed, 0, 0, "u"))] += 1
    assert torch.allclose(hits / 2000, torch.full((20,), 0.25), atol=0.05)
    assert torch.allclose(subset / 2000, torch.full((20,), 0.6), atol=0.05)
    assert drawn[~allowed].sum() == 0
    assert torch.allclose(drawn[allowed] / 2000, torch.full((15,), 0.2), atol=0.05)


def test_rigl_update_with_zero_gradients_stays_exact():
    """Dead units give many equal (zero) grow scores: the keyed tie path must still grow exactly k."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(300, 400), nn.ReLU(), nn.Linear(400, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    s = methods.create("rigl", model, opt, total_steps=1000, sparsity=0.9, distribution="uniform",
                       dense_first=False, delta_t=10)
    x, y = torch.randn(8, 300), torch.randint(0, 10, (8,))
    for t in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        model[1].weight.grad[:, ::2] = 0  # half the inputs give no gradient
        before = [m.clone() for m in s.masks]
        info = s.step()
        assert s.counts == s.targets
        assert all(torch.all(w[~m] == 0) for w, m in zip(s.weights, s.masks))
        assert all(torch.all(opt.state[w]["momentum_buffer"][~m] == 0) for w, m in zip(s.weights, s.masks))
        assert all(int(m.sum()) == c for m, c in zip(s.masks, s.counts))
        if info.updated:  # grown: connections active now that were not before, counted here from the masks
            assert info.grown == sum(int((m & ~b).sum()) for m, b in zip(s.masks, before))
            assert info.grown > 0 and s.is_update_step(t)
    assert math.isclose(s.global_density(), 0.1, abs_tol=1e-3)


@pytest.mark.parametrize("method", ["gmp", "set", "rigl", "snfs"])
def test_the_masking_kernel_gives_the_same_run_as_torch(make_run, method, monkeypatch):
    """Masking by the bool masks in the C kernel and in torch (a multiply by a bool tensor) train
    bit-identically; the sparsifier holds the masks, int32 active positions and SNFS's momentum only."""
    from conftest import train_step

    from methods import sparse_kernels

    runs = []
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(sparse_kernels, "_lib", None)
            monkeypatch.setattr(sparse_kernels, "library", lambda: None)
        net, opt, s = make_run(method, "conv", "sgd", sparsity=0.8, distribution="erk", delta_t=20, gmp_every=10,
                               total_steps=120)
        for t in range(120):
            train_step(net, s, opt, t)
        held = s.held_tensors()
        assert set(held) == {"masks", "active_indices", *(["momentum"] if method == "snfs" else [])}
        assert all(m.dtype == torch.bool for m in held["masks"])
        assert all(a.dtype == torch.int32 for a in held["active_indices"])
        runs.append((s.masks, list(net.state_dict().values())))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0]))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_any_optimizer_keeps_masked_weights_at_zero(make_run):
    """An optimizer outside ZERO_PRESERVING_OPTIMIZERS gets the weights re-masked after every step."""
    from conftest import train_step

    class Noisy(torch.optim.SGD):  # moves every weight, masked ones too
        def step(self, closure=None):
            super().step(closure)
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.add_(1e-3)

    net, _, _ = make_run("static", "mlp", "sgd")
    opt = Noisy(net.parameters(), lr=0.05)
    s = methods.create("rigl", net, opt, total_steps=60, sparsity=0.9, delta_t=10)
    assert s.execution.remask_weights
    for t in range(60):
        train_step(net, s, opt, t)
        assert all(torch.all(w[~m] == 0) for w, m in zip(s.weights, s.masks))


def test_perf_times_sparse_kernel_training_beside_the_dense_step(capsys):
    args = parse("perf", ["--models", "lenet-300-100", "--methods", "rigl,static", "--rounds", "1",
                          "--sparsities", "0.9,0.98", "--threads", "1", "--timer", "cpu", "--json",
                          "--skip", "training,inference"])
    assert perf.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["settings"]["timer"] == "cpu"
    rows = report["models"]["lenet-300-100"]["sparse_training"]
    assert [(r["method"], r["sparsity"]) for r in rows] == [("rigl", 0.9), ("rigl", 0.98), ("static", 0.9),
                                                            ("static", 0.98)]
    for row in rows:
        assert row["batch"] == 100 and row["speedup"] > 0 and row["speedup_amortized"] > 0
        assert row["max_rel_loss_diff"] <= 1e-5  # the same training as masked-dense, up to summation order
        assert row["flops_multiplier"] == pytest.approx(1 - row["sparsity"], abs=0.01)
        assert row["kernel_layers"][:2] == ["fc1", "fc2"]
    assert rows[0]["delta_t"] and "update_step_ms" in rows[0] and rows[2]["delta_t"] is None


@pytest.mark.parametrize("name, wanted", [("lenet-300-100", True), ("lenet-5", True), ("char-gru-small", False)])
def test_perf_times_sparse_kernel_training_where_linear_layers_hold_most_sparse_weights(name, wanted):
    # LeNet-5's fc1 holds 400,000 of its 430,500 sparse weights; the GRU's recurrent matrices (parameters of an
    # nn.GRU, not modules) hold most of char-gru-small's, and asking about them once raised AttributeError
    assert wants_sparse_training(name, model_setup(name)) is wanted
