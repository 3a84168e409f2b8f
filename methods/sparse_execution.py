"""Sparse-kernel execution (`execution="sparse"`): sparse Linear layers train on their active weights only.

Between mask updates, each sparse `nn.Linear` layer that runs on kernels computes its forward with the
sparse weight, its input gradient through it and its weight gradient at the active positions only
(`methods.sparse_kernels`), and the optimizer holds a compact parameter of the active values (in CSR
order) in place of the dense weight, so gradients and optimizer state (momentum, Adam moments) take
memory in proportion to the active count. The layer's dense `weight` stays the model's parameter: it
mirrors the active values (copied after every optimizer step, zeros elsewhere), so that the model's
`state_dict`, evaluation code and every method's reads of `sparsifier.weights` see the trained weights.

On a step whose method needs the gradient of every weight (`sparsifier.uses_dense_gradient(t)`: RigL's
update steps, every SNFS step), the layer's backward computes the dense weight gradient once (a dense
GEMM), takes the active values' gradient from it and hands it to the update; it is dropped after the
step. A mask change rebuilds the layer's structure from its active positions in O(nnz log nnz) and
carries each kept weight's value, gradient and optimizer state over; grown ones start at 0.

Which layers run on kernels (the rest train masked-dense, as with `execution="masked"`):
* plain `nn.Linear` layers (exactly that class) with a contiguous weight, whose density is at most
  `max_density` (0.4: measured crossover with the dense GEMM at batch 100 on CPU, see README). Layers the
  distribution keeps dense, GMP's dense phase and Conv layers stay masked-dense; a layer moves between
  the two when a mask change crosses `max_density`;
* none for methods that change weights outside the optimizer (they override `after_optimizer_step`:
  DeepR's noise and sign flips): the compact values would not see those writes, so such a method trains
  masked-dense in full under this execution.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from . import sparse_kernels as sk
from .execution import EXECUTIONS, SPARSE, MaskedDense

if TYPE_CHECKING:
    from .base import MaskChange, Sparsifier


class _Handle:
    """What a kernel layer's forward needs: the execution and the layer index. Not copied with the model:
    a deep copy (or pickle) of the module gets None and computes densely with its (mirrored) weight."""

    def __init__(self, execution: SparseKernels, i: int):
        self.execution, self.i = execution, i

    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return (type(None), ())


class SparseKernelLinear(nn.Linear):
    """An `nn.Linear` whose weight is trained by the sparse-kernel execution (the module's class while it
    is; a copy of the module computes like a plain `nn.Linear`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        handle = self.__dict__.get("_sparse_handle")
        if handle is None:
            return super().forward(x)
        layer = handle.execution.layers[handle.i]
        return _SparseLinearFunction.apply(x, layer.values, self.bias, layer)


class _KernelLayer:
    """One layer on kernels: its structure and the compact parameter of its active values."""

    def __init__(self, execution: SparseKernels, i: int, structure: sk.Structure, values: nn.Parameter):
        self.execution, self.i, self.structure, self.values = execution, i, structure, values

    def values_grad(self, s: sk.Structure, gt: torch.Tensor, xt: torch.Tensor, needed: bool) -> torch.Tensor | None:
        """The active values' gradient from the output gradient and input (both transposed); on a step whose
        method needs the gradient of every weight (or SNFS's average), the dense gradient is computed once,
        kept for the update and dropped after the step."""
        sparsifier = self.execution.sparsifier
        if not sparsifier.uses_dense_gradient(sparsifier.t):
            return sk.weight_grad(s, gt, xt) if needed else None
        dense = gt.mm(xt.t())
        held = self.execution.dense_grads[self.i]
        self.execution.dense_grads[self.i] = dense if held is None else held.add_(dense)
        return dense.view(-1).index_select(0, s.positions) if needed else None


class _SparseLinearFunction(torch.autograd.Function):
    """y = x W^T + b with W sparse; activations go through the kernels transposed (batch last). The output
    is returned as a transposed view, so that a following kernel layer (after elementwise ops, which keep
    the layout) reads its input without a copy. `layer` has the `structure` and computes its values'
    gradient (`values_grad`): a `_KernelLayer`, or a `methods.compact.CompactLinear`."""

    @staticmethod
    def forward(ctx, x, values, bias, layer):
        s = layer.structure
        out, inp = s.shape
        lead = x.shape[:-1]
        xt = sk.transposed(x.reshape(-1, inp))
        yt = sk.forward(s, values, xt, bias)
        ctx.save_for_backward(xt, values)
        ctx.layer, ctx.structure, ctx.x_shape = layer, s, x.shape
        y = yt.t()
        return y if len(lead) == 1 else y.reshape(*lead, out)

    @staticmethod
    def backward(ctx, gy):
        xt, values = ctx.saved_tensors
        s, layer = ctx.structure, ctx.layer
        gt = sk.transposed(gy.reshape(-1, s.shape[0]))
        dx = dbias = None
        dvalues = layer.values_grad(s, gt, xt, ctx.needs_input_grad[1])
        if ctx.needs_input_grad[2]:
            dbias = gt.sum(1)
        if ctx.needs_input_grad[0]:
            dx = sk.input_grad(s, values, gt).t().reshape(ctx.x_shape)
        return dx, dvalues, dbias, None


class SparseKernels(MaskedDense):
    """Sparse Linear layers run on sparse kernels with compact values and optimizer state (module doc)."""

    name = SPARSE
    max_density = 0.4  # a Linear layer denser than this trains masked-dense (the dense GEMM is faster)

    def __init__(self, sparsifier: Sparsifier):
        super().__init__(sparsifier)
        s = sparsifier
        n = len(s.weights)
        from .base import Sparsifier as Base
        from .base import layer_module
        self.modules = [layer_module(s.model, name)[0] for name in s.names]
        self.method_writes_weights = type(s).after_optimizer_step is not Base.after_optimizer_step
        self.eligible = [type(m) in (nn.Linear, SparseKernelLinear) and w.is_contiguous() and w.dim() == 2
                         and not self.method_writes_weights for m, w in zip(self.modules, s.weights)]
        self.layers: list[_KernelLayer | None] = [None] * n
        self.dense_grads: list[torch.Tensor | None] = [None] * n
        self._state_seen = None  # the optimizer's state dict as last seen: another object means it was loaded

    # ----- which layers run on kernels ----------------------------------------------------------

    def wants_kernels(self, i: int) -> bool:
        s = self.sparsifier
        return self.eligible[i] and s.counts[i] < s.sizes[i] and s.counts[i] <= self.max_density * s.sizes[i]

    def kernel_layers(self) -> list[int]:
        """Indices of the layers that run on kernels now."""
        return [i for i, layer in enumerate(self.layers) if layer is not None]

    def _multipliers_now(self) -> list[torch.Tensor | None]:
        if self._multipliers is None:
            super()._multipliers_now()
            for i in self.kernel_layers():
                self._multipliers[i] = None
            self._rebuild_hot()
        return self._multipliers

    def held_tensors(self) -> dict[str, list[torch.Tensor]]:
        return {**super().held_tensors(),
                "kernel_structure": [t for layer in self.layers if layer is not None for t in layer.structure.tensors()]}

    # ----- the step --------------------------------------------------------------------------

    def gradients(self) -> list[torch.Tensor | None]:
        return [self.dense_grads[i] if layer is not None else w.grad
                for i, (layer, w) in enumerate(zip(self.layers, self.sparsifier.weights))]

    def update_gradients(self, grads: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """As masked-dense, but a kernel layer's dense gradient is not masked by the step: kept without a copy."""
        s = self.sparsifier
        return [None if c == n else torch.zeros_like(w) if g is None else g if layer is not None else g.detach().clone()
                for g, w, c, n, layer in zip(grads, s.weights, s.counts, s.sizes, self.layers)]

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        s = self.sparsifier
        for i in self.kernel_layers():
            layer = self.layers[i]
            sk.scatter(layer.structure, layer.values.detach(), s.weights[i].detach())
        self.dense_grads = [None] * len(self.dense_grads)

    # ----- mask changes ------------------------------------------------------------------------

    @torch.no_grad()
    def apply_masks(self) -> None:
        s = self.sparsifier
        loaded = self._loaded()
        for i in range(len(self.layers)):
            if self.layers[i] is not None:
                s.weights[i].detach().masked_fill_(~s.masks[i], 0)  # the mirror (weights loaded by hand included)
                if self.wants_kernels(i):
                    self._lay_out(i, self._positions(i), loaded=loaded)
                else:
                    self._to_dense(i, loaded=loaded)
        self._multipliers = None
        super().apply_masks()  # masked-dense layers
        for i in range(len(self.layers)):
            if self.layers[i] is None and self.wants_kernels(i):
                self._lay_out(i, self._positions(i), loaded=loaded)
        self._multipliers = None
        self._multipliers_now()
        self._state_seen = self.sparsifier.optimizer.state

    @torch.no_grad()
    def apply_changes(self, changes: dict[int, MaskChange]) -> None:
        s = self.sparsifier
        loaded = self._loaded()
        dense_changes = {}
        for i, change in changes.items():
            layer = self.layers[i]
            if layer is None:
                dense_changes[i] = change
                continue
            flat = s.weights[i].detach().view(-1)
            old = layer.structure.positions
            removed = old[~s.masks[i].reshape(-1).index_select(0, old)]  # active before, inactive now
            flat.index_fill_(0, removed, 0)
            if change.reset is not None:
                flat.index_fill_(0, change.reset, 0)
            if self.wants_kernels(i):
                active = change.active.sort().values if change.active is not None else self._positions(i)
                self._lay_out(i, active, reset=change.reset, loaded=loaded)
            else:
                self._to_dense(i, loaded=loaded)
                self._zero(i, removed)
                if change.reset is not None:
                    self._zero(i, change.reset)
                dense_changes[i] = None
        if dense_changes:
            plain = {i: c for i, c in dense_changes.items() if c is not None}
            self._multipliers_now()
            for i in dense_changes:
                if i not in plain:  # just moved off kernels: build its multiplier
                    self._multipliers[i] = None if s.counts[i] == s.sizes[i] else s.masks[i]
            super().apply_changes(plain)
            for i in plain:
                if self.wants_kernels(i):
                    self._lay_out(i, self._positions(i), loaded=loaded)
                    self._multipliers[i] = None
            self._rebuild_hot()
        self._state_seen = s.optimizer.state

    def _positions(self, i: int) -> torch.Tensor:
        return self.sparsifier.masks[i].reshape(-1).nonzero().squeeze(1)

    def _loaded(self) -> bool:
        """Whether the optimizer's state was replaced (load_state_dict) since this execution last laid it out:
        compact state found then is taken to be in the CSR order of the masks being applied."""
        return self._state_seen is not None and self.sparsifier.optimizer.state is not self._state_seen

    def _swap(self, old: torch.Tensor, new: torch.Tensor) -> None:
        """Put `new` in place of `old` in the optimizer's parameter groups and move its state."""
        optimizer = self.sparsifier.optimizer
        for group in optimizer.param_groups:
            for j, p in enumerate(group["params"]):
                if p is old:
                    group["params"][j] = new
        if old in optimizer.state:
            optimizer.state[new] = optimizer.state.pop(old)

    def _lay_out(self, i: int, active: torch.Tensor, reset: torch.Tensor | None = None, loaded: bool = False) -> None:
        """Run layer `i` on kernels with the sorted flat `active` positions: values from the dense weight (the
        mirror), and each kept position's gradient and optimizer state carried over from the old layout
        (dense tensors, or the compact ones of the previous structure); new positions start at 0."""
        s = self.sparsifier
        weight, module = s.weights[i], self.modules[i]
        optimizer = s.optimizer
        layer = self.layers[i]
        flat = weight.detach().view(-1)
        structure = sk.Structure(active, tuple(weight.shape))
        if layer is None:
            values = nn.Parameter(flat.index_select(0, active), requires_grad=weight.requires_grad)
            old_positions, param = None, weight
        else:
            values, old_positions, param = layer.values, layer.structure.positions, layer.values
        if old_positions is not None and old_positions.numel():  # where each new position sat before, if it did
            slots = torch.searchsorted(old_positions, active).clamp_(max=old_positions.numel() - 1)
            kept = old_positions.index_select(0, slots) == active
        else:
            slots = kept = None

        def compact(t: torch.Tensor, what: str) -> torch.Tensor:
            if t.shape == weight.shape:  # dense-shaped (from a dense layout, or a masked-dense checkpoint)
                return t.detach().reshape(-1).index_select(0, active)
            if t.dim() == 1 and old_positions is not None and t.numel() == old_positions.numel() and not loaded:
                if slots is None:
                    return torch.zeros(active.numel(), dtype=t.dtype, device=t.device)
                return torch.where(kept, t.index_select(0, slots), torch.zeros((), dtype=t.dtype, device=t.device))
            if t.dim() == 1 and t.numel() == active.numel():  # loaded: in the CSR order of these masks
                return t
            raise ValueError(f"the {what} of layer {s.names[i]} has shape {tuple(t.shape)}, which fits neither its "
                             f"weight {tuple(weight.shape)} nor its {active.numel()} active weights; load a checkpoint "
                             "saved with the same masks and execution")

        state = optimizer.state.get(param, {})
        for key, value in list(state.items()):
            if torch.is_tensor(value) and value.dim() > 0:
                state[key] = compact(value, f"optimizer state {key!r}")
        grad = param.grad
        if layer is None:
            weight.grad = None
            self._swap(weight, values)
            module.__class__ = SparseKernelLinear
            module._sparse_handle = _Handle(self, i)
        elif values.numel() != active.numel():  # a new leaf: autograd keeps a leaf's shape from its first use
            values = nn.Parameter(flat.index_select(0, active), requires_grad=values.requires_grad)
            self._swap(param, values)
        values.data = flat.index_select(0, active)
        values.grad = None if grad is None else compact(grad, "gradient")
        if reset is not None and reset.numel():
            at = torch.searchsorted(active, reset)
            for value in [values.grad, *state.values()]:
                if torch.is_tensor(value) and value.dim() == 1 and value.numel() == active.numel():
                    value.index_fill_(0, at, 0)
        self.layers[i] = _KernelLayer(self, i, structure, values)

    def _to_dense(self, i: int, loaded: bool = False) -> None:
        """Move layer `i` off kernels: the dense weight (the mirror) goes back into the optimizer, its state and
        gradient scattered to dense tensors (zeros at inactive positions)."""
        s, layer = self.sparsifier, self.layers[i]
        weight, values, positions = s.weights[i], layer.values, layer.structure.positions
        optimizer = s.optimizer

        def dense(t: torch.Tensor) -> torch.Tensor:
            if t.shape == weight.shape:
                return t
            if loaded and t.numel() == s.counts[i]:
                at = self._positions(i)
            elif t.numel() == positions.numel():
                at = positions
            else:
                raise ValueError(f"compact state of layer {s.names[i]} has {t.numel()} entries, not its "
                                 f"{positions.numel()} active weights; load a checkpoint saved with the same masks")
            return torch.zeros(weight.numel(), dtype=t.dtype, device=t.device).index_copy_(0, at, t).view(weight.shape)

        state = optimizer.state.get(values, {})
        for key, value in list(state.items()):
            if torch.is_tensor(value) and value.dim() > 0:
                state[key] = dense(value)
        weight.grad = None if values.grad is None else dense(values.grad)
        self._swap(values, weight)
        module = self.modules[i]
        module.__class__ = nn.Linear
        del module._sparse_handle
        self.layers[i] = None


EXECUTIONS[SparseKernels.name] = SparseKernels
