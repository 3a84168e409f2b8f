"""The masked-model interface every method implements.

`Sparsifier` owns everything the methods share (spec sections 1 and 3): which weights are
sparse, the boolean masks and their exact per-layer counts, masking weights, gradients and
optimizer state, the step counter and checkpoint state (keyed exact selection is in
`methods.selection`, settings in `methods.settings`). A method subclass supplies only its
initial mask and, if it is dynamic, when and how its masks change.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from .execution import execution_class
from .schedules import DropGrowSchedule
from .selection import group_top, keyed_generator, random_mask, topk_indices

if TYPE_CHECKING:
    from .config import SparsityConfig

SPARSE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase)
# A recurrent layer's sparse matrices: input-to-hidden and hidden-to-hidden weights of every layer and direction
RECURRENT_WEIGHT = re.compile(r"weight_(ih|hh)_l\d+(_reverse)?")
LayerFilter = Callable[[str, nn.Module], bool]
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class StepInfo:
    """What one training step did, for FLOP counting and logs (no FLOPs are counted here)."""

    step: int
    counts: tuple[int, ...]  # active weights per sparse layer during this step's forward/backward
    dense_backward: bool  # the step needed the gradient of every weight, masked ones included
    updated: bool = False  # the masks changed after this step
    stepped: bool = True  # the optimizer stepped (False: a mask-update iteration in place of a step)
    grown: int | None = None  # connections that became active in that update


@dataclass
class MaskChange:
    """A layer's new mask from a mask update, with what the update already knows about it."""

    mask: torch.Tensor  # bool, the weight's shape
    count: int  # active positions of `mask`
    grown: torch.Tensor | int  # positions active in `mask` that were not before (a tensor avoids a host sync)
    active: torch.Tensor | None = None  # flat int64 positions of `mask`'s active entries, any order, if known
    # flat int64 positions that became inactive / active, if known: the update then touches only them
    removed: torch.Tensor | None = None
    added: torch.Tensor | None = None
    reset: torch.Tensor | None = None  # flat int64 positions active after the change that restart from 0


def is_depthwise(module: nn.Module) -> bool:
    """A depthwise convolution (one filter per input channel): kept dense by default, as the RigL paper does
    for MobileNets (its 9 weights per channel are a tiny share of the parameters and of the FLOPs)."""
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and module.groups == module.in_channels


def default_layer(_name: str, module: nn.Module) -> bool:
    """The default sparse modules: conv, linear and recurrent ones, except depthwise convolutions."""
    return isinstance(module, SPARSE_MODULES) and not is_depthwise(module)


def keeps_structure(mask: torch.Tensor, n: int, m: int) -> bool:
    """Whether `mask` (out, in, *kernel) is dense or keeps exactly `n` of every `m` consecutive entries of each row
    of its (out, in x kernel) matrix."""
    rows = mask.reshape(mask.shape[0], -1)
    if bool(rows.all()):
        return True
    return rows.shape[1] % m == 0 and bool((rows.reshape(-1, m).sum(1) == n).all())


def structured_methods() -> list[str]:
    """Names of the methods that keep N:M structure (their class sets `structured`)."""
    from . import METHODS

    return [name for name, cls in METHODS.items() if cls.structured and cls.uses_sparsity]


def sparse_layers(model: nn.Module, include: LayerFilter | None = None) -> list[tuple[str, nn.Parameter]]:
    """(name, weight) of every layer to sparsify: conv/linear weights except depthwise ones (`default_layer`)
    by module name, and each weight_ih_l*/weight_hh_l* matrix of a recurrent module (nn.GRU, nn.LSTM, nn.RNN) by
    parameter name ("gru.weight_hh_l0"); `include(module name, module)` picks the modules instead of the default."""
    accept = include or default_layer
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, nn.RNNBase):
            if accept(name, module):
                layers += [(f"{name}.{p}" if name else p, w) for p, w in module.named_parameters(recurse=False)
                           if RECURRENT_WEIGHT.fullmatch(p)]
        elif isinstance(getattr(module, "weight", None), nn.Parameter) and accept(name, module):
            layers.append((name, module.weight))
    return layers


def layer_module(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """(module, parameter name) of sparse layer `name` of `model`: (the Linear/Conv, "weight"), or
    (the recurrent module, "weight_hh_l0") for a recurrent matrix."""
    parent, _, last = name.rpartition(".")
    if RECURRENT_WEIGHT.fullmatch(last):
        owner = model.get_submodule(parent) if parent else model
        if isinstance(owner, nn.RNNBase):
            return owner, last
    return model.get_submodule(name), "weight"


def is_recurrent(name: str) -> bool:
    """Whether sparse layer `name` is a recurrent matrix (weight_ih_l*/weight_hh_l* of an RNN module)."""
    return bool(RECURRENT_WEIGHT.fullmatch(name.rpartition(".")[2]))


def _narrow(positions: torch.Tensor, size: int) -> torch.Tensor:
    """Flat positions in a layer of `size` weights, as int32 when the layer has fewer than 2^31."""
    return positions.to(torch.int32) if size < 2**31 else positions


class Sparsifier:
    """Base of every method: build masks, keep them exact, and replace `optimizer.step()`.

    Use: `s = methods.create(name, model, optimizer, total_steps=T, sparsity=0.9)`, then call
    `s.step()` after each `loss.backward()` instead of `optimizer.step()`.
    """

    name: ClassVar[str]
    dynamic: ClassVar[bool] = False
    accepts_masks: ClassVar[bool] = True  # can start from given masks (restarts, lottery tickets)
    # What the harness needs to know of a method, so that it never compares names:
    uses_sparsity: ClassVar[bool] = True  # False: every weight stays active, so it is trained once, at sparsity 0
    dense_baseline: ClassVar[bool] = False  # trains a dense model (no sparsity distribution)
    narrows_model: ClassVar[bool] = False  # the model is built narrower to match the sparse parameter count
    needs_init_batches: ClassVar[bool] = False  # scores the weights on training batches before step 0
    saves_rewind_point: ClassVar[bool] = False  # keeps early weights for lottery tickets to rewind to
    drop_grow: ClassVar[bool] = False  # updates on a DropGrowSchedule (update iterations may skip the step)
    update_gradients: ClassVar[bool] = False  # its update reads the dense gradients of its step
    reference_skips_step: ClassVar[bool] = False  # its reference code updates in place of an optimizer step
    structured: ClassVar[bool] = False  # keeps N:M structure (SparsityConfig.structure) in every mask it makes
    sparse_execution_helps: ClassVar[bool] = True  # execution="auto" trains it on sparse kernels (measured faster)

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
        if config is None:
            from .config import SparsityConfig  # every method's settings: imports the method modules
            config = SparsityConfig()
        self.config = config
        self.config.validate()
        skip = self.config.skip_step_on_update
        self.skips_step = self.reference_skips_step if skip is None else skip
        if self.skips_step and not self.drop_grow:
            raise ValueError(f"skip_step_on_update applies to drop/grow methods (set, snfs, rigl, dsr), not {self.name}")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"total_steps must be a positive int (the run's optimizer steps), got {total_steps!r}")
        if self.config.nm() and self.uses_sparsity and not self.structured:
            raise ValueError(f"{self.name} cannot keep N:M structure ({self.config.structure}); structure works with "
                             f"{', '.join(structured_methods())}")
        self.model, self.optimizer, self.total_steps = model, optimizer, total_steps
        layers = sparse_layers(model, include)
        if not layers:
            raise ValueError(
                "the model has no Conv/Linear layer to sparsify; pass include=lambda name, module: ... "
                "to choose which modules' weights are sparse"
            )
        self.names = [name for name, _ in layers]
        self.weights = [weight for _, weight in layers]
        self._check_optimizer()
        self.sizes = [w.numel() for w in self.weights]
        self.t = 0
        self.loss_fn = loss_fn or nn.functional.cross_entropy
        if masks is None:
            self.targets = self.target_counts()
            masks = self.initial_masks(list(init_batches or []))
        else:
            masks = self._given_masks(masks)
            self.targets = [int(m.sum()) for m in masks]
            if (nm := self.config.nm()) and not all(keeps_structure(m, *nm) for m in masks):
                raise ValueError(f"masks= do not keep the {self.config.structure} structure (exactly N of every M "
                                 "consecutive weights along the input dimension, or dense) that this run asks for")
        self.counts = [int(m.sum()) for m in masks]
        self.execution = execution_class(self.config.execution, type(self))(self)
        self.masks = [m.to(device=w.device, dtype=torch.bool) for m, w in zip(masks, self.weights)]
        self.apply_masks()

    def _check_optimizer(self) -> None:
        """ValueError unless the optimizer steps every sparse weight (masks would guard weights it never trains)."""
        groups = getattr(self.optimizer, "param_groups", None)
        if groups is None:
            raise ValueError(f"optimizer must be a torch.optim.Optimizer over the model's parameters, got "
                             f"{type(self.optimizer).__name__}")
        held = {id(p) for group in groups for p in group["params"]}
        missing = [n for n, w in zip(self.names, self.weights) if id(w) not in held]
        if missing:
            raise ValueError(f"the optimizer does not hold the sparse weight(s) of {', '.join(missing)}; create it "
                             "from this model's parameters (e.g. torch.optim.SGD(model.parameters(), ...)) and pass "
                             "that model and optimizer to methods.create")

    # ----- masks ------------------------------------------------------------------------------
    #
    # `masks` (bool, 1 byte per weight) is the public state; the execution keeps what it derives
    # from them. Assign a new list rather than editing a mask in place (or call `apply_masks()`
    # after editing).

    @property
    def masks(self) -> list[torch.Tensor]:
        """The boolean mask of each sparse layer (True = active), in the order of `names`."""
        return self._masks

    @masks.setter
    def masks(self, masks: list[torch.Tensor]) -> None:
        self._masks = list(masks)
        self._active = [None] * len(self._masks)
        self.execution.masks_assigned()

    def _active_indices(self, i: int) -> torch.Tensor:
        """Flat int64 positions of layer `i`'s active weights (any order), cached until its mask changes
        (held as int32 where the layer has fewer than 2^31 weights: 4 bytes per active weight)."""
        if self._active[i] is None:
            self._active[i] = _narrow(self._masks[i].reshape(-1).nonzero().squeeze(1), self.sizes[i])
        return self._active[i].long()

    def held_tensors(self) -> dict[str, list[torch.Tensor]]:
        """Every tensor the sparsifier holds beyond the model and optimizer, by kind (memory accounting)."""
        return {
            "masks": list(self._masks),
            **self.execution.held_tensors(),
            "active_indices": [a for a in self._active if a is not None],
            **self.extra_tensors(),
        }

    def extra_tensors(self) -> dict[str, list[torch.Tensor]]:
        """Method tensors held beyond masks (e.g. SNFS's gradient momentum), for `held_tensors`."""
        return {}

    @torch.no_grad()
    def smallest_active(self, i: int, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(active, slots): layer `i`'s active flat positions (cached) and the slots of `active`
        holding its `k` active weights of smallest magnitude; ties at the boundary drawn from `generator`."""
        flat = self.weights[i].detach().reshape(-1)
        if self.counts[i] == self.sizes[i]:
            active, values = torch.arange(flat.numel(), device=flat.device), flat.abs()
        else:
            active = self._active_indices(i)
            values = flat.index_select(0, active).abs_()
        return active, topk_indices(values.neg_(), k, generator, positions=active)

    @torch.no_grad()
    def drop_smallest(self, i: int, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept, dropped) flat positions of layer `i`'s active weights after dropping the `k` of
        smallest magnitude; ties at the boundary are drawn from `generator`."""
        active, slots = self.smallest_active(i, k, generator)
        keep = torch.ones(active.numel(), dtype=torch.bool, device=active.device).index_fill_(0, slots, False)
        return active[keep], active.index_select(0, slots)

    def change_by_positions(self, i: int, active: torch.Tensor, dropped: torch.Tensor,
                            grown: torch.Tensor | None = None) -> MaskChange:
        """Layer `i`'s MaskChange when `dropped` (active now) become inactive and `grown` (not in the new
        `active` otherwise; may include dropped ones, which then keep their value) become active;
        `active` lists every active flat position after the change."""
        old = self._masks[i].reshape(-1)
        flat = old.clone(memory_format=torch.contiguous_format)
        flat.index_fill_(0, dropped, False)
        if grown is None:
            grown = dropped[:0]
        flat.index_fill_(0, grown, True)
        regrown = old.index_select(0, grown)  # grown positions that were active: dropped, then grown again
        if bool(regrown.any()):
            removed, added = dropped[~flat.index_select(0, dropped)], grown[~regrown]
        else:
            removed, added = dropped, grown
        return MaskChange(flat.view(self.weights[i].shape), active.numel(), added.numel(), active, removed, added)

    def change_from_mask(self, i: int, mask: torch.Tensor, reset: torch.Tensor | None = None) -> MaskChange:
        """Layer `i`'s MaskChange to the bool `mask`; `reset` (bool, the weight's shape) marks positions
        that were dropped and grown again in this update and restart from 0 (DSR, DeepR)."""
        mask = mask.to(device=self._masks[i].device, dtype=torch.bool)
        positions = None if reset is None else (reset & mask).reshape(-1).nonzero().squeeze(1)
        return MaskChange(mask, int(mask.sum()), (mask & ~self._masks[i]).sum(), reset=positions)

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
        """Final active count per layer, from the distribution (or the given masks' counts). A recurrent
        matrix left without any active weight is an error: its recurrence would carry nothing."""
        counts = self.config.layer_counts([w.shape for w in self.weights])
        for name, count, size in zip(self.names, counts, self.sizes):
            if count == 0 and is_recurrent(name):
                raise ValueError(f"distribution {self.config.distribution} at sparsity {self.config.sparsity:g} leaves "
                                 f"recurrent matrix {name} no active weight (of {size}); use distribution erk or a "
                                 "lower sparsity")
        return counts

    def initial_masks(self, init_batches: list[Batch]) -> list[torch.Tensor]:
        """Masks at step 0; by default exactly `targets[i]` positions chosen uniformly at random (under N:M
        structure, N of every group of M)."""
        if self.config.nm():
            return [self.structured_mask(i, torch.zeros(w.shape), keyed_generator(self.config.seed, 0, i, "init"))
                    for i, w in enumerate(self.weights)]
        return [random_mask(w.shape, k, keyed_generator(self.config.seed, 0, i, "init"))
                for i, (w, k) in enumerate(zip(self.weights, self.targets))]

    def structured_mask(self, i: int, score: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Layer `i`'s N:M mask keeping the N largest `score` entries of every group of M consecutive weights
        along the input dimension (ties keyed); all ones for a layer the distribution keeps dense."""
        if self.targets[i] == self.sizes[i]:
            return torch.ones(score.shape, dtype=torch.bool, device=score.device)
        n, m = self.config.nm()
        return group_top(score.reshape(-1, m).float(), n, generator).view(score.shape)

    def is_update_step(self, t: int) -> bool:
        """Whether the masks change after optimizer step `t`."""
        return False

    def uses_dense_gradient(self, t: int) -> bool:
        """Whether step `t` needs the gradient of masked weights too (it costs a dense backward)."""
        return self.update_gradients and self.is_update_step(t)

    def planned_counts(self, t: int) -> list[int]:
        """Active count per layer during step `t`, known without training (the FLOP plan)."""
        return list(self.targets)

    def observe_gradients(self, grads: list[torch.Tensor | None], t: int) -> None:
        """See the dense gradients of step `t` (None for a layer without one) before they are masked:
        per-step statistics (SNFS's moving average)."""

    def after_optimizer_step(self, t: int) -> None:
        """Change the active weights beyond the optimizer's step `t` (DeepR's L1 and noise)."""

    def update(self, t: int, grads: list[torch.Tensor | None] | None) -> dict[int, MaskChange]:
        """The mask update after step `t` (called only when `is_update_step(t)`): the changed layers by
        index. `grads` are the step's dense gradients, masked weights included, when the class sets
        `update_gradients` (None for a layer that is fully dense; the update's own: it may overwrite them),
        else None. Weights and optimizer
        state of removed and `reset` positions are zeroed by the base, never by a method."""
        return {}

    # ----- what the base owns --------------------------------------------------------------

    @torch.no_grad()
    def step(self, scaler: torch.amp.GradScaler | None = None, clip_norm: float = 0.0) -> StepInfo:
        """Mask gradients, take the optimizer step, re-mask weights and update masks when scheduled.

        With a `scaler` (fp16 autocast), gradients are unscaled first and `scaler.step` is
        used; call `scaler.update()` yourself as usual. `clip_norm` > 0 clips the gradients the
        optimizer applies (unscaled, masked: inactive weights' left out) to that global L2 norm
        (`clip_grad_norm_` over the optimizer's parameters); a mask update's dense gradients (RigL's grow
        score) and SNFS's momentum see the unclipped ones (one global factor: a step's ranking of a
        layer's gradients is the same). An ordinary step does no host sync and
        touches only the sparse layers: one vectorised multiply of their gradients (and of their
        weights after the optimizer step, unless the optimizer keeps zero weights at zero, see
        `execution.ZERO_PRESERVING_OPTIMIZERS`). If you load weights into the model yourself, call
        `apply_masks()` afterwards.
        """
        t = self.t
        update = self.is_update_step(t)
        info = StepInfo(t, tuple(self.counts), self.uses_dense_gradient(t))
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        grads = self.execution.gradients()
        self.observe_gradients(grads, t)
        dense = None
        if update and self.update_gradients:  # kept before masking: the update's dense gradients
            dense = self.execution.update_gradients(grads)
        self.execution.before_optimizer_step(grads)
        info.stepped = not (update and self.skips_step)
        if info.stepped and clip_norm > 0:
            nn.utils.clip_grad_norm_([p for group in self.optimizer.param_groups for p in group["params"]],
                                     clip_norm)
        if info.stepped:
            self.optimizer.step() if scaler is None else scaler.step(self.optimizer)
        self.execution.after_optimizer_step()
        self.after_optimizer_step(t)
        if update:
            changes = self.update(t, dense)
            info.updated = True
            info.grown = int(sum(c.grown for c in changes.values()))
            if changes:
                self._apply_changes(changes)
        self.t += 1
        return info

    def _apply_changes(self, changes: dict[int, MaskChange]) -> None:
        """Install new masks and counts; the execution zeroes what became inactive or restarts."""
        for i, change in changes.items():
            self._masks[i] = change.mask.to(device=self.weights[i].device, dtype=torch.bool)
            self.counts[i] = change.count
            self._active[i] = None if change.active is None else _narrow(change.active, self.sizes[i])
        self.execution.apply_changes(changes)

    def apply_masks(self) -> None:
        """Zero every masked-out weight, its gradient and its optimizer state (momentum, Adam moments).

        Also rebuilds what the execution derives from the masks: call it after editing a mask in place.
        """
        self.masks = self._masks
        self.execution.apply_masks()

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
        masks = [masks[n].to(device=w.device, dtype=torch.bool) for n, w in zip(self.names, self.weights)]
        self.counts = [int(m.sum()) for m in masks]
        self.masks = masks
        self.load_extra_state(state.get("extra", {}))
        self.apply_masks()

    def settled_step(self) -> int:
        """The step after whose update the per-layer counts are at their targets for good (0: from the start)."""
        return 0

    def seek(self, t: int) -> None:
        """Set the step counter: benchmarks time a chosen step this way (training never calls it)."""
        self.t = t

    def drop_grow_schedule(self) -> DropGrowSchedule:
        """The drop/grow schedule of the config: every `delta_t` steps until `t_end`, with `alpha` annealed."""
        c = self.config
        return DropGrowSchedule(c.delta_t, self.steps_fraction(c.t_end), c.alpha, c.anneal,
                                first=0 if c.update_at_start else None, skip=self.skips_step)

    def steps_fraction(self, fraction: float) -> int:
        """A fraction of training as a step count."""
        return max(1, math.floor(fraction * self.total_steps))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(layers={len(self.names)}, density={self.global_density():.4f}, "
            f"t={self.t}/{self.total_steps})"
        )

