"""Masks to and from torch's own pruning APIs: `torch.nn.utils.prune` and `torch.ao.pruning`.

    from methods import torch_pruning
    masks = torch_pruning.masks_of(sparsifier)          # {layer: bool mask}, e.g. after RigL training
    torch_pruning.to_prune(model, masks)                # prune.custom_from_mask: weight_orig, weight_mask
    torch_pruning.to_parametrization(model, masks)      # torch.ao.pruning's FakeSparsity parametrization
    masks = torch_pruning.from_prune(model)             # or from_parametrization(model): back to plain
    sparsifier = methods.create("rigl", model, optimizer, total_steps=T, masks=masks)   # weights, masks

Layers are named as `methods.sparse_layers` names them (module names, e.g. `fc1`); masks are bool
tensors of the weight's shape. Importing takes the reparametrization off (the weight keeps its
masked values), so that a method finds the plain `weight` parameter it sparsifies.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.ao.pruning import FakeSparsity
from torch.nn.utils import parametrize, prune

if TYPE_CHECKING:
    from .base import Sparsifier


def masks_of(sparsifier: Sparsifier) -> dict[str, torch.Tensor]:
    """{layer name: a copy of its bool mask} of a sparsifier (what `methods.create(masks=...)` takes)."""
    return {name: mask.detach().clone() for name, mask in zip(sparsifier.names, sparsifier.masks)}


def _modules(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, nn.Module]:
    """The modules `masks` names, each checked to have a weight of its mask's shape (ValueError otherwise)."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        weight = getattr(modules.get(name), "weight", None)
        if weight is None or tuple(weight.shape) != tuple(mask.shape):
            raise ValueError(f"mask {name!r} of shape {tuple(mask.shape)} matches no weight of the model; masks are "
                             "keyed by module name (as masks_of gives them)")
    return {name: modules[name] for name in masks}


def to_prune(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Apply `masks` with `torch.nn.utils.prune.custom_from_mask` (each layer gets `weight_orig`,
    a `weight_mask` buffer and the pruning forward hook); returns `model`."""
    for name, module in _modules(model, masks).items():
        prune.custom_from_mask(module, "weight", masks[name].to(module.weight.device))
    return model


def from_prune(model: nn.Module, remove: bool = True) -> dict[str, torch.Tensor]:
    """{module name: bool mask} of every `torch.nn.utils.prune`d weight of `model`; with `remove`, the
    pruning is made permanent (`prune.remove`: a plain weight holding the masked values)."""
    masks = {}
    for name, module in list(model.named_modules()):  # listed first: removing changes the tree
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            masks[name] = module.weight_mask.detach().to(torch.bool).clone()
            if remove:
                prune.remove(module, "weight")
    return masks


def _fake_sparsity(module: nn.Module) -> FakeSparsity | None:
    """The FakeSparsity parametrization of `module.weight`, if it has one."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next((p for p in module.parametrizations.weight if isinstance(p, FakeSparsity)), None)


def to_parametrization(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Apply `masks` as `torch.ao.pruning`'s FakeSparsity parametrizations (masks in the weight's dtype,
    as `BaseSparsifier.prepare` makes them). A layer an ao sparsifier already prepared gets the mask
    written into its FakeSparsity (same tensor, as ao requires); returns `model`."""
    for name, module in _modules(model, masks).items():
        mask = masks[name].to(device=module.weight.device, dtype=module.weight.dtype)
        existing = _fake_sparsity(module)
        if existing is not None:
            existing.mask.data.copy_(mask)
        else:
            parametrize.register_parametrization(module, "weight", FakeSparsity(mask))
    return model


def from_parametrization(model: nn.Module, remove: bool = True) -> dict[str, torch.Tensor]:
    """{module name: bool mask (nonzero entries)} of every weight with a FakeSparsity parametrization; with
    `remove`, the parametrizations are taken off, leaving plain weights that hold the masked values."""
    masks = {}
    for name, module in list(model.named_modules()):  # listed first: removing changes the tree
        sparsity = _fake_sparsity(module)
        if sparsity is not None:
            masks[name] = (sparsity.mask != 0).clone()
            if remove:
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return masks
