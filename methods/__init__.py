"""Sparse training methods behind one interface.

    sparsifier = methods.create("rigl", model, optimizer, total_steps=T, sparsity=0.9, distribution="erk")
    ...
    loss.backward()
    sparsifier.step()  # replaces optimizer.step()

The settings (`SparsityConfig`), the distributions and the method names import without torch; the
methods themselves (and everything else below) are imported on first use, so a command line can
list names and settings in a fraction of a second.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from .config import SparsityConfig
from .distributions import DISTRIBUTIONS, layer_counts
from .lazy import lazy_getattr

if TYPE_CHECKING:  # what `__getattr__` imports on first use (and what the code fingerprint follows)
    from .base import Sparsifier, StepInfo, sparse_layers
    from .deepr import DeepR
    from .dsr import DSR
    from .dynamic import SET, SNFS, RigL
    from .fixed import Dense, SmallDense, Snip, Static
    from .gmp import GMP
    from .lottery import LotteryRigL, LotteryStatic, LotteryTicket, ticket_masks
    from .selection import keyed_generator, topk_mask
    from .small_dense import parameter_count, small_dense_width, sparse_parameter_count

# name -> "module.Class"; each class's own `name` is its key (tests check it).
_METHOD_CLASSES = {
    "dense": "fixed.Dense", "small-dense": "fixed.SmallDense", "static": "fixed.Static", "snip": "fixed.Snip",
    "gmp": "gmp.GMP", "set": "dynamic.SET", "snfs": "dynamic.SNFS", "rigl": "dynamic.RigL", "dsr": "dsr.DSR",
    "deepr": "deepr.DeepR", "lottery-static": "lottery.LotteryStatic", "lottery-rigl": "lottery.LotteryRigL",
}
# attribute -> the submodule that defines it, imported when the attribute is first read
_LAZY = {
    "Sparsifier": "base", "StepInfo": "base", "sparse_layers": "base",
    **{path.split(".")[1]: path.split(".")[0] for path in _METHOD_CLASSES.values()},
    "LotteryTicket": "lottery", "ticket_masks": "lottery",
    "keyed_generator": "selection", "topk_mask": "selection",
    "parameter_count": "small_dense", "small_dense_width": "small_dense", "sparse_parameter_count": "small_dense",
}


class _Registry(Mapping):
    """The method classes by name: the names are known without torch, each class is imported when looked up."""

    def __getitem__(self, name: str) -> type[Sparsifier]:
        module, cls = _METHOD_CLASSES[name].split(".")
        return getattr(importlib.import_module(f".{module}", __name__), cls)

    def __iter__(self) -> Iterator[str]:
        return iter(_METHOD_CLASSES)

    def __len__(self) -> int:
        return len(_METHOD_CLASSES)


METHODS: Mapping[str, type[Sparsifier]] = _Registry()


__getattr__ = lazy_getattr(__name__, globals(), {name: f"{__name__}.{module}" for name, module in _LAZY.items()})


def method_class(name: str) -> type[Sparsifier]:
    """The class registered under `name`; unknown names raise a ValueError listing the known ones."""
    if name not in _METHOD_CLASSES:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[name]


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
    "DISTRIBUTIONS",
    "DSR",
    "GMP",
    "METHODS",
    "SET",
    "SNFS",
    "DeepR",
    "Dense",
    "LotteryRigL",
    "LotteryStatic",
    "LotteryTicket",
    "RigL",
    "SmallDense",
    "Snip",
    "Sparsifier",
    "SparsityConfig",
    "Static",
    "StepInfo",
    "create",
    "keyed_generator",
    "layer_counts",
    "make_config",
    "method_class",
    "parameter_count",
    "small_dense_width",
    "sparse_layers",
    "sparse_parameter_count",
    "ticket_masks",
    "topk_mask",
]
