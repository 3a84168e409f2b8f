"""Sparse-kernel training (`execution="sparse"`) against the plain dense step: for each method and sparsity,
the ordinary and mask-update steps timed interleaved with the dense step, and the loss difference to
masked-dense training of the same model over a few steps that include a mask update."""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

import methods
from methods.base import layer_module

from ..flops import FlopCounter, forward_flops
from ..models import build_model
from .setups import ModelSetup, clock, median
from .training import TOTAL_STEPS, build_variant

CHECK_STEPS = 6  # steps compared with masked-dense training, the first update among them


def wants_sparse_training(name: str, setup: ModelSetup) -> bool:
    """Whether most of the model's sparse weights are in Linear layers (what the sparse kernels train)."""
    model = build_model(name, 10, setup.input_shape)
    layers = methods.sparse_layers(model)
    linear = sum(w.numel() for n, w in layers if isinstance(layer_module(model, n)[0], nn.Linear))
    return 2 * linear >= sum(w.numel() for _, w in layers)


def _step(model, optimizer, sparsifier, batch, criterion, t=None) -> float:
    x, y = batch
    if sparsifier is not None and t is not None:
        sparsifier.seek(t)
    optimizer.zero_grad(set_to_none=True)
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step() if sparsifier is None else sparsifier.step()
    return loss.item()


def measure_sparse_training(name: str, setup: ModelSetup, method_names: list[str], sparsities: list[float],
                            device: torch.device, rounds: int | None, budget_s: float, log) -> list[dict[str, Any]]:
    """One row per (method, sparsity): speedups of the sparse-kernel ordinary step (and amortized with one
    update every delta_t steps) over the plain dense step, FLOP multiplier, loss difference to masked-dense."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(setup.batch_size, *setup.input_shape, generator=g).to(device),
                torch.randint(0, 10, (setup.batch_size,), generator=g).to(device)) for _ in range(CHECK_STEPS)]
    batch = batches[0]
    criterion = nn.CrossEntropyLoss()
    dense = build_variant(name, setup, None, 0.0, device, batch, criterion)
    module_flops = forward_flops(build_model(name, 10, setup.input_shape), setup.input_shape)
    rows, variants = [], []
    for method in method_names:
        for sparsity in sparsities:
            runs = {ex: build_variant(name, setup, method, sparsity, device, batch, criterion, execution=ex)
                    for ex in ("masked", "sparse")}
            s = runs["sparse"][2]
            if s.settled_step():  # at the final sparsity (GMP): from its last pruning step on
                for model, optimizer, sparsifier in runs.values():
                    _step(model, optimizer, sparsifier, batch, criterion, sparsifier.settled_step())
            update = next((t for t in range(max(s.t, 1), TOTAL_STEPS) if s.is_update_step(t)), None)
            ordinary = next((t for t in range(max(s.t, 1), TOTAL_STEPS) if not s.is_update_step(t)), max(s.t, 1))
            start = max(s.t, (update or CHECK_STEPS) - CHECK_STEPS // 2)
            losses = {ex: [_step(*run, b, criterion, start + k) for k, b in enumerate(batches)] for ex, run in runs.items()}
            diff = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(losses["masked"], losses["sparse"]))
            counter = FlopCounter(module_flops, s.names, s.sizes)
            row = {"method": method, "sparsity": sparsity, "batch": setup.batch_size,
                   "flops_multiplier": counter.train_step(s.counts, s.uses_dense_gradient(ordinary)) / counter.dense_step(),
                   "max_rel_loss_diff": diff, "kernel_layers": [s.names[i] for i in s.execution.kernel_layers()],
                   "delta_t": s.config.delta_t if s.dynamic and update is not None else None}
            rows.append(row)
            variants.append((row, "ordinary", (*runs["sparse"], ordinary)))
            if row["delta_t"]:
                variants.append((row, "update", (*runs["sparse"], update)))
            del runs["masked"]
    timed = [(None, "dense", (*dense, None)), *variants]
    samples = {id(v): [] for v in timed}

    def once(v) -> float:
        model, optimizer, sparsifier, t = v[2]
        sync()
        begin = clock()
        _step(model, optimizer, sparsifier, batch, criterion, t)
        sync()
        return clock() - begin

    warm = [once(v) for v in timed]
    per_step = max(median(warm), 1e-6)
    repeats = max(1, min(20, round(0.02 / per_step)))
    planned = rounds or max(1, min(30, int(budget_s / (per_step * repeats * len(timed)))))
    deadline = None if rounds else time.perf_counter() + 1.5 * budget_s
    done = 0
    for done in range(1, planned + 1):
        for v in timed:
            samples[id(v)].append(median([once(v) for _ in range(repeats)]))
        if deadline is not None and time.perf_counter() > deadline:
            break
    log(f"  sparse-kernel training: {len(timed)} variants x {repeats} step(s) x {done} round(s)")
    dense_rounds = samples[id(timed[0])]
    by_row: dict[int, dict[str, list[float]]] = {}
    for v in timed[1:]:
        row, kind = v[0], v[1]
        by_row.setdefault(id(row), {})[kind] = samples[id(v)]
    for row in rows:
        kinds = by_row[id(row)]
        ordinary = kinds["ordinary"]
        row["dense_step_ms"] = 1e3 * median(dense_rounds)
        row["step_ms"] = 1e3 * median(ordinary)
        row["speedup"] = median([d / o for d, o in zip(dense_rounds, ordinary)])
        if "update" in kinds:
            dt = row["delta_t"]
            row["update_step_ms"] = 1e3 * median(kinds["update"])
            row["speedup_amortized"] = median([d * dt / ((dt - 1) * o + u)
                                               for d, o, u in zip(dense_rounds, ordinary, kinds["update"])])
        else:
            row["speedup_amortized"] = row["speedup"]
    return rows
