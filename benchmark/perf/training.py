"""Training: the plain dense step against each method's ordinary and mask-update steps, interleaved
round by round; the work the sparsity code adds; the memory each sparsifier holds."""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import methods

from ..flops import FlopCounter, forward_flops
from ..models import build_model
from ..presets import preset_config
from ..train import make_optimizer
from .setups import ModelSetup, clock, median, nbytes

TOTAL_STEPS = 10_000  # the schedule the sparsifiers are built for (updates every delta_t until t_end)


class _TimedStep:
    """Replaces `optimizer.step` on the instance and adds up the time spent in it."""

    def __init__(self, optimizer: torch.optim.Optimizer, sync: Callable[[], None]):
        self.inner, self.sync, self.elapsed = optimizer.step, sync, 0.0
        optimizer.step = self

    def __call__(self, *args, **kwargs):
        self.sync()
        start = clock()
        result = self.inner(*args, **kwargs)
        self.sync()
        self.elapsed += clock() - start
        return result


@dataclass
class Variant:
    """One thing timed in the training loop: the dense step, or a method's ordinary or update step."""

    label: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    timer: _TimedStep
    sparsifier: methods.Sparsifier | None = None
    t: int = 0  # the step index the sparsifier is set to before each timed step
    method: str = "dense"
    kind: str = "dense"  # dense, ordinary, update
    rounds: list[list[tuple[float, float, float]]] = field(default_factory=list)  # (step, sparsity code, optimizer)


def build_variant(name: str, setup: ModelSetup, method: str | None, sparsity: float, device: torch.device,
                  batch: tuple[torch.Tensor, torch.Tensor], criterion: nn.Module, **overrides: Any):
    """(model, optimizer, sparsifier) of `method` at `sparsity` on the setup's preset with `overrides` (masked-dense
    unless they name an execution), from seed 0 so every variant starts from the same weights; method None is the
    plain dense step (no sparsifier)."""
    cfg = preset_config(setup.preset, **({"method": method, "sparsity": sparsity, "execution": "masked", **overrides}
                                         if method else {}))
    torch.manual_seed(0)
    model = build_model(name, 10, setup.input_shape).to(device).train()
    optimizer = make_optimizer(cfg, model)
    sparsifier = None if method is None else methods.create(
        method, model, optimizer, total_steps=TOTAL_STEPS, config=cfg.sparsity_config(),
        init_batches=[batch] if cfg.method_class.needs_init_batches else None, loss_fn=criterion)
    return model, optimizer, sparsifier


def _build_training(name: str, setup: ModelSetup, method_names: list[str], sparsity: float, device: torch.device,
                    batch: tuple[torch.Tensor, torch.Tensor], sync) -> tuple[list[Variant], dict[str, float]]:
    """Dense and method variants, each with its own model (same initial weights) and optimizer."""
    criterion = nn.CrossEntropyLoss()

    model, optimizer, _ = build_variant(name, setup, None, sparsity, device, batch, criterion)
    module_flops = forward_flops(copy.deepcopy(model).cpu(), setup.input_shape)
    variants = [Variant("dense", model, optimizer, _TimedStep(optimizer, sync))]
    flops = {}
    x, y = batch
    for method in method_names:
        model, optimizer, sparsifier = build_variant(name, setup, method, sparsity, device, batch, criterion)
        timer = _TimedStep(optimizer, sync)
        counter = FlopCounter(module_flops, sparsifier.names, sparsifier.sizes)
        if sparsifier.settled_step():  # train at the final sparsity: run the last step that changes it first
            sparsifier.seek(sparsifier.settled_step())
            optimizer.zero_grad(set_to_none=True)
            criterion(model(x), y).backward()
            sparsifier.step()
        # a step without a mask update (a method that updates every step has only those)
        ordinary = next((t for t in range(sparsifier.t or 1, TOTAL_STEPS) if not sparsifier.is_update_step(t)),
                        sparsifier.t or 1)
        variants.append(Variant(method, model, optimizer, timer, sparsifier, ordinary, method, "ordinary"))
        flops[method] = counter.train_step(sparsifier.counts, sparsifier.uses_dense_gradient(ordinary)) / counter.dense_step()
        update = next((t for t in range(1, TOTAL_STEPS) if sparsifier.is_update_step(t)), None)
        if sparsifier.dynamic and update is not None and update != ordinary:
            variants.append(Variant(f"{method} update", model, optimizer, timer, sparsifier, update, method, "update"))
            flops[f"{method} update"] = (counter.train_step(sparsifier.counts, sparsifier.uses_dense_gradient(update))
                                         / counter.dense_step())
    flops["dense"] = 1.0
    return variants, flops


def _train_step(v: Variant, batch, criterion, sync) -> tuple[float, float, float]:
    """One timed training step: (whole step, sparsifier.step or optimizer.step, optimizer.step) in seconds."""
    x, y = batch
    if v.sparsifier is not None:
        v.sparsifier.seek(v.t)
    sync()
    start = clock()
    v.optimizer.zero_grad(set_to_none=True)
    criterion(v.model(x), y).backward()
    sync()
    middle = clock()
    v.timer.elapsed = 0.0
    if v.sparsifier is None:
        v.optimizer.step()
    else:
        v.sparsifier.step()
    sync()
    end = clock()
    return end - start, end - middle, v.timer.elapsed


def _memory(variants: list[Variant], device: torch.device) -> dict[str, Any]:
    """Exact bytes of the dense training state and of what each sparsifier holds beyond it."""
    dense = variants[0]
    params = list(dense.model.parameters())
    state = [v for p in params for v in dense.optimizer.state.get(p, {}).values() if torch.is_tensor(v)]
    dense_bytes = {"weights": nbytes(params), "gradients": nbytes(params), "optimizer": nbytes(state)}
    total = sum(dense_bytes.values())
    out = {"dense_state_bytes": dense_bytes, "dense_state_total": total, "methods": {}}
    for v in variants:
        if v.kind != "ordinary":
            continue
        held = {kind: nbytes(tensors) for kind, tensors in v.sparsifier.held_tensors().items()}
        out["methods"][v.method] = {"held_bytes": held, "held_total": sum(held.values()),
                                    "bytes_per_sparse_weight": sum(held.values()) / sum(v.sparsifier.sizes),
                                    "ratio": (total + sum(held.values())) / total}
    return out


def _cuda_peaks(name: str, setup: ModelSetup, method_names: list[str], sparsity: float, device: torch.device,
                batch) -> dict[str, int]:
    """torch.cuda.max_memory_allocated of 3 steps of each variant built alone (dynamic: one is an update),
    including the model, its gradients and optimizer state, the sparsifier's tensors and the activations."""
    peaks = {}
    criterion = nn.CrossEntropyLoss()
    x, y = batch
    # the first pass also allocates the libraries' workspaces (cuBLAS, cuDNN): a throwaway dense pass takes them
    for method in [None, None, *method_names]:  # None: the plain dense step
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        model, optimizer, sparsifier = build_variant(name, setup, method, sparsity, device, batch, criterion)
        steps = [1, 2, 3]
        if sparsifier is not None and sparsifier.dynamic:
            steps[1] = next((t for t in range(1, TOTAL_STEPS) if sparsifier.is_update_step(t)), 2)
        for t in steps:
            optimizer.zero_grad(set_to_none=True)
            criterion(model(x), y).backward()
            if sparsifier is None:
                optimizer.step()
            else:
                sparsifier.seek(t)
                sparsifier.step()
        torch.cuda.synchronize(device)
        peaks[method or "dense"] = int(torch.cuda.max_memory_allocated(device))
        del model, optimizer, sparsifier
    torch.cuda.empty_cache()
    return peaks


def measure_training(name: str, setup: ModelSetup, method_names: list[str], sparsity: float, device: torch.device,
                     rounds: int | None, budget_s: float, log) -> dict[str, Any]:
    """Interleaved medians of dense, ordinary and update steps, the sparsity code's own time, and memory."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(setup.batch_size, *setup.input_shape, generator=g).to(device),
             torch.randint(0, 10, (setup.batch_size,), generator=g).to(device))
    criterion = nn.CrossEntropyLoss()
    variants, flops = _build_training(name, setup, method_names, sparsity, device, batch, sync)
    # warm-up: every variant once (this also creates the optimizer state), then more while cheap
    warm = [_train_step(v, batch, criterion, sync)[0] for v in variants]
    per_step = max(median(warm), 1e-6)
    for _ in range(min(5, int(0.5 / per_step))):
        for v in variants:
            _train_step(v, batch, criterion, sync)
    repeats = max(1, min(20, round(0.02 / per_step)))
    round_s = per_step * repeats * len(variants)
    planned = rounds or max(1, min(40, int(budget_s / round_s)))
    deadline = None if rounds else time.perf_counter() + 1.5 * budget_s  # a loaded machine stops early
    done = 0
    for done in range(1, planned + 1):
        for v in variants:
            v.rounds.append([_train_step(v, batch, criterion, sync) for _ in range(repeats)])
        if deadline is not None and time.perf_counter() > deadline:
            break
    rounds = done
    log(f"  training: {len(variants)} variants x {repeats} step(s) x {rounds} round(s) "
        f"(a round took about {round_s:.2f} s at warm-up)")

    dense = variants[0]
    dense_round = [median([s[0] for s in r]) for r in dense.rounds]
    dense_step = median([s[0] for r in dense.rounds for s in r])
    rows = {}
    for v in variants:
        samples = [s for r in v.rounds for s in r]
        step = median([s[0] for s in samples])
        ratio = median([median([s[0] for s in r]) / d for r, d in zip(v.rounds, dense_round)])
        row = {"kind": v.kind, "step_ms": 1e3 * step, "ratio": ratio, "optimizer_ms": 1e3 * median([s[2] for s in samples]),
               "flops_multiplier": flops[v.label]}
        if v.sparsifier is not None:
            added = median([s[1] - s[2] for s in samples])
            row["added_ms"] = 1e3 * added
            row["added_fraction"] = added / dense_step
            row["sparsity_code_ms"] = 1e3 * median([s[1] for s in samples])
        if v.kind == "update":
            row["cost_dense_steps"] = row["added_fraction"]
            row["update_step"] = v.t
            row["drop_fraction"] = v.sparsifier.schedule.fraction(v.t) if v.sparsifier.drop_grow else None
        rows[v.label] = row
    result = {"rounds": rounds, "steps_per_round": repeats, "dense_step_ms": 1e3 * dense_step, "variants": rows,
              "memory": _memory(variants, device)}
    if device.type == "cuda":
        del variants
        result["memory"]["cuda_peak_bytes"] = _cuda_peaks(name, setup, method_names, sparsity, device, batch)
    return result


LARGE_LAYER = 4096  # the mask update is also timed on one LARGE_LAYER x LARGE_LAYER Linear layer


def measure_large_update(method: str, sparsity: float, device: torch.device, updates: int = 4) -> dict[str, Any]:
    """The mask update of `method` on a LARGE_LAYER x LARGE_LAYER Linear layer at `sparsity` (between a 64-wide
    input layer and a 10-way output, batch 32, SGD with momentum): `sparsifier.step()` minus its optimizer
    step at the first `updates` update steps after a warm-up one, in ns per weight of the layer (medians)."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, LARGE_LAYER), nn.ReLU(), nn.Linear(LARGE_LAYER, LARGE_LAYER), nn.ReLU(),
                          nn.Linear(LARGE_LAYER, 10)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    timer = _TimedStep(optimizer, sync)
    s = methods.create(method, model, optimizer, total_steps=TOTAL_STEPS, sparsity=sparsity, distribution="uniform",
                       delta_t=10)
    x, y = torch.randn(32, 64, device=device), torch.randint(0, 10, (32,), device=device)
    steps = [t for t in range(1, TOTAL_STEPS) if s.is_update_step(t)][: updates + 1]
    times = []
    for t in steps:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        s.seek(t)
        timer.elapsed = 0.0
        sync()
        start = clock()
        s.step()
        sync()
        times.append(clock() - start - timer.elapsed)
    weights = LARGE_LAYER * LARGE_LAYER
    update = median(times[1:])
    return {"method": method, "layer": [LARGE_LAYER, LARGE_LAYER], "active": s.counts[1], "update_ms": 1e3 * update,
            "ns_per_weight": 1e9 * update / weights, "updates": len(times) - 1,
            "drop_fraction": s.schedule.fraction(steps[1])}
