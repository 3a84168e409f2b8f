"""Loss landscape between two sparse solutions (spec section 7, the paper's section 4.4 and figure 6).

- `linear_path`: weights (1 - a) w0 + a w1 for a in [-0.2, 1.2]; the interpolated weights are used as
  they are, so a point's support is the union of the two masks.
- `train_bezier` / `bezier_path`: a Bezier curve phi(t) = sum_k B_k,n(t) p_k with p_0 = w0, p_n = w1
  and control points p_1..p_{n-1} trained to minimise the expected loss E_{t ~ U(0,1)} L(phi(t))
  (Garipov et al. 2018; one t per mini-batch, torch.func.functional_call). The quadratic curve
  (n = 2) is (1-t)^2 w0 + 2t(1-t) theta + t^2 w1. Mode "sparse" keeps the control points inside the
  union of the two masks (always-dense parameters such as biases and batch norm stay free); mode
  "dense" lets them use every weight.
- At every point: training loss and accuracy on a fixed subset of the training set (the first
  `train_batches` batches of the un-augmented training split), test loss and accuracy; models with
  batch norm get their running statistics re-estimated on those training batches first
  (`bn_recomputed` in the CSV).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.func import functional_call

from benchmark.config import RunConfig, check_device
from benchmark.data import (
    DataBundle,
    eval_batches,
    load_dataset,
    steps_per_epoch,
    train_batches,
)
from benchmark.files import read_run_config
from benchmark.models import build_model
from benchmark.checkpoints import checkpoint_file, load_run_state, load_weights
from benchmark.distributed import resolve_device
from benchmark.train import evaluate
from methods.settings import check_types

__all__ = [
    "CSV_COLUMNS",
    "PATHS",
    "Evaluator",
    "LandscapeResult",
    "LandscapeSettings",
    "Solution",
    "barrier",
    "bezier_path",
    "bezier_point",
    "coefficients",
    "interpolate",
    "linear_path",
    "load_solution",
    "recompute_bn",
    "run_landscape",
    "train_bezier",
    "union_masks",
]

State = dict[str, Tensor]
Batch = tuple[Tensor, Tensor]
PATHS = ("linear", "bezier-sparse", "bezier-dense")
CSV_COLUMNS = ["coefficient", "path", "train_loss", "test_accuracy", "bn_recomputed", "train_accuracy", "test_loss"]


# ---- the two solutions ----

@dataclass
class Solution:
    """A trained run loaded from its folder: settings, final weights and masks."""

    run_dir: Path
    checkpoint: Path
    config: RunConfig
    record: dict[str, Any]
    state: State  # the model's state_dict
    masks: dict[str, Tensor]  # parameter name ("fc1.weight") -> bool mask
    finished: bool

    @property
    def width(self) -> float:
        return float(self.record.get("width", 1.0))

    @property
    def label(self) -> str:
        return f"{self.config.method} s{self.config.sparsity:g} seed{self.config.seed}"


def load_solution(path: str | Path, device: str | torch.device = "cpu") -> Solution:
    """Load a run folder (or its checkpoint.pt; config.json must sit beside it)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist; pass a run folder (results/runs/<run id>) or its checkpoint.pt")
    ckpt_path = checkpoint_file(path)
    run_dir = ckpt_path.parent
    record, config = read_run_config(run_dir)
    ckpt = load_run_state(ckpt_path, torch.device(device))
    masks = {(name if name in ckpt["model"] else f"{name}.weight"): m.to(torch.bool)
             for name, m in ckpt["sparsifier"]["masks"].items()}
    return Solution(run_dir, ckpt_path, config, record, {k: v.detach() for k, v in ckpt["model"].items()}, masks,
                    (run_dir / "metrics.json").is_file())


def _check_pair(a: Solution, b: Solution) -> None:
    for attr in ("dataset", "model"):
        if getattr(a.config, attr) != getattr(b.config, attr):
            raise ValueError(f"the two runs differ in {attr} ({getattr(a.config, attr)} vs {getattr(b.config, attr)}); "
                             "interpolation needs two solutions of the same model")
    shapes_a = {k: tuple(v.shape) for k, v in a.state.items()}
    shapes_b = {k: tuple(v.shape) for k, v in b.state.items()}
    if shapes_a != shapes_b:
        raise ValueError(f"the two runs' weights have different shapes (widths {a.width:g} and {b.width:g}); "
                         "interpolation needs two solutions of the same model")


def union_masks(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
    """Elementwise OR of two {parameter name: bool mask}; a layer masked on one side only keeps that mask
    OR all-True (dense) on the other."""
    out = {}
    for name in set(a) | set(b):
        if name in a and name in b:
            out[name] = a[name] | b[name]
        else:
            only = a.get(name, b.get(name))
            out[name] = torch.ones_like(only)
    return out


# ---- points on paths ----

def interpolate(start: State, end: State, alpha: float) -> State:
    """(1 - alpha) * start + alpha * end for floating tensors (exactly start at 0 and end at 1);
    integer buffers (batch-norm counters) are taken from start."""
    alpha = float(alpha)
    return {k: ((1.0 - alpha) * v + alpha * end[k]) if v.is_floating_point() else v.clone() for k, v in start.items()}


def bernstein(t: float, degree: int) -> list[float]:
    return [math.comb(degree, k) * t ** k * (1.0 - t) ** (degree - k) for k in range(degree + 1)]


def bezier_point(start: State, controls: Sequence[dict[str, Tensor]], end: State, t: float) -> State:
    """phi(t) = sum_k B_k,n(t) p_k with p_0 = start, p_n = end (exactly start at t = 0 and end at 1).
    Entries without a control point (buffers) are interpolated linearly."""
    t = float(t)
    coeffs = bernstein(t, len(controls) + 1)
    out = {}
    for k, v in start.items():
        if not v.is_floating_point():
            out[k] = v.clone()
        elif all(k in c for c in controls):
            value = coeffs[0] * v
            for c, p in zip(coeffs[1:-1], controls):
                value = value + c * p[k]
            out[k] = value + coeffs[-1] * end[k]
        else:
            out[k] = (1.0 - t) * v + t * end[k]
    return out


def coefficients(points: int = 29, low: float = -0.2, high: float = 1.2) -> np.ndarray:
    """`points` evenly spaced values from low to high, rounded so that 0 and 1 come out exact, with 0 and
    1 added when the grid misses them."""
    if points < 2 or not low < high:
        raise ValueError(f"need at least 2 points and low < high, got {points} points in [{low}, {high}]")
    grid = np.round(np.linspace(low, high, points), 10)
    grid = np.where(np.isclose(grid, 0.0, atol=1e-9), 0.0, grid)
    grid = np.where(np.isclose(grid, 1.0, atol=1e-9), 1.0, grid)
    return np.unique(np.concatenate([grid, [0.0, 1.0]]))


# ---- evaluation ----

def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_bn(model: nn.Module, batches: Iterable[Batch]) -> bool:
    """Re-estimate every batch-norm layer's running mean and variance as the plain average over `batches`
    (momentum None, as torch.optim.swa_utils.update_bn); False if the model has no batch norm."""
    norms = _batchnorms(model)
    if not norms:
        return False
    momenta = {m: m.momentum for m in norms}
    was_training = model.training
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for x, _ in batches:
        model(x)
    for m in norms:
        m.momentum = momenta[m]
    model.train(was_training)
    return True


@dataclass
class Evaluator:
    """Evaluates a model at given weights: BN re-estimation (if any), train loss/accuracy, test loss/accuracy."""

    model: nn.Module
    criterion: Callable
    train: list[Batch]
    test: list[Batch]
    recompute: bool = True

    @property
    def bn_recomputed(self) -> bool:
        return self.recompute and bool(_batchnorms(self.model))

    def __call__(self, state: State) -> dict[str, float]:
        self.model.load_state_dict(state)
        if self.bn_recomputed:
            recompute_bn(self.model, self.train)
        train_loss, train_acc = evaluate(self.model, self.train, self.criterion)
        test_loss, test_acc = evaluate(self.model, self.test, self.criterion)
        return dict(train_loss=train_loss, test_accuracy=test_acc, bn_recomputed=self.bn_recomputed,
                    train_accuracy=train_acc, test_loss=test_loss)


def linear_path(evaluator: Evaluator, start: State, end: State, coeffs: Iterable[float]) -> pd.DataFrame:
    """One row per coefficient of the straight line between start (0) and end (1)."""
    rows = [dict(coefficient=float(a), path="linear", **evaluator(interpolate(start, end, a))) for a in coeffs]
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def bezier_path(evaluator: Evaluator, start: State, controls: Sequence[dict[str, Tensor]], end: State,
                ts: Iterable[float], name: str) -> pd.DataFrame:
    rows = [dict(coefficient=float(t), path=name, **evaluator(bezier_point(start, controls, end, t))) for t in ts]
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


# ---- training a curve ----

@dataclass
class CurveResult:
    controls: list[dict[str, Tensor]]
    losses: list[float]  # training loss of each step (at its sampled t)


def train_bezier(model: nn.Module, start: State, end: State, batches: Iterator[Batch], steps: int, lr: float,
                 criterion: Callable, masks: dict[str, Tensor] | None = None, degree: int = 2,
                 momentum: float = 0.9, seed: int = 0) -> CurveResult:
    """Train the control points of a degree-`degree` Bezier curve from start to end (Garipov et al. 2018).

    Control point k starts on the straight line at k/degree (the midpoint for the quadratic curve).
    Each step draws t ~ U(0, 1) (keyed on `seed`), evaluates the loss of the model at phi(t) on one
    batch through torch.func.functional_call, and takes an SGD step (momentum, cosine-decayed lr) on
    the control points. With `masks` ({parameter name: bool}), every masked parameter of a control
    point is zero outside its mask, before and after every step.
    """
    if degree < 2:
        raise ValueError("a Bezier curve with trainable control points needs degree >= 2")
    params = [name for name, _ in model.named_parameters()]
    missing = [n for n in params if n not in start or n not in end]
    if missing:
        raise ValueError(f"the checkpoints lack parameters {', '.join(missing[:3])}")
    masks = {n: m.to(start[n].device) for n, m in (masks or {}).items() if n in params}
    controls = []
    for k in range(1, degree):
        point = {}
        for n in params:
            value = start[n] + (k / degree) * (end[n] - start[n])
            if n in masks:
                value = value * masks[n]
            point[n] = value.detach().clone().requires_grad_(True)
        controls.append(point)
    buffers = {k: v.clone() for k, v in start.items() if k not in params}  # BN statistics updated in train mode
    optimizer = torch.optim.SGD([v for c in controls for v in c.values()], lr=lr, momentum=momentum)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
        x, y = next(batches)
        t = float(torch.rand((), generator=generator))
        coeffs = bernstein(t, degree)
        point = {}
        for n in params:
            value = coeffs[0] * start[n] + coeffs[-1] * end[n]
            for c, control in zip(coeffs[1:-1], controls):
                value = value + c * (control[n] * masks[n] if n in masks else control[n])
            point[n] = value
        loss = criterion(functional_call(model, {**point, **buffers}, (x,)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            for control in controls:
                for n, m in masks.items():
                    control[n].mul_(m)
        losses.append(loss.item())
    model.eval()
    return CurveResult([{n: v.detach() for n, v in c.items()} for c in controls], losses)


# ---- the whole experiment ----

@dataclass
class LandscapeSettings:
    """Settings of `run_landscape` (each is a flag of `python -m analysis landscape`)."""

    points: int = 29
    low: float = -0.2
    high: float = 1.2
    train_batches: int = 10  # 0: the whole training split
    test_batches: int = 0  # 0: the whole test split
    batch_size: int = 0  # 0: the first run's batch size
    recompute_bn: bool = True
    paths: tuple[str, ...] = PATHS
    bezier_degree: int = 2
    bezier_steps: int = 0  # 0: bezier_epochs of the training set
    bezier_epochs: float = 1.0
    bezier_lr: float = 0.0  # 0: the first run's lr
    bezier_momentum: float = 0.9
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        """ValueError naming the flag for a value of the wrong type (numbers finite) or out of range."""
        check_types(self)
        check_device(self.device)
        unknown = [p for p in self.paths if p not in PATHS]
        checks = [
            (not unknown, f"unknown path(s) {', '.join(unknown)}; choose from {', '.join(PATHS)}"),
            (bool(self.paths), f"no paths to evaluate; choose from {', '.join(PATHS)}"),
            (self.points >= 2, "--points must be >= 2"),
            (self.low < self.high, "--range needs low < high"),
            (self.train_batches >= 0 and self.test_batches >= 0, "--train-batches/--test-batches must be >= 0"),
            (self.batch_size >= 0, "--batch-size must be >= 0"),
            (self.bezier_degree >= 2, "--bezier-degree must be >= 2 (2: quadratic, 3: cubic)"),
            (self.bezier_steps >= 0 and self.bezier_epochs > 0, "--bezier-steps must be >= 0, --bezier-epochs > 0"),
            (self.bezier_lr >= 0, "--bezier-lr must be >= 0 (0: the run's lr)"),
            (0 <= self.bezier_momentum < 1, "bezier_momentum must be in [0, 1)"),
            (self.seed >= 0, "--seed must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class LandscapeResult:
    frame: pd.DataFrame  # CSV_COLUMNS, one row per (path, coefficient)
    start: Solution
    end: Solution
    curves: dict[str, CurveResult] = field(default_factory=dict)  # "bezier-sparse" / "bezier-dense"
    union: dict[str, Tensor] = field(default_factory=dict)
    bn_recomputed: bool = False
    files: list[Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def barrier(frame: pd.DataFrame, metric: str = "train_loss") -> dict[str, dict[str, float]]:
    """Per path: the largest excess of `metric` over the straight line between the endpoint values, for
    t in [0, 1] (the loss barrier), and where it is."""
    out = {}
    for path, s in frame[(frame["coefficient"] >= 0) & (frame["coefficient"] <= 1)].groupby("path"):
        s = s.sort_values("coefficient")
        t, v = s["coefficient"].to_numpy(), s[metric].to_numpy()
        base = v[0] + t * (v[-1] - v[0])
        i = int(np.argmax(v - base))
        out[str(path)] = {"barrier": float(v[i] - base[i]), "at": float(t[i]), "max": float(v.max()),
                          "start": float(v[0]), "end": float(v[-1])}
    return out


def _batches(data: DataBundle, split: str, batch_size: int, limit: int) -> list[Batch]:
    it = eval_batches(data, split, batch_size)
    return list(itertools.islice(it, limit) if limit else it)


def run_landscape(path_a: str | Path, path_b: str | Path, settings: LandscapeSettings | None = None,
                  out: str | Path | None = None, report: Callable[[str], None] = print) -> LandscapeResult:
    """Evaluate the straight line and train and evaluate the Bezier curves between two run folders;
    with `out`, write out/landscape.csv and out/landscape.json (settings, endpoints, barriers)."""
    settings = settings or LandscapeSettings()
    settings.validate()
    device = resolve_device(settings.device)
    a, b = load_solution(path_a, device), load_solution(path_b, device)
    _check_pair(a, b)
    cfg = a.config
    for s in (a, b):
        if not s.finished:
            report(f"note: {s.run_dir} has no metrics.json; using its last checkpoint (the run may be unfinished)")
    data = load_dataset(cfg.dataset, cfg.data_root or None, val_fraction=cfg.val_fraction,
                        standardize=cfg.inputs == "standardized",
                        train_subset=cfg.train_subset or None, device=device)
    model = build_model(cfg.model, data.num_classes, data.input_shape, a.width).to(device)
    for s in (a, b):
        load_weights(model, s.state, s.checkpoint)  # a checkpoint that does not fit its config.json is named
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    batch_size = settings.batch_size or cfg.batch_size
    evaluator = Evaluator(model, criterion, _batches(data, "train", batch_size, settings.train_batches),
                          _batches(data, "test", 1000, settings.test_batches), settings.recompute_bn)
    n_train = sum(len(y) for _, y in evaluator.train)
    if evaluator.bn_recomputed:
        report(f"batch norm: running statistics re-estimated at every point on the {n_train} training examples "
               "the loss is measured on")
    elif _batchnorms(model):
        report("batch norm: statistics NOT re-estimated (--no-bn-recompute); interpolated running statistics used")
    else:
        report("batch norm: the model has none; nothing to re-estimate")
    coeffs = coefficients(settings.points, settings.low, settings.high)
    union = union_masks(a.masks, b.masks)
    frames, curves = [], {}
    if "linear" in settings.paths:
        report(f"linear path: {len(coeffs)} points in [{coeffs[0]:g}, {coeffs[-1]:g}]")
        frames.append(linear_path(evaluator, a.state, b.state, coeffs))
    ts = coeffs[(coeffs >= 0) & (coeffs <= 1)]
    steps = settings.bezier_steps or max(1, round(settings.bezier_epochs * steps_per_epoch(data, batch_size)))
    lr = settings.bezier_lr or cfg.lr
    for name in [p for p in settings.paths if p.startswith("bezier")]:
        mode = name.split("-")[1]
        report(f"{name}: training {settings.bezier_degree - 1} control point(s) for {steps} steps at lr {lr:g} "
               f"({'inside the union of the two masks' if mode == 'sparse' else 'in the full dense space'})")
        batches = train_batches(data, batch_size, settings.seed)
        curve = train_bezier(model, a.state, b.state, batches, steps, lr, criterion,
                             masks=union if mode == "sparse" else None, degree=settings.bezier_degree,
                             momentum=settings.bezier_momentum, seed=settings.seed)
        curves[name] = curve
        frames.append(bezier_path(evaluator, a.state, curve.controls, b.state, ts, name))
    frame = pd.concat(frames, ignore_index=True)
    result = LandscapeResult(frame, a, b, curves, union, evaluator.bn_recomputed)
    result.summary = {
        "start": str(a.run_dir), "end": str(b.run_dir), "start_label": a.label, "end_label": b.label,
        "dataset": cfg.dataset, "model": cfg.model, "train_examples": n_train,
        "test_examples": sum(len(y) for _, y in evaluator.test), "bn_recomputed": evaluator.bn_recomputed,
        "bezier_steps": steps if curves else 0, "bezier_lr": lr if curves else None,
        "settings": dataclasses.asdict(settings), "barriers": barrier(frame),
        "bezier_final_train_loss": {k: float(np.mean(c.losses[-10:])) if c.losses else None for k, c in curves.items()},
    }
    for path, info in result.summary["barriers"].items():
        report(f"{path}: train loss {info['start']:.4f} at 0, {info['end']:.4f} at 1, max {info['max']:.4f}; "
               f"barrier {info['barrier']:+.4f} at {info['at']:g}")
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out / "landscape.csv", index=False)
        (out / "landscape.json").write_text(json.dumps(result.summary, indent=2, default=str))
        result.files += [out / "landscape.csv", out / "landscape.json"]
    return result
