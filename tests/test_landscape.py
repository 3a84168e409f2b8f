"""experiments.landscape and experiments.restart end to end on two tiny digits runs trained here (nothing is committed):
linear interpolation, Bezier curves (sparse and dense), BN re-estimation, restarts, CLI."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_convnet
from matplotlib.colors import to_hex

import analysis
from experiments import landscape as L
from experiments import restart as R
from analysis import plots, style
from analysis.cli import main
from benchmark.cli import main as benchmark_main
from benchmark.data import eval_batches, load_dataset
from benchmark.models import build_model

FIXTURE = Path(__file__).resolve().parent / "fixtures"
TRAIN_BATCHES = 4


@pytest.fixture(scope="module")
def solutions(tmp_path_factory) -> tuple[Path, Path]:
    """A gmp and a static solution (digits, LeNet-300-100, sparsity 0.9, 2 epochs), with checkpoints."""
    out = tmp_path_factory.mktemp("sweep")
    assert benchmark_main(["run", "--preset", "digits-lenet300", "--methods", "gmp,static", "--sparsity", "0.9",
                           "--seeds", "1", "--epochs", "2", "--device", "cpu", "--out", str(out)]) == 0
    gmp, static = (next((out / "runs").glob(f"{m}-*")) for m in ("gmp", "static"))
    assert (gmp / "checkpoint.pt").is_file() and (static / "checkpoint.pt").is_file()
    return gmp, static


@pytest.fixture(scope="module")
def result(solutions, tmp_path_factory):
    out = tmp_path_factory.mktemp("landscape")
    settings = L.LandscapeSettings(train_batches=TRAIN_BATCHES, bezier_steps=40, device="cpu")
    return L.run_landscape(*solutions, settings, out=out, report=lambda _: None), out


def _own_loss(run_dir: Path) -> tuple[float, float]:
    """The checkpoint's own training loss and test accuracy, computed here without experiments.landscape."""
    record = L.load_solution(run_dir)
    cfg = record.config
    data = load_dataset(cfg.dataset, val_fraction=cfg.val_fraction, train_subset=cfg.train_subset or None)
    model = build_model(cfg.model, data.num_classes, data.input_shape, record.width)
    model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"])
    model.eval()
    with torch.no_grad():
        batches = list(itertools.islice(eval_batches(data, "train", cfg.batch_size), TRAIN_BATCHES))
        loss = sum(F.cross_entropy(model(x), y, reduction="sum").item() for x, y in batches)
        n = sum(len(y) for _, y in batches)
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in eval_batches(data, "test"))
    return loss / n, 100 * correct / len(data.test[1])


def test_csv_has_the_expected_rows(result):
    _, out = result
    df = pd.read_csv(out / "landscape.csv")
    assert list(df.columns[:5]) == ["coefficient", "path", "train_loss", "test_accuracy", "bn_recomputed"]
    assert df.groupby("path").size().to_dict() == {"linear": 29, "bezier-sparse": 21, "bezier-dense": 21}
    linear = df[df.path == "linear"]["coefficient"].to_numpy()
    np.testing.assert_allclose(linear, np.linspace(-0.2, 1.2, 29), atol=1e-12)
    assert 0.0 in set(linear) and 1.0 in set(linear)  # exact endpoints
    for path in ("bezier-sparse", "bezier-dense"):
        t = df[df.path == path]["coefficient"].to_numpy()
        assert t.min() == 0.0 and t.max() == 1.0
    assert not df["bn_recomputed"].any()  # LeNet has no batch norm
    assert df[["train_loss", "test_accuracy"]].notna().all().all()
    assert (out / "landscape.json").is_file()


def test_linear_endpoints_reproduce_each_checkpoints_own_loss(result, solutions):
    res, out = result
    df = pd.read_csv(out / "landscape.csv")
    for coefficient, run_dir in zip((0.0, 1.0), solutions):
        loss, accuracy = _own_loss(run_dir)
        row = df[(df.path == "linear") & (df.coefficient == coefficient)].iloc[0]
        assert math.isclose(row.train_loss, loss, rel_tol=1e-6, abs_tol=1e-7)
        assert math.isclose(row.test_accuracy, accuracy, rel_tol=1e-9)
    a, b = res.start.state, res.end.state
    assert all(torch.equal(L.interpolate(a, b, 0.0)[k], a[k]) for k in a)
    assert all(torch.equal(L.interpolate(a, b, 1.0)[k], b[k]) for k in a)
    assert not all(torch.equal(L.interpolate(a, b, 0.5)[k], a[k]) for k in a)


def test_bezier_endpoints_equal_the_checkpoints(result):
    res, out = result
    a, b = res.start.state, res.end.state
    for name, curve in res.curves.items():
        start, end = L.bezier_point(a, curve.controls, b, 0.0), L.bezier_point(a, curve.controls, b, 1.0)
        assert all(torch.equal(start[k], a[k]) for k in a), name
        assert all(torch.equal(end[k], b[k]) for k in b), name
    df = pd.read_csv(out / "landscape.csv")
    ends = df[df.coefficient.isin([0.0, 1.0])].pivot(index="coefficient", columns="path", values="train_loss")
    assert (ends["bezier-sparse"] == ends["linear"]).all() and (ends["bezier-dense"] == ends["linear"]).all()


def test_sparse_control_point_stays_inside_the_union_of_the_masks(result):
    res, _ = result
    union = res.union
    assert set(union) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert all(torch.equal(union[n], res.start.masks[n] | res.end.masks[n]) for n in union)
    (sparse,) = res.curves["bezier-sparse"].controls
    (dense,) = res.curves["bezier-dense"].controls
    for name, mask in union.items():
        assert not mask.all(), "the union should leave some weights out at 90% sparsity"
        assert torch.count_nonzero(sparse[name][~mask]) == 0, name
    assert any(torch.count_nonzero(dense[n][~m]) > 0 for n, m in union.items()), "the dense curve never left the union"
    midpoint = L.interpolate(res.start.state, res.end.state, 0.5)
    assert not torch.equal(sparse["fc1.weight"], midpoint["fc1.weight"]), "the control point was not trained"


def test_trained_curves_lower_the_loss_between_the_solutions(result):
    res, _ = result
    df = res.frame
    inner = df[(df.coefficient > 0) & (df.coefficient < 1)]
    mean = inner.groupby("path")["train_loss"].mean()
    assert mean["bezier-dense"] < mean["linear"]
    assert mean["bezier-sparse"] < mean["linear"]
    assert res.summary["barriers"]["linear"]["barrier"] >= res.summary["barriers"]["bezier-dense"]["barrier"]


def test_bn_statistics_are_reestimated_on_the_training_batches():
    torch.manual_seed(0)
    model = tiny_convnet()
    bn = model[1]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(7.0)
    batches = [(torch.randn(16, 1, 8, 8), torch.zeros(16, dtype=torch.long)) for _ in range(3)]
    inputs = []
    hook = bn.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach()))
    assert L.recompute_bn(model, batches)
    hook.remove()
    x = torch.cat(inputs)  # (48, C, H, W): BN input of every example
    torch.testing.assert_close(bn.running_mean, x.mean(dim=(0, 2, 3)), atol=1e-5, rtol=1e-5)
    batch_vars = torch.stack([i.var(dim=(0, 2, 3), unbiased=True) for i in inputs])
    torch.testing.assert_close(bn.running_var, batch_vars.mean(0), atol=1e-5, rtol=1e-5)
    assert bn.momentum == 0.1 and model.training and bn.training  # momentum and mode restored
    evaluator = L.Evaluator(model, torch.nn.CrossEntropyLoss(), batches, batches, recompute=True)
    assert evaluator(model.state_dict())["bn_recomputed"] is True
    assert L.Evaluator(model, torch.nn.CrossEntropyLoss(), batches, batches, recompute=False).bn_recomputed is False
    assert L.recompute_bn(torch.nn.Linear(2, 2), batches) is False


def test_coefficients_grid():
    grid = L.coefficients(29, -0.2, 1.2)
    assert len(grid) == 29 and grid[4] == 0.0 and grid[24] == 1.0
    assert set(L.coefficients(4, 0.1, 0.9)) >= {0.0, 1.0}  # endpoints added when the grid misses them
    with pytest.raises(ValueError):
        L.coefficients(1)


def test_restart_continues_the_static_solution_with_rigl_and_static(solutions, tmp_path):
    _, static = solutions
    frame = R.restart(static, tmp_path, steps=40, report=lambda _: None)
    assert set(frame["method"]) == {"rigl", "static"}
    for method, s in frame.groupby("method"):
        assert s["step"].is_monotonic_increasing and s["step"].iloc[-1] == 40
        assert np.isfinite(s["train_loss"]).all()
    assert (tmp_path / "restart.csv").is_file()
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert set(runs["method"]) == {"rigl", "static"}
    rigl_dir = tmp_path / "runs" / frame[frame.method == "rigl"]["run_id"].iloc[0]
    record = analysis.read_run(rigl_dir)
    assert Path(record.config["init_from"]) == static.resolve()
    assert (record.updates["grown"] > 0).any(), "rigl changed no connection after the restart"
    start = L.load_solution(static)
    for layer, density in record.metrics["layer_density"].items():  # same per-layer counts as the start
        assert density == pytest.approx(start.masks[f"{layer}.weight"].float().mean().item())


def test_landscape_figure_from_the_fixture_csvs():
    frame = analysis.read_landscape(FIXTURE / "landscape" / "landscape.csv")
    restart = analysis.read_restart(FIXTURE / "landscape" / "restart.csv")
    fig = plots.loss_landscape(frame, restart)
    assert len(fig.axes) == 2
    paths = {line.get_gid() for line in fig.axes[0].get_lines() if (line.get_gid() or "").startswith("path|")}
    assert paths == {"path|linear", "path|bezier-sparse", "path|bezier-dense"}
    colours = {line.get_gid().split("|")[1]: to_hex(line.get_color()) for line in fig.axes[1].get_lines()
               if (line.get_gid() or "").endswith("|restart")}
    assert colours == {m: to_hex(style.method_color(m)) for m in ("rigl", "static")}
    assert len(plots.loss_landscape(frame).axes) == 1
    plt.close("all")


def test_landscape_cli_end_to_end(solutions, tmp_path, capsys):
    gmp, static = solutions
    rc = main(["landscape", str(gmp), str(static / "checkpoint.pt"), "--out", str(tmp_path), "--points", "8",
               "--paths", "linear,bezier-sparse", "--bezier-steps", "5", "--train-batches", "2", "--device", "cpu",
               "--restart-from", str(static), "--restart-steps", "20", "--formats", "png"])
    assert rc == 0, capsys.readouterr().err
    df = analysis.read_landscape(tmp_path / "landscape.csv")
    assert df.groupby("path").size().to_dict() == {"linear": 8, "bezier-sparse": 6}
    assert (tmp_path / "landscape.png").read_bytes()[:4] == b"\x89PNG"
    assert set(analysis.read_restart(tmp_path / "restart" / "restart.csv")["method"]) == {"rigl", "static"}
    assert "the model has none" in capsys.readouterr().err  # says what happened to batch norm


def test_landscape_cli_errors_are_one_line(solutions, tmp_path, capsys):
    gmp, static = solutions
    fixture_run = next((FIXTURE / "sweep" / "runs").iterdir())  # committed without checkpoint.pt
    cases = [[str(fixture_run), str(static)], [str(tmp_path / "nope"), str(static)],
             [str(gmp), str(static), "--paths", "curvy"], [str(gmp), str(static), "--restart-from", str(fixture_run)]]
    for args in cases:
        assert main(["landscape", *args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
