"""`python -m benchmark perf`: what sparse training really costs, and what real sparse kernels save.

Masks simulate the paper's FLOP savings: a masked model trains at dense speed, plus the work of
the sparsity code. This command measures, in one process, on synthetic batches of each model's
input shape:

* training: the plain dense PyTorch step (forward, loss, backward, `optimizer.step()`, no
  sparsity code) against each method's ordinary step (`sparsifier.step()` instead of
  `optimizer.step()`) and each dynamic method's mask-update step. Variants run interleaved,
  round by round (A B C ... A B C ...), after a warm-up, so machine drift hits all alike; the
  tables give medians and the median over rounds of each round's ratio to dense. Whole-step
  ratios are noisy on a shared machine, so the work the sparsity code adds is also timed
  directly: `sparsifier.step()` minus the `optimizer.step()` inside it, in the same steps;
* memory: the exact sizes of the tensors each sparsifier holds (bool masks, mask multipliers,
  cached active positions, SNFS's momentum) against the dense training state (weights, gradients,
  optimizer state); on CUDA also `torch.cuda.max_memory_allocated` of a few isolated steps;
* inference: the model with random masks of each `--sparsities` level (the preset's
  distribution) run with real sparse kernels (`benchmark.export.sparsify`: CSR matmuls for
  Linear layers, and for Conv2d layers where that is measured to be faster than the dense conv)
  against the dense model, at batch 1 and 256, beside the FLOP multiplier; outputs are checked
  against the masked dense model (max abs difference).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import methods

from .presets import preset_config
from .export import SparseConv2d, masked_dense, sparsify
from .flops import FlopCounter, forward_flops
from .models import WRN_PATTERN, build_model
from .train import make_optimizer

DEFAULT_MODELS = "lenet-300-100,lenet-5,wrn-22-2"
DEFAULT_METHODS = "static,snip,gmp,set,rigl,snfs"
DEFAULT_SPARSITIES = "0.8,0.9,0.95,0.98"
INFERENCE_BATCHES = (1, 256)
TOTAL_STEPS = 10_000  # the schedule the sparsifiers are built for (updates every delta_t until t_end)
CHECK_SAMPLES = 32  # outputs are compared with the masked dense model on at most this many samples
TOLERANCE = 1e-5


@dataclass(frozen=True)
class ModelSetup:
    preset: str
    input_shape: tuple[int, int, int]
    batch_size: int


def model_setup(name: str) -> ModelSetup:
    """Preset (optimizer, distribution), input shape and training batch of a model."""
    if name == "lenet-300-100":
        return ModelSetup("fashion-mnist-lenet300", (1, 28, 28), 100)
    if name == "lenet-5":
        return ModelSetup("fashion-mnist-lenet5", (1, 28, 28), 100)
    if WRN_PATTERN.fullmatch(name):
        return ModelSetup("cifar10-wrn22-2", (3, 32, 32), 128)
    if name == "resnet-50":
        return ModelSetup("imagenet-resnet50", (3, 224, 224), 32)
    raise ValueError(f"perf knows models lenet-300-100, lenet-5, wrn-D-K and resnet-50; got {name!r}")


# ----- timing helpers ----------------------------------------------------------------------------


class _TimedStep:
    """Replaces `optimizer.step` on the instance and adds up the time spent in it."""

    def __init__(self, optimizer: torch.optim.Optimizer, sync: Callable[[], None]):
        self.inner, self.sync, self.elapsed = optimizer.step, sync, 0.0
        optimizer.step = self

    def __call__(self, *args, **kwargs):
        self.sync()
        start = time.perf_counter()
        result = self.inner(*args, **kwargs)
        self.sync()
        self.elapsed += time.perf_counter() - start
        return result


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _nbytes(tensors) -> int:
    total = 0
    for t in tensors:
        if t.layout == torch.strided:
            total += t.numel() * t.element_size()
        elif t.layout == torch.sparse_csr:
            total += sum(x.numel() * x.element_size() for x in (t.crow_indices(), t.col_indices(), t.values()))
    return total


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


def _build_training(name: str, setup: ModelSetup, method_names: list[str], sparsity: float, device: torch.device,
                    batch: tuple[torch.Tensor, torch.Tensor], sync) -> tuple[list[Variant], dict[str, float]]:
    """Dense and method variants, each with its own model (same initial weights) and optimizer."""
    criterion = nn.CrossEntropyLoss()

    def fresh(method: str | None):  # None: the plain dense step (no sparsifier)
        cfg = preset_config(setup.preset, **({"method": method, "sparsity": sparsity} if method else {}))
        torch.manual_seed(0)
        model = build_model(name, 10, setup.input_shape).to(device).train()
        optimizer = make_optimizer(cfg, model)
        return cfg, model, optimizer

    _, model, optimizer = fresh(None)
    module_flops = forward_flops(copy.deepcopy(model).cpu(), setup.input_shape)
    variants = [Variant("dense", model, optimizer, _TimedStep(optimizer, sync))]
    flops = {}
    x, y = batch
    for method in method_names:
        cfg, model, optimizer = fresh(method)
        sparsifier = methods.create(method, model, optimizer, total_steps=TOTAL_STEPS, config=cfg.sparsity_config(),
                                    init_batches=[batch] if cfg.method_class.needs_init_batches else None,
                                    loss_fn=criterion)
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
    start = time.perf_counter()
    v.optimizer.zero_grad(set_to_none=True)
    criterion(v.model(x), y).backward()
    sync()
    middle = time.perf_counter()
    v.timer.elapsed = 0.0
    if v.sparsifier is None:
        v.optimizer.step()
    else:
        v.sparsifier.step()
    sync()
    end = time.perf_counter()
    return end - start, end - middle, v.timer.elapsed


def _memory(variants: list[Variant], device: torch.device) -> dict[str, Any]:
    """Exact bytes of the dense training state and of what each sparsifier holds beyond it."""
    dense = variants[0]
    params = list(dense.model.parameters())
    state = [v for p in params for v in dense.optimizer.state.get(p, {}).values() if torch.is_tensor(v)]
    dense_bytes = {"weights": _nbytes(params), "gradients": _nbytes(params), "optimizer": _nbytes(state)}
    total = sum(dense_bytes.values())
    out = {"dense_state_bytes": dense_bytes, "dense_state_total": total, "methods": {}}
    for v in variants:
        if v.kind != "ordinary":
            continue
        held = {kind: _nbytes(tensors) for kind, tensors in v.sparsifier.held_tensors().items()}
        out["methods"][v.method] = {"held_bytes": held, "held_total": sum(held.values()),
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
        cfg = preset_config(setup.preset, **({"method": method, "sparsity": sparsity} if method else {}))
        torch.manual_seed(0)
        model = build_model(name, 10, setup.input_shape).to(device).train()
        optimizer = make_optimizer(cfg, model)
        sparsifier = None if method is None else methods.create(
            method, model, optimizer, total_steps=TOTAL_STEPS, config=cfg.sparsity_config(),
            init_batches=[batch] if cfg.method_class.needs_init_batches else None, loss_fn=criterion)
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
    per_step = max(_median(warm), 1e-6)
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
    dense_round = [_median([s[0] for s in r]) for r in dense.rounds]
    dense_step = _median([s[0] for r in dense.rounds for s in r])
    rows = {}
    for v in variants:
        samples = [s for r in v.rounds for s in r]
        step = _median([s[0] for s in samples])
        ratio = _median([_median([s[0] for s in r]) / d for r, d in zip(v.rounds, dense_round)])
        row = {"kind": v.kind, "step_ms": 1e3 * step, "ratio": ratio, "optimizer_ms": 1e3 * _median([s[2] for s in samples]),
               "flops_multiplier": flops[v.label]}
        if v.sparsifier is not None:
            added = _median([s[1] - s[2] for s in samples])
            row["added_ms"] = 1e3 * added
            row["added_fraction"] = added / dense_step
            row["sparsity_code_ms"] = 1e3 * _median([s[1] for s in samples])
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


# ----- inference ----------------------------------------------------------------------------------


def _time_call(fn: Callable[[], Any], sync, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _conv_choice(reference: nn.Module, masks: dict[str, torch.Tensor], x: torch.Tensor, candidates: list[str],
                 sync) -> dict[str, bool]:
    """For each candidate conv layer, whether its im2col + CSR form beats the dense conv on its real input
    (timed on at most 16 samples of the batch: both scale linearly with the batch)."""
    inputs = {}
    hooks = [reference.get_submodule(n).register_forward_hook(
        lambda _m, args, _out, n=n: inputs.__setitem__(n, args[0])) for n in candidates]
    with torch.inference_mode():
        reference(x[:16])
    for h in hooks:
        h.remove()
    choice = {}
    with torch.inference_mode():
        for n in candidates:
            layer = reference.get_submodule(n)
            sparse = SparseConv2d.from_dense(layer, masks[n])
            inp = inputs[n]
            dense_t = _median(_time_call(lambda: layer(inp), sync, 3))
            sparse_t = _median(_time_call(lambda: sparse(inp), sync, 3))
            choice[n] = sparse_t < 0.9 * dense_t
    return choice


def measure_inference(name: str, setup: ModelSetup, sparsities: list[float], device: torch.device,
                      rounds: int | None, budget_s: float, log) -> list[dict[str, Any]]:
    """Latency of the dense model and of its sparse-kernel versions at each sparsity, interleaved."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    dense = build_model(name, 10, setup.input_shape).to(device).eval()
    module_flops = forward_flops(copy.deepcopy(dense).cpu(), setup.input_shape)
    dense_weight_bytes = None
    models = {}
    for sparsity in sorted(sparsities, reverse=True):
        cfg = preset_config(setup.preset, method="static", sparsity=sparsity)
        model = copy.deepcopy(dense)
        s = methods.create("static", model, torch.optim.SGD(model.parameters(), lr=0.0), total_steps=1,
                           config=cfg.sparsity_config())
        masks = {n: m for n, m in zip(s.names, s.masks) if not bool(m.all())}
        counter = FlopCounter(module_flops, s.names, s.sizes)
        models[sparsity] = {"masks": masks, "reference": masked_dense(model, masks),
                            "flops_multiplier": counter.forward(s.counts) / counter.model_dense_forward}
        if dense_weight_bytes is None:
            dense_weight_bytes = _nbytes(dense.get_submodule(n).weight for n in s.names)
    g = torch.Generator().manual_seed(1)
    results = []
    for batch_size in INFERENCE_BATCHES:
        x = torch.randn(batch_size, *setup.input_shape, generator=g).to(device)
        check = x[:CHECK_SAMPLES]
        # conv layers on sparse kernels only where measured faster; a layer that loses at a sparsity
        # loses at every lower one, so only the winners are timed again
        candidates = None
        entries = {}
        for sparsity, item in models.items():  # highest sparsity first
            masks = item["masks"]
            convs = [n for n in masks if SparseConv2d.supports(item["reference"].get_submodule(n))]
            candidates = convs if candidates is None else [n for n in candidates if n in convs]
            choice = _conv_choice(item["reference"], masks, x, candidates, sync) if candidates else {}
            candidates = [n for n, ok in choice.items() if ok]
            sparse = sparsify(item["reference"], masks, convs=choice, semi_structured=device.type == "cuda")
            with torch.inference_mode():
                diff = (sparse(check) - item["reference"](check)).abs().max().item()
            weights = [m for n, m in sparse.named_modules() if n in masks]
            sparse_bytes = _nbytes(getattr(m, "weight") for m in weights)
            entries[sparsity] = {"model": sparse, "diff": diff, "sparse_bytes": sparse_bytes,
                                 "sparse_convs": [n for n, ok in choice.items() if ok],
                                 "sparse_linears": [n for n in masks if isinstance(item["reference"].get_submodule(n),
                                                                                      nn.Linear)],
                                 "convs_total": len(convs)}
        calls = {"dense": lambda: dense(x)}
        calls.update({s: (lambda m=e["model"]: m(x)) for s, e in entries.items()})
        with torch.inference_mode():
            first = {k: _median(_time_call(f, sync, 1)) for k, f in calls.items()}  # warm-up
            if max(first.values()) < 0.2:
                first = {k: _median(_time_call(f, sync, 3)) for k, f in calls.items()}
            per_call = max(_median(list(first.values())), 1e-6)
            repeats = max(1, min(50, round(0.02 / per_call)))
            share = budget_s / len(INFERENCE_BATCHES)
            planned = rounds or max(1, min(30, int(share / (per_call * repeats * len(calls)))))
            deadline = None if rounds else time.perf_counter() + 1.5 * share
            times = {k: [] for k in calls}
            n_rounds = 0
            for n_rounds in range(1, planned + 1):
                for k, f in calls.items():
                    times[k].append(_median(_time_call(f, sync, repeats)))
                if deadline is not None and time.perf_counter() > deadline:
                    break
        log(f"  inference batch {batch_size}: {len(calls)} models x {repeats} call(s) x {n_rounds} round(s)")
        dense_ms = 1e3 * _median(times["dense"])
        for sparsity in sorted(entries):
            e = entries[sparsity]
            ratio = _median([s / d for s, d in zip(times[sparsity], times["dense"])])
            results.append({
                "sparsity": sparsity, "batch": batch_size, "flops_multiplier": models[sparsity]["flops_multiplier"],
                "dense_ms": dense_ms, "sparse_ms": 1e3 * _median(times[sparsity]), "latency_ratio": ratio,
                "speedup": 1 / ratio, "max_abs_diff": e["diff"], "within_tolerance": e["diff"] <= TOLERANCE,
                "sparse_linear_layers": e["sparse_linears"], "sparse_conv_layers": e["sparse_convs"],
                "conv_layers": e["convs_total"], "dense_weight_bytes": dense_weight_bytes,
                "sparse_weight_bytes": e["sparse_bytes"], "rounds": n_rounds, "calls_per_round": repeats})
    return results


# ----- report --------------------------------------------------------------------------------------


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def format_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"sparsebench perf: torch {m['torch']}, {m['device']}, {m['threads']} thread(s) of {m['cores']} cores, "
             f"{m['cpu']}; load average {m.get('load_before', '?')} before, {m.get('load_after', '?')} after", ""]
    for name, r in report["models"].items():
        t = r.get("training")
        if t:
            lines.append(f"{name}: training step, batch {r['batch_size']}, {r['distribution']} at sparsity "
                         f"{r['train_sparsity']:g}, {t['rounds']} rounds x {t['steps_per_round']} step(s) per variant, "
                         f"medians")
            lines.append(f"  {'variant':<16}{'step ms':>9}{'x dense':>9}{'FLOPs x':>9}{'sparsity code ms':>18}"
                         f"{'of a dense step':>17}")
            for label, row in t["variants"].items():
                added = row.get("added_ms")
                if added is None:
                    code, share = "-", "-"
                else:
                    code = f"{added:.3f}"
                    share = (f"{row['cost_dense_steps']:.2f} steps" if row["kind"] == "update"
                             else f"{100 * row['added_fraction']:+.2f}%")
                lines.append(f"  {label:<16}{row['step_ms']:>9.2f}{row['ratio']:>9.3f}{row['flops_multiplier']:>9.3f}"
                             f"{code:>18}{share:>17}")
            mem = t["memory"]
            dense_total = mem["dense_state_total"]
            held = ", ".join(
                f"{meth} +{_mib(v['held_total'])} ({v['ratio']:.2f}x)" for meth, v in mem["methods"].items())
            lines.append(f"  memory: dense training state {_mib(dense_total)} (weights, gradients, optimizer); "
                         f"sparsifier tensors: {held}")
            kinds = {}
            for v in mem["methods"].values():
                for kind, nbytes in v["held_bytes"].items():
                    kinds[kind] = max(kinds.get(kind, 0), nbytes)
            lines.append("    (" + ", ".join(f"{k} {_mib(b)}" for k, b in kinds.items() if b)
                         + "; activations are the same for every variant and not counted on CPU)")
            if "cuda_peak_bytes" in mem:
                peaks = mem["cuda_peak_bytes"]
                lines.append("  CUDA peak (max_memory_allocated, 3 isolated steps): " + ", ".join(
                    f"{k} {_mib(b)} ({b / peaks['dense']:.2f}x)" for k, b in peaks.items()))
        inf = r.get("inference")
        if inf:
            first = inf[0]
            conv_note = (f"; conv layers on CSR where faster than dense (of {first['conv_layers']})"
                         if first["conv_layers"] else "")
            lines.append(f"{name}: inference with sparse kernels (CSR Linear{conv_note}), latency medians, "
                         f"outputs vs masked dense model")
            lines.append(f"  {'sparsity':>8}{'FLOPs x':>9}{'batch':>7}{'dense ms':>10}{'sparse ms':>11}{'speedup':>9}"
                         f"{'max|diff|':>11}{'CSR convs':>11}  weights (CSR / dense)")
            for row in inf:
                convs = f"{len(row['sparse_conv_layers'])}/{row['conv_layers']}" if row["conv_layers"] else "-"
                lines.append(
                    f"  {row['sparsity']:>8g}{row['flops_multiplier']:>9.3f}{row['batch']:>7}{row['dense_ms']:>10.3f}"
                    f"{row['sparse_ms']:>11.3f}{row['speedup']:>8.2f}x{row['max_abs_diff']:>11.1e}{convs:>11}  "
                    f"{_mib(row['sparse_weight_bytes'])} / {_mib(row['dense_weight_bytes'])}")
        lines.append("")
    lines.append("step ms / x dense: whole training step and its median per-round ratio to the plain dense step; "
                 "FLOPs x: the paper's count for that step;")
    lines.append("sparsity code: time in sparsifier.step() minus the optimizer.step() inside it, as a share of a "
                 "dense step (an update step's in dense steps; timed at the first update, whose drop fraction, "
                 "alpha, is the run's largest).")
    lines.append("speedup: median over rounds of dense / sparse latency; max|diff|: largest difference to the masked "
                 "dense model's outputs.")
    return "\n".join(lines)


# ----- command line ---------------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `perf` subcommand."""
    parser = subparsers.add_parser(
        "perf", help="measure training-step overhead, memory and real sparse-kernel inference speed",
        description="Time the plain dense training step against every method's step (interleaved rounds, medians), "
                    "the sparsity code's own work, memory, and inference with real sparse kernels, on synthetic "
                    "batches. The paper's FLOP savings are simulated by masks; this shows what runs.")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma list (default {DEFAULT_MODELS})")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma list (default {DEFAULT_METHODS})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--rounds", type=int, default=0,
                        help="interleaved rounds per model (default 0: as many as --budget allows, at least 1)")
    parser.add_argument("--budget", type=float, default=110.0,
                        help="seconds of timed rounds the automatic round count aims at, all models together "
                             "(default 110; set-up and warm-up come on top: the default command takes about 2 minutes "
                             "on 2 CPU cores)")
    parser.add_argument("--sparsities", default=DEFAULT_SPARSITIES,
                        help=f"inference sparsities (default {DEFAULT_SPARSITIES})")
    parser.add_argument("--train-sparsity", type=float, default=0.9, help="sparsity of the timed training (default 0.9)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch CPU threads (default: the machine's cores)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: training, inference")
    return parser


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> str | None:
    """The 1-minute load average (other processes make timings noisy), where the OS reports it."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return None


def _parse_list(text: str, what: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError(f"--{what} is empty")
    return values


def run(args: argparse.Namespace) -> int:
    """`python -m benchmark perf`: measure and print (text or --json)."""
    from .distributed import resolve_device

    model_names = _parse_list(args.models, "models")
    setups = {name: model_setup(name) for name in model_names}
    method_names = _parse_list(args.methods, "methods")
    for m in method_names:
        methods.method_class(m)
        if methods.method_class(m).dense_baseline:
            raise ValueError(f"--methods: {m} is the baseline itself (the plain dense step is always timed)")
    try:
        sparsities = [float(s) for s in _parse_list(args.sparsities, "sparsities")]
    except ValueError:
        raise ValueError(f"--sparsities takes comma-separated numbers in [0, 1), got {args.sparsities!r}") from None
    for s in [*sparsities, args.train_sparsity]:
        methods.distributions.check_sparsity(s)
    skip = set(_parse_list(args.skip, "skip")) if args.skip else set()
    if skip - {"training", "inference"}:
        raise ValueError(f"--skip takes training and/or inference, got {args.skip!r}")
    if args.rounds < 0 or not (math.isfinite(args.budget) and args.budget > 0) or args.threads < 1:
        raise ValueError("--rounds must be >= 0, --budget a number of seconds > 0 and --threads >= 1")
    device = resolve_device(args.device)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else (lambda msg: print(msg, flush=True))
    rounds = args.rounds or None
    parts = [p for p in ("training", "inference") if p not in skip]
    share = args.budget / max(1, len(model_names) * len(parts))
    report = {"machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                          "threads": args.threads, "torch": torch.__version__,
                          "cpu": _cpu_name(), "cores": os.cpu_count()},
              "settings": {"methods": method_names, "sparsities": sparsities, "train_sparsity": args.train_sparsity,
                           "rounds": args.rounds, "budget_s": args.budget},
              "models": {}}
    report["machine"]["load_before"] = _load()
    started = time.perf_counter()
    try:
        for name, setup in setups.items():
            cfg = preset_config(setup.preset)
            entry = {"preset": setup.preset, "input_shape": list(setup.input_shape), "batch_size": setup.batch_size,
                     "distribution": cfg.distribution, "train_sparsity": args.train_sparsity}
            log(f"{name}:")
            if "training" in parts:
                entry["training"] = measure_training(name, setup, method_names, args.train_sparsity, device, rounds,
                                                     share, log)
            if "inference" in parts:
                entry["inference"] = measure_inference(name, setup, sparsities, device, rounds, share, log)
            report["models"][name] = entry
    finally:
        torch.set_num_threads(previous_threads)
    report["wall_time_s"] = time.perf_counter() - started
    report["machine"]["load_after"] = _load()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print()
        print(format_report(report))
        print(f"({report['wall_time_s']:.0f} s)")
    return 0
