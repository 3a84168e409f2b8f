"""How sparse layers compute with their active weights: the seam between a sparsifier, which decides
which weights are active, and the tensors and kernels that train them.

An `Execution` is attached to one sparsifier and makes training honour its masks: before the
optimizer step it restricts the gradients to the active weights, after it keeps the inactive ones
at zero, and when masks change it installs them (zeroing what became inactive, and the value and
history of connections that restart). Methods never touch it; a run picks one by the setting
`execution`. `MaskedDense` is the first: dense tensors with zeros and dense kernels; `SparseKernels`
(`methods.sparse_execution`) trains sparse Linear layers on sparse kernels with compact values.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from . import sparse_kernels as sk

if TYPE_CHECKING:
    from .base import MaskChange, Sparsifier

# Optimizers whose step leaves a weight exactly 0 where its gradient and its state are 0 (with any
# momentum, Nesterov, dampening, L2 or decoupled weight decay, amsgrad, maximize): after their step
# the masked weights are still 0, so the weights need not be multiplied by the masks again (one pass
# over the sparse weights saved per step). Any other optimizer gets the re-mask.
ZERO_PRESERVING_OPTIMIZERS = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad, torch.optim.RMSprop,
    torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adadelta,
)


class Execution:
    """The interface: what the sparsifier's step and mask updates ask of the execution of its layers."""

    name: ClassVar[str]

    def __init__(self, sparsifier: Sparsifier):
        self.sparsifier = sparsifier

    def masks_assigned(self) -> None:
        """The sparsifier's masks were replaced: forget what was derived from the old ones."""

    def apply_masks(self) -> None:
        """Make every masked-out weight, gradient and optimizer state zero, from the current masks."""
        raise NotImplementedError

    def gradients(self) -> list[torch.Tensor | None]:
        """Each sparse layer's gradient with respect to every weight (masked ones included) from this step's
        backward, where it was computed (None for a layer without one)."""
        return [w.grad for w in self.sparsifier.weights]

    def update_gradients(self, grads: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """The dense gradients `gradients()` gave, kept for the step's mask update (None for a fully dense
        layer, zeros for a layer that had none): copies where `before_optimizer_step` masks them in place."""
        s = self.sparsifier
        return [None if c == n else torch.zeros_like(w) if g is None else g.detach().clone()
                for g, w, c, n in zip(grads, s.weights, s.counts, s.sizes)]

    def before_optimizer_step(self, grads: list[torch.Tensor | None]) -> None:
        """Restrict the gradients (None for a layer without one) to the active weights."""
        raise NotImplementedError

    def after_optimizer_step(self) -> None:
        """Keep the inactive weights at zero after the optimizer moved the weights."""
        raise NotImplementedError

    def apply_changes(self, changes: dict[int, MaskChange]) -> None:
        """Install the layers' new masks (already in `sparsifier.masks`): zero the removed positions'
        weights, gradients and optimizer state, and those of `reset` positions."""
        raise NotImplementedError

    def held_tensors(self) -> dict[str, list[torch.Tensor]]:
        """Tensors the execution holds beyond the model and optimizer, by kind (memory accounting)."""
        return {}


class MaskedDense(Execution):
    """Masked weights are zeros in the dense tensors, and every kernel is dense.

    The step multiplies gradients (and, unless the optimizer keeps zeros at zero, weights) by each sparse
    layer's bool mask, through `sparse_kernels.Masking`: the same values as a multiply by a 0/1 copy in
    the weight's dtype, but no such copy is held (one byte per weight in all: the masks). Fully dense
    layers are skipped.
    """

    name = "masked"

    def __init__(self, sparsifier: Sparsifier):
        super().__init__(sparsifier)
        # Multiply the weights by the masks after every optimizer step: needed unless the optimizer keeps
        # zeros at zero (ZERO_PRESERVING_OPTIMIZERS); set it to force either way.
        self.remask_weights = type(sparsifier.optimizer) not in ZERO_PRESERVING_OPTIMIZERS
        self._multipliers: list[torch.Tensor | None] | None = None

    def masks_assigned(self) -> None:
        self._multipliers = None

    def _multipliers_now(self) -> list[torch.Tensor | None]:
        """The mask each layer's gradient is multiplied by (None: a fully dense layer, or one trained otherwise)."""
        if self._multipliers is None:
            s = self.sparsifier
            self._multipliers = [None if count == size else mask for mask, count, size in zip(s.masks, s.counts, s.sizes)]
            self._rebuild_hot()
        return self._multipliers

    def _rebuild_hot(self) -> None:
        self._hot = [i for i, m in enumerate(self._multipliers) if m is not None]
        self._hot_weights = [self.sparsifier.weights[i] for i in self._hot]
        self._hot_multipliers = [self._multipliers[i] for i in self._hot]
        self._hot_masking = sk.Masking(self._hot_multipliers)

    @torch.no_grad()
    def before_optimizer_step(self, grads: list[torch.Tensor | None]) -> None:
        self._multipliers_now()
        hot = [grads[i] for i in self._hot]
        if any(g is None for g in hot):
            present = [(g, m) for g, m in zip(hot, self._hot_multipliers) if g is not None]
            if present:
                sk.mask_mul_(*map(list, zip(*present)))
        elif hot:
            self._hot_masking(hot)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        if self.remask_weights and self._hot:
            self._hot_masking([w.detach() for w in self._hot_weights])

    @torch.no_grad()
    def apply_changes(self, changes: dict[int, MaskChange]) -> None:
        """When the update says which positions changed and the optimizer keeps zeros at zero (so every
        inactive position is already 0 everywhere), only the removed positions are zeroed; otherwise the
        layer is re-masked in full."""
        s, multipliers = self.sparsifier, self._multipliers_now()
        full = []
        for i, change in changes.items():
            was_sparse = multipliers[i] is not None
            multipliers[i] = None if change.count == s.sizes[i] else s.masks[i]
            if multipliers[i] is not None:
                if not self.remask_weights and change.removed is not None and change.added is not None and was_sparse:
                    self._zero(i, change.removed)
                else:
                    full.append(i)
            if change.reset is not None:
                self._zero(i, change.reset)
        self._rebuild_hot()
        self._mask_layers(full)

    @torch.no_grad()
    def _zero(self, i: int, positions: torch.Tensor) -> None:
        """Zero layer `i`'s weight, gradient and optimizer state (momentum, Adam moments) at the flat
        `positions`: the one place a connection's value and history are reset."""
        weight = self.sparsifier.weights[i]
        for value in [weight, weight.grad, *self.sparsifier.optimizer.state.get(weight, {}).values()]:
            if torch.is_tensor(value) and value.shape == weight.shape:
                if value.is_contiguous():
                    value.view(-1).index_fill_(0, positions, 0)
                else:
                    value.masked_fill_(torch.zeros(value.numel(), dtype=torch.bool, device=value.device)
                                       .index_fill_(0, positions, True).view(value.shape), 0)

    @torch.no_grad()
    def _mask_layers(self, layers: list[int]) -> None:
        """Zero the masked-out entries of these layers' weights, gradients and optimizer state."""
        s = self.sparsifier
        tensors, masks = [], []
        for i in layers:
            mask = self._multipliers[i]
            if mask is None:  # fully dense: nothing to zero
                continue
            weight = s.weights[i]
            for value in [weight.detach(), weight.grad, *s.optimizer.state.get(weight, {}).values()]:
                if torch.is_tensor(value) and value.shape == weight.shape:
                    tensors.append(value)
                    masks.append(mask)
        if tensors:
            sk.mask_mul_(tensors, masks)

    @torch.no_grad()
    def apply_masks(self) -> None:
        self._multipliers = None
        self._multipliers_now()
        self._mask_layers(list(range(len(self._multipliers))))


EXECUTIONS: dict[str, type[Execution]] = {MaskedDense.name: MaskedDense}  # SparseKernels joins from sparse_execution
AUTO = "auto"  # sparse kernels for methods whose `sparse_execution_helps`, masked-dense for the others
SPARSE = "sparse"


def execution_class(name: str, method: type) -> type[Execution]:
    """The execution the setting `name` gives a method of class `method` (`auto` asks the method's trait)."""
    if name == AUTO:
        name = SPARSE if method.sparse_execution_helps else MaskedDense.name
    return EXECUTIONS[name]


# SparseKernels builds on MaskedDense and registers itself in EXECUTIONS, whichever module is imported first
from . import sparse_execution  # noqa: E402,F401
