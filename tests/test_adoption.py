"""Adoption (issue 19): license and citation, the `sparsebench` command, `run --config FILE`, the
experiment loggers, the fast command line, figure names, and masks to and from torch's pruning APIs."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import methods
from analysis import cli as analysis_cli
from benchmark import cli as benchmark_cli
from benchmark import console, loggers
from benchmark.catalog import MODEL_NAMES
from benchmark.models import MODELS
from benchmark.presets import preset_config
from methods import torch_pruning

REPO = Path(__file__).resolve().parent.parent
QUICK = ["--preset", "digits-lenet300", "--steps", "2", "--dry-run"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def dry_rows(capsys) -> tuple[list[list[str]], str]:
    """(the rows of a dry-run table, split in cells; its totals line)."""
    lines = capsys.readouterr().out.strip().splitlines()
    return [line.split() for line in lines[1:-1]], lines[-1]


# ---- license, citation, console command ----

def test_license_citation_and_console_command_are_declared():
    assert (REPO / "LICENSE").read_text().split()[:4] == ["Apache", "License", "Version", "2.0,"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    assert project["scripts"] == {"sparsebench": "benchmark.console:main"}
    assert {"tensorboard", "wandb"} <= set(project["optional-dependencies"])
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert (cff["cff-version"], cff["title"], cff["license"]) == ("1.2.0", "sparsebench", "Apache-2.0")
    (paper,) = cff["references"]
    assert paper["title"] == "Rigging the Lottery: Making All Tickets Winners"
    assert [a["family-names"] for a in paper["authors"]] == ["Evci", "Gale", "Menick", "Castro", "Elsen"]
    assert (paper["volume"], paper["start"], paper["end"], paper["year"]) == (119, 2943, 2952, 2020)


def test_console_covers_both_command_lines(capsys):
    assert list(console.commands()) == ["run", "list", "summarize", "flops", "perf", "export", "migrate",
                                        "plot", "table", "claims", "landscape"]
    assert console.main(["--help"]) == 0
    assert "  landscape  loss along the line" in capsys.readouterr().out
    assert console.main(["run", "--methods", "static", "--seed", "4", *QUICK]) == 0
    rows, _ = dry_rows(capsys)
    assert [(r[1], r[4]) for r in rows] == [("static", "4")]
    with pytest.raises(SystemExit) as stop:
        console.main(["table", "--help"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("usage: sparsebench table")
    assert console.main(["tabel"]) == 2
    assert "unknown command 'tabel'; choose one of run, list," in one_error_line(capsys)


def test_console_refuses_a_command_in_both_command_lines(monkeypatch):
    def clashing(prog):
        parser = benchmark_cli.Parser(prog=prog)
        parser.add_subparsers(dest="command").add_parser("summarize", help="another summarize")
        return parser

    monkeypatch.setattr(analysis_cli, "build_parser", clashing)
    with pytest.raises(ValueError, match="'summarize' is both `python -m benchmark summarize` and `python -m analysis"):
        console.commands()


# ---- fast command line: no torch for --help and list ----

def test_help_and_list_import_no_torch_pandas_or_matplotlib():
    code = """
import contextlib, io, sys
from benchmark import cli, console
from analysis import cli as acli
with contextlib.redirect_stdout(io.StringIO()):
    for call in (lambda: cli.main(["--help"]), lambda: cli.main(["list"]), lambda: acli.main(["--help"]),
                 lambda: console.main(["--help"]), lambda: cli.main(["run", "--help"])):
        try:
            call()
        except SystemExit:
            pass
print(sorted(m for m in ("torch", "torchvision", "pandas", "matplotlib", "numpy") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_method_and_model_names_known_without_torch_match_the_classes():
    assert [methods.METHODS[name].name for name in methods.METHODS] == list(methods.METHODS)
    assert MODEL_NAMES == tuple(MODELS)
    with pytest.raises(ValueError, match="unknown method 'rig'; known methods: dense, small-dense"):
        methods.method_class("rig")


def test_help_shows_the_values_of_the_chosen_preset(capsys):
    def help_of(*argv):
        with pytest.raises(SystemExit):
            benchmark_cli.main(["run", *argv, "--help"])
        return " ".join(capsys.readouterr().out.split())

    default = help_of()
    assert "--distribution DISTRIBUTION how sparsity is split across layers: uniform, er, erk, or custom" in default
    assert "(default erk)" in default and "(default 'uniform')" not in default
    paper = help_of("--preset", "mnist-lenet300")
    assert "stop changing (default 0.416667)" in paper and "(default 0.98,0.882,0)" in paper
    assert "0.4166666666666667" not in paper


def test_list_is_readable_and_names_custom(capsys):
    assert benchmark_cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "t_end=0.416667," in out and "0.4166666666666667" not in out
    assert "distributions: uniform, er, erk, custom (one sparsity per layer: --layer-sparsity)" in out


def test_dry_run_prints_totals_and_dense_distribution_none(capsys):
    assert benchmark_cli.main(["run", *QUICK, "--methods", "dense,static"]) == 0
    rows, total = dry_rows(capsys)
    assert [(r[1], r[2]) for r in rows] == [("dense", "none"), ("static", "uniform")]
    # LeNet-300-100 on 8x8 digits: f_D = 2 (64*300 + 300*100 + 100*10) = 100,400 FLOPs; static at 0.9 keeps
    # 1920 + 3000 + 100 weights: f_S = 10,040. 2 steps of 3 f at batch 50: 30,120,000 + 3,012,000.
    assert total == "total: 2 run(s), 4 steps, 3.313e+07 training FLOPs (no time estimate: step times are not " \
                    "known before a run)"


# ---- run --config FILE ----

def test_config_file_toml_and_yaml_with_flags_overriding(tmp_path, capsys):
    toml = tmp_path / "grid.toml"
    toml.write_text('preset = "digits-lenet300"\nmethods = ["rigl", "static"]\nsparsity = 0.8\nseeds = [2]\n'
                    'steps = 3\ndelta-t = 7\nlr_milestones = [1, 2]\n')
    assert benchmark_cli.main(["run", "--config", str(toml), "--dry-run"]) == 0
    rows, _ = dry_rows(capsys)
    expected = preset_config("digits-lenet300", method="rigl", sparsity=0.8, seed=2, steps=3, delta_t=7,
                             lr_milestones=(1.0, 2.0))
    assert rows[0][0] == expected.run_id()
    assert [(r[1], r[3], r[4], r[5]) for r in rows] == [("rigl", "0.8", "2", "3"), ("static", "0.8", "2", "3")]
    assert benchmark_cli.main(["run", "--config", str(toml), "--steps", "5", "--seed", "0", "--methods", "rigl",
                               "--dry-run"]) == 0
    rows, _ = dry_rows(capsys)
    assert [(r[1], r[4], r[5]) for r in rows] == [("rigl", "0", "5")]
    yml = tmp_path / "run.yaml"
    yml.write_text("preset: digits-lenet300\nmethod: snip\nsteps: 2\nweight_decay: 1e-4\n")  # YAML 1.1: a string
    assert benchmark_cli.main(["run", "--config", str(yml), "--dry-run"]) == 0
    rows, _ = dry_rows(capsys)
    assert rows[0][0] == preset_config("digits-lenet300", method="snip", sparsity=0.9, steps=2,
                                       weight_decay=1e-4).run_id()


def test_config_json_of_a_run_names_the_same_run(tmp_path, capsys):
    cfg = preset_config("digits-lenet300", method="set", sparsity=0.7, seed=3, steps=4, alpha=0.2)
    record = {"run_id": cfg.run_id(), "config_key": cfg.config_key(), "config": dataclasses.asdict(cfg)}
    (tmp_path / "config.json").write_text(json.dumps(record))
    assert benchmark_cli.main(["run", "--config", str(tmp_path / "config.json"), "--dry-run"]) == 0
    rows, total = dry_rows(capsys)
    assert [r[0] for r in rows] == [cfg.run_id()] and total.startswith("total: 1 run(s), 4 steps")


@pytest.mark.parametrize("name,text,message", [
    ("a.toml", "steps = 3\nbogus = 1\n", "unknown setting(s) bogus; known settings: alpha, amp,"),
    ("b.toml", 'lr = "abc"\n', "lr must be a number, got 'abc'"),
    ("c.toml", "lr = [\n", "is not valid TOML"),
    ("d.yaml", "- 1\n- 2\n", "must hold a table of settings (key = value), not list"),
    ("e.toml", "lr = -1.0\n", "lr must be > 0; got lr=-1.0"),
    ("f.ini", "lr = 1\n", "unknown file type; use a .toml, .yaml/.yml or .json file"),
])
def test_bad_config_file_is_one_error_line(tmp_path, capsys, name, text, message):
    (tmp_path / name).write_text(text)
    out = tmp_path / "out"
    assert benchmark_cli.main(["run", "--config", str(tmp_path / name), "--out", str(out)]) == 2
    assert message in one_error_line(capsys)
    assert not out.exists()


def test_empty_grid_flags_are_errors_not_the_file_or_defaults(tmp_path, capsys):
    toml = tmp_path / "grid.toml"
    toml.write_text('methods = "rigl"\nseeds = 2\n')
    for flag, message in [("--methods", "no methods given"), ("--seeds", "--seeds takes a count"),
                          ("--config", "--config is empty")]:
        argv = ["run", *QUICK, "--config", str(toml), flag, ""]
        assert benchmark_cli.main(argv) == 2
        assert message in one_error_line(capsys)


# ---- experiment loggers ----

def test_tensorboard_logger_holds_the_csv_logs_and_flops(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    argv = ["run", "--preset", "digits-lenet300", "--methods", "rigl", "--steps", "30", "--delta-t", "10",
            "--out", str(tmp_path)]
    assert benchmark_cli.main([*argv, "--logger", "tensorboard"]) == 0
    run_id = preset_config("digits-lenet300", method="rigl", sparsity=0.9, steps=30, delta_t=10).run_id()
    assert f"done {run_id} (1/1): test accuracy" in capsys.readouterr().out
    folder = tmp_path / "runs" / run_id  # the logger is no setting: the run is named as without it
    events = EventAccumulator(str(tmp_path / "tensorboard" / run_id))
    events.Reload()

    def scalars(tag):
        return [(e.step, e.value) for e in events.Scalars(tag)]

    log = [line.split(",") for line in (folder / "log.csv").read_text().splitlines()[1:]]
    assert [s for s, _ in scalars("log/train_loss")] == [10, 20, 30]
    assert [v for _, v in scalars("log/train_loss")] == pytest.approx([float(r[3]) for r in log], rel=1e-6)
    assert [v for _, v in scalars("log/train_flops")] == pytest.approx([float(r[6]) for r in log], rel=1e-6)
    updates = [line.split(",") for line in (folder / "updates.csv").read_text().splitlines()[1:]]
    assert scalars("updates/grown") == [(int(r[0]), float(r[1])) for r in updates]
    assert [s for s, _ in scalars("updates/grown")] == [11, 21]
    evals = [line.split(",") for line in (folder / "evals.csv").read_text().splitlines()[1:]]
    assert [v for _, v in scalars("evals/test_accuracy")] == pytest.approx([float(r[3]) for r in evals], rel=1e-6)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert scalars("final/flops/train_flops")[0][1] == pytest.approx(metrics["flops"]["train_flops"], rel=1e-6)


def test_wandb_logger_sends_rows_at_their_steps_and_final_metrics(tmp_path, monkeypatch):
    """Against a stand-in for the wandb module: a real offline wandb run starts its service for ~7 s,
    over this suite's time budget (it was run by hand: WANDB_MODE=offline, see the README)."""
    calls, summary = [], {}

    class Run:
        def __init__(self):
            self.summary = summary

        def log(self, row, step):
            calls.append((step, row))

        def finish(self):
            calls.append("finished")

    fake = type(sys)("wandb")
    fake.init = lambda **settings: calls.append(settings) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(loggers, "check_logger", lambda name: None)
    logger = loggers.make_logger("wandb", tmp_path, "rigl-s0.9-seed0-abc", {"lr": 0.1}, "abc")
    logger.log("log", {"step": 10, "train_loss": 1.5, "density": 0.1, "val_loss": None})
    logger.log("updates", {"step": 11, "grown": 845, "grown_fraction": 0.25, "density": 0.1})
    logger.finish({"test_accuracy": 90.0, "test_loss": float("nan"), "flops": {"train_flops": 3e9}})
    assert calls == [{"project": "sparsebench", "name": "rigl-s0.9-seed0-abc", "group": "abc", "config": {"lr": 0.1},
                      "dir": str(tmp_path / "wandb"), "reinit": True},
                     (10, {"log/train_loss": 1.5, "log/density": 0.1}),
                     (11, {"updates/grown": 845.0, "updates/grown_fraction": 0.25, "updates/density": 0.1}),
                     "finished"]
    assert summary == {"final/test_accuracy": 90.0, "final/flops/train_flops": 3e9}


def test_logger_needs_its_package(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name: None)
    out = tmp_path / "out"
    assert benchmark_cli.main(["run", "--preset", "digits-lenet300", "--steps", "2", "--logger", "tensorboard",
                               "--out", str(out)]) == 2
    assert "--logger tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'" in \
        one_error_line(capsys)
    assert not out.exists()


# ---- figure names ----

def test_plot_figure_names_are_the_file_names(tmp_path):
    pytest.importorskip("matplotlib")
    from analysis import plots

    runs_csv = REPO / "tests" / "fixtures" / "sweep" / "runs.csv"
    assert analysis_cli.main(["plot", "--runs", str(runs_csv), "--out", str(tmp_path / "a"), "--formats", "png",
                              "--figures", "accuracy-vs-sparsity"]) == 0
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["accuracy-vs-sparsity-digits-lenet-300-100.png"]
    assert plots.FIGURE_ALIASES["sparsity"] == "accuracy-vs-sparsity"  # the earlier name still works
    assert all(name.startswith(("accuracy-vs-", "layer-", "mask-")) for name in plots.FIGURES)


# ---- torch pruning interop ----

def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _rigl_masks() -> dict[str, torch.Tensor]:
    model = _net()
    sparsifier = methods.create("rigl", model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10,
                                sparsity=0.75, distribution="uniform", dense_first=False)
    return torch_pruning.masks_of(sparsifier)


def test_masks_round_trip_through_torch_nn_utils_prune():
    masks = _rigl_masks()
    assert {k: int(v.sum()) for k, v in masks.items()} == {"0": 32, "2": 16}  # 25% of 128 and of 64
    model = _net()
    torch_pruning.to_prune(model, masks)
    assert torch.equal(model[0].weight_mask, masks["0"].float()) and int((model[0].weight != 0).sum()) == 32
    original = model[0].weight_orig
    back = torch_pruning.from_prune(model)
    assert back.keys() == masks.keys() and all(torch.equal(back[k], masks[k]) for k in masks)
    assert model[0].weight is original and isinstance(model[0].weight, nn.Parameter)  # the optimizer's parameter
    sparsifier = methods.create("static", model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10,
                                masks=back)
    assert sparsifier.counts == [32, 16] and all(torch.equal(m, masks[n]) for n, m in zip(sparsifier.names,
                                                                                           sparsifier.masks))


def test_masks_round_trip_through_torch_ao_pruning_parametrizations():
    from torch.ao.pruning import FakeSparsity, WeightNormSparsifier

    masks = _rigl_masks()
    model = torch_pruning.to_parametrization(_net(), masks)
    assert isinstance(model[2].parametrizations.weight[0], FakeSparsity)
    assert int((model[2].weight != 0).sum()) == 16
    back = torch_pruning.from_parametrization(model)
    assert all(torch.equal(back[k], masks[k]) for k in masks) and back.keys() == masks.keys()
    assert not hasattr(model[0], "parametrizations")
    sparsifier = methods.create("set", model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10,
                                masks=back, sparsity=0.75)
    assert sparsifier.counts == [32, 16]
    # a model an ao sparsifier prepared keeps its mask tensors: ours are written into them
    prepared = _net()
    WeightNormSparsifier(sparsity_level=0.5).prepare(prepared, [{"tensor_fqn": "0.weight"}, {"tensor_fqn": "2.weight"}])
    kept = prepared[0].parametrizations.weight[0].mask
    torch_pruning.to_parametrization(prepared, masks)
    assert prepared[0].parametrizations.weight[0].mask is kept and len(prepared[0].parametrizations.weight) == 1
    assert torch.equal(kept, masks["0"].float())


def test_a_mask_for_no_layer_is_an_error():
    with pytest.raises(ValueError, match="mask 'fc9' of shape \\(2, 2\\) matches no weight of the model"):
        torch_pruning.to_prune(_net(), {"fc9": torch.ones(2, 2, dtype=torch.bool)})
