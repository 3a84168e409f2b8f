"""End to end: the CLI on real (scikit-learn digits) data, skip/resume, errors, parallel workers."""
import csv
import json
import multiprocessing
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmark import sweep
from benchmark.sweep import auto_workers  # imported before conftest makes sweeps inline: the real one
from benchmark.cli import main
from benchmark.config import RunConfig
from benchmark.presets import preset_config
from benchmark.results import RUN_COLUMNS, append_row, read_runs
from benchmark.train import RunInterrupted, lr_factor, make_optimizer, train

QUICK = ["--preset", "digits-lenet300", "--epochs", "2", "--log-every", "5", "--checkpoint-every", "20"]


def run_cli(capsys, *args):
    code = main([*args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_grid_writes_one_row_per_run_and_rerun_skips(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "run", *QUICK, "--methods", "static,rigl", "--sparsity", "0.5,0.8",
                           "--out", str(tmp_path))
    assert code == 0
    df = read_runs(tmp_path / "runs.csv")
    assert list(df.columns) == RUN_COLUMNS
    assert sorted(zip(df.method, df.sparsity)) == [("rigl", 0.5), ("rigl", 0.8), ("static", 0.5), ("static", 0.8)]
    assert (df.steps == 56).all() and (df.dataset == "digits").all() and (df.seed == 0).all()
    assert df.test_accuracy.between(50, 100).all()  # 2 epochs on digits learn something
    rigl = df[(df.method == "rigl") & (df.sparsity == 0.8)].iloc[0]
    static = df[(df.method == "static") & (df.sparsity == 0.8)].iloc[0]
    assert rigl.inference_flops_multiplier == static.inference_flops_multiplier
    assert rigl.train_flops_multiplier > static.train_flops_multiplier  # two dense-gradient update steps
    assert "| digits | lenet-300-100 | rigl | uniform | 0.5 |" in out
    run = tmp_path / "runs" / rigl.run_id
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.json", "log.csv", "evals.csv",
                                                "updates.csv", "checkpoint.pt"}
    updates = pd.read_csv(run / "updates.csv")
    assert list(updates.step) == [21, 41]  # after optimizer steps t = 20 and 40 (delta_t 20, t_end 0.75 * 56)
    log = pd.read_csv(run / "log.csv")
    assert list(log.step) == list(range(5, 56, 5)) + [56]
    assert log.train_flops.is_monotonic_increasing
    assert log.train_flops.iloc[-1] == pytest.approx(rigl.train_flops)
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["method"] == "rigl" and record["torch"] == torch.__version__ and record["commit"]

    before = (tmp_path / "runs.csv").read_text()
    code, out, _ = run_cli(capsys, "run", *QUICK, "--methods", "static,rigl", "--sparsity", "0.5,0.8",
                           "--out", str(tmp_path))
    assert code == 0 and "skipping 4 finished run(s)" in out
    assert (tmp_path / "runs.csv").read_text() == before


def test_interrupted_run_resumes_bit_identically(tmp_path):
    cfg = preset_config("digits-lenet300", method="rigl", sparsity=0.9, epochs=2, log_every=5, checkpoint_every=10)
    whole = train(cfg, tmp_path / "whole")
    with pytest.raises(RunInterrupted, match="stopped after step 23 of 56"):
        train(cfg, tmp_path / "cut", stop_after=23)  # between checkpoints and log rows
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["state"]["step"] == 23
    resumed = train(cfg, tmp_path / "cut")

    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["sparsifier"]["masks"][k], b["sparsifier"]["masks"][k]) for k in a["sparsifier"]["masks"])
    timing = {"wall_time_s", "steps_per_s"}
    assert {k: v for k, v in whole.items() if k not in timing} == {k: v for k, v in resumed.items() if k not in timing}
    for name in ("log.csv", "evals.csv", "updates.csv"):
        x = pd.read_csv(tmp_path / "whole" / name).drop(columns=["wall_time_s"], errors="ignore")
        y = pd.read_csv(tmp_path / "cut" / name).drop(columns=["wall_time_s"], errors="ignore")
        pd.testing.assert_frame_equal(x, y)


@pytest.mark.parametrize("args,message", [
    (["--preset", "nope"], "unknown preset 'nope'; known presets: fashion-mnist-lenet300"),
    (["--methods", "rigl,magic"], "unknown method 'magic'; known methods: dense"),
    (["--model", "vgg"], "unknown model 'vgg'; known models: lenet-300-100"),
    (["--sparsity", "1.0"], r"sparsity must be a number in [0, 1)"),
    (["--sparsity", "-0.5"], r"sparsity must be a number in [0, 1)"),
    (["--sparsity", "a,b"], "--sparsity takes comma-separated numbers"),
    (["--seeds", ""], "--seeds takes a count (3) or a comma list (0,1,2)"),
    (["--seeds", "0,x"], "--seeds takes a count (3) or a comma list (0,1,2)"),
    (["--out", "/proc/forbidden"], "--out /proc/forbidden is not writable"),
    (["--distribution", "gauss"], "distribution must be one of uniform, er, erk"),
    (["--layer-sparsity", "0.9,0.9"], "layer_sparsity has 2 value(s) but the model has 3 sparse layer(s)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    argv = ["run", *QUICK, "--methods", "static", "--out", str(tmp_path / "out"), *args]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert not (tmp_path / "out" / "runs.csv").exists()


def test_corrupt_checkpoint_is_reported_and_left_alone(tmp_path, capsys):
    cfg = preset_config("digits-lenet300", method="static", sparsity=0.9, epochs=1)
    run = tmp_path / "runs" / cfg.run_id()
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    code, _, err = run_cli(capsys, "run", "--preset", "digits-lenet300", "--epochs", "1", "--methods", "static",
                           "--out", str(tmp_path))
    assert code == 2 and "is unreadable" in err and "delete it to restart that run" in err
    assert (run / "checkpoint.pt").read_bytes() == b"not a checkpoint"


def test_corrupt_runs_csv_is_reported(tmp_path, capsys):
    (tmp_path / "runs.csv").write_bytes(b"\x00\xff\xfe garbage\n1,2\n3,4,5,6\n")
    code, _, err = run_cli(capsys, "summarize", "--runs", str(tmp_path / "runs.csv"))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_parallel_workers_write_an_intact_runs_csv(tmp_path, capsys):
    code, _, _ = run_cli(capsys, "run", *QUICK, "--epochs", "1", "--methods", "static,set,snip",
                         "--sparsity", "0.9", "--seeds", "2", "--workers", "2", "--out", str(tmp_path))
    assert code == 0
    with open(tmp_path / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and len({r["run_id"] for r in rows}) == 6
    assert all(len(r) == len(RUN_COLUMNS) and None not in r.values() for r in rows)


def test_auto_workers_fill_the_cpus_with_runs_of_their_threads(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    one, three = (preset_config("digits-lenet300", method="static", threads=t) for t in (1, 3))
    assert auto_workers([one]) == 4
    assert auto_workers([one, three]) == 1
    assert auto_workers([preset_config("digits-lenet300", method="static", threads=2)]) == 2
    # LeNet-300-100 on 8x8 digits with SGD momentum: (64*300+300 + 300*100+100 + 100*10+10) = 50,610 parameters
    # x 4 bytes x 3 (weight, gradient, momentum) = 607,320 bytes; each worker wants twice that
    monkeypatch.setattr(sweep, "available_bytes", lambda device: 3 * 2 * 607_320)
    assert auto_workers([one]) == 3
    monkeypatch.setattr(sweep, "available_bytes", lambda device: 2 * 607_320 - 1)
    assert auto_workers([one]) == 1


def test_a_sweep_uses_at_most_one_process_per_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "auto_workers", lambda configs: 8)
    monkeypatch.setattr(sweep, "_processes", lambda *args: pytest.fail("one run was sent to a process pool"))
    code, out, _ = run_cli(capsys, "run", *QUICK, "--epochs", "1", "--methods", "static", "--out", str(tmp_path))
    assert code == 0 and "done static-s0.9-seed0-" in out


def _append_many(path, worker):
    for i in range(40):
        append_row(Path(path), {c: f"{worker}-{i}" for c in RUN_COLUMNS})


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "runs.csv"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    df = pd.read_csv(path)
    assert len(df) == 160 and set(df.run_id) == {f"{w}-{i}" for w in range(4) for i in range(40)}
    assert path.read_text().count("run_id") == 1  # one header


def test_dry_run_prints_the_grid_with_planned_flops(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "run", "--methods", "dense,rigl", "--sparsity", "0.8,0.9", "--dry-run",
                           "--out", str(tmp_path))
    assert code == 0 and not (tmp_path / "runs.csv").exists()
    lines = out.strip().splitlines()
    assert len(lines) == 1 + 3 + 1  # header, dense once, rigl at two sparsities, totals
    assert "train_multiplier" in lines[0] and lines[1].split()[1:3] == ["dense", "none"]
    assert lines[-1].startswith("total: 3 run(s), 18000 steps, ")  # 6000 steps each (10 epochs of 600)


def test_summarize_writes_mean_and_std_over_seeds(tmp_path, capsys):
    code, _, _ = run_cli(capsys, "run", *QUICK, "--epochs", "1", "--methods", "static", "--sparsity", "0.9",
                         "--seeds", "2", "--out", str(tmp_path))
    assert code == 0
    code, out, _ = run_cli(capsys, "summarize", "--runs", str(tmp_path / "runs.csv"))
    df = pd.read_csv(tmp_path / "runs.csv")
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert code == 0 and len(summary) == 1 and summary.seeds[0] == 2
    assert summary.test_accuracy_mean[0] == pytest.approx(df.test_accuracy.mean())
    assert summary.test_accuracy_std[0] == pytest.approx(df.test_accuracy.std())
    assert f"{df.test_accuracy.mean():.2f} ± {df.test_accuracy.std():.2f}" in out
    assert (tmp_path / "summary.md").read_text() in out


def test_multiplier_scales_steps_and_schedules():
    two = preset_config("fashion-mnist-lenet300", multiplier=2, gmp_every=10)
    one = preset_config("fashion-mnist-lenet300", gmp_every=10)
    assert two.total_steps(600) == 2 * one.total_steps(600) == 12000
    assert two.reference_steps(600) == one.total_steps(600)
    assert two.sparsity_config().gmp_every == 20
    f1, f2 = lr_factor(one, 600), lr_factor(two, 600)
    assert f1(2999) == 1 and f1(3000) == pytest.approx(0.1) and f1(4500) == pytest.approx(0.01)
    assert f2(5999) == 1 and f2(6000) == pytest.approx(0.1) and f2(9000) == pytest.approx(0.01)


def test_init_from_restarts_from_another_runs_weights_and_masks(tmp_path):
    source_cfg = preset_config("digits-lenet300", method="static", sparsity=0.9, epochs=5)
    train(source_cfg, tmp_path / "static")
    source = torch.load(tmp_path / "static" / "checkpoint.pt", weights_only=True)
    cfg = preset_config("digits-lenet300", method="rigl", sparsity=0.9, epochs=1, init_from=str(tmp_path / "static"))
    assert cfg.run_id() != preset_config("digits-lenet300", method="rigl", sparsity=0.9, epochs=1).run_id()
    metrics = train(cfg, tmp_path / "restart")
    log = pd.read_csv(tmp_path / "restart" / "log.csv")
    source_log = pd.read_csv(tmp_path / "static" / "log.csv")
    # it starts from the trained solution: its first losses are those the source ended with
    assert log.train_loss.iloc[0] < source_log.train_loss.iloc[0] / 2
    assert log.train_loss.iloc[0] < 1.5 * source_log.train_loss.iloc[-1]
    assert metrics["layer_density"] == {k: int(v.sum()) / v.numel() for k, v in source["sparsifier"]["masks"].items()}


def test_layer_sparsity_gives_every_method_exact_per_layer_counts(tmp_path, capsys):
    sparse = ["static", "snip", "gmp", "set", "snfs", "rigl"]
    code, _, _ = run_cli(capsys, "run", *QUICK, "--methods", ",".join([*sparse, "small-dense"]),
                         "--layer-sparsity", "0.95,0.8,0", "--out", str(tmp_path))
    assert code == 0
    df = read_runs(tmp_path / "runs.csv").set_index("method")
    # digits LeNet-300-100: 64x300, 300x100, 100x10 weights; 960 + 6000 + 1000 of 50200 stay active
    assert (df.sparsity == round(1 - 7960 / 50200, 4)).all()
    assert (df.loc[sparse].distribution == "custom").all() and (df.loc[sparse].run_id.str.contains("-s0.8414-")).all()
    for method in sparse:
        masks = torch.load(tmp_path / "runs" / df.run_id[method] / "checkpoint.pt", weights_only=True)["sparsifier"]["masks"]
        assert [int(m.sum()) for m in masks.values()] == [960, 6000, 1000], method
    assert df.active_params["small-dense"] == pytest.approx(7960 + 410, rel=0.02)  # parameter-matched width


def test_a_diverging_run_stops_at_the_first_nan_log_step_and_is_flagged(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "run", *QUICK, "--methods", "rigl", "--lr", "1000", "--out", str(tmp_path))
    assert code == 0
    row = read_runs(tmp_path / "runs.csv").iloc[0]
    assert row.steps == 5 and pd.isna(row.test_loss)  # the first log step (log_every 5) of the 56 planned
    run = tmp_path / "runs" / row.run_id
    assert json.loads((run / "metrics.json").read_text())["diverged_at_step"] == 5
    assert list(pd.read_csv(run / "log.csv").step) == [5] and list(pd.read_csv(run / "evals.csv").step) == [5]
    assert "diverged (training loss not finite) and stopped after step 5: a lower --lr may help" in out
    assert "| – | – | – | 0 (+1 diverged) |" in out
    assert torch.load(run / "checkpoint.pt", weights_only=True)["state"]["diverged_at"] == 5
    assert train(preset_config("digits-lenet300", method="rigl", lr=1000.0, epochs=2, log_every=5,
                               checkpoint_every=20), run)["steps"] == 5  # resuming does not train on


def test_commit_is_dirty_for_code_changes_but_not_for_appended_results(tmp_path, monkeypatch):
    import subprocess

    import benchmark.provenance as train_module

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "runs.csv").write_text("run_id\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    monkeypatch.setattr(train_module, "REPO", tmp_path)
    clean = train_module.git_commit()
    assert len(clean) == 12 and "+" not in clean
    (tmp_path / "results" / "runs.csv").write_text("run_id\na\n")  # a sweep appending its rows
    assert train_module.git_commit() == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert train_module.git_commit() == clean + "+dirty"


def test_list_names_presets_models_and_methods(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in ("fashion-mnist-lenet300", "mnist-lenet300", "cifar10-wrn22-2", "imagenet-resnet50",
                 "lenet-5", "wrn-22-2", "resnet-50", "rigl", "small-dense", "erk", "--delta-t"):
        assert name in out


def test_flops_command_matches_the_paper_row(capsys):
    code, out, _ = run_cli(capsys, "flops", "--preset", "imagenet-resnet50", "--method", "rigl",
                           "--distribution", "erk", "--sparsity", "0.8", "--multiplier", "5", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["train_multiplier"] == pytest.approx(2.09, abs=0.02)
    assert result["inference_multiplier"] == pytest.approx(0.42, abs=0.02)
    assert result["steps"] == 160000
    assert RunConfig().method == "rigl"


def test_bf16_autocast_and_channels_last_keep_masks_exact(tmp_path):
    cfg = preset_config("digits-lenet300", method="rigl", sparsity=0.8, epochs=1, amp=True, channels_last=True,
                        model="wrn-10-1", delta_t=5)
    metrics = train(cfg, tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    masks = ckpt["sparsifier"]["masks"]
    for name, mask in masks.items():
        weight = ckpt["model"][f"{name}.weight"]
        assert torch.all(weight[~mask] == 0), name
        assert metrics["layer_density"][name] == int(mask.sum()) / mask.numel()
    assert len(pd.read_csv(tmp_path / "run" / "updates.csv")) == 4  # after t = 5, 10, 15, 20 < t_end 21


def test_flops_extra_reports_left_out_operations_separately(capsys):
    code, out, _ = run_cli(capsys, "flops", "--preset", "fashion-mnist-lenet5", "--method", "static", "--json")
    plain = json.loads(out)
    code, out, _ = run_cli(capsys, "flops", "--preset", "fashion-mnist-lenet5", "--method", "static", "--json", "--extra")
    extra = json.loads(out)
    assert code == 0
    # conv1 24x24x20 and conv2 8x8x50 outputs each get a ReLU; fc1 has 500; pools compare 4 inputs per output
    assert extra["extra_forward_flops"]["relu"] == 24 * 24 * 20 + 8 * 8 * 50 + 500
    assert extra["extra_forward_flops"]["max_pool2d"] == 4 * (12 * 12 * 20 + 4 * 4 * 50)
    assert {k: v for k, v in extra.items() if k != "extra_forward_flops"} == plain  # never mixed in


def test_gpu_check_runs_every_method_and_reports_exact_masks(capsys):
    from benchmark.gpu_check import main as gpu_check

    assert gpu_check(["--device", "cpu", "--models", "lenet-300-100", "--steps", "4", "--batch-size", "8",
                      "--methods", "dense,static,rigl", "--no-amp"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[1] for r in rows] == ["dense", "static", "rigl"] and all(r[-1] == "True" for r in rows)


def test_the_runs_sgd_takes_the_same_steps_as_the_per_tensor_loop():
    """The harness's SGD runs its update on lists of tensors (fewer Python calls): bit for bit the per-tensor SGD."""
    cfg = preset_config("digits-lenet300", method="rigl", sparsity=0.9)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 30), torch.nn.ReLU(), torch.nn.Linear(30, 10))
    twin = [p.detach().clone().requires_grad_() for p in model.parameters()]
    harness = make_optimizer(cfg, model)
    loop = torch.optim.SGD(twin, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay,
                           foreach=False)
    assert harness.param_groups[0]["foreach"] is True
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        for p, q in zip(model.parameters(), twin):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        harness.step()
        loop.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin))
