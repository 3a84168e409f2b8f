"""Lottery tickets with weight rewinding (Frankle & Carbin 2019; Frankle et al. 2020), as the RigL paper's
appendix trains them: the mask of a trained dense model, static (Lottery+Static) or updated by RigL
(Lottery+RigL) from the dense run's early weights.

The pipeline (dense run, rewind checkpoint, ticket, rewound start) lives in the harness
(`python -m benchmark run --methods lottery-static`); these classes only start from its masks.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .base import Batch, LayerFilter, sparse_layers
from .selection import keyed_generator, topk_mask
from .settings import LayerSettings
from .dynamic import RigL
from .fixed import Static


def ticket_masks(model: nn.Module, trained: Mapping[str, torch.Tensor], config: LayerSettings,
                 include: LayerFilter | None = None) -> dict[str, torch.Tensor]:
    """The lottery ticket: in each sparse layer of `model`, the largest |w| of the trained weights
    `trained` (a dense model's state_dict), exactly as many as `config`'s distribution gives the
    layer (the counts every method targets); ties broken by a keyed draw."""
    layers = sparse_layers(model, include)
    counts = config.layer_counts([w.shape for _, w in layers])
    keys = {id(p): key for key, p in model.named_parameters()}  # each sparse weight's state_dict key
    return {name: topk_mask(trained[keys[id(w)]].abs(), k, keyed_generator(config.seed, 0, i, "lottery"))
            for i, ((name, w), k) in enumerate(zip(layers, counts))}


class LotteryTicket:
    """Mixin for methods that start from a lottery ticket: created without `masks=`, they refuse."""

    pretrain_method = "dense"  # the run whose trained weights give the ticket and whose early ones the start
    structured = False  # the ticket keeps the largest |w| per layer, unstructured

    def initial_masks(self, init_batches: list[Batch]) -> list[torch.Tensor]:
        raise ValueError(f"{self.name} needs masks from a trained dense run; run it through python -m benchmark run "
                         "(or pass masks=methods.ticket_masks(model, dense_state_dict, config))")


class LotteryStatic(LotteryTicket, Static):
    """Lottery+Static: the ticket's mask, fixed for the whole run."""

    name = "lottery-static"


class LotteryRigL(LotteryTicket, RigL):
    """Lottery+RigL: RigL's drop/grow schedule starting from the ticket's mask."""

    name = "lottery-rigl"
