"""Opening a results folder never runs code: checkpoints hold tensors and plain values and are loaded with
weights_only=True everywhere; a checkpoint whose unpickling would run code is refused with one line."""
import re
import shutil
from pathlib import Path

import pytest
import torch

import methods
from analysis.cli import main as analysis_main
from benchmark.cli import main
from benchmark.presets import preset_config
from benchmark.train import train

QUICK = ["--preset", "digits-lenet300", "--steps", "3", "--log-every", "1", "--methods", "static"]


class RunsCode:
    """Unpickling this creates the file `marker` (as a malicious checkpoint could run anything)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A results folder with one finished static run, trained by the command line."""
    out = tmp_path_factory.mktemp("results")
    assert main(["run", *QUICK, "--out", str(out)]) == 0
    return out


def plant(run: Path, marker: Path) -> bytes:
    """Replace `run`'s checkpoint.pt with one whose unpickling would create `marker`; return its bytes."""
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["model"]["fc1.weight"] = RunsCode(marker)
    torch.save(state, run / "checkpoint.pt")
    return (run / "checkpoint.pt").read_bytes()


def refused(capsys, checkpoint: Path) -> None:
    err = capsys.readouterr().err
    assert re.fullmatch(rf"error: checkpoint {re.escape(str(checkpoint))} holds Python objects \((builtins|io)\.open\) "
                        r"that loading would run as code, .*; it was not written by sparsebench and is refused: "
                        r"delete it to restart that run from step 0\n", err), err


@pytest.fixture
def evil(finished, tmp_path) -> tuple[Path, Path, bytes]:
    """(a copy of the finished results folder whose run has a code-running checkpoint, the marker, its bytes)."""
    out = tmp_path / "results"
    shutil.copytree(finished, out)
    (run,) = (out / "runs").iterdir()
    marker = tmp_path / "marker"
    return out, marker, plant(run, marker)


def test_resuming_from_a_code_running_checkpoint_is_refused(evil, capsys):
    out, marker, content = evil
    (run,) = (out / "runs").iterdir()
    (run / "metrics.json").unlink()  # unfinished: the sweep resumes it from its checkpoint
    (out / "runs.csv").unlink()
    assert main(["run", *QUICK, "--out", str(out)]) == 2
    refused(capsys, run / "checkpoint.pt")
    assert not marker.exists() and (run / "checkpoint.pt").read_bytes() == content


def test_init_from_a_code_running_checkpoint_is_refused(evil, tmp_path, capsys):
    out, marker, _ = evil
    (run,) = (out / "runs").iterdir()
    assert main(["run", *QUICK, "--methods", "rigl", "--init-from", str(run), "--out", str(tmp_path / "new")]) == 2
    refused(capsys, run / "checkpoint.pt")
    assert not marker.exists() and not (tmp_path / "new").exists()


def test_export_of_a_code_running_checkpoint_is_refused(evil, tmp_path, capsys):
    out, marker, _ = evil
    (run,) = (out / "runs").iterdir()
    assert main(["export", str(run), str(tmp_path / "model.pt")]) == 2
    refused(capsys, run / "checkpoint.pt")
    assert not marker.exists() and not (tmp_path / "model.pt").exists()


def test_landscape_on_a_code_running_checkpoint_is_refused(evil, finished, tmp_path, capsys):
    out, marker, _ = evil
    (run,) = (out / "runs").iterdir()
    (good,) = (finished / "runs").iterdir()
    assert analysis_main(["landscape", str(good), str(run), "--out", str(tmp_path / "landscape")]) == 2
    refused(capsys, run / "checkpoint.pt")
    assert not marker.exists() and not (tmp_path / "landscape").exists()


def test_a_checkpoint_without_weights_and_masks_is_named(finished, tmp_path, capsys):
    bad = tmp_path / "checkpoint.pt"
    torch.save({"model": 1}, bad)
    assert main(["run", *QUICK, "--methods", "rigl", "--init-from", str(bad), "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: checkpoint {bad} holds no model weights and masks; pass a run folder written by " \
                  "`python -m benchmark run` (or its checkpoint.pt)\n"
    bad.write_bytes(b"not a checkpoint")
    assert main(["run", *QUICK, "--methods", "rigl", "--init-from", str(bad), "--out", str(tmp_path / "new")]) == 2
    assert capsys.readouterr().err.startswith(f"error: checkpoint {bad} is unreadable (UnpicklingError: ")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("method,settings", [(m, {}) for m in methods.METHODS if not m.startswith("lottery")]
                         + [("rigl", {"optimizer": "adamw", "warmup_epochs": 0.1, "val_fraction": 0.1}),
                            ("lottery-rigl", {})])
def test_every_checkpoint_holds_only_tensors_and_plain_values(tmp_path, method, settings):
    cfg = preset_config("digits-lenet300", method=method, sparsity=0.8, steps=3, log_every=1, delta_t=1, **settings)
    train(cfg, tmp_path / "runs" / cfg.run_id())
    files = sorted((tmp_path / "runs").rglob("*.pt"))
    assert {f.name for f in files} == ({"checkpoint.pt", "rewind.pt"} if method.startswith(("lottery", "dense"))
                                       else {"checkpoint.pt"})
    for f in files:
        torch.load(f, weights_only=True)  # would raise on anything but tensors and plain containers/values


def test_a_checkpoint_of_another_model_is_named(finished, tmp_path, capsys):
    (run,) = (finished / "runs").iterdir()
    assert main(["run", *QUICK, "--model", "wrn-10-1", "--methods", "rigl", "--init-from", str(run),
                 "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint {run / 'checkpoint.pt'} does not fit the model of the run's settings "
                          "(Unexpected key(s) in state_dict: \"fc1.weight\"") and err.count("\n") == 1
    assert not (tmp_path / "new").exists()


def test_resuming_from_a_checkpoint_without_its_loop_state_is_named(finished, tmp_path, capsys):
    out = tmp_path / "results"
    shutil.copytree(finished, out)
    (run,) = (out / "runs").iterdir()
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    del state["state"]["seen"]
    torch.save(state, run / "checkpoint.pt")
    (run / "metrics.json").unlink()
    (out / "runs.csv").unlink()
    assert main(["run", *QUICK, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: checkpoint {run / 'checkpoint.pt'} does not match this run ('loop state "
                                       "without seen'); delete it to restart that run from step 0\n")
