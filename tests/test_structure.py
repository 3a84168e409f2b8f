"""N:M structured sparsity: exact groups at init and after every update, counts, FLOPs, bad input."""
import pytest
import torch
from torch import nn

import methods
from benchmark.cli import main
from benchmark.presets import preset_config
from benchmark.train import plan_run
from methods.base import keeps_structure


def groups(mask, m):
    return mask.reshape(mask.shape[0], -1).reshape(-1, m).sum(1)


def tiny_convnet():
    torch.manual_seed(0)
    # conv 8x1x2x2 (fan-in 4), conv 8x8x3x3 (fan-in 72), linear 10x72 (fan-in 72)
    return nn.Sequential(nn.Conv2d(1, 8, 2), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(72, 10))


@pytest.mark.parametrize("method", ["static", "snip", "set", "rigl"])
@pytest.mark.parametrize("structure, n, m", [("2:4", 2, 4), ("1:4", 1, 4)])
def test_every_group_keeps_exactly_n_after_every_update(method, structure, n, m):
    """8 steps on digits (1x8x8) with an update after each (alpha 0.5): every group of m consecutive weights along
    the input dimension holds exactly n active ones each time, masked weights are 0, counts are N_l * n / m."""
    model = tiny_convnet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 10
    s = methods.create(method, model, opt, total_steps=8, structure=structure, delta_t=1, alpha=0.5, t_end=1.0,
                       dense_first=False, init_batches=[(x, y)])
    assert s.targets == [32 * n // m, 576 * n // m, 720 * n // m]
    grown = 0
    for _ in range(8):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        info = s.step()
        grown += info.grown or 0
        for mask, w, target in zip(s.masks, s.weights, s.targets):
            assert (groups(mask, m) == n).all()
            assert int(mask.sum()) == target and torch.count_nonzero(w[~mask]) == 0
    assert (grown > 0) == (method in ("set", "rigl"))


def test_rigl_grows_the_largest_gradient_inside_the_group_it_dropped_from():
    """A 1x8 linear layer, two 2:4 groups, weights (5, 0.1, -, - | 3, -, 4, -): the update after step 1 (drop fraction
    0.5 of 4 active = 2) drops 0.1 and 3; unstructured RigL would grow the two largest gradients (9 and 8, both in
    group 1), 2:4 grows the largest of each group's free positions: 9 in group 1, 2 in group 2."""
    layer = nn.Linear(8, 1, bias=False)
    opt = torch.optim.SGD(layer.parameters(), lr=0.0)
    mask = torch.tensor([[True, True, False, False, True, False, True, False]])
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[5.0, 0.1, 0.0, 0.0, 3.0, 0.0, 4.0, 0.0]]))
    s = methods.create("rigl", layer, opt, total_steps=4, structure="2:4", delta_t=1, alpha=0.5, anneal="constant",
                       t_end=1.0, dense_first=False, masks={"": mask})
    for _ in range(2):
        layer.weight.grad = torch.tensor([[0.0, 0.0, 8.0, 9.0, 0.0, 2.0, 0.0, 1.0]])
        info = s.step()
    assert info.updated and info.grown == 2
    assert s.masks[0].tolist() == [[True, False, False, True, False, True, True, False]]


def test_structure_sets_the_sparsity_flops_and_key():
    cfg = preset_config("digits-lenet300", method="rigl", structure="2:4", sparsity=0.9)
    assert cfg.sparsity == 0.5  # every layer of digits-lenet300 is sparse: 1 - 2/4
    plain = preset_config("digits-lenet300", method="rigl", sparsity=0.5)
    assert cfg.config_key() != plain.config_key()
    assert plan_run(cfg).inference_multiplier == pytest.approx(0.5)
    first_dense = preset_config("digits-lenet300", method="static", structure="1:4", dense_first=True)
    sizes = [64 * 300, 300 * 100, 100 * 10]
    assert first_dense.sparsity == round(1 - (sizes[0] + (sizes[1] + sizes[2]) / 4) / sum(sizes), 4)


@pytest.mark.parametrize("args, message", [
    (["--structure", "4:4"], "structure must be N:M with 1 <= N < M"),
    (["--structure", "2-4"], "structure must be N:M with 1 <= N < M"),
    (["--structure", "2:3"], "input size to be a multiple of 3, but sparse layer 0 (weight 300x64) has 64"),
    (["--structure", "2:4", "--methods", "snfs"], ("snfs cannot keep N:M structure; structure works with small-dense, "
                                                   "static, snip, set, rigl")),
    (["--structure", "2:4", "--methods", "gmp"], "gmp cannot keep N:M structure"),
    (["--structure", "2:4", "--distribution", "erk"], "use it with distribution uniform"),
    (["--structure", "2:4", "--methods", "snip", "--snip-scope", "global"], "use snip_scope layer"),
])
def test_bad_structure_is_one_error_line(tmp_path, capsys, args, message):
    argv = ["run", "--preset", "digits-lenet300", "--methods", "rigl", "--out", str(tmp_path / "out"), *args]
    if args.count("--methods") == 1:
        argv[3:5] = []
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_keeps_structure():
    assert keeps_structure(torch.tensor([[1, 1, 0, 0, 0, 1, 0, 1]], dtype=torch.bool), 2, 4)
    assert not keeps_structure(torch.tensor([[1, 1, 1, 0, 0, 0, 0, 1]], dtype=torch.bool), 2, 4)
    assert keeps_structure(torch.ones(3, 5, dtype=torch.bool), 2, 4)


def test_a_2_4_run_trains_through_the_harness_and_exports(tmp_path):
    """digits-lenet300 with rigl at 2:4 (3 steps, updates after steps 1 and 2): checkpoint masks keep 2 of every 4,
    the export records the structure (CUDA then uses semi-structured kernels; on CPU it stays CSR) and its outputs
    equal the masked model's."""
    from benchmark.export import export_sparse, load_run, load_sparse
    from benchmark.train import train

    cfg = preset_config("digits-lenet300", method="rigl", structure="2:4", steps=3, delta_t=1, log_every=1)
    metrics = train(cfg, tmp_path / "run")
    assert metrics["global_density"] == 0.5
    model, masks, meta = load_run(tmp_path / "run")
    assert meta["structure"] == "2:4" and all((groups(m, 4) == 2).all() for m in masks.values())
    export_sparse(tmp_path / "run", tmp_path / "m.pt")
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(load_sparse(tmp_path / "m.pt")(x), model(x), atol=1e-5)


def test_dry_run_names_one_structured_run_per_method(tmp_path, capsys):
    assert main(["run", "--preset", "digits-lenet300", "--methods", "static,rigl", "--sparsity", "0.8,0.9",
                 "--structure", "2:4", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("static-s0.5-seed0-") == 1 and out.count("rigl-s0.5-seed0-") == 1 and "s0.8" not in out
