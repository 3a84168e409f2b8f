"""Dynamic sparse training: drop the smallest weights and grow new ones on a schedule.

SET, SNFS and RigL share everything except the grow score (jaxpruner's view: RigL is SET
with another grow score). A connection dropped and regrown in the same update keeps its
value and optimizer state, as in the reference RigL code; a newly grown one starts at 0
with zeroed optimizer state.
"""
from __future__ import annotations

from typing import Any

import torch

from .base import Sparsifier, keyed_generator, topk_mask
from .schedules import DropGrowSchedule


class SET(Sparsifier):
    """SET (Mocanu et al. 2018): grow uniformly at random among inactive positions."""

    name = "set"
    dynamic = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c = self.config
        self.schedule = DropGrowSchedule(c.delta_t, self.steps_fraction(c.t_end), c.alpha, c.anneal)

    def is_update_step(self, t: int) -> bool:
        return self.schedule.is_update(t)

    def grow_score(self, i: int) -> torch.Tensor:
        """Score of growing each position of layer `i` (higher grows first)."""
        # All positions tie, so the keyed tie-break of topk_mask draws uniformly at random.
        return torch.zeros_like(self.weights[i], dtype=torch.float32)

    @torch.no_grad()
    def updated_masks(self, t: int) -> list[torch.Tensor]:
        new = []
        for i, (w, m, active) in enumerate(zip(self.weights, self.masks, self.counts)):
            k = self.schedule.drop_count(t, active)
            if k == 0 or active == w.numel():
                new.append(m)
                continue
            g = keyed_generator(self.config.seed, t, i, "drop-grow")
            keep = topk_mask(torch.where(m, w.abs(), -torch.inf), active - k, g)
            grow = topk_mask(torch.where(keep, -torch.inf, self.grow_score(i).float()), k, g)
            new.append(keep | grow)
        return new


class RigL(SET):
    """RigL (Evci et al. 2020): grow where the dense gradient of the current batch is largest.

    The dense gradient is the ordinary `.grad` before masking (masked weights are zero, so
    it is the sparse model's gradient w.r.t. every weight), read only on update steps.
    """

    name = "rigl"

    def uses_dense_gradient(self, t: int) -> bool:
        return self.is_update_step(t)

    def observe_gradients(self, grads: list[torch.Tensor | None], t: int) -> None:
        if self.is_update_step(t):
            self._scores = [torch.zeros_like(w) if g is None else g.abs() for g, w in zip(grads, self.weights)]

    def grow_score(self, i: int) -> torch.Tensor:
        return self._scores[i]

    def updated_masks(self, t: int) -> list[torch.Tensor]:
        new = super().updated_masks(t)
        del self._scores
        return new


class SNFS(SET):
    """SNFS (Dettmers & Zettlemoyer 2019) without redistribution: grow where an exponential
    moving average (momentum `snfs_momentum`) of the dense gradient, kept every step, is largest."""

    name = "snfs"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.momentum = [torch.zeros_like(w) for w in self.weights]

    def uses_dense_gradient(self, t: int) -> bool:
        return True

    @torch.no_grad()
    def observe_gradients(self, grads: list[torch.Tensor | None], t: int) -> None:
        present = [(m, g) for m, g in zip(self.momentum, grads) if g is not None]
        if present:
            buffers, values = map(list, zip(*present))
            torch._foreach_lerp_(buffers, values, 1 - self.config.snfs_momentum)

    def grow_score(self, i: int) -> torch.Tensor:
        return self.momentum[i].abs()

    def extra_state(self) -> dict[str, Any]:
        return {"momentum": [m.clone() for m in self.momentum]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for buffer, saved in zip(self.momentum, state["momentum"]):
            buffer.copy_(saved)
