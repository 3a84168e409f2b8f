"""MobileNets through the harness: tiny widths on digits, the ImageNet presets' grid and missing-data error."""
import json
import math

import pytest
import torch
from torch import nn

from benchmark.cli import main
from benchmark.models import build_model
from benchmark.presets import preset_config
from benchmark.train import train


@pytest.mark.parametrize("model, sparse_layers", [("mobilenet-v1-0.25", 15), ("mobilenet-v2-0.25", 36)])
def test_tiny_mobilenet_trains_with_exact_counts_and_dense_depthwise(tmp_path, model, sparse_layers):
    """2 RigL steps on digits (1x8x8) with an update after each: every sparse layer keeps round(0.2 N) active
    weights (uniform 80%, the stem dense), depthwise convs are not sparse layers, masked weights are zero."""
    cfg = preset_config("digits-lenet300", model=model, method="rigl", sparsity=0.8, steps=2, delta_t=1,
                        dense_first=True, log_every=1)
    metrics = train(cfg, tmp_path / "run")
    assert metrics["steps"] == 2
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    masks, weights = ckpt["sparsifier"]["masks"], ckpt["model"]
    assert len(masks) == sparse_layers
    for i, (name, mask) in enumerate(masks.items()):
        weight = weights[f"{name}.weight"]
        expected = mask.numel() if i == 0 else round(0.2 * mask.numel())
        assert int(mask.sum()) == expected, name
        assert torch.count_nonzero(weight[~mask]) == 0
    net = build_model(model, 10, (1, 8, 8))
    depthwise = {name for name, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1}
    assert len(depthwise) == {"mobilenet-v1-0.25": 13, "mobilenet-v2-0.25": 17}[model]
    assert not depthwise & set(masks)
    total = sum(p.numel() for p in net.parameters())
    assert metrics["active_params"] == total - sum(m.numel() for m in masks.values()) + sum(
        int(m.sum()) for m in masks.values())
    assert math.isfinite(metrics["test_loss"])


@pytest.mark.parametrize("preset", ["imagenet-mobilenet-v1", "imagenet-mobilenet-v2"])
def test_imagenet_mobilenet_presets_dry_run_and_missing_data(tmp_path, capsys, preset):
    assert main(["run", "--preset", preset, "--methods", "static", "--sparsity", "0.75", "--dry-run",
                 "--out", str(tmp_path / "dry")]) == 0
    out = capsys.readouterr().out
    assert "32000" in out and ("0.2872" in out if preset.endswith("v1") else "static" in out)
    assert main(["run", "--preset", preset, "--methods", "static", "--out", str(tmp_path / "out"),
                 "--data-root", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: dataset 'imagenet' not found")
    assert not (tmp_path / "out").exists()
    cfg = preset_config(preset)
    assert (cfg.warmup_epochs, cfg.lr_milestones, cfg.dense_first, cfg.batch_size) == (8, (40, 75, 95), True, 4096)


def test_list_and_flops_command_show_the_mobilenets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("imagenet-mobilenet-v1", "imagenet-mobilenet-v2", "mobilenet-v1-A"))
    assert main(["flops", "--preset", "imagenet-mobilenet-v1", "--method", "static", "--sparsity", "0.75",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # the reference counting notebook: 330.769 of 1141.544 MFLOPs (uniform 75%, stem and depthwise dense)
    assert result["inference_multiplier"] == pytest.approx(330.769 / 1141.544, abs=0.005)
    assert result["dense_forward"] == 2 * 568_740_352
