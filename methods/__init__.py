"""Sparse training methods behind one interface.

    sparsifier = methods.create("rigl", model, optimizer, total_steps=T, sparsity=0.9, distribution="erk")
    ...
    loss.backward()
    sparsifier.step()  # replaces optimizer.step()
"""
from __future__ import annotations

import dataclasses

from .base import Sparsifier, StepInfo, sparse_layers
from .config import SparsityConfig
from .deepr import DeepR
from .distributions import DISTRIBUTIONS, layer_counts
from .dsr import DSR
from .dynamic import SET, SNFS, RigL
from .fixed import Dense, SmallDense, Snip, Static
from .gmp import GMP
from .lottery import LotteryRigL, LotteryStatic, LotteryTicket, ticket_masks
from .selection import keyed_generator, topk_mask
from .small_dense import parameter_count, small_dense_width, sparse_parameter_count

METHODS: dict[str, type[Sparsifier]] = {
    cls.name: cls for cls in (Dense, SmallDense, Static, Snip, GMP, SET, SNFS, RigL, DSR, DeepR, LotteryStatic,
                              LotteryRigL)
}


def method_class(name: str) -> type[Sparsifier]:
    """The class registered under `name`; unknown names raise a ValueError listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None


def make_config(config: SparsityConfig | None = None, **overrides) -> SparsityConfig:
    """A validated copy of `config` (default settings if None) with `overrides` applied."""
    fields = {f.name for f in dataclasses.fields(SparsityConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown sparsity setting(s) {', '.join(unknown)}; known settings: {', '.join(sorted(fields))}")
    config = dataclasses.replace(config or SparsityConfig(), **overrides)
    config.validate()
    return config


def create(name, model, optimizer, *, total_steps, config=None, include=None, init_batches=None, loss_fn=None,
           masks=None, **overrides) -> Sparsifier:
    """Build method `name` on `model`: masks are created and applied at once.

    `overrides` are `SparsityConfig` fields (sparsity, distribution, delta_t, ...);
    `include(name, module)` chooses sparse layers (default: conv and linear weights);
    `init_batches` and `loss_fn` are used by methods that score weights at init (snip);
    `masks` ({layer name: bool tensor}) starts static/set/snfs/rigl/dsr/deepr from given masks instead
    of random ones (their counts become the per-layer targets); lottery-static/lottery-rigl require them.
    """
    cls = method_class(name)
    return cls(model, optimizer, total_steps=total_steps, config=make_config(config, **overrides),
               include=include, init_batches=init_batches, loss_fn=loss_fn, masks=masks)


__all__ = [
    "METHODS", "DISTRIBUTIONS", "Sparsifier", "SparsityConfig", "StepInfo", "create", "make_config",
    "method_class", "layer_counts", "small_dense_width", "sparse_parameter_count", "parameter_count",
    "keyed_generator", "topk_mask", "sparse_layers", "ticket_masks",
    "Dense", "SmallDense", "Static", "Snip", "GMP", "SET", "SNFS", "RigL", "DSR", "DeepR",
    "LotteryTicket", "LotteryStatic", "LotteryRigL",
]
