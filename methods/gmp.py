"""Gradual magnitude pruning (Zhu & Gupta 2017): start dense, prune to the target on a cubic schedule."""
from __future__ import annotations

import torch

from .base import Batch, MaskChange, Sparsifier
from .schedules import CubicPruningSchedule
from .selection import keyed_generator


class GMP(Sparsifier):
    """Dense until `gmp_start`; then every `gmp_every` steps until `gmp_stop`, each layer keeps its
    largest-magnitude weights, with sparsity `s_t = s_f (1 - (1 - p)^3)` and `s_f` from the
    distribution. Pruned weights never grow back."""

    name = "gmp"
    accepts_masks = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c = self.config
        every = c.gmp_every or max(1, round(0.01 * self.total_steps))
        self.schedule = CubicPruningSchedule(self.steps_fraction(c.gmp_start), self.steps_fraction(c.gmp_stop), every)

    def initial_masks(self, init_batches: list[Batch]) -> list[torch.Tensor]:
        return [torch.ones(w.shape, dtype=torch.bool) for w in self.weights]

    def settled_step(self) -> int:
        return self.schedule.stop

    def is_update_step(self, t: int) -> bool:
        return self.schedule.is_update(t)

    def counts_after(self, t: int) -> list[int]:
        """Per-layer active counts right after pruning at step `t`."""
        return [self.schedule.count(t, n, k) for n, k in zip(self.sizes, self.targets)]

    def planned_counts(self, t: int) -> list[int]:
        last = self.schedule.last_update_before(t)
        return list(self.sizes) if last is None else self.counts_after(last)

    @torch.no_grad()
    def update(self, t: int, grads: list[torch.Tensor | None] | None) -> dict[int, MaskChange]:
        """Each layer keeps its largest-magnitude active weights, down to `counts_after(t)` (exact, ties keyed)."""
        changes = {}
        for i, (count, target) in enumerate(zip(self.counts, self.counts_after(t))):
            if target >= count:
                continue
            kept, dropped = self.drop_smallest(i, count - target, keyed_generator(self.config.seed, t, i, "prune"))
            changes[i] = self.change_by_positions(i, kept, dropped)
        return changes
