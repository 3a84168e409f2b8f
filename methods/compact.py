"""Compact sparse layers: train sparse models too large to hold densely (sparse kernels, O(active) memory).

The masked model and both executions keep every sparse layer's dense weight (and a dense mask), so a
model fits only if its dense weights do. Here a layer is born sparse and stays so:

* `CompactLinear` holds its active weights only: a value vector in CSR order, the structure the kernels
  need (`methods.sparse_kernels.Structure`, about 32 bytes per active weight) and the bias. Its forward,
  input gradient and weight gradient run on the sparse kernels of the sparse-kernel execution; no dense
  weight, gradient or mask of the layer ever exists.
* `compact_mlp` builds an MLP of them with exact per-layer counts from a distribution (`layer_counts`,
  from the shapes alone), drawing each layer's positions uniformly in O(nnz log nnz) (`sample_positions`)
  and its values from U(+-1/sqrt(mean active fan-in)); layers the distribution makes dense are `nn.Linear`.
* `CompactRigL` replaces `optimizer.step()` and runs RigL's schedule (`DropGrowSchedule`, drop fraction
  `alpha` cosine-annealed until `t_end`): each update drops a layer's `k` active weights of smallest
  magnitude and grows the `k` inactive positions of largest |dL/dW| on the update step's batch. That
  gradient is the product of the layer's output gradient and input (kept from the backward, batch x
  width each); it is computed in blocks of rows (`block_bytes`), each block's top-k merged into a running
  top-k, so the dense gradient is never held whole. Grown weights start at 0 with zero momentum; kept ones
  keep their value and optimizer state; counts stay exact. The values keep their Parameter (same count),
  so the optimizer needs no rebuilding.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from . import sparse_kernels as sk
from .distributions import layer_counts
from .schedules import DropGrowSchedule
from .selection import keyed_generator
from .sparse_execution import _SparseLinearFunction


def sample_positions(size: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` distinct flat positions in [0, size), uniformly at random, ascending (int64), in
    O(count log count) time and memory: random draws, deduplicated, topped up, then a uniform subset."""
    if not 0 <= count <= size:
        raise ValueError(f"count must be in [0, {size}], got {count}")
    if 2 * count > size:  # dense enough that a permutation of every position is cheap
        return torch.randperm(size, generator=generator)[:count].sort().values
    chosen = torch.empty(0, dtype=torch.int64)
    while chosen.numel() < count:
        need = count - chosen.numel()
        draws = torch.randint(size, (need + need // 8 + 16,), generator=generator)
        chosen = torch.cat([chosen, draws]).unique()
    keep = torch.randperm(chosen.numel(), generator=generator)[:count]
    return chosen.index_select(0, keep).sort().values


class CompactLinear(nn.Module):
    """A Linear layer of `count` active weights that never holds its dense weight (module doc)."""

    def __init__(self, in_features: int, out_features: int, count: int, generator: torch.Generator, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.structure = sk.Structure(sample_positions(in_features * out_features, count, generator),
                                      (out_features, in_features))
        bound = 1 / math.sqrt(max(1.0, count / out_features))
        self.values = nn.Parameter(torch.empty(count).uniform_(-bound, bound, generator=generator))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound, generator=generator)) if bias else None
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None  # (GT, XT) of the last backward

    @property
    def count(self) -> int:
        return self.values.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SparseLinearFunction.apply(x, self.values, self.bias, self)

    def values_grad(self, s: sk.Structure, gt: torch.Tensor, xt: torch.Tensor, needed: bool) -> torch.Tensor | None:
        """The values' gradient (SDDMM at the active positions); the batch is kept for a growth that may follow."""
        self.batch = (gt, xt)
        return sk.weight_grad(s, gt, xt) if needed else None

    def dense_weight(self) -> torch.Tensor:
        """The dense weight (for tests and small layers only: it allocates out x in)."""
        w = torch.zeros(self.out_features * self.in_features, dtype=self.values.dtype)
        return w.index_copy_(0, self.structure.positions, self.values.detach()).view(self.out_features, -1)

    def extra_repr(self) -> str:
        density = self.count / (self.in_features * self.out_features)
        return f"in_features={self.in_features}, out_features={self.out_features}, count={self.count} ({density:.4%})"

    @torch.no_grad()
    def largest_gradient(self, k: int, exclude: torch.Tensor, block_bytes: int) -> torch.Tensor:
        """The `k` flat positions outside the ascending `exclude` where |dL/dW| of the last backward is
        largest, computed in blocks of rows of at most `block_bytes`; each block's top-k (among its scores
        above the running k-th best, once there are k) is merged into the running top-k."""
        if self.batch is None:
            raise RuntimeError("no backward yet: growth needs the gradient of a batch")
        gt, xt = self.batch
        out, inp = self.out_features, self.in_features
        rows = max(1, block_bytes // (4 * inp))
        best_scores = torch.empty(0, dtype=gt.dtype)
        best = torch.empty(0, dtype=torch.int64)
        for r0 in range(0, out, rows):
            r1 = min(out, r0 + rows)
            scores = gt[r0:r1].mm(xt.t()).abs_().view(-1)
            lo, hi = torch.searchsorted(exclude.contiguous(), torch.tensor([r0 * inp, r1 * inp])).tolist()
            scores.index_fill_(0, exclude[lo:hi] - r0 * inp, -1.0)  # below every |gradient|: never chosen
            at = None
            if best.numel() >= k:  # only scores above the running k-th best can enter: select among those
                at = (scores > best_scores.min()).nonzero().squeeze(1)
                scores = scores.index_select(0, at)
            top = scores.topk(min(k, scores.numel()))
            best_scores = torch.cat([best_scores, top.values])
            best = torch.cat([best, (top.indices if at is None else at.index_select(0, top.indices)) + r0 * inp])
            if best.numel() > k:
                keep = best_scores.topk(k).indices
                best_scores, best = best_scores.index_select(0, keep), best.index_select(0, keep)
        return best

    @torch.no_grad()
    def drop_grow(self, k: int, optimizer: torch.optim.Optimizer, block_bytes: int) -> None:
        """Drop the `k` active weights of smallest magnitude, grow the `k` inactive positions of largest
        gradient; kept weights keep their value and optimizer state, grown ones start at 0."""
        if k <= 0:
            return
        s, values = self.structure, self.values
        keep = torch.ones(self.count, dtype=torch.bool)
        keep[values.detach().abs().topk(k, largest=False).indices] = False
        kept = s.positions[keep]
        grown = self.largest_gradient(k, kept, block_bytes)
        positions = torch.cat([kept, grown]).sort().values
        slots = torch.searchsorted(positions, kept)
        for tensor in [values, *optimizer.state.get(values, {}).values()]:
            if torch.is_tensor(tensor) and tensor.shape == values.shape:
                carried = torch.zeros_like(tensor).index_copy_(0, slots, tensor.detach()[keep])
                tensor.copy_(carried)
        values.grad = None
        self.structure = sk.Structure(positions, s.shape)
        self.batch = None


def compact_mlp(sizes: Sequence[int], sparsity: float, distribution: str = "erk", seed: int = 0) -> nn.Sequential:
    """An MLP with layer widths `sizes` (input, hidden..., classes), ReLU between layers, of exact per-layer
    counts from `distribution` at `sparsity` (first and last layers sparse too): `CompactLinear` layers,
    `nn.Linear` for those the distribution makes dense."""
    shapes = [(n_out, n_in) for n_in, n_out in itertools.pairwise(sizes)]
    counts = layer_counts(shapes, sparsity, distribution)
    modules: list[nn.Module] = [nn.Flatten()]
    for j, ((n_out, n_in), count) in enumerate(zip(shapes, counts)):
        generator = keyed_generator(seed, 0, j, "init")
        if count < n_out * n_in:
            modules.append(CompactLinear(n_in, n_out, count, generator))
        else:
            torch.manual_seed(seed + j)
            modules.append(nn.Linear(n_in, n_out))
        if j < len(shapes) - 1:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


class CompactRigL:
    """RigL on the `CompactLinear` layers of `model`: call `step()` in place of `optimizer.step()`."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, total_steps: int, delta_t: int = 100,
                 t_end: float = 0.75, alpha: float = 0.3, block_bytes: int = 256 * 2**20):
        self.layers = [m for m in model.modules() if isinstance(m, CompactLinear)]
        self.optimizer, self.block_bytes = optimizer, block_bytes
        self.schedule = DropGrowSchedule(delta_t, max(1, math.floor(t_end * total_steps)), alpha)
        self.t = 0

    def counts(self) -> list[int]:
        return [layer.count for layer in self.layers]

    def step(self) -> bool:
        """The optimizer step, then the mask update when the schedule has one; whether the masks changed."""
        self.optimizer.step()
        t, self.t = self.t, self.t + 1
        if not self.schedule.is_update(t):
            return False
        fraction = self.schedule.fraction(t)
        for layer in self.layers:
            layer.drop_grow(int(fraction * layer.count), self.optimizer, self.block_bytes)
        return True
