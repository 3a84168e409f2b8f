"""The paper's MNIST protocol as google-research/rigl's mnist_train_eval.py runs it, piece by piece."""
import math

import pandas as pd
import pytest
import torch

from benchmark.data import load_dataset
from benchmark.models import build_model, glorot_init
from benchmark.presets import preset_config
from benchmark.train import lr_factor, make_optimizer, plan_run, train
from methods.schedules import DropGrowSchedule


def test_the_paper_preset_is_the_reference_codes():
    cfg = preset_config("mnist-lenet300", method="rigl")
    assert (cfg.inputs, cfg.init, cfg.bias_decay) == ("unit", "glorot", False)
    assert cfg.layer_sparsity == (0.98, 0.882, 0.0) and cfg.sparsity == 0.9653
    assert cfg.lr_milestones == (75, 95) and cfg.dense_lr_milestones == (60, 70, 80) and cfg.lr_gamma == 1 / 3
    assert (cfg.skip_step_on_update, cfg.update_at_start) == (None, True)
    erk = preset_config("mnist-lenet300", method="rigl", sparsity=0.9, distribution="erk")
    assert (erk.layer_sparsity, erk.sparsity) == ((), 0.9)  # another distribution drops the preset's layers


def test_unit_inputs_are_pixels_in_0_1():
    unit = load_dataset("digits", standardize=False).train[0]
    standard = load_dataset("digits").train[0]
    assert unit.min().item() == 0.0 and unit.max().item() == 1.0  # digits' 0..16 scaled by 1/16
    assert standard.min().item() < 0 and not torch.equal(unit, standard)


def test_glorot_init_bounds_and_zero_biases():
    torch.manual_seed(0)
    model = glorot_init(build_model("lenet-300-100", 10, (1, 28, 28)))
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linear] == [(300, 784), (100, 300), (10, 100)]
    for m in linear:
        bound = math.sqrt(6 / sum(m.weight.shape))  # sqrt(6 / (fan_in + fan_out)): 0.0741 for 784 -> 300
        assert m.weight.abs().max().item() <= bound and m.weight.abs().max().item() > 0.99 * bound
        assert m.weight.var().item() == pytest.approx(bound ** 2 / 3, rel=0.05)  # U(-b, b) has variance b^2/3
        assert torch.count_nonzero(m.bias).item() == 0


def test_weight_decay_on_weight_matrices_only():
    cfg = preset_config("mnist-lenet300", method="rigl")
    model = build_model("lenet-300-100", 10, (1, 28, 28))
    groups = make_optimizer(cfg, model).param_groups
    assert [(len(g["params"]), g["weight_decay"]) for g in groups] == [(3, 1e-4), (3, 0.0)]
    assert all(p.dim() == 2 for p in groups[0]["params"]) and all(p.dim() == 1 for p in groups[1]["params"])
    whole = make_optimizer(preset_config("mnist-lenet300-short", method="rigl"), model).param_groups
    assert [(len(g["params"]), g["weight_decay"]) for g in whole] == [(6, 1e-4)]


def test_the_dense_baseline_drops_its_lr_at_epochs_60_70_80():
    dense = lr_factor(preset_config("mnist-lenet300", method="dense", sparsity=0.0), 600)
    rigl = lr_factor(preset_config("mnist-lenet300", method="rigl"), 600)
    assert [dense(s) for s in (35999, 36000, 42000, 48000)] == pytest.approx([1, 1 / 3, 1 / 9, 1 / 27])
    assert [rigl(s) for s in (44999, 45000, 57000, 60000)] == pytest.approx([1, 1 / 3, 1 / 9, 1 / 9])


def test_rigl_updates_in_place_of_steps_as_the_reference():
    # rigl's tf.cond: an update iteration does no optimizer step and does not advance the global step;
    # updates at global steps 0, 100, ..., 50000 (501), so 120000 iterations make 119499 optimizer steps
    schedule = DropGrowSchedule(100, 50000, 0.3, first=0, skip=True)
    updates = [t for t in range(120000) if schedule.is_update(t)]
    assert len(updates) == 501 and updates[:3] == [0, 101, 202] and updates[-1] == 50500
    assert schedule.global_step(120000) == 119499 and schedule.fraction(50500) == 0.0
    assert schedule.global_step(45451) == 45000  # the first lr drop comes 451 iterations later than for set
    # set steps, then updates after global steps 1, 101, ..., 49901 (500)
    steps = DropGrowSchedule(100, 50000, 0.3, first=0)
    assert [t for t in range(120000) if steps.is_update(t)] == list(range(0, 50000, 100))
    plan = plan_run(preset_config("mnist-lenet300", method="rigl"))
    assert plan.steps == 120000  # iterations: the update-only ones cost a forward and a dense backward


def test_a_reference_rigl_run_skips_the_optimizer_on_its_update_iterations(tmp_path):
    cfg = preset_config("digits-lenet300", method="rigl", sparsity=0.9, epochs=2, log_every=1, lr_milestones=(1,),
                        skip_step_on_update=None, update_at_start=True)
    train(cfg, tmp_path)
    # 56 iterations, delta_t 20, t_end 42 steps: updates at iterations 0, 21, 42 (global steps 0, 20, 40)
    assert pd.read_csv(tmp_path / "updates.csv").step.tolist() == [1, 22, 43]
    lr = pd.read_csv(tmp_path / "log.csv").set_index("step").lr
    # the lr drops after 28 optimizer steps: after iteration 30 (two update iterations came before)
    assert lr[29] == pytest.approx(0.1) and lr[30] == pytest.approx(0.01)
