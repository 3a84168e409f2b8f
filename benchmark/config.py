"""Run settings: one dataclass whose fields are also the CLI flags.

A run is named by its settings: `config_key()` hashes the explicit value of every setting that can
change its result except the seed (so all seeds of one protocol share it), and `run_id()` is a
readable prefix plus that key. Fields marked `identity=False` (device, data location, checkpoint
interval, replica checks, the preset's name) do not change what is computed and stay out of the key.
Importing this module does not import torch (the command line lists and checks settings without it).
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

import methods
from methods import SparsityConfig

from .catalog import DATASETS, TEXT_CORPORA

INPUTS = ("standardized", "unit")
INITS = ("default", "glorot")
OPTIMIZERS = ("sgd", "adam", "adamw")


def _exec(default: Any, help: str) -> Any:
    return field(default=default, metadata={"identity": False, "help": help})


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class RunConfig(SparsityConfig):
    """Everything that defines one training run (the sparsity fields come from `SparsityConfig`)."""

    method: str = _opt("rigl", "sparse training method")
    preset: str = _exec("", "preset the settings came from (recorded only)")
    dataset: str = _opt("fashion-mnist", "dataset name")
    model: str = _opt("lenet-300-100", "model name")
    epochs: float = _opt(10.0, "training epochs at multiplier 1 (ignored when steps > 0)")
    steps: int = _opt(0, "optimizer steps at multiplier 1; 0 derives them from epochs")
    batch_size: int = _opt(100, "global batch size")
    optimizer: str = _opt("sgd", "sgd (momentum), adam (L2 added to the gradient) or adamw (decoupled decay)")
    lr: float = _opt(0.1, "peak learning rate")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(True, "Nesterov momentum")
    weight_decay: float = _opt(5e-4, "weight decay (L2 for sgd and adam, decoupled for adamw)")
    grad_clip: float = _opt(0.0, "clip the gradient the optimizer applies (masked weights' left out) to this "
                                 "global L2 norm (0: no clipping)")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy loss")
    bias_decay: bool = _opt(True, "weight decay also on biases and other 1-D parameters (False: weight matrices "
                                  "and kernels only, as the RigL reference code's L2)")
    lr_milestones: tuple[float, ...] = _opt((), "epochs (at multiplier 1) where the lr is multiplied by lr_gamma")
    dense_lr_milestones: tuple[float, ...] = _opt((), "lr milestones of the dense baseline (the method that "
                                                      "keeps every weight) where they differ from lr_milestones "
                                                      "(the RigL reference code's)")
    lr_gamma: float = _opt(0.1, "lr decay factor at each milestone")
    warmup_epochs: float = _opt(0.0, "linear lr warm-up epochs")
    multiplier: float = _opt(1.0, "the paper's Mx training: steps, lr milestones and schedules scaled by M")
    val_fraction: float = _opt(0.0, "fraction of the training set held out for validation")
    train_subset: int = _opt(0, "train on the first N examples of a fixed permutation (0: all)")
    inputs: str = _opt("standardized", "standardized (per-channel mean and std) or unit (pixels in [0, 1], the "
                                       "RigL reference code's MNIST inputs)")
    init: str = _opt("default", "default (PyTorch's) or glorot (Glorot-uniform weights, zero biases, as "
                                "TensorFlow's layers)")
    snip_batches: int = _opt(1, "training batches SNIP scores its saliency on")
    init_from: str = _opt("", "checkpoint.pt or run folder whose final weights and masks start this run "
                               "(restarts); needs static, set, snfs, rigl, dsr or deepr")
    width: float = _opt(0.0, "small-dense width multiplier (0: the width matching the sparse model's parameters)")
    rewind_fraction: float = _opt(0.01, "fraction of training whose dense weights lottery-static/lottery-rigl "
                                        "rewind to (0: the initialisation)")
    amp: bool = _opt(False, "bf16 autocast")
    channels_last: bool = _opt(False, "channels-last memory format for conv nets (faster on CUDA tensor cores)")
    threads: int = _opt(1, "CPU threads the run trains with (results are bit-identical only at the same count)")
    log_every: int = _opt(100, "steps between rows of log.csv (a non-finite loss is detected there)")
    eval_every: int = _opt(0, "steps between test evaluations (0: once per epoch); decides best_test_accuracy")
    device: str = _exec("auto", "auto, cpu, cuda or cuda:N")
    data_root: str = _exec("", "where datasets are (default: SPARSEBENCH_DATA, data/, system copies)")
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
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}", "optimizer"),
            (self.inputs in INPUTS, f"inputs must be one of {', '.join(INPUTS)}", "inputs"),
            (self.init in INITS, f"init must be one of {', '.join(INITS)}", "init"),
            (self.threads >= 1, "threads must be >= 1 (CPU threads of the run)", "threads"),
            (self.lr > 0, "lr must be > 0", "lr"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)", "momentum"),
            (self.weight_decay >= 0, "weight_decay must be >= 0", "weight_decay"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0: no clipping)", "grad_clip"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)", "label_smoothing"),
            (not (self.label_smoothing and self.dataset in TEXT_CORPORA),
             "label_smoothing must be 0 on a text dataset (bits per character are the plain cross-entropy)",
             "label_smoothing"),
            (all(m >= 0 for m in self.lr_milestones), "lr_milestones must be epochs >= 0", "lr_milestones"),
            (all(m >= 0 for m in self.dense_lr_milestones), "dense_lr_milestones must be epochs >= 0",
             "dense_lr_milestones"),
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
            (not self.nm() or not self.method_class.uses_sparsity or self.method_class.structured,
             f"{self.method} cannot keep N:M structure; structure works with "
             + ", ".join(methods.base.structured_methods()), "structure"),
            (not (self.init_from and self.pretrain_config()),
             f"{self.method} starts from its dense run's rewound weights; it cannot take init_from", "init_from"),
        ]
        for ok, message, name in checks:
            if not ok:
                raise ValueError(f"{message}; got {name}={getattr(self, name)!r}")

    @property
    def method_class(self) -> type[methods.Sparsifier]:
        """The class of this run's method: what the harness asks about it (its traits)."""
        return methods.method_class(self.method)

    def implied_sparsity(self) -> float:
        """Overall sparsity of the model's sparse layers under `layer_sparsity` or `structure`, to 4 decimals
        (0.9653 for the paper's MNIST LeNet-300-100 at 0.98, 0.882, dense; 0.5 for 2:4 with no dense layer)."""
        import torch

        from .models import build_model

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
        return dataclasses.replace(self, method=methods.method_class(self.method).pretrain_method, sparsity=0.0)

    def rewind_step(self, total_steps: int) -> int:
        """The step whose weights a dense run saves for lottery runs to rewind to (weights after that many steps)."""
        return min(round(self.rewind_fraction * total_steps), total_steps - 1)

    def settings(self) -> dict[str, Any]:
        """Every setting that can change the result, seed excluded, by its explicit value (JSON types); execution
        `auto` by the execution it gives this method, so a run has one key however its execution was chosen."""
        from methods.execution import execution_class  # imports torch: only where a run is keyed

        settings = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                    if f.metadata.get("identity", True) and f.name != "seed"}
        settings["execution"] = execution_class(self.execution, self.method_class).name
        return settings

    def config_key(self) -> str:
        """12 hex digits of the SHA-256 of `settings()`: the same for all seeds of one protocol."""
        return settings_key(self.settings())

    def run_id(self) -> str:
        """Readable prefix (method, sparsity, seed) plus `config_key()`."""
        return f"{self.method}-s{self.sparsity:g}-seed{self.seed}-{self.config_key()}"

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
    where it is resolved (`benchmark.distributed.resolve_device`)."""
    if not DEVICE_PATTERN.fullmatch(name):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps")


@functools.lru_cache(maxsize=None)
def _check_model(model: str, dataset: str) -> None:
    """ValueError naming the fix unless `model` can be built for `dataset`'s images (a known name, a valid
    wrn-D-K, images large enough); built without memory (meta device), once per pair."""
    import torch

    from .models import build_model

    info = DATASETS[dataset]
    with torch.device("meta"):
        build_model(model, info.num_classes, info.input_shape)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def settings_key(settings: dict[str, Any]) -> str:
    """The config key of a settings dict (`RunConfig.settings()`, or a runs.csv row's `settings`)."""
    return hashlib.sha256(settings_json(settings).encode()).hexdigest()[:12]


def settings_json(settings: dict[str, Any]) -> str:
    """The canonical text of a settings dict: compact JSON with sorted keys."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))
