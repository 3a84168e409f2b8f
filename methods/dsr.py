"""DSR, dynamic sparse reparameterization (Mostafa & Wang, ICML 2019): one global magnitude threshold,
random regrowth, and the regrown weights reallocated across layers in proportion to their survivors."""
from __future__ import annotations

import math
from typing import Any

import torch

from .base import MaskChange, Sparsifier
from .selection import keyed_generator, topk_mask


def grow_randomly(survivors: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """`survivors` plus `k` positions drawn uniformly at random among the others (exact, keyed)."""
    excluded = torch.zeros(survivors.shape, device=survivors.device).masked_fill_(survivors, -math.inf)
    return survivors | topk_mask(excluded, k, generator)


def proportional_split(total: int, weights: list[float], caps: list[int]) -> list[int]:
    """Integers summing to `total` (at most `sum(caps)`), proportional to `weights`, none above its cap.

    Layers that would exceed their cap get it and the rest is split again among the others; the
    final split rounds by largest remainders (ties to the lower index). Zero weights everywhere
    split in proportion to the caps.
    """
    shares = [0] * len(caps)
    open_ = [i for i, c in enumerate(caps) if c > 0]
    left = total
    while left > 0:
        mass = sum(weights[i] for i in open_)
        ideal = {i: left * (weights[i] / mass if mass else caps[i] / sum(caps[j] for j in open_)) for i in open_}
        full = [i for i in open_ if ideal[i] >= caps[i]]
        if not full:
            for i in open_:
                shares[i] = math.floor(ideal[i])
            rest = left - sum(shares[i] for i in open_)
            for i in sorted(open_, key=lambda i: (shares[i] - ideal[i], i))[:rest]:
                shares[i] += 1
            break
        for i in full:
            shares[i] = caps[i]
            left -= caps[i]
            open_.remove(i)
    return shares


class DSR(Sparsifier):
    """DSR: prune every active weight with |w| below a global threshold `H`, then regrow as many at random.

    Each update (the dynamic methods' schedule: every `delta_t` steps until `t_end`):
    1. prune, in every sparse layer, the active weights with |w| < H;
    2. adjust H for the next update, toward `K` pruned weights per update: H <- 2H if fewer than
       (1 - tolerance) K were pruned, H <- H / 2 if more than (1 + tolerance) K;
    3. regrow exactly as many connections as were pruned, split across layers in proportion to each
       layer's surviving weights (never more than a layer has room for), at positions drawn uniformly
       (keyed) among all inactive ones, just-pruned included as in the paper; every regrown
       connection starts at 0 with zeroed optimizer state (`StepInfo.grown` counts those that were
       inactive before the update).

    The global count stays exact (the initial distribution's total after every update); per-layer
    counts change. Layers the distribution makes dense stay dense and take no part.
    `planned_counts` returns the initial counts: a FLOP plan (`python -m benchmark flops`) of DSR is
    an estimate, the live run's count (`StepInfo.counts`) is the truth.

    Hyper-parameters (read from the config when it has them; defaults of the authors' reference
    code, the `dst` package's `DSModel`): `dsr_threshold` initial H = 1e-3; `dsr_prune_fraction`
    K as a fraction of all model parameters = 0.01; `dsr_tolerance` = 0.1. The reference's
    reallocation period, which doubles during training, is replaced by the project's `delta_t` /
    `t_end` schedule.
    """

    name = "dsr"
    dynamic = True
    drop_grow = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c = self.config
        self.schedule = self.drop_grow_schedule()
        self.threshold = float(c.dsr_threshold)
        self.tolerance = c.dsr_tolerance
        self.prune_target = c.dsr_prune_fraction * sum(p.numel() for p in self.model.parameters())
        self.reallocated = [k < n for k, n in zip(self.targets, self.sizes)]

    def is_update_step(self, t: int) -> bool:
        return self.schedule.is_update(t)

    @torch.no_grad()
    def update(self, t: int, grads: list[torch.Tensor | None] | None) -> dict[int, MaskChange]:
        layers = [i for i, r in enumerate(self.reallocated) if r]
        survivors = {i: self.masks[i] & (self.weights[i].abs() >= self.threshold) for i in layers}
        kept = {i: int(s.sum()) for i, s in survivors.items()}
        pruned = sum(self.counts[i] - kept[i] for i in layers)
        if pruned < (1 - self.tolerance) * self.prune_target:
            self.threshold *= 2
        elif pruned > (1 + self.tolerance) * self.prune_target:
            self.threshold /= 2
        grow = proportional_split(pruned, [kept[i] for i in layers], [self.sizes[i] - kept[i] for i in layers])
        changes = {}
        for i, k in zip(layers, grow):
            if k == 0 and kept[i] == self.counts[i]:
                continue
            new = grow_randomly(survivors[i], k, keyed_generator(self.config.seed, t, i, "dsr-grow"))
            # a connection pruned and regrown in the same update starts from 0 like any grown one
            changes[i] = self.change_from_mask(i, new, reset=self.masks[i] & ~survivors[i])
        return changes

    def extra_state(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.threshold = float(state["threshold"])
