"""The masked-model interface every method implements.

`Sparsifier` owns everything the methods share (spec sections 1 and 3): which weights are
sparse, the boolean masks and their exact per-layer counts, masking weights, gradients and
optimizer state, keyed randomness, exact top-k, the step counter and checkpoint state. A
method subclass supplies only its initial mask and, if it is dynamic, when and how its
masks change.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .distributions import DISTRIBUTIONS, check_sparsity, layer_counts
from .schedules import ANNEALS

SPARSE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
LayerFilter = Callable[[str, nn.Module], bool]
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class SparsityConfig:
    """Hyper-parameters shared by all methods (each field is also a CLI flag of the harness)."""

    sparsity: float = 0.9
    distribution: str = "uniform"
    dense_first: bool | None = None  # None: dense under uniform, sparse under er/erk (the paper's choice)
    dense_last: bool = False
    seed: int = 0
    # dynamic methods (set, snfs, rigl)
    delta_t: int = 100
    t_end: float = 0.75  # fraction of total steps after which masks stop changing
    alpha: float = 0.3
    anneal: str = "cosine"
    skip_step_on_update: bool = False  # the reference RigL skips the optimizer step on update steps
    snfs_momentum: float = 0.9
    # gmp, as fractions of total steps; gmp_every=0 means about every 1% of training
    gmp_start: float = 0.2
    gmp_stop: float = 0.75
    gmp_every: int = 0
    # snip
    snip_scope: str = "layer"  # "layer": per-layer counts from the distribution; "global": one threshold

    def validate(self) -> None:
        """Raise a ValueError naming the fix for any field out of range."""
        check_sparsity(self.sparsity)
        checks = [
            (self.distribution in DISTRIBUTIONS, f"distribution must be one of {', '.join(DISTRIBUTIONS)}", "distribution"),
            (self.anneal in ANNEALS, f"anneal must be one of {', '.join(ANNEALS)}", "anneal"),
            (self.delta_t >= 1, "delta_t must be a positive number of steps", "delta_t"),
            (0 < self.t_end <= 1, "t_end must be a fraction of training in (0, 1]", "t_end"),
            (0 <= self.alpha <= 1, "alpha (the initial drop fraction) must be in [0, 1]", "alpha"),
            (0 <= self.snfs_momentum < 1, "snfs_momentum must be in [0, 1)", "snfs_momentum"),
            (0 <= self.gmp_start < self.gmp_stop <= 1, "need 0 <= gmp_start < gmp_stop <= 1 (fractions of training)",
             "gmp_stop"),
            (self.gmp_every >= 0, "gmp_every must be >= 0 (0: about every 1% of training)", "gmp_every"),
            (self.snip_scope in ("layer", "global"), "snip_scope must be 'layer' or 'global'", "snip_scope"),
        ]
        for ok, message, name in checks:
            if not ok:
                raise ValueError(f"{message}; got {name}={getattr(self, name)!r}")


@dataclass
class StepInfo:
    """What one training step did, for FLOP counting and logs (no FLOPs are counted here)."""

    step: int
    counts: tuple[int, ...]  # active weights per sparse layer during this step's forward/backward
    dense_backward: bool  # the step needed the gradient of every weight, masked ones included
    updated: bool = False  # the masks changed after this step
    grown: int | None = None  # connections that became active in that update


def keyed_generator(seed: int, step: int, layer: int, purpose: str) -> torch.Generator:
    """A CPU generator seeded from (seed, step, layer, purpose): the same numbers on every rank and resume."""
    digest = hashlib.sha256(f"{seed}/{step}/{layer}/{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def topk_mask(score: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Boolean mask of the `k` largest entries of `score`; ties broken by a keyed random order.

    Scores are visited in a random permutation and sorted stably, so distinct scores are
    ranked exactly and equal scores are chosen uniformly at random, reproducibly.
    """
    flat = score.flatten()
    order = torch.randperm(flat.numel(), generator=generator).to(flat.device)
    chosen = order[torch.sort(flat[order], descending=True, stable=True).indices[:k]]
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[chosen] = True
    return mask.view_as(score)


def random_mask(shape: torch.Size, k: int, generator: torch.Generator) -> torch.Tensor:
    """Boolean CPU mask of `shape` with exactly `k` positions chosen uniformly at random."""
    mask = torch.zeros(math.prod(shape), dtype=torch.bool)
    mask[torch.randperm(mask.numel(), generator=generator)[:k]] = True
    return mask.view(shape)


def sparse_layers(model: nn.Module, include: LayerFilter | None = None) -> list[tuple[str, nn.Parameter]]:
    """(module name, weight) of every layer to sparsify: conv/linear weights, or those `include` accepts."""
    accept = include or (lambda _name, module: isinstance(module, SPARSE_MODULES))
    return [
        (name, module.weight)
        for name, module in model.named_modules()
        if isinstance(getattr(module, "weight", None), nn.Parameter) and accept(name, module)
    ]


class Sparsifier:
    """Base of every method: build masks, keep them exact, and replace `optimizer.step()`.

    Use: `s = methods.create(name, model, optimizer, total_steps=T, sparsity=0.9)`, then call
    `s.step()` after each `loss.backward()` instead of `optimizer.step()`.
    """

    name: ClassVar[str]
    dynamic: ClassVar[bool] = False
    accepts_masks: ClassVar[bool] = True  # can start from given masks (restarts, lottery tickets)

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        config: SparsityConfig | None = None,
        include: LayerFilter | None = None,
        init_batches: Iterable[Batch] | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
    ):
        self.config = config or SparsityConfig()
        self.config.validate()
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"total_steps must be a positive int (the run's optimizer steps), got {total_steps!r}")
        self.model, self.optimizer, self.total_steps = model, optimizer, total_steps
        layers = sparse_layers(model, include)
        if not layers:
            raise ValueError(
                "the model has no Conv/Linear layer to sparsify; pass include=lambda name, module: ... "
                "to choose which modules' weights are sparse"
            )
        self.names = [name for name, _ in layers]
        self.weights = [weight for _, weight in layers]
        self.sizes = [w.numel() for w in self.weights]
        self.t = 0
        self.loss_fn = loss_fn or nn.functional.cross_entropy
        if masks is None:
            self.targets = self.target_counts()
            masks = self.initial_masks(list(init_batches or []))
        else:
            masks = self._given_masks(masks)
            self.targets = [int(m.sum()) for m in masks]
        self.masks = [m.to(device=w.device, dtype=torch.bool) for m, w in zip(masks, self.weights)]
        self.counts = [int(m.sum()) for m in self.masks]
        self.apply_masks()

    def _given_masks(self, masks: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Validate masks passed to the constructor: one per sparse layer, of its shape."""
        if not self.accepts_masks:
            raise ValueError(f"{self.name} builds its own masks; masks= is for methods with a fixed count per layer "
                             "(static, set, snfs, rigl)")
        shapes = {n: tuple(m.shape) for n, m in masks.items()}
        expected = {n: tuple(w.shape) for n, w in zip(self.names, self.weights)}
        if shapes != expected:
            raise ValueError(f"masks= must have one mask per sparse layer {sorted(expected)} with the weight's shape; "
                             f"got {sorted(shapes)}")
        return [masks[n].to(torch.bool) for n in self.names]

    # ----- what a method supplies -------------------------------------------------------

    def target_counts(self) -> list[int]:
        """Final active count per layer, from the distribution (or the given masks' counts)."""
        c = self.config
        dense = {0} if (c.dense_first if c.dense_first is not None else c.distribution == "uniform") else set()
        if c.dense_last:
            dense.add(len(self.weights) - 1)
        return layer_counts([w.shape for w in self.weights], c.sparsity, c.distribution, sorted(dense))

    def initial_masks(self, init_batches: list[Batch]) -> list[torch.Tensor]:
        """Masks at step 0; by default exactly `targets[i]` positions chosen uniformly at random."""
        return [random_mask(w.shape, k, keyed_generator(self.config.seed, 0, i, "init"))
                for i, (w, k) in enumerate(zip(self.weights, self.targets))]

    def is_update_step(self, t: int) -> bool:
        """Whether the masks change after optimizer step `t`."""
        return False

    def uses_dense_gradient(self, t: int) -> bool:
        """Whether step `t` needs the gradient of masked weights too (it costs a dense backward)."""
        return False

    def planned_counts(self, t: int) -> list[int]:
        """Active count per layer during step `t`, known without training (the FLOP plan)."""
        return list(self.targets)

    def observe_gradients(self, grads: list[torch.Tensor | None], t: int) -> None:
        """See the dense gradients of step `t` (None for a layer without one) before they are masked."""

    def updated_masks(self, t: int) -> list[torch.Tensor]:
        """New masks after step `t`; called only when `is_update_step(t)`."""
        raise NotImplementedError

    # ----- what the base owns --------------------------------------------------------------

    @torch.no_grad()
    def step(self, scaler: torch.amp.GradScaler | None = None) -> StepInfo:
        """Mask gradients, take the optimizer step, re-mask weights and update masks when scheduled.

        With a `scaler` (fp16 autocast), gradients are unscaled first and `scaler.step` is
        used; call `scaler.update()` yourself as usual.
        """
        t = self.t
        info = StepInfo(t, tuple(self.counts), self.uses_dense_gradient(t))
        update = self.is_update_step(t)
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        grads = [w.grad for w in self.weights]
        self.observe_gradients(grads, t)
        present = [(g, m) for g, m in zip(grads, self.masks) if g is not None]
        if present:
            torch._foreach_mul_(*map(list, zip(*present)))
        if not (update and self.config.skip_step_on_update):
            self.optimizer.step() if scaler is None else scaler.step(self.optimizer)
        torch._foreach_mul_(self.weights, self.masks)
        if update:
            new = [m.to(torch.bool) for m in self.updated_masks(t)]
            info.updated = True
            info.grown = int(sum((n & ~m).sum() for n, m in zip(new, self.masks)))
            self.masks = new
            self.counts = [int(m.sum()) for m in new]
            self.apply_masks()
        self.t += 1
        return info

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every masked-out weight, its gradient and its optimizer state (momentum, Adam moments)."""
        torch._foreach_mul_(self.weights, self.masks)
        for weight, mask in zip(self.weights, self.masks):
            if weight.grad is not None:
                weight.grad.mul_(mask)
            for value in self.optimizer.state.get(weight, {}).values():
                if torch.is_tensor(value) and value.shape == weight.shape:
                    value.mul_(mask)

    def densities(self) -> dict[str, float]:
        """Current density (active / total) of each sparse layer, by module name."""
        return {n: c / s for n, c, s in zip(self.names, self.counts, self.sizes)}

    def global_density(self) -> float:
        """Active weights over all weights of the sparse layers."""
        return sum(self.counts) / sum(self.sizes)

    def extra_state(self) -> dict[str, Any]:
        """Method state beyond masks and step (e.g. SNFS's gradient momentum)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` returned."""

    def state_dict(self) -> dict[str, Any]:
        """Step, masks and method state: save it next to the model and optimizer state."""
        return {
            "method": self.name,
            "t": self.t,
            "masks": {n: m.clone() for n, m in zip(self.names, self.masks)},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`; raises ValueError if it belongs to another method or model."""
        masks = state.get("masks", {})
        shapes = {n: tuple(m.shape) for n, m in masks.items()}
        expected = {n: tuple(w.shape) for n, w in zip(self.names, self.weights)}
        if state.get("method") != self.name or shapes != expected:
            raise ValueError(
                f"sparsifier state is for method {state.get('method')!r} with layers {sorted(shapes)}, "
                f"not {self.name!r} with {sorted(expected)}; load a checkpoint of the same run"
            )
        self.t = int(state["t"])
        self.masks = [masks[n].to(device=w.device, dtype=torch.bool) for n, w in zip(self.names, self.weights)]
        self.counts = [int(m.sum()) for m in self.masks]
        self.load_extra_state(state.get("extra", {}))
        self.apply_masks()

    def steps_fraction(self, fraction: float) -> int:
        """A fraction of training as a step count."""
        return max(1, math.floor(fraction * self.total_steps))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(layers={len(self.names)}, density={self.global_density():.4f}, "
            f"t={self.t}/{self.total_steps})"
        )

