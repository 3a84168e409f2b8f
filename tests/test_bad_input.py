"""Bad input to either command line is one `error: ...` line naming the problem and the fix, exit code 2,
and leaves what is on disk as it was: no --out or run folder created, nothing half-written."""
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

import methods
from analysis.cli import main as analysis_main
from benchmark.cli import main
from benchmark.presets import preset_config
from benchmark.checkpoints import save_atomic
from benchmark.train import train

QUICK = ["--preset", "digits-lenet300", "--steps", "2", "--log-every", "1", "--methods", "static"]
FIXTURE_RUN = sorted((Path(__file__).parent / "fixtures" / "sweep" / "runs").glob("rigl-s0.9-seed0-*"))[0]


def error_line(capsys) -> str:
    """The one stderr line of a failed command (nothing else on stderr)."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished run folder (config.json, metrics.json, checkpoint.pt) of a 3-step digits run."""
    folder = tmp_path_factory.mktemp("finished") / "static"
    train(preset_config("digits-lenet300", method="static", sparsity=0.9, steps=3, log_every=1), folder)
    return folder


BAD_RUN_FLAGS = [
    (["--seeds", "0"], "--seeds 0 is a count of no seeds; pass --seeds 1"),
    (["--seed", "-1"], "seed must be >= 0"),
    (["--device", "tpu"], "unknown device 'tpu'; use auto, cpu, cuda, cuda:N"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'"),
    (["--device", ""], "unknown device ''"),
    (["--steps", "0", "--epochs", "nan"], "epochs must be a finite number, got nan"),
    (["--steps", "0", "--epochs", "inf"], "epochs must be a finite number, got inf"),
    (["--epochs", "-1"], "epochs must be >= 0"),
    (["--steps", "-1"], "steps must be >= 0"),
    (["--train-subset", "-5"], "train_subset must be >= 0"),
    (["--warmup-epochs", "-1"], "warmup_epochs must be >= 0"),
    (["--warmup-epochs", "nan"], "warmup_epochs must be a finite number"),
    (["--label-smoothing", "1"], "label_smoothing must be in [0, 1)"),
    (["--label-smoothing", "-0.1"], "label_smoothing must be in [0, 1)"),
    (["--lr", "inf"], "lr must be a finite number, got inf"),
    (["--momentum", "1"], "momentum must be in [0, 1)"),
    (["--weight-decay", "-1"], "weight_decay must be >= 0"),
    (["--grad-clip", "-1"], "grad_clip must be >= 0 (0: no clipping); got grad_clip=-1.0"),
    (["--grad-clip", "nan"], "grad_clip must be a finite number, got nan"),
    (["--optimizer", "adagrad"], "optimizer must be one of sgd, adam, adamw; got optimizer='adagrad'"),
    (["--lr-gamma", "0"], "lr_gamma must be > 0"),
    (["--lr-milestones", "-1"], "lr_milestones must be epochs >= 0"),
    (["--lr-milestones", "nan"], "lr_milestones must be a list of finite numbers"),
    (["--multiplier", "inf"], "multiplier must be a finite number"),
    (["--eval-every", "-1"], "eval_every must be >= 0"),
    (["--dsr-threshold", "nan"], "dsr_threshold must be a finite number"),
    (["--dsr-prune-fraction", "2"], "dsr_prune_fraction must be in (0, 1)"),
    (["--deepr-l1", "-1"], "deepr_l1 must be >= 0"),
    (["--model", "wrn-10-0"], "widen factor must be >= 1"),
    (["--model", "lenet-5"], "lenet-5 needs images of at least 16x16"),  # digits are 8x8
    (["--model", "char-gru-small"], "char-gru is a character-level language model and takes a text dataset"),
    (["--workers", "0"], "--workers must be >= 1 or auto"),
    (["--workers", "many"], "--workers takes a count or auto, got 'many'"),
    (["--cpus-per-run", "-1"], "--cpus-per-run must be a number > 0"),
    (["--out", ""], "--out is empty; pass a folder"),
    # found when the data is loaded, still before any folder is made
    (["--train-subset", "100000"], "train_subset=100000 exceeds the 1437 training examples of digits"),
    (["--batch-size", "5000"], "batch size 5000 exceeds the 1437 training examples of digits"),
    (["--init-from", "/nonexistent/run"], "no checkpoint at /nonexistent/run; pass a run folder"),
]
if not torch.cuda.is_available():
    BAD_RUN_FLAGS.append((["--device", "cuda"], "CUDA is not available; use --device cpu or auto"))


@pytest.mark.parametrize("args,message", BAD_RUN_FLAGS)
def test_a_bad_run_flag_leaves_a_missing_out_missing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["run", *QUICK, "--out", str(out), *args]) == 2
    assert message in error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("args,message", [BAD_RUN_FLAGS[i] for i in (0, 5, 12, 35, 36)])
def test_a_bad_run_flag_leaves_an_existing_out_byte_identical(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["run", *QUICK, "--out", str(out)]) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert main(["run", *QUICK, "--seeds", "2", "--out", str(out), *args]) == 2
    assert message in error_line(capsys)
    assert snapshot(out) == before


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["run", *QUICK, "--out", str(tmp_path / "file" / "sub")]) == 2
    assert "is a file, not a folder; pass a folder" in error_line(capsys)


def test_a_negative_warmup_used_to_train_with_a_negative_lr():
    with pytest.raises(ValueError, match="warmup_epochs must be >= 0"):
        preset_config("digits-lenet300", warmup_epochs=-1)


def test_settings_are_type_checked_in_one_place():
    cfg = preset_config("digits-lenet300")
    for field, value in [("lr", float("nan")), ("delta_t", 2.5), ("nesterov", "yes"), ("lr_milestones", (1.0, math.inf)),
                         ("seed", True), ("dataset", None)]:
        bad = preset_config("digits-lenet300")
        setattr(bad, field, value)
        with pytest.raises(ValueError, match=f"^{field} must be "):
            bad.validate()
    cfg.validate()
    with pytest.raises(ValueError, match="alpha must be a finite number, got nan"):
        methods.make_config(alpha=float("nan"))


def test_flops_and_dry_run_refuse_what_training_would(capsys):
    assert main(["flops", "--preset", "digits-lenet300", "--batch-size", "5000"]) == 2
    assert "batch size 5000 exceeds the 1437 training examples of digits" in error_line(capsys)
    assert main(["flops", "--multiplier", "inf"]) == 2
    assert "multiplier must be a finite number" in error_line(capsys)
    assert main(["run", *QUICK, "--dry-run", "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in error_line(capsys)


@pytest.mark.parametrize("args,message", [
    (["--budget", "nan"], "--budget a number of seconds > 0"),
    (["--budget", "inf"], "--budget a number of seconds > 0"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_perf_bad_numbers_and_devices(capsys, args, message):
    assert main(["perf", "--models", "lenet-300-100", "--skip", "training,inference", *args]) == 2
    assert message in error_line(capsys)


def test_summarize_reads_everything_before_writing_anything(tmp_path, capsys):
    runs = pd.read_csv(FIXTURE_RUN.parent.parent / "runs.csv")
    runs["sparsity"] = runs["sparsity"].astype(object)
    runs.loc[3, "sparsity"] = "lots"
    runs.to_csv(tmp_path / "runs.csv", index=False)
    assert main(["summarize", "--runs", str(tmp_path)]) == 2  # a folder means its runs.csv
    assert f"{tmp_path / 'runs.csv'} line 5 has sparsity 'lots', not a number" in error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]
    assert main(["summarize", "--runs", ""]) == 2
    assert "--runs is empty" in error_line(capsys)
    runs.head(0).to_csv(tmp_path / "runs.csv", index=False)
    assert main(["summarize", "--runs", str(tmp_path / "runs.csv")]) == 2
    assert f"{tmp_path / 'runs.csv'} has no rows; run `python -m benchmark run` first" in error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]


def test_analysis_refuses_non_numbers_instead_of_dropping_rows(tmp_path, capsys):
    runs = pd.read_csv(FIXTURE_RUN.parent.parent / "runs.csv")
    runs["test_accuracy"] = runs["test_accuracy"].astype(object)
    runs.loc[0, "test_accuracy"] = "97,5"
    runs.to_csv(tmp_path / "runs.csv", index=False)
    assert analysis_main(["table", "--runs", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "t")]) == 2
    assert "line 2 has test_accuracy '97,5', not a number" in error_line(capsys)
    assert not (tmp_path / "t").exists()


def test_export_checks_its_arguments_before_writing(finished_run, tmp_path, capsys):
    assert main(["export", str(finished_run), str(tmp_path), "--batch-size", "4"]) == 2
    assert "is a folder; pass a file name such as model.sparse.pt" in error_line(capsys)
    assert main(["export", str(finished_run), str(tmp_path / "m.pt"), "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_save_atomic_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"step": 1}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_atomic({"step": lambda: 2}, path)  # a lambda cannot be pickled
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_a_failed_download_leaves_no_dataset_folder(tmp_path, monkeypatch, capsys):
    import torchvision

    import benchmark.data as data

    class Unreachable:
        def __init__(self, root, train, download):
            (Path(root) / "MNIST" / "raw").mkdir(parents=True)
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Unreachable)
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "repo-data")
    monkeypatch.delenv("SPARSEBENCH_DATA", raising=False)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "other.txt").write_text("x")
    for root in (tmp_path / "new" / "data", tmp_path / "kept"):
        assert main(["run", *QUICK, "--dataset", "mnist", "--data-root", str(root), "--out", str(tmp_path / "out")]) == 2
        assert "dataset 'mnist' not found" in error_line(capsys)
    assert snapshot(tmp_path) == {"kept/other.txt": b"x"} and not (tmp_path / "new").exists()


@pytest.mark.parametrize("args,message", [
    (["--range", "0", "inf"], "high must be a finite number, got inf"),
    (["--bezier-epochs", "inf"], "bezier_epochs must be a finite number"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'"),
])
def test_landscape_settings_are_checked_first(finished_run, tmp_path, capsys, args, message):
    out = tmp_path / "landscape"
    assert analysis_main(["landscape", str(finished_run), str(finished_run), "--out", str(out), *args]) == 2
    assert message in error_line(capsys)
    assert not out.exists()


def test_plot_checks_the_landscape_folder_before_drawing(tmp_path, capsys):
    (tmp_path / "landscape").mkdir()
    (tmp_path / "landscape" / "landscape.json").write_text("{}")
    out = tmp_path / "figures"
    assert analysis_main(["plot", "--runs", str(FIXTURE_RUN.parent.parent / "runs.csv"), "--landscape",
                          str(tmp_path / "landscape"), "--out", str(out)]) == 2
    assert "landscape.json lacks start_label and end_label" in error_line(capsys)
    assert not out.exists()


def test_an_optimizer_without_the_sparse_weights_is_refused():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    other = torch.nn.Linear(64, 10)
    with pytest.raises(ValueError, match=r"the optimizer does not hold the sparse weight\(s\) of 1; create it from "
                                         r"this model's parameters"):
        methods.create("rigl", model, torch.optim.SGD(other.parameters(), lr=0.1), total_steps=10, sparsity=0.5)
    with pytest.raises(ValueError, match="optimizer must be a torch.optim.Optimizer"):
        methods.create("rigl", model, None, total_steps=10, sparsity=0.5)


# ---- run folders given to export and analysis --------------------------------------------------

def broken_copy(source: Path, folder: Path, edit=None, raw: bytes | None = None, file="config.json") -> Path:
    """A copy of run folder `source` with its config.json (or `file`) edited or replaced by `raw`."""
    shutil.copytree(source, folder)
    if raw is not None:
        (folder / file).write_bytes(raw)
    else:
        record = json.loads((folder / file).read_text())
        edit(record)
        (folder / file).write_text(json.dumps(record))
    return folder


RECORD_DAMAGE = [
    (lambda r: r["config"].pop("dataset"), None, "config.json lacks config.dataset; restore it, or delete the run "
                                                 "folder and run `python -m benchmark run` again"),
    (lambda r: r["config"].pop("model"), None, "config.json lacks config.model"),
    (lambda r: r.pop("width"), None, "config.json lacks width"),
    (lambda r: r["config"].update(dataset="svhn"), None, "holds a bad setting (unknown dataset 'svhn'; known datasets"),
    (lambda r: r["config"].update(model="vgg"), None, "holds a bad setting (unknown model 'vgg'; known models"),
    (lambda r: r["config"].update(lr="fast"), None, "holds a bad setting (lr must be a finite number, got 'fast')"),
    (lambda r: r["config"].update(colour="red"), None, "has setting(s) colour unknown to this version of sparsebench"),
    (None, b"[1, 2]", "config.json holds no run settings ('config')"),
    (None, b'{"config": ', "config.json is not valid JSON (Expecting value at line 1 column 12)"),
]


@pytest.mark.parametrize("edit,raw,message", RECORD_DAMAGE)
def test_export_names_a_damaged_config_json(finished_run, tmp_path, capsys, edit, raw, message):
    run = broken_copy(finished_run, tmp_path / "run", edit, raw)
    assert main(["export", str(run), str(tmp_path / "model.pt")]) == 2
    assert f"error: {run / 'config.json'}" in (err := error_line(capsys)) and message in err
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("command", ["plot", "table"])
@pytest.mark.parametrize("edit,raw,message", [RECORD_DAMAGE[i] for i in (0, 3, 4, 6, 8)])
def test_analysis_names_a_damaged_config_json(tmp_path, capsys, command, edit, raw, message):
    run = broken_copy(FIXTURE_RUN, tmp_path / "runs" / FIXTURE_RUN.name, edit, raw)
    assert analysis_main([command, "--run-dirs", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert f"error: {run / 'config.json'}" in (err := error_line(capsys)) and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("raw,message", [
    (b"{nope", "metrics.json is not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)"),
    (b"{}", "metrics.json lacks 'flops' or is not a metrics.json of this suite"),
])
def test_analysis_names_a_damaged_metrics_json(tmp_path, capsys, raw, message):
    run = broken_copy(FIXTURE_RUN, tmp_path / "runs" / FIXTURE_RUN.name, raw=raw, file="metrics.json")
    assert analysis_main(["table", "--run-dirs", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert f"error: {run / 'metrics.json'}" in (err := error_line(capsys)) and message in err


def test_paper_csv_without_its_columns_is_named(tmp_path, capsys):
    (tmp_path / "paper.csv").write_text("a,b\n1,2\n")
    assert analysis_main(["plot", "--runs", str(FIXTURE_RUN.parent.parent / "runs.csv"), "--paper-csv",
                          str(tmp_path / "paper.csv"), "--out", str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'paper.csv'} lacks column(s) dataset, model" in error_line(capsys)
