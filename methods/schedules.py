"""When masks change: the drop/grow schedule of dynamic methods and GMP's cubic pruning schedule.

Both are pure functions of the step `t` (the number of optimizer steps already taken), so a
FLOP plan can step them without training and a resumed run replays them exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

ANNEALS = ("cosine", "constant", "linear")


@dataclass(frozen=True)
class DropGrowSchedule:
    """Update every `delta_t` steps for `0 < t < t_end`, dropping `fraction(t)` of each layer."""

    delta_t: int
    t_end: int
    alpha: float
    anneal: str = "cosine"

    def is_update(self, t: int) -> bool:
        """True if the mask update runs after optimizer step `t`."""
        return 0 < t < self.t_end and t % self.delta_t == 0

    def fraction(self, t: int) -> float:
        """Fraction of a layer's active weights dropped (and regrown) at step `t`."""
        if self.anneal == "constant":
            return self.alpha
        if self.anneal == "linear":
            return self.alpha * (1 - t / self.t_end)
        return self.alpha / 2 * (1 + math.cos(math.pi * t / self.t_end))

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
