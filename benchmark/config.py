"""Run settings: one dataclass whose fields are also the CLI flags, and the paper's presets.

A run's identity is the hash of its experiment settings that differ from the defaults
(open_lth's scheme), so re-running a sweep finds the runs it already has. Fields marked
`identity=False` (device, logging, data location) do not change what is computed and are
left out of the hash.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any

import torch

import methods
from methods import SparsityConfig

from .data import DATASETS
from .models import build_model


def _exec(default: Any, help: str) -> Any:
    return field(default=default, metadata={"identity": False, "help": help})


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class RunConfig(SparsityConfig):
    """Everything that defines one training run (the sparsity fields come from `SparsityConfig`)."""

    method: str = _opt("rigl", "sparse training method")
    preset: str = _opt("", "preset the settings came from (recorded only)")
    dataset: str = _opt("fashion-mnist", "dataset name")
    model: str = _opt("lenet-300-100", "model name")
    epochs: float = _opt(10.0, "training epochs at multiplier 1 (ignored when steps > 0)")
    steps: int = _opt(0, "optimizer steps at multiplier 1; 0 derives them from epochs")
    batch_size: int = _opt(100, "global batch size")
    optimizer: str = _opt("sgd", "sgd (momentum) or adamw")
    lr: float = _opt(0.1, "peak learning rate")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(True, "Nesterov momentum")
    weight_decay: float = _opt(5e-4, "weight decay (L2 for sgd, decoupled for adamw)")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy loss")
    lr_milestones: tuple[float, ...] = _opt((), "epochs (at multiplier 1) where the lr is multiplied by lr_gamma")
    lr_gamma: float = _opt(0.1, "lr decay factor at each milestone")
    warmup_epochs: float = _opt(0.0, "linear lr warm-up epochs")
    multiplier: float = _opt(1.0, "the paper's Mx training: steps, lr milestones and schedules scaled by M")
    val_fraction: float = _opt(0.0, "fraction of the training set held out for validation")
    train_subset: int = _opt(0, "train on the first N examples of a fixed permutation (0: all)")
    snip_batches: int = _opt(1, "training batches SNIP scores its saliency on")
    init_from: str = _opt("", "checkpoint.pt or run folder whose final weights and masks start this run "
                               "(restarts); needs static, set, snfs, rigl, dsr or deepr")
    width: float = _opt(0.0, "small-dense width multiplier (0: the width matching the sparse model's parameters)")
    rewind_fraction: float = _opt(0.01, "fraction of training whose dense weights lottery-static/lottery-rigl "
                                        "rewind to (0: the initialisation)")
    device: str = _exec("auto", "auto, cpu, cuda or cuda:N")
    amp: bool = _exec(False, "bf16 autocast")
    channels_last: bool = _exec(False, "channels-last memory format for conv nets (faster on CUDA tensor cores)")
    data_root: str = _exec("", "where datasets are (default: SPARSEBENCH_DATA, data/, system copies)")
    log_every: int = _exec(100, "steps between rows of log.csv")
    eval_every: int = _exec(0, "steps between test evaluations (0: once per epoch)")
    checkpoint_every: int = _exec(1000, "steps between checkpoints (rounded to a multiple of log_every)")
    check_replicas: bool = _exec(False, "under torchrun, compare mask fingerprints across ranks at every update")

    def __post_init__(self) -> None:
        # Normalise numbers to their declared types, so 1 and 1.0 name the same run.
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), _FIELD_TYPES[f.name]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
            elif typing.get_origin(kind) is tuple:
                setattr(self, f.name, tuple(float(v) for v in value))

    def validate(self) -> None:
        """Raise ValueError naming the fix for any unknown name, wrong type (every number finite) or out-of-range
        value; the one place run and method settings are checked, before anything is built or written."""
        super().validate()
        methods.method_class(self.method)
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; known datasets: {', '.join(DATASETS)}")
        _check_model(self.model, self.dataset)
        check_device(self.device)
        checks = [
            (self.epochs > 0 or self.steps > 0, "set epochs > 0 or steps > 0", "epochs"),
            (self.epochs >= 0, "epochs must be >= 0", "epochs"),
            (self.steps >= 0, "steps must be >= 0 (0: derived from epochs)", "steps"),
            (self.batch_size >= 1, "batch_size must be >= 1", "batch_size"),
            (self.optimizer in ("sgd", "adamw"), "optimizer must be sgd or adamw", "optimizer"),
            (self.lr > 0, "lr must be > 0", "lr"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)", "momentum"),
            (self.weight_decay >= 0, "weight_decay must be >= 0", "weight_decay"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)", "label_smoothing"),
            (all(m >= 0 for m in self.lr_milestones), "lr_milestones must be epochs >= 0", "lr_milestones"),
            (self.lr_gamma > 0, "lr_gamma must be > 0", "lr_gamma"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0", "warmup_epochs"),
            (self.multiplier > 0, "multiplier must be > 0 (1 is the paper's 1x)", "multiplier"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)", "val_fraction"),
            (self.train_subset >= 0, "train_subset must be >= 0 (0: the whole training set)", "train_subset"),
            (self.snip_batches >= 1, "snip_batches must be >= 1", "snip_batches"),
            (self.width >= 0, "width must be >= 0 (0 picks the parameter-matched small-dense width)", "width"),
            (0 <= self.rewind_fraction < 1, "rewind_fraction must be a fraction of training in [0, 1)",
             "rewind_fraction"),
            (self.log_every >= 1, "log_every must be >= 1", "log_every"),
            (self.eval_every >= 0, "eval_every must be >= 0 (0: once per epoch)", "eval_every"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1", "checkpoint_every"),
            (not (self.init_from and self.pretrain_config()),
             f"{self.method} starts from its dense run's rewound weights; it cannot take init_from", "init_from"),
        ]
        for ok, message, name in checks:
            if not ok:
                raise ValueError(f"{message}; got {name}={getattr(self, name)!r}")

    def custom_sparsity(self) -> float:
        """Overall sparsity of the model's sparse layers under `layer_sparsity`, to 4 decimals
        (0.9653 for the paper's MNIST LeNet-300-100 at 0.98, 0.882, dense)."""
        info = DATASETS[self.dataset]
        with torch.device("meta"):
            model = build_model(self.model, info.num_classes, info.input_shape)
        shapes = [tuple(w.shape) for _, w in methods.sparse_layers(model)]
        return round(1 - sum(self.layer_counts(shapes)) / sum(math.prod(s) for s in shapes), 4)

    def sparsity_config(self) -> SparsityConfig:
        """The `methods` settings of this run; GMP's pruning interval stretches with the multiplier,
        like its start and stop (Gale et al.'s 1.5x runs), so Mx keeps the same pruning events."""
        config = SparsityConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SparsityConfig)})
        config.gmp_every = round(self.gmp_every * self.multiplier)
        return config

    def pretrain_config(self) -> RunConfig | None:
        """The dense run a lottery method (lottery-static, lottery-rigl) starts from: the same settings with
        method dense at sparsity 0, so it is the grid's own dense run when there is one; None otherwise."""
        if not issubclass(methods.method_class(self.method), methods.LotteryTicket):
            return None
        return dataclasses.replace(self, method="dense", sparsity=0.0)

    def rewind_step(self, total_steps: int) -> int:
        """The step whose weights a dense run saves for lottery runs to rewind to (weights after that many steps)."""
        return min(round(self.rewind_fraction * total_steps), total_steps - 1)

    def identity(self) -> dict[str, Any]:
        """Experiment settings that differ from the defaults: what names the run."""
        default = RunConfig()
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata.get("identity", True) and f.name != "preset" and getattr(self, f.name) != getattr(default, f.name)
        }

    def run_id(self) -> str:
        """Readable prefix plus a short hash of `identity()`."""
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=list).encode()).hexdigest()[:10]
        return f"{self.method}-s{self.sparsity:g}-seed{self.seed}-{digest}"

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of this run, multiplier included."""
        base = self.steps or math.ceil(self.epochs * steps_per_epoch)
        return max(1, round(base * self.multiplier))

    def reference_steps(self, steps_per_epoch: int) -> int:
        """Steps of the same run at multiplier 1 (the FLOP multiplier's denominator)."""
        return self.steps or math.ceil(self.epochs * steps_per_epoch)


_FIELD_TYPES = typing.get_type_hints(RunConfig)
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(name: str) -> None:
    """ValueError listing the device names unless `name` is one; whether the device is there is checked
    where it is resolved (`benchmark.train.resolve_device`)."""
    if not DEVICE_PATTERN.fullmatch(name):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps")


@functools.lru_cache(maxsize=None)
def _check_model(model: str, dataset: str) -> None:
    """ValueError naming the fix unless `model` can be built for `dataset`'s images (a known name, a valid
    wrn-D-K, images large enough); built without memory (meta device), once per pair."""
    info = DATASETS[dataset]
    with torch.device("meta"):
        build_model(model, info.num_classes, info.input_shape)


def _paper_imagenet() -> dict[str, Any]:
    steps = 32000
    return dict(dataset="imagenet", model="resnet-50", steps=steps, batch_size=4096, lr=1.6, momentum=0.9,
                nesterov=True, weight_decay=1e-4, label_smoothing=0.1, warmup_epochs=5, lr_milestones=(30, 70, 90),
                lr_gamma=0.1, delta_t=100, t_end=25000 / steps, gmp_start=10000 / steps, gmp_stop=25000 / steps,
                gmp_every=1000, epochs=100)


def _paper_cifar10() -> dict[str, Any]:
    steps_per_epoch = 50000 / 128
    steps = round(250 * steps_per_epoch)  # 97,656
    return dict(dataset="cifar10", model="wrn-22-2", epochs=250, batch_size=128, lr=0.1, weight_decay=5e-4,
                lr_milestones=tuple(round(k * 30000 / steps_per_epoch, 3) for k in (1, 2, 3)), lr_gamma=0.2,
                distribution="erk", delta_t=100, t_end=75000 / steps, gmp_start=20000 / steps,
                gmp_stop=75000 / steps, gmp_every=1000)


def _paper_mnist() -> dict[str, Any]:
    steps = 120000
    return dict(dataset="mnist", model="lenet-300-100", epochs=200, batch_size=100, lr=0.2, weight_decay=1e-4,
                lr_milestones=(75, 95), lr_gamma=1 / 3, delta_t=100, t_end=50000 / steps,
                gmp_start=2000 / steps, gmp_stop=30000 / steps, gmp_every=500)


PRESETS: dict[str, dict[str, Any]] = {
    "fashion-mnist-lenet300": dict(dataset="fashion-mnist", model="lenet-300-100", epochs=10, batch_size=100,
                                   lr=0.1, weight_decay=5e-4, lr_milestones=(5, 7.5), lr_gamma=0.1,
                                   distribution="erk", dense_first=False),
    "fashion-mnist-lenet5": dict(dataset="fashion-mnist", model="lenet-5", epochs=10, batch_size=100, lr=0.05,
                                 weight_decay=5e-4, lr_milestones=(5, 7.5), lr_gamma=0.1, distribution="erk"),
    "digits-lenet300": dict(dataset="digits", model="lenet-300-100", epochs=20, batch_size=50, lr=0.1,
                            weight_decay=5e-4, delta_t=20, log_every=10, checkpoint_every=100, dense_first=False),
    "mnist-lenet300": _paper_mnist(),
    "mnist-lenet300-short": {**_paper_mnist(), "epochs": 20, "lr_milestones": (7.5, 9.5), "gmp_every": 50,
                             "dense_first": False},
    "cifar10-wrn22-2": _paper_cifar10(),
    "imagenet-resnet50": _paper_imagenet(),
}
PRESET_NOTES = {
    "fashion-mnist-lenet300": "CPU-sized: 10 epochs, SGD 0.1 decayed x0.1 at epochs 5 and 7.5, ERK (= ER for an "
                              "MLP); the first layer is sparse under uniform too (it holds 88% of the weights)",
    "fashion-mnist-lenet5": "CPU-sized conv net, ERK by default",
    "digits-lenet300": "seconds on a CPU: scikit-learn's 8x8 digits, for smoke tests (first layer sparse)",
    "mnist-lenet300": "paper appendix B protocol (200 epochs, 120k steps)",
    "mnist-lenet300-short": "the appendix B protocol shortened 10x for CPUs: 20 epochs, lr milestones and GMP's "
                            "interval scaled by 1/10, t_end and GMP's start/stop kept as fractions; first layer sparse",
    "cifar10-wrn22-2": "paper protocol (250 epochs at batch 128, ERK)",
    "imagenet-resnet50": "paper protocol (32k steps at batch 4096); needs an ImageFolder root",
}
DEFAULT_PRESET = "fashion-mnist-lenet300"


def preset_config(name: str, **overrides: Any) -> RunConfig:
    """A validated RunConfig from preset `name` with `overrides` on top. Given `layer_sparsity`, the
    distribution is custom and `sparsity` becomes the overall sparsity those layer sparsities give."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; see `python -m benchmark run --help`")
    if overrides.get("layer_sparsity") and "distribution" not in overrides:
        overrides["distribution"] = methods.distributions.CUSTOM
    config = RunConfig(**{**PRESETS[name], **overrides, "preset": name})
    config.validate()
    if config.distribution == methods.distributions.CUSTOM and config.method != "dense":
        config.sparsity = config.custom_sparsity()
    return config
