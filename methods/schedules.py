"""When masks change: the drop/grow schedule of dynamic methods and GMP's cubic pruning schedule.

Both are pure functions of the iteration `t` (batches already trained on), so a FLOP plan can step
them without training and a resumed run replays them exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

ANNEALS = ("cosine", "constant", "linear")


@dataclass(frozen=True)
class DropGrowSchedule:
    """Update every `delta_t` steps while the step is below `t_end`, dropping `fraction` of each layer.

    `t` counts iterations (batches). The first update follows step `first` (`delta_t`, or 0 as the
    reference code). With `skip`, an update takes an iteration of its own, in place of that
    iteration's optimizer step (the reference RigL code): the schedule, the drop fraction and the
    learning rate then count optimizer steps, `global_step(t)`, which an update iteration does not
    advance, so update k (at step k * delta_t) falls on iteration k * (delta_t + 1) - first / delta_t,
    and the last one is at step t_end itself (the reference's, whose drop fraction is 0 under cosine).
    """

    delta_t: int
    t_end: int
    alpha: float
    anneal: str = "cosine"
    first: int | None = None  # None: delta_t
    skip: bool = False

    @property
    def _k0(self) -> int:
        """Index of the first update (0: at step 0, 1: at step delta_t)."""
        return 0 if self.first == 0 else 1

    def _updates_before(self, t: int) -> int:
        """Update iterations before iteration `t` (skip mode)."""
        last = min((t - 1 + self._k0) // (self.delta_t + 1), self.t_end // self.delta_t)
        return max(0, last - self._k0 + 1)

    def global_step(self, t: int) -> int:
        """Optimizer steps taken before iteration `t`."""
        return t - self._updates_before(t) if self.skip else t

    def is_update(self, t: int) -> bool:
        """True if iteration `t` updates the masks (after its optimizer step, or with `skip` instead of it)."""
        if self.skip:
            k, rest = divmod(t + self._k0, self.delta_t + 1)
            return rest == 0 and k >= self._k0 and k * self.delta_t <= self.t_end
        return (self.delta_t if self.first is None else self.first) <= t < self.t_end and t % self.delta_t == 0

    def fraction(self, t: int) -> float:
        """Fraction of a layer's active weights dropped (and regrown) at iteration `t`."""
        step = self.global_step(t)
        if self.anneal == "constant":
            return self.alpha
        if self.anneal == "linear":
            return self.alpha * (1 - step / self.t_end)
        return self.alpha / 2 * (1 + math.cos(math.pi * step / self.t_end))

    def drop_count(self, t: int, active: int) -> int:
        """Connections to drop from a layer with `active` weights; truncated, as the reference code does."""
        return int(self.fraction(t) * active)


@dataclass(frozen=True)
class CubicPruningSchedule:
    """Zhu & Gupta (2017): prune at `start`, every `every` steps, and at `stop`."""

    start: int
    stop: int
    every: int

    def is_update(self, t: int) -> bool:
        """True if pruning runs after optimizer step `t`."""
        return self.start <= t <= self.stop and ((t - self.start) % self.every == 0 or t == self.stop)

    def count(self, t: int, total: int, final: int) -> int:
        """Active weights of a layer after pruning at step `t`: `s_t = s_f (1 - (1 - p)^3)`."""
        progress = min(max((t - self.start) / (self.stop - self.start), 0.0), 1.0)
        return final + round((total - final) * (1 - progress) ** 3)

    def last_update_before(self, t: int) -> int | None:
        """The latest pruning step strictly before `t`, or None if pruning has not started."""
        if t <= self.start:
            return None
        last = min(t - 1, self.stop)
        return last if last == self.stop else self.start + (last - self.start) // self.every * self.every
