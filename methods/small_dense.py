"""The paper's Small-Dense baseline: a narrower dense model with the sparse model's parameter count."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .base import LayerFilter, sparse_layers
from .settings import LayerSettings


def parameter_count(model: nn.Module) -> int:
    """All parameters of `model`."""
    return sum(p.numel() for p in model.parameters())


def sparse_parameter_count(model: nn.Module, config: LayerSettings, include: LayerFilter | None = None) -> int:
    """Active parameters of `model` sparsified as `config` says: sparse-layer counts plus every other parameter."""
    weights = [w for _, w in sparse_layers(model, include)]
    counts = config.layer_counts([w.shape for w in weights])
    return parameter_count(model) - sum(w.numel() for w in weights) + sum(counts)


def small_dense_width(build: Callable[[float], nn.Module], config: LayerSettings,
                      include: LayerFilter | None = None) -> float:
    """Width multiplier whose dense model's parameter count is closest to the active count of the
    model sparsified as `config` says.

    `build(width)` returns the model at that width (width 1 is the sparse model's own). Models
    are built on the meta device, so no memory is allocated.
    """
    with torch.device("meta"):
        target = sparse_parameter_count(build(1.0), config, include)

        def size(width: float) -> int:
            return parameter_count(build(width))

        lo, hi = 1e-3, 1.0
        for _ in range(40):  # smallest width whose model reaches the target
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if size(mid) >= target else (mid, hi)
        return min((lo, hi), key=lambda w: (abs(size(w) - target), w))
