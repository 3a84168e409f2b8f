"""The masked-model interface every method implements.

`Sparsifier` owns everything the methods share (spec sections 1 and 3): which weights are
sparse, the boolean masks and their exact per-layer counts, masking weights, gradients and
optimizer state, keyed randomness, exact top-k, the step counter and checkpoint state. A
method subclass supplies only its initial mask and, if it is dynamic, when and how its
masks change.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .distributions import CUSTOM, DISTRIBUTIONS, check_sparsity, explicit_counts, forced_dense, layer_counts
from .schedules import ANNEALS, DropGrowSchedule

SPARSE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Optimizers whose step leaves a weight exactly 0 where its gradient and its state are 0 (with any
# momentum, Nesterov, dampening, L2 or decoupled weight decay, amsgrad, maximize): after their step
# the masked weights are still 0, so `Sparsifier.step` does not multiply the weights by the masks
# again (one pass over the sparse weights saved per step). Any other optimizer gets the re-mask.
ZERO_PRESERVING_OPTIMIZERS = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad, torch.optim.RMSprop,
    torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adadelta,
)
LayerFilter = Callable[[str, nn.Module], bool]
Batch = tuple[torch.Tensor, torch.Tensor]


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# A settings field's declared type -> (test of a value, what a value must be).
_FIELD_KINDS: dict[Any, tuple[Callable[[Any], bool], str]] = {
    float: (_finite, "a finite number"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    bool | None: (lambda v: v is None or isinstance(v, bool), "true, false or None"),
    str: (lambda v: isinstance(v, str), "a string"),
    tuple[float, ...]: (lambda v: isinstance(v, tuple) and all(map(_finite, v)), "a list of finite numbers"),
    tuple[str, ...]: (lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v), "a list of names"),
}


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_types(settings: Any) -> None:
    """ValueError naming the field unless every field of dataclass `settings` holds a value of its declared
    type; numbers must be finite (nan and inf are rejected for every float field)."""
    types = _field_types(type(settings))
    for f in dataclasses.fields(settings):
        test, what = _FIELD_KINDS[types[f.name]]
        value = getattr(settings, f.name)
        if not test(value):
            raise ValueError(f"{f.name} must be {what}, got {value!r}")


@dataclass
class SparsityConfig:
    """Hyper-parameters shared by all methods (each field is also a CLI flag of the harness)."""

    sparsity: float = _setting(0.9, "fraction of zeros over the sparse layers, in [0, 1)")
    distribution: str = _setting("uniform", "how sparsity is split across layers: uniform, er, erk, or custom "
                                            "(layer_sparsity gives each layer's)")
    dense_first: bool | None = _setting(None, "keep the first sparse layer dense (default: yes under uniform, no "
                                              "under er/erk, the paper's choice)")
    dense_last: bool = _setting(False, "keep the last sparse layer dense")
    layer_sparsity: tuple[float, ...] = _setting((), "one sparsity per sparse layer, in order, for distribution "
                                                     "custom (e.g. 0.98,0.882,0: the paper's MNIST LeNet-300-100)")
    seed: int = _setting(0, "seed of the model's init, the data order and every keyed random choice")
    delta_t: int = _setting(100, "steps between mask updates of dynamic methods")
    t_end: float = _setting(0.75, "fraction of training after which masks stop changing")
    alpha: float = _setting(0.3, "initial fraction of each layer's active weights dropped and regrown per update")
    anneal: str = _setting("cosine", "decay of the drop fraction: cosine, constant or linear")
    skip_step_on_update: bool | None = _setting(False, "a mask update takes an iteration of its own instead of "
                                                       "that iteration's optimizer step, and the schedules do not "
                                                       "advance on it (the reference RigL code); None: what each "
                                                       "method's reference code does (rigl skips, the others step)")
    update_at_start: bool = _setting(False, "drop/grow methods update the masks at step 0 too, as the reference "
                                            "code does (else first at step delta_t)")
    snfs_momentum: float = _setting(0.9, "momentum of SNFS's moving average of the dense gradient")
    gmp_start: float = _setting(0.2, "fraction of training where GMP starts pruning")
    gmp_stop: float = _setting(0.75, "fraction of training where GMP reaches the target sparsity")
    gmp_every: int = _setting(0, "steps between GMP pruning events (0: about every 1%% of training)")
    snip_scope: str = _setting("layer", "SNIP keeps the top saliency per layer (layer, the distribution's counts) "
                                        "or under one global threshold (global, the SNIP paper's)")
    dsr_threshold: float = _setting(1e-3, "DSR's initial global pruning threshold H (Mostafa & Wang's code)")
    dsr_prune_fraction: float = _setting(0.01, "DSR's weights pruned per update, K, as a fraction of all parameters")
    dsr_tolerance: float = _setting(0.1, "DSR doubles / halves H when the pruned count leaves K (1 -+ tolerance)")
    deepr_l1: float = _setting(1e-5, "DeepR's L1 penalty on active magnitudes (Bellec et al.'s MNIST script)")
    deepr_temperature: float = _setting(2.5e-11, "DeepR's temperature T: noise sqrt(2 lr T) per step")

    def layer_counts(self, shapes: list[tuple[int, ...]]) -> list[int]:
        """Active-weight count of each sparse layer of these weight shapes: `layer_sparsity`'s under
        distribution custom, else `sparsity` split by the distribution (with the forced-dense layers)."""
        if self.distribution == CUSTOM:
            return explicit_counts(shapes, self.layer_sparsity)
        dense = forced_dense(len(shapes), self.distribution, self.dense_first, self.dense_last)
        return layer_counts(shapes, self.sparsity, self.distribution, dense)

    def validate(self) -> None:
        """Raise a ValueError naming the fix for any field of the wrong type (every number finite) or out of
        range; a subclass's fields are type-checked too."""
        check_types(self)
        check_sparsity(self.sparsity)
        for s in self.layer_sparsity:
            check_sparsity(s)
        checks = [
            (self.distribution in (*DISTRIBUTIONS, CUSTOM),
             f"distribution must be one of {', '.join((*DISTRIBUTIONS, CUSTOM))}", "distribution"),
            ((self.distribution == CUSTOM) == bool(self.layer_sparsity),
             "distribution custom goes with layer_sparsity (one sparsity per layer) and only with it", "distribution"),
            (self.anneal in ANNEALS, f"anneal must be one of {', '.join(ANNEALS)}", "anneal"),
            (self.delta_t >= 1, "delta_t must be a positive number of steps", "delta_t"),
            (0 < self.t_end <= 1, "t_end must be a fraction of training in (0, 1]", "t_end"),
            (0 <= self.alpha <= 1, "alpha (the initial drop fraction) must be in [0, 1]", "alpha"),
            (0 <= self.snfs_momentum < 1, "snfs_momentum must be in [0, 1)", "snfs_momentum"),
            (0 <= self.gmp_start < self.gmp_stop <= 1, "need 0 <= gmp_start < gmp_stop <= 1 (fractions of training)",
             "gmp_stop"),
            (self.gmp_every >= 0, "gmp_every must be >= 0 (0: about every 1% of training)", "gmp_every"),
            (self.snip_scope in ("layer", "global"), "snip_scope must be 'layer' or 'global'", "snip_scope"),
            (self.seed >= 0, "seed must be >= 0", "seed"),
            (self.dsr_threshold > 0, "dsr_threshold (DSR's initial threshold) must be > 0", "dsr_threshold"),
            (0 < self.dsr_prune_fraction < 1, "dsr_prune_fraction must be in (0, 1)", "dsr_prune_fraction"),
            (0 <= self.dsr_tolerance < 1, "dsr_tolerance must be in [0, 1)", "dsr_tolerance"),
            (self.deepr_l1 >= 0, "deepr_l1 must be >= 0", "deepr_l1"),
            (self.deepr_temperature >= 0, "deepr_temperature must be >= 0", "deepr_temperature"),
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


def keyed_generator(seed: int, step: int, layer: int, purpose: str) -> torch.Generator:
    """A CPU generator seeded from (seed, step, layer, purpose): the same numbers on every rank and resume."""
    digest = hashlib.sha256(f"{seed}/{step}/{layer}/{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


# ----- exact keyed selection ---------------------------------------------------------------
#
# Selection is exact (exactly k positions; every position scoring above the k-th largest value is
# chosen) and ties at the k-th value are broken uniformly at random by a keyed generator, which
# is consumed only when such a tie exists. Candidates are found with torch.topk; ties are
# resolved among the tied positions in increasing position order, so the result never depends on
# the order in which candidates were gathered (a resumed run rebuilds them in another order).

_PREFILTER_MIN = 8192  # CPU vectors at least this long are pre-filtered by a sampled threshold
_SAMPLE = 4096


def _at_least(flat: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """Positions (int64) of the entries of 1-D `flat` that are >= `bound`.

    Long vectors are viewed as 8 rows: the column maxima (one vectorised pass) tell which columns
    hold a candidate, and only those columns are compared and compacted, which is several times
    cheaper than compacting a bool vector of the full length when candidates are few.
    """
    n = flat.numel()
    if n < 1 << 16:
        return (flat >= bound).nonzero().squeeze(1)
    rows, width = 8, n // 8
    body = flat[: rows * width].view(rows, width)
    columns = (body.amax(0) >= bound).nonzero().squeeze(1)
    hits = (body.index_select(1, columns) >= bound).nonzero()
    positions = hits[:, 0] * width + columns.index_select(0, hits[:, 1])
    tail = (flat[rows * width:] >= bound).nonzero().squeeze(1) + rows * width
    return torch.cat([positions, tail])


def _top(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of `k` largest entries of 1-D `flat`, in no particular order.

    Which of several equal values at the boundary is returned is unspecified (callers resolve
    ties). On CPU a long vector with a small `k` is first cut down to the entries at or above a
    threshold estimated from an evenly spaced sample (3 standard deviations above the expected
    count): torch.topk on the whole vector costs ~10 ns per entry there. The threshold only affects
    speed: if fewer than `k` entries pass it, the full vector is searched.
    """
    n = flat.numel()
    if flat.device.type == "cpu" and n >= _PREFILTER_MIN and 3 * k <= n:
        sample = flat[:: n // min(_SAMPLE, n // 8)]
        s, p = sample.numel(), k / n
        rank = min(s, math.ceil(p * s + 3 * math.sqrt(s * p * (1 - p)) + 8))
        bound = sample.topk(rank, sorted=False).values.min()
        candidates = _at_least(flat, bound)
        if candidates.numel() >= k:
            values, picked = flat.index_select(0, candidates).topk(k, sorted=False)
            return values, candidates.index_select(0, picked)
    return flat.topk(k, sorted=False)


def _distinct_draws(n: int, need: int, generator: torch.Generator, accept: torch.Tensor | None = None,
                    accepted: int | None = None) -> torch.Tensor:
    """The first `need` distinct values of a stream of uniform draws from [0, n) (only those with
    `accept[value]` True, if given): a uniformly random `need`-subset of the accepted values.

    Duplicates are found without sorting: each value's first draw index is scattered (min) into
    an int32 array of length n, and a draw is kept if it is its value's first.
    """
    accepted = n if accepted is None else accepted
    batch = math.ceil((1.2 * need + 16) * n / accepted)
    device = accept.device if accept is not None else torch.device("cpu")
    drawn = torch.empty(0, dtype=torch.long, device=device)
    while True:
        draws = torch.randint(n, (batch,), generator=generator).to(device)
        if accept is not None:
            draws = draws[accept.index_select(0, draws)]
        drawn = torch.cat([drawn, draws])
        m = drawn.numel()
        order = torch.arange(m, dtype=torch.int32, device=device)
        first = torch.full((n,), m, dtype=torch.int32, device=device).scatter_reduce_(0, drawn, order, "amin")
        distinct = drawn[first.index_select(0, drawn) == order]  # first occurrences, in draw order
        if distinct.numel() >= need:
            return distinct[:need]


def choose_subset(m: int, need: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random `need`-subset of range(m) (int64, no particular order), drawn from `generator`."""
    if need >= m:
        return torch.arange(m)
    if need <= 0:
        return torch.empty(0, dtype=torch.long)
    if 4 * need <= m:
        return _distinct_draws(m, need, generator)
    if 4 * (m - need) <= m:  # choose the few left out
        keep = torch.ones(m, dtype=torch.bool)
        keep[_distinct_draws(m, m - need, generator)] = False
        return keep.nonzero().squeeze(1)
    return torch.randperm(m, generator=generator)[:need]


def sample_positions(allowed: torch.Tensor, count: int, need: int, generator: torch.Generator) -> torch.Tensor:
    """`need` positions drawn uniformly without replacement among the `count` True entries of the
    1-D bool tensor `allowed` (int64 positions, no particular order)."""
    n = allowed.numel()
    if need <= 0:
        return torch.empty(0, dtype=torch.long, device=allowed.device)
    if 4 * need <= count and 4 * count >= n:
        return _distinct_draws(n, need, generator, accept=allowed, accepted=count)
    positions = allowed.nonzero().squeeze(1)
    return positions[choose_subset(count, need, generator).to(allowed.device)]


def topk_indices(score: torch.Tensor, k: int, generator: torch.Generator,
                 positions: torch.Tensor | None = None) -> torch.Tensor:
    """Indices (into `score.flatten()`, int64, no particular order) of its `k` largest entries.

    Exact: every entry larger than the k-th largest value is chosen, and among entries equal to
    it as many as needed are drawn uniformly at random from `generator` (only drawn from when such
    a tie exists). `positions[j]` (distinct) is where entry j sits in its layer, when `score` holds
    a gathered subset of a layer: ties are resolved in order of position, so the result does not
    depend on the gathering order.
    """
    flat = score.reshape(-1)
    n = flat.numel()
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=flat.device)
    if k >= n:
        return torch.arange(n, device=flat.device)
    values, index = _top(flat, k + 1)
    low = values.topk(2, largest=False)  # ascending: the (k+1)-th and k-th largest values
    below, kth, j, _ = torch.cat([low.values.double(), low.indices.double()]).tolist()  # one host sync
    if below < kth:  # no tie across the boundary: the k largest are unique
        j = int(j)
        return torch.cat([index[:j], index[j + 1:]])
    if math.isnan(kth) or math.isnan(below):
        return _topk_mask_sorted(flat, k, generator).nonzero().squeeze(1)
    above = index[values > kth]
    tied = (flat == kth).nonzero().squeeze(1)
    if positions is not None:
        tied = tied[positions[tied].argsort()]
    chosen = choose_subset(tied.numel(), k - above.numel(), generator).to(flat.device)
    return torch.cat([above, tied[chosen]])


def _topk_mask_sorted(flat: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Reference selection (used for NaN scores): a keyed random order, then a stable sort."""
    order = torch.randperm(flat.numel(), generator=generator).to(flat.device)
    chosen = order[torch.sort(flat[order], descending=True, stable=True).indices[:k]]
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[chosen] = True
    return mask


def topk_mask(score: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Boolean mask of the `k` largest entries of `score`; ties broken uniformly by a keyed draw.

    Exactly `k` entries are chosen; see `topk_indices`.
    """
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    mask[topk_indices(score, k, generator)] = True
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
    # Multiply the weights by the masks after every optimizer step: None decides from the optimizer
    # (not needed for ZERO_PRESERVING_OPTIMIZERS), True/False forces it.
    remask_weights: bool | None = None
    # Keep a copy of each sparse layer's mask in the weight's dtype (4 bytes per fp32 weight) for the
    # step's multiplies, which are then vectorised; False saves that memory and multiplies by the
    # bool masks (about 3x slower per element on CPU). Call apply_masks() after changing it.
    fast_masks: bool = True
    accepts_masks: ClassVar[bool] = True  # can start from given masks (restarts, lottery tickets)
    drop_grow: ClassVar[bool] = False  # updates on a DropGrowSchedule (update iterations may skip the step)
    reference_skips_step: ClassVar[bool] = False  # its reference code updates in place of an optimizer step

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
        skip = self.config.skip_step_on_update
        self.skips_step = self.reference_skips_step if skip is None else skip
        if self.skips_step and not self.drop_grow:
            raise ValueError(f"skip_step_on_update applies to drop/grow methods (set, snfs, rigl, dsr), not {self.name}")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"total_steps must be a positive int (the run's optimizer steps), got {total_steps!r}")
        self.model, self.optimizer, self.total_steps = model, optimizer, total_steps
        if self.remask_weights is None:
            self.remask_weights = type(optimizer) not in ZERO_PRESERVING_OPTIMIZERS
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
        self.counts = [int(m.sum()) for m in masks]
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

    # ----- masks and the step's cached views of them --------------------------------------------
    #
    # `masks` (bool, 1 byte per weight) is the public state. The step multiplies gradients and
    # weights by a copy of each sparse layer's mask in the weight's dtype: a same-dtype multiply is
    # vectorised, one with a bool operand is about 10x slower on CPU. Fully dense layers are skipped.
    # The copies are rebuilt whenever `masks` is assigned, `load_state_dict` or `apply_masks()`
    # runs, or an update changes a layer; assign a new list rather than editing a mask in place
    # (or call `apply_masks()` after editing).

    @property
    def masks(self) -> list[torch.Tensor]:
        """The boolean mask of each sparse layer (True = active), in the order of `names`."""
        return self._masks

    @masks.setter
    def masks(self, masks: list[torch.Tensor]) -> None:
        self._masks = list(masks)
        self._multipliers = None
        self._active = [None] * len(self._masks)

    def _refresh(self) -> None:
        """Rebuild the per-layer multipliers and the step's lists of sparse layers."""
        self._multipliers = [
            None if count == size else mask.to(weight.dtype) if self.fast_masks else mask
            for mask, weight, count, size in zip(self._masks, self.weights, self.counts, self.sizes)
        ]
        self._rebuild_hot()

    def _rebuild_hot(self) -> None:
        self._hot = [i for i, m in enumerate(self._multipliers) if m is not None]
        self._hot_weights = [self.weights[i] for i in self._hot]
        self._hot_multipliers = [self._multipliers[i] for i in self._hot]

    def _active_indices(self, i: int) -> torch.Tensor:
        """Flat positions of layer `i`'s active weights (any order), cached until its mask changes."""
        if self._active[i] is None:
            self._active[i] = self._masks[i].reshape(-1).nonzero().squeeze(1)
        return self._active[i]

    def held_tensors(self) -> dict[str, list[torch.Tensor]]:
        """Every tensor the sparsifier holds beyond the model and optimizer, by kind (memory accounting)."""
        if self._multipliers is None:
            self._refresh()
        return {
            "masks": list(self._masks),
            "multipliers": [m for m in self._multipliers if m is not None and m.dtype != torch.bool],
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

    def change_from_positions(self, i: int, active: torch.Tensor, grown: torch.Tensor | int = 0) -> MaskChange:
        """A MaskChange for layer `i` whose active flat positions are `active` (distinct)."""
        mask = torch.zeros(self.sizes[i], dtype=torch.bool, device=active.device).index_fill_(0, active, True)
        return MaskChange(mask.view(self.weights[i].shape), active.numel(), grown, active)

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
        return self.config.layer_counts([w.shape for w in self.weights])

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
        """New masks after step `t`; called only when `is_update_step(t)`.

        A method implements this or `update_layers` (which also says which layers changed and
        what it already knows about them, sparing the step a recount).
        """
        changes = self.update_layers(t)
        return [changes[i].mask if i in changes else m for i, m in enumerate(self._masks)]

    def update_layers(self, t: int) -> dict[int, MaskChange]:
        """The layers whose mask changes after step `t`, by index; by default from `updated_masks`."""
        if type(self).updated_masks is Sparsifier.updated_masks:
            raise NotImplementedError(f"{type(self).__name__} must implement updated_masks or update_layers")
        return self._changes_from_masks(t)

    def _changes(self, t: int) -> dict[int, MaskChange]:
        """The update after step `t`: a subclass's own `updated_masks` wins over an inherited `update_layers`."""
        if type(self).updated_masks is not Sparsifier.updated_masks:
            return self._changes_from_masks(t)
        return self.update_layers(t)

    def _changes_from_masks(self, t: int) -> dict[int, MaskChange]:
        changes = {}
        for i, (new, old) in enumerate(zip(self.updated_masks(t), self._masks)):
            new = new.to(device=old.device, dtype=torch.bool)
            if new is not old:
                changes[i] = MaskChange(new, int(new.sum()), (new & ~old).sum())
        return changes

    # ----- what the base owns --------------------------------------------------------------

    @torch.no_grad()
    def step(self, scaler: torch.amp.GradScaler | None = None) -> StepInfo:
        """Mask gradients, take the optimizer step, re-mask weights and update masks when scheduled.

        With a `scaler` (fp16 autocast), gradients are unscaled first and `scaler.step` is
        used; call `scaler.update()` yourself as usual. An ordinary step does no host sync and
        touches only the sparse layers: one vectorised multiply of their gradients (and of their
        weights after the optimizer step, unless the optimizer keeps zero weights at zero, see
        ZERO_PRESERVING_OPTIMIZERS). If you load weights into the model yourself, call
        `apply_masks()` afterwards.
        """
        t = self.t
        update = self.is_update_step(t)
        info = StepInfo(t, tuple(self.counts), self.uses_dense_gradient(t))
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        if self._multipliers is None:
            self._refresh()
        grads = [w.grad for w in self.weights]
        self.observe_gradients(grads, t)
        hot = [grads[i] for i in self._hot]
        if any(g is None for g in hot):
            present = [(g, m) for g, m in zip(hot, self._hot_multipliers) if g is not None]
            if present:
                torch._foreach_mul_(*map(list, zip(*present)))
        elif hot:
            torch._foreach_mul_(hot, self._hot_multipliers)
        info.stepped = not (update and self.skips_step)
        if info.stepped:
            self.optimizer.step() if scaler is None else scaler.step(self.optimizer)
        if self.remask_weights and self._hot:
            torch._foreach_mul_(self._hot_weights, self._hot_multipliers)
        if update:
            changes = self._changes(t)
            info.updated = True
            info.grown = int(sum(c.grown for c in changes.values()))
            if changes:
                self._apply_changes(changes)
        self.t += 1
        return info

    @torch.no_grad()
    def _apply_changes(self, changes: dict[int, MaskChange]) -> None:
        """Install new masks; zero the weights, gradients and optimizer state that became inactive.

        When the update says which positions changed and the optimizer keeps zeros at zero (so
        every inactive position is already 0 everywhere), only the removed positions are zeroed and
        the multipliers are patched in place; otherwise the layer is re-masked in full.
        """
        if self._multipliers is None:
            self._refresh()
        full = []
        for i, change in changes.items():
            weight, multiplier = self.weights[i], self._multipliers[i]
            self._masks[i] = change.mask.to(device=weight.device, dtype=torch.bool)
            self.counts[i] = change.count
            self._active[i] = change.active
            if change.count == self.sizes[i]:
                self._multipliers[i] = None
            elif (not self.remask_weights and change.removed is not None and change.added is not None
                  and multiplier is not None and multiplier.is_contiguous()):
                if multiplier.dtype == torch.bool:
                    self._multipliers[i] = self._masks[i]
                else:
                    flat = multiplier.view(-1)
                    flat.index_fill_(0, change.removed, 0)
                    flat.index_fill_(0, change.added, 1)
                for value in [weight, weight.grad, *self.optimizer.state.get(weight, {}).values()]:
                    if torch.is_tensor(value) and value.shape == weight.shape:
                        if value.is_contiguous():
                            value.view(-1).index_fill_(0, change.removed, 0)
                        else:
                            value.mul_(self._masks[i])
            else:
                self._multipliers[i] = self._masks[i].to(weight.dtype) if self.fast_masks else self._masks[i]
                full.append(i)
        self._rebuild_hot()
        self._mask_layers(full)

    @torch.no_grad()
    def _mask_layers(self, layers: list[int]) -> None:
        """Zero the masked-out entries of these layers' weights, gradients and optimizer state."""
        for i in layers:
            multiplier = self._multipliers[i]
            if multiplier is None:  # fully dense: nothing to zero
                continue
            weight, mask = self.weights[i], self._masks[i]
            weight.mul_(multiplier)
            if weight.grad is not None:
                weight.grad.mul_(multiplier)
            for value in self.optimizer.state.get(weight, {}).values():
                if torch.is_tensor(value) and value.shape == weight.shape:
                    value.mul_(multiplier if value.dtype == multiplier.dtype else mask)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every masked-out weight, its gradient and its optimizer state (momentum, Adam moments).

        Also rebuilds the step's cached copies of the masks: call it after editing a mask in place.
        """
        self.masks = self._masks
        self._refresh()
        self._mask_layers(list(range(len(self._masks))))

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

