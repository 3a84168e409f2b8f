"""Dynamic sparse training: drop the smallest weights and grow new ones on a schedule.

SET, SNFS and RigL share everything except the grow score (jaxpruner's view: RigL is SET
with another grow score, `grow_score`). A connection dropped and regrown in the same update keeps its
value and optimizer state, as in the reference RigL code; a newly grown one starts at 0
with zeroed optimizer state.
"""
from __future__ import annotations

from typing import Any

import torch

from .base import MaskChange, Sparsifier
from .selection import group_top, keyed_generator, sample_positions, topk_indices


class SET(Sparsifier):
    """SET (Mocanu et al. 2018): every `delta_t` steps until `t_end`, each layer drops the fraction
    `alpha` (annealed) of its active weights with the smallest magnitude and grows as many
    connections uniformly at random among the positions not kept; grown weights start at 0."""

    name = "set"
    dynamic = True
    drop_grow = True
    structured = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.schedule = self.drop_grow_schedule()

    def is_update_step(self, t: int) -> bool:
        return self.schedule.is_update(t)

    def grow_score(self, i: int, grads: list[torch.Tensor | None] | None) -> torch.Tensor | None:
        """Score of growing each position of layer `i` (higher grows first); None: uniformly at random.

        The caller may overwrite the returned tensor (return a fresh one, or a copy).
        """
        return None

    @torch.no_grad()
    def update(self, t: int, grads: list[torch.Tensor | None] | None) -> dict[int, MaskChange]:
        """Drop each layer's `k` smallest active weights and grow `k` among the positions not kept.

        Work is done on positions, never on dense boolean masks: the drop ranks only the active
        weights (gathered by their cached positions), the grow ranks the grow score with the kept
        positions excluded, or (SET) draws uniformly among them; both exact, ties keyed.
        """
        changes = {}
        for i, (count, size) in enumerate(zip(self.counts, self.sizes)):
            k = self.schedule.drop_count(t, count)
            if k == 0 or count == size:
                continue
            g = keyed_generator(self.config.seed, t, i, "drop-grow")
            active, slots = self.smallest_active(i, k, g)
            dropped = active.index_select(0, slots)
            grow = self._grow_in_groups if self.config.nm() else self._grow
            grown = grow(i, active, dropped, k, g, self.grow_score(i, grads))
            # the grown positions take the dropped ones' slots: the new active list without compaction
            changes[i] = self.change_by_positions(i, active.clone().index_copy_(0, slots, grown), dropped, grown)
        return changes

    def _grow(self, i: int, active: torch.Tensor, dropped: torch.Tensor, k: int, g: torch.Generator,
              score: torch.Tensor | None) -> torch.Tensor:
        """`k` flat positions of layer `i` with the largest `score` among those not kept (inactive, or
        in `dropped`); uniformly at random among them when `score` is None."""
        if score is None:
            allowed = torch.ones(self.sizes[i], dtype=torch.bool, device=active.device)
            allowed.index_fill_(0, active, False).index_fill_(0, dropped, True)
            return sample_positions(allowed, self.sizes[i] - active.numel() + dropped.numel(), k, g)
        score = score.reshape(-1).float()
        saved = score.index_select(0, dropped)
        score.index_fill_(0, active, -torch.inf).index_copy_(0, dropped, saved)
        return topk_indices(score, k, g)

    def _grow_in_groups(self, i: int, active: torch.Tensor, dropped: torch.Tensor, k: int, g: torch.Generator,
                        score: torch.Tensor | None) -> torch.Tensor:
        """The `k` flat positions of layer `i` to grow under N:M structure: in each group of M, as many as the drop
        took from it, of largest `score` (uniformly at random when None) among the group's positions not kept."""
        m = self.config.nm()[1]
        free = torch.ones(self.sizes[i], dtype=torch.bool, device=active.device)
        free.index_fill_(0, active, False).index_fill_(0, dropped, True)
        need = torch.zeros(self.sizes[i] // m, dtype=torch.long, device=active.device)
        need.index_add_(0, dropped // m, torch.ones_like(dropped))
        score = torch.zeros(self.sizes[i], device=active.device) if score is None else score.reshape(-1).float()
        score = score.masked_fill(~free, -torch.inf)
        return group_top(score.view(-1, m), need, g).reshape(-1).nonzero().squeeze(1)


class RigL(SET):
    """RigL (Evci et al. 2020): SET that grows where the magnitude of the dense gradient of the update
    step's batch is largest. Masked weights are zero, so that gradient is the sparse model's own
    with respect to every weight: no second backward pass is needed."""

    name = "rigl"
    reference_skips_step = True
    update_gradients = True

    def grow_score(self, i: int, grads: list[torch.Tensor | None] | None) -> torch.Tensor:
        # the update's gradients are its own (copies, or dropped after the step): no copy of 4 bytes per weight
        return grads[i].abs_()


class SNFS(SET):
    """SNFS (Dettmers & Zettlemoyer 2019) without redistribution: SET that grows where an exponential
    moving average (momentum `snfs_momentum`) of the dense gradient, kept every step, is largest."""

    name = "snfs"
    structured = False  # the scope: N:M for static, snip, set and rigl

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

    def grow_score(self, i: int, grads: list[torch.Tensor | None] | None) -> torch.Tensor:
        return self.momentum[i].abs()

    def extra_state(self) -> dict[str, Any]:
        return {"momentum": [m.clone() for m in self.momentum]}

    def extra_tensors(self) -> dict[str, list[torch.Tensor]]:
        return {"momentum": list(self.momentum)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for buffer, saved in zip(self.momentum, state["momentum"]):
            buffer.copy_(saved)
