"""Scale-out: data-parallel runs under torchrun (gloo, 2 CPU processes) and sweeps on a local Ray cluster."""
import json
import os
import subprocess
import sys
import threading
import time

import pandas as pd
import psutil
import pytest
import torch

from benchmark.cli import main
from benchmark.presets import preset_config
from benchmark.sweep import run_sweep

METHODS = "rigl,snfs,set,gmp,snip,static"
# 280 steps at global batch 50: updates every 20 steps until step 210, GMP every 3 steps
GRID = ["--preset", "digits-lenet300", "--epochs", "10", "--sparsity", "0.8", "--gmp-every", "3",
        "--device", "cpu", "--log-every", "10"]


@pytest.fixture(scope="module")
def one_and_two_processes(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "benchmark",
                           "run", *GRID, "--methods", METHODS, "--check-replicas", "--out", str(root / "two")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["run", *GRID, "--methods", METHODS, "--out", str(root / "one")]) == 0
    return root, done.stdout


def test_replicas_keep_identical_masks_and_weights(one_and_two_processes):
    root, stdout = one_and_two_processes
    two = pd.read_csv(root / "two" / "runs.csv")
    assert sorted(two.method) == sorted(METHODS.split(",")) and (two.world_size == 2).all()
    assert stdout.count("done ") == 6  # only rank 0 reports and writes
    for run_id in two.run_id:
        metrics = json.loads((root / "two" / "runs" / run_id / "metrics.json").read_text())
        fingerprints = metrics["replica_fingerprints"]  # sha256 of every weight and mask, per rank
        assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1], run_id
        record = json.loads((root / "two" / "runs" / run_id / "config.json").read_text())
        assert record["world_size"] == 2 and record["per_rank_batch"] == 25 and record["config"]["batch_size"] == 50
        updates = pd.read_csv(root / "two" / "runs" / run_id / "updates.csv")
        if run_id.startswith(("rigl", "snfs", "set", "gmp")):
            assert len(updates) > 0


def test_two_processes_match_one_process_at_the_same_global_batch(one_and_two_processes):
    root, _ = one_and_two_processes
    one = pd.read_csv(root / "one" / "runs.csv").set_index("run_id")
    two = pd.read_csv(root / "two" / "runs.csv").set_index("run_id")
    assert set(one.index) == set(two.index)  # the same runs: world size is not part of a run's identity
    for run_id in one.index:
        assert abs(one.test_accuracy[run_id] - two.test_accuracy[run_id]) <= 1.0, run_id
        assert one.train_flops[run_id] == two.train_flops[run_id]
        a = torch.load(root / "one" / "runs" / run_id / "checkpoint.pt", weights_only=True)
        b = torch.load(root / "two" / "runs" / run_id / "checkpoint.pt", weights_only=True)
        for name, mask in a["sparsifier"]["masks"].items():  # masks agree but for float-order ties
            assert (mask != b["sparsifier"]["masks"][name]).float().mean() < 0.01, (run_id, name)
        for key, value in a["model"].items():
            assert torch.allclose(value, b["model"][key], atol=5e-3), (run_id, key)
        loss_one = pd.read_csv(root / "one" / "runs" / run_id / "log.csv").train_loss
        loss_two = pd.read_csv(root / "two" / "runs" / run_id / "log.csv").train_loss
        assert ((loss_one - loss_two).abs() < 1e-3 * loss_one.abs().max()).all(), run_id


def test_batch_not_divisible_by_processes_is_refused(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "benchmark",
                           "run", *GRID, "--batch-size", "51", "--methods", "static", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "--batch-size 51 (the global batch) must be divisible by the 2 data-parallel processes" in done.stderr


# ----- Ray --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _configs(epochs):
    return [preset_config("digits-lenet300", method=m, sparsity=0.8, epochs=epochs, checkpoint_every=20,
                          log_every=10, device="cpu") for m in ("rigl", "static")]


def test_ray_executor_writes_the_same_rows_as_the_local_one(ray_cluster, tmp_path):
    local = pd.DataFrame(run_sweep(_configs(2), tmp_path / "local", report=lambda _: None)).set_index("run_id")
    remote = pd.DataFrame(run_sweep(_configs(2), tmp_path / "ray", executor="ray", report=lambda _: None))
    on_disk = pd.read_csv(tmp_path / "ray" / "runs.csv").set_index("run_id")
    assert sorted(on_disk.index) == sorted(local.index) == sorted(remote.run_id)
    for column in ("test_accuracy", "test_loss", "train_flops", "global_density"):
        assert (on_disk[column] == local.loc[on_disk.index, column]).all(), column


def test_ray_retries_a_killed_run_which_resumes_from_its_checkpoint(ray_cluster, tmp_path):
    configs = _configs(60)  # 1680 steps: long enough to be killed mid-run
    target = tmp_path / "ray" / "runs" / configs[0].run_id()
    killed = []

    def kill_when_checkpointed():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            if (target / "checkpoint.pt").exists() and not (target / "metrics.json").exists():
                for proc in psutil.process_iter(["cmdline"]):
                    if any("ray::_run_one" in part for part in proc.info["cmdline"] or []):
                        proc.kill()
                        killed.append(proc.pid)
                        break
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_when_checkpointed)
    watcher.start()
    run_sweep(configs, tmp_path / "ray", executor="ray", report=lambda _: None)
    watcher.join()
    assert killed, "no Ray worker was killed mid-run"
    rows = pd.read_csv(tmp_path / "ray" / "runs.csv")
    assert sorted(rows.run_id) == sorted(c.run_id() for c in configs)  # each run exactly once
    uninterrupted = run_sweep(configs[:1], tmp_path / "local", report=lambda _: None)[0]
    resumed = rows.set_index("run_id").loc[configs[0].run_id()]
    assert resumed.test_accuracy == uninterrupted["test_accuracy"]
    assert resumed.test_loss == uninterrupted["test_loss"]  # a resumed run ends bit-identical


def test_torchrun_resumes_an_interrupted_run(tmp_path):
    from benchmark.sweep import run_dir
    from benchmark.train import RunInterrupted, train

    cfg = preset_config("digits-lenet300", method="rigl", sparsity=0.8, epochs=10, gmp_every=3, device="cpu",
                        log_every=10)
    with pytest.raises(RunInterrupted):
        train(cfg, run_dir(tmp_path, cfg), stop_after=100)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "benchmark",
                           "run", *GRID, "--methods", "rigl", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = run_dir(tmp_path, cfg)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["steps"] == 280 and len(set(metrics["replica_fingerprints"])) == 1
    assert list(pd.read_csv(folder / "log.csv").step) == list(range(10, 281, 10))  # resumed after step 100
