"""Inference: the model with random masks at each sparsity run with real sparse kernels against the
dense model, at batch 1 and 256, checked against the masked dense model."""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import methods

from ..export import SparseConv2d, masked_dense, sparsify
from ..flops import FlopCounter, forward_flops
from ..models import build_model
from ..presets import preset_config
from .setups import ModelSetup, median, nbytes, clock

INFERENCE_BATCHES = (1, 256)
CHECK_SAMPLES = 32  # outputs are compared with the masked dense model on at most this many samples
TOLERANCE = 1e-5


def _time_call(fn: Callable[[], Any], sync, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        sync()
        start = clock()
        fn()
        sync()
        times.append(clock() - start)
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
            dense_t = median(_time_call(lambda: layer(inp), sync, 3))
            sparse_t = median(_time_call(lambda: sparse(inp), sync, 3))
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
        cfg = preset_config(setup.preset, method="static", sparsity=sparsity, execution="masked")
        model = copy.deepcopy(dense)
        s = methods.create("static", model, torch.optim.SGD(model.parameters(), lr=0.0), total_steps=1,
                           config=cfg.sparsity_config())
        masks = {n: m for n, m in zip(s.names, s.masks) if not bool(m.all())}
        counter = FlopCounter(module_flops, s.names, s.sizes)
        models[sparsity] = {"masks": masks, "reference": masked_dense(model, masks),
                            "flops_multiplier": counter.forward(s.counts) / counter.model_dense_forward}
        if dense_weight_bytes is None:
            dense_weight_bytes = nbytes(dense.get_submodule(n).weight for n in s.names)
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
            sparse_bytes = nbytes(getattr(m, "weight") for m in weights)
            entries[sparsity] = {"model": sparse, "diff": diff, "sparse_bytes": sparse_bytes,
                                 "sparse_convs": [n for n, ok in choice.items() if ok],
                                 "sparse_linears": [n for n in masks if isinstance(item["reference"].get_submodule(n),
                                                                                      nn.Linear)],
                                 "convs_total": len(convs)}
        calls = {"dense": lambda: dense(x)}
        calls.update({s: (lambda m=e["model"]: m(x)) for s, e in entries.items()})
        with torch.inference_mode():
            first = {k: median(_time_call(f, sync, 1)) for k, f in calls.items()}  # warm-up
            if max(first.values()) < 0.2:
                first = {k: median(_time_call(f, sync, 3)) for k, f in calls.items()}
            per_call = max(median(list(first.values())), 1e-6)
            repeats = max(1, min(50, round(0.02 / per_call)))
            share = budget_s / len(INFERENCE_BATCHES)
            planned = rounds or max(1, min(30, int(share / (per_call * repeats * len(calls)))))
            deadline = None if rounds else time.perf_counter() + 1.5 * share
            times = {k: [] for k in calls}
            n_rounds = 0
            for n_rounds in range(1, planned + 1):
                for k, f in calls.items():
                    times[k].append(median(_time_call(f, sync, repeats)))
                if deadline is not None and time.perf_counter() > deadline:
                    break
        log(f"  inference batch {batch_size}: {len(calls)} models x {repeats} call(s) x {n_rounds} round(s)")
        dense_ms = 1e3 * median(times["dense"])
        for sparsity in sorted(entries):
            e = entries[sparsity]
            ratio = median([s / d for s, d in zip(times[sparsity], times["dense"])])
            results.append({
                "sparsity": sparsity, "batch": batch_size, "flops_multiplier": models[sparsity]["flops_multiplier"],
                "dense_ms": dense_ms, "sparse_ms": 1e3 * median(times[sparsity]), "latency_ratio": ratio,
                "speedup": 1 / ratio, "max_abs_diff": e["diff"], "within_tolerance": e["diff"] <= TOLERANCE,
                "sparse_linear_layers": e["sparse_linears"], "sparse_conv_layers": e["sparse_convs"],
                "conv_layers": e["convs_total"], "dense_weight_bytes": dense_weight_bytes,
                "sparse_weight_bytes": e["sparse_bytes"], "rounds": n_rounds, "calls_per_round": repeats})
    return results
