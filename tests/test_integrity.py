"""Result integrity: one protocol, one code version, one training per row of runs.csv."""
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import benchmark.provenance as provenance
import benchmark.sweep as sweep_module
import benchmark.train as train_module
from analysis import tables
from analysis.runs import group_title, groups, load_runs
from benchmark.claim import CLAIM_FILE, claim
from benchmark.cli import main
from benchmark.config import RunConfig
from benchmark.presets import preset_config
from benchmark.results import RUN_COLUMNS, SCHEMA_VERSION, ResultsError, append_row, read_runs, summarize
from benchmark.sweep import expand_grid

REPO = Path(__file__).resolve().parent.parent
QUICK = ["--preset", "digits-lenet300", "--log-every", "5", "--checkpoint-every", "20"]
# what an execution-only setting may be changed to without changing what is computed
EXECUTION = {"preset": "other", "device": "cpu", "data_root": "/elsewhere", "checkpoint_every": 7,
             "check_replicas": True}


def _changed(name: str, value):
    """Another valid value of a setting."""
    special = {"method": "set", "dataset": "mnist", "model": "lenet-5", "optimizer": "adamw",
               "distribution": "erk", "anneal": "linear", "snip_scope": "global", "dense_first": True,
               "init_from": "results/runs/x", "layer_sparsity": (0.5, 0.5, 0.0), "lr_milestones": (1.0,),
               "dense_lr_milestones": (1.0,), "inputs": "unit", "init": "glorot", "execution": "sparse",
               "sparsity": 0.8, "t_end": 0.5, "gmp_stop": 0.7, "momentum": 0.5, "val_fraction": 0.1,
               "rewind_fraction": 0.02, "snfs_momentum": 0.5, "alpha": 0.2, "label_smoothing": 0.1,
               "structure": "2:4"}
    if name in special or name in EXECUTION:
        return {**special, **EXECUTION}[name]
    if isinstance(value, bool):
        return not value
    return value + 1 if isinstance(value, int) else value * 2 + 0.5


def test_every_setting_but_the_seed_changes_the_key_and_execution_settings_do_not():
    base = preset_config("digits-lenet300", method="rigl", sparsity=0.9)
    for f in dataclasses.fields(RunConfig):
        other = dataclasses.replace(base, **{f.name: _changed(f.name, getattr(base, f.name))})
        if f.name == "layer_sparsity":
            other = dataclasses.replace(other, distribution="custom")
        if f.name in EXECUTION:
            assert other.config_key() == base.config_key() and other.run_id() == base.run_id(), f.name
        elif f.name == "seed":
            assert other.config_key() == base.config_key() and other.run_id() != base.run_id()
        else:
            assert other.config_key() != base.config_key(), f.name
    assert set(base.settings()) == {f.name for f in dataclasses.fields(RunConfig)} - set(EXECUTION) - {"seed"}


def test_the_key_hashes_explicit_values_so_a_default_never_changes_what_a_key_means():
    cfg = preset_config("digits-lenet300", method="rigl", sparsity=0.9)
    settings = cfg.settings()
    assert settings["lr"] == 0.1 and settings["amp"] is False and settings["threads"] == 1  # defaults included
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    assert cfg.config_key() == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert cfg.run_id() == f"rigl-s0.9-seed0-{cfg.config_key()}"
    assert cfg.config_key() == "a2b6855104d7"  # pinned: if this changes, old folders need `benchmark migrate`


def _train_cli(capsys, out, *extra):
    code = main(["run", *QUICK, "--methods", "rigl", "--sparsity", "0.9", "--out", str(out), *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_rows_carry_the_key_settings_and_schema_and_summaries_keep_protocols_apart(tmp_path, capsys):
    _train_cli(capsys, tmp_path, "--epochs", "2")
    _train_cli(capsys, tmp_path, "--epochs", "1", "--lr", "0.5")
    df = read_runs(tmp_path / "runs.csv")
    assert list(df.columns) == RUN_COLUMNS and (df.schema_version == SCHEMA_VERSION).all()
    assert sorted(zip(df.epochs, df.lr)) == [(1.0, 0.5), (2.0, 0.1)] and (df.seed == 0).all()
    for r in df.itertuples():
        assert r.config_key == hashlib.sha256(r.settings.encode()).hexdigest()[:12]
        assert r.run_id.endswith(r.config_key) and r.code == provenance.code_fingerprint()
    summary = summarize(df)
    assert len(summary) == 2 and (summary.seeds == 1).all()  # two protocols, never "2 seeds"
    assert sorted(summary.protocol) == ["epochs=1, lr=0.5", "epochs=2, lr=0.1"]
    code = main(["summarize", "--runs", str(tmp_path / "runs.csv")])
    out = capsys.readouterr().out
    assert code == 0 and "| rigl (epochs=1, lr=0.5) |" in out and "| rigl (epochs=2, lr=0.1) |" in out
    runs = load_runs(tmp_path / "runs.csv")
    assert [group_title(*g) for g in groups(runs)] == ["digits / lenet-300-100 (epochs=1, lr=0.5)",
                                                       "digits / lenet-300-100 (epochs=2, lr=0.1)"]
    text = tables.markdown_table(runs)
    assert text.count("### digits / lenet-300-100 (") == 2 and text.count("| RigL |") == 2


def test_two_rows_of_one_key_and_seed_are_an_error_naming_both_runs():
    df = pd.read_csv(REPO / "tests" / "fixtures" / "sweep" / "runs.csv")
    twin = df.iloc[[0]].assign(run_id="dense-copy")
    with pytest.raises(ResultsError, match=f"runs {df.run_id[0]} and dense-copy have the same settings"):
        summarize(pd.concat([df, twin]))
    with pytest.raises(ResultsError, match="one training counted twice"):
        load_runs(pd.concat([df, twin]))


def test_an_appended_run_id_is_refused(tmp_path):
    row = {c: "1" for c in RUN_COLUMNS} | {"run_id": "a", "schema_version": SCHEMA_VERSION}
    append_row(tmp_path / "runs.csv", row)
    with pytest.raises(ResultsError, match="already has a row for run a"):
        append_row(tmp_path / "runs.csv", row)
    assert len(read_runs(tmp_path / "runs.csv")) == 1


def test_a_cut_last_line_is_moved_aside_and_its_run_trained_again(tmp_path, capsys):
    _train_cli(capsys, tmp_path, "--epochs", "1", "--seeds", "2")
    path = tmp_path / "runs.csv"
    text = path.read_text()
    cut = text[: len(text) - 40]  # the second row, cut in the middle of its settings
    path.write_text(cut)
    df = read_runs(path)
    notice = capsys.readouterr().err
    assert len(df) == 1 and "its last line was cut short" in notice and notice.count("\n") == 1
    partial = cut[cut.rfind("\n") + 1:]
    assert (tmp_path / "runs.csv.partial").read_text() == partial + "\n"
    assert path.read_text() == cut[: cut.rfind("\n") + 1]  # the complete lines, untouched
    out = _train_cli(capsys, tmp_path, "--epochs", "1", "--seeds", "2")
    assert "skipping 1 finished run(s)" in out and out.count("done rigl-s0.9-seed1-") == 1
    assert path.read_text() == text  # the same bits as the first time


def test_results_do_not_depend_on_the_number_of_workers(tmp_path, capsys):
    grid = ["--methods", "static,rigl", "--sparsity", "0.9", "--epochs", "1"]
    assert main(["run", *QUICK, *grid, "--out", str(tmp_path / "inline")]) == 0
    assert main(["run", *QUICK, *grid, "--workers", "2", "--out", str(tmp_path / "workers")]) == 0
    capsys.readouterr()
    inline, workers = (read_runs(tmp_path / d / "runs.csv").set_index("run_id").sort_index()
                       for d in ("inline", "workers"))
    columns = ["test_loss", "test_accuracy", "best_test_accuracy", "train_flops", "global_density"]
    assert inline.index.tolist() == workers.index.tolist()
    pd.testing.assert_frame_equal(inline[columns], workers[columns], check_exact=True)


SWEEP = """
import sys
from pathlib import Path
from benchmark.presets import preset_config
from benchmark.sweep import run_sweep
configs = [preset_config("digits-lenet300", method=m, sparsity=0.9, seed=s, epochs=8)
           for m in sys.argv[2].split(",") for s in (0, 1)]
run_sweep(configs, Path(sys.argv[1]), report=print)
"""


def test_two_concurrent_sweeps_train_each_run_once_and_append_one_row(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", SWEEP, str(tmp_path), grid], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env)
             for grid in ("static,set,rigl", "rigl,set,snip")]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    rows = read_runs(tmp_path / "runs.csv")
    expected = {c.run_id() for m in ("static", "set", "rigl", "snip")
                for c in expand_grid("digits-lenet300", [m], [0.9], [0, 1], epochs=8)}
    assert sorted(rows.run_id) == sorted(expected)  # one row per run
    trained = [line.split()[1].rstrip(":") for out in outputs for line in out.splitlines() if line.startswith("done ")]
    assert sorted(trained) == sorted(expected)  # each trained by exactly one of the sweeps


HOLD = """
import sys, time
from pathlib import Path
from benchmark.claim import claim
with claim(Path(sys.argv[1])) as held:
    print(held, flush=True)
    time.sleep(60)
"""


def test_a_claim_excludes_others_and_a_killed_holders_claim_is_taken_over(tmp_path):
    folder = tmp_path / "runs" / "r"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == "True"
    with claim(folder) as held:
        assert held is False
    holder.kill()
    holder.wait()
    assert (folder / CLAIM_FILE).exists()  # the killed holder could not clean up
    with claim(folder) as held:
        assert held is True
    assert not folder.exists()  # nothing was trained: the empty run folder is gone
    with claim(folder) as held:
        (folder / "log.csv").write_text("step\n")
    assert sorted(p.name for p in folder.iterdir()) == ["log.csv"]  # released: the lock file is gone


def test_a_run_of_other_training_code_is_stale_named_once_and_retrained_only_on_request(tmp_path, capsys,
                                                                                         monkeypatch):
    _train_cli(capsys, tmp_path, "--epochs", "1")
    before = read_runs(tmp_path / "runs.csv")
    run_id, old = before.run_id[0], before.code[0]
    for module in (sweep_module, train_module):
        monkeypatch.setattr(module, "code_fingerprint", lambda: "0123456789ab")
    out = _train_cli(capsys, tmp_path, "--epochs", "1")
    assert f"stale: {run_id} finished by other training code (code {old}, now 0123456789ab); --rerun-stale " \
           "trains it again" in out and "done " not in out
    assert read_runs(tmp_path / "runs.csv").equals(before)
    out = _train_cli(capsys, tmp_path, "--epochs", "1", "--rerun-stale")
    assert out.count(f"done {run_id}") == 1
    after = read_runs(tmp_path / "runs.csv")
    assert len(after) == 1 and after.code[0] == "0123456789ab"
    assert after.test_loss[0] == before.test_loss[0]  # the same training, by "other" code
    assert read_runs(tmp_path / "runs.stale.csv").code.tolist() == [old]  # nothing lost
    assert (tmp_path / "stale" / f"{run_id}-{old}" / "metrics.json").exists()


def test_a_row_from_before_fingerprints_is_stale_as_unrecorded(tmp_path):
    # runs.csv rows written before the `code` column was filled read back with NaN (an empty cell) or ""
    assert sweep_module.stale_code(tmp_path, {"code": float("nan")}) == "unrecorded"
    assert sweep_module.stale_code(tmp_path, {"code": ""}) == "unrecorded"
    assert sweep_module.stale_code(tmp_path, {"code": sweep_module.code_fingerprint()}) == ""


def test_an_interrupted_run_of_other_code_is_not_resumed(tmp_path, monkeypatch):
    cfg = preset_config("digits-lenet300", method="rigl", sparsity=0.9, epochs=2, log_every=5)
    with pytest.raises(train_module.RunInterrupted):
        train_module.train(cfg, tmp_path / "r", stop_after=10)
    monkeypatch.setattr(train_module, "code_fingerprint", lambda: "0123456789ab")
    with pytest.raises(provenance.StaleRun, match="started by other training code .*--rerun-stale"):
        train_module.train(cfg, tmp_path / "r")


def test_the_fingerprint_covers_the_training_code_only(tmp_path, monkeypatch):
    names = {p.relative_to(REPO).as_posix() for p in provenance.training_sources()}
    assert {"benchmark/train.py", "benchmark/data.py", "benchmark/flops.py", "benchmark/models.py",
            "methods/base.py", "methods/dynamic.py", "methods/csrc/sparse_kernels.c"} <= names
    assert not names & {"benchmark/cli.py", "benchmark/presets.py", "benchmark/results.py", "benchmark/sweep.py"}
    for package in ("benchmark", "methods"):
        shutil.copytree(REPO / package, tmp_path / package)
    monkeypatch.setattr(provenance, "REPO", tmp_path)
    monkeypatch.setattr(provenance, "TRAINING_ENTRY", tmp_path / "benchmark" / "train.py")
    fingerprint = provenance.code_fingerprint.__wrapped__
    base = fingerprint()
    (tmp_path / "benchmark" / "cli.py").write_text("# a new command line\n")
    (tmp_path / "benchmark" / "presets.py").write_text("# other presets\n")
    assert fingerprint() == base
    with open(tmp_path / "methods" / "dynamic.py", "a") as f:
        f.write("\n# a change to RigL\n")
    assert fingerprint() != base


def test_migrate_rekeys_a_schema_1_folder_once(tmp_path, capsys):
    _train_cli(capsys, tmp_path, "--epochs", "1")
    path = tmp_path / "runs.csv"
    current = read_runs(path)
    folder = tmp_path / "runs" / current.run_id[0]
    # make it look like a folder of schema 1: old id, old columns, no key, no threads setting
    old_id = "rigl-s0.9-seed0-0000000000"
    record = json.loads((folder / "config.json").read_text())
    del record["config"]["threads"], record["config_key"]
    (folder / "config.json").write_text(json.dumps({**record, "run_id": old_id}))
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**metrics, "run_id": old_id}))
    folder.rename(tmp_path / "runs" / old_id)
    legacy = current.drop(columns=["config_key", "code", "settings", "schema_version", "threads"])
    legacy.assign(run_id=old_id).to_csv(path, index=False)
    assert main(["summarize", "--runs", str(path)]) == 2
    assert "benchmark migrate --out" in capsys.readouterr().err
    assert main(["migrate", "--out", str(tmp_path)]) == 0
    migrated = read_runs(path)
    assert migrated.run_id.tolist() == current.run_id.tolist() and (tmp_path / "runs" / current.run_id[0]).is_dir()
    assert migrated.drop(columns=["code"]).equals(current.drop(columns=["code"]))
    assert migrated.code[0] == current.code[0]  # taken from metrics.json
    assert (tmp_path / "runs.csv.before-migrate").exists()
    assert main(["migrate", "--out", str(tmp_path)]) == 0 and read_runs(path).equals(migrated)


def test_committed_results_are_keyed_by_their_settings():
    for runs_csv in sorted((REPO / "results").glob("*/runs.csv")):
        df = read_runs(runs_csv)
        for r in df.itertuples():
            assert r.config_key == hashlib.sha256(r.settings.encode()).hexdigest()[:12], r.run_id
            record = json.loads((runs_csv.parent / "runs" / r.run_id / "config.json").read_text())
            cfg = RunConfig(**record["config"])
            assert (cfg.run_id(), record["config_key"]) == (r.run_id, r.config_key)
