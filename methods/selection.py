"""Exact keyed selection: choosing exactly k positions by score or at random, reproducibly.

Every random choice comes from a generator keyed on (seed, step, layer, purpose), so it is the same
on every rank and after a resume; ties at the k-th score are broken by such a draw.
"""
from __future__ import annotations

import hashlib
import math

import torch


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


def _spread(s: int, n: int) -> torch.Tensor:
    """`s` positions in [0, n) spread evenly and without a period (j * golden ratio, modulo 1, times n): an
    evenly strided sample of a flattened weight would read one column only when the stride is a multiple of
    the row length, and a column's scores are correlated (they share an input unit)."""
    return (torch.arange(s, dtype=torch.float64).mul_(0.6180339887498949).frac_().mul_(n)).long()


def _top(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of `k` largest entries of 1-D `flat`, in no particular order.

    Which of several equal values at the boundary is returned is unspecified (callers resolve
    ties). On CPU a long vector with a small `k` is first cut down to the entries at or above a
    threshold estimated from an evenly spread sample (3 standard deviations above the expected
    count): torch.topk on the whole vector costs ~10 ns per entry there. The threshold only affects
    speed: if fewer than `k` entries pass it, the full vector is searched.
    """
    n = flat.numel()
    if flat.device.type == "cpu" and n >= _PREFILTER_MIN and 3 * k <= n:
        sample = flat.index_select(0, _spread(min(_SAMPLE, n // 8), n).to(flat.device))
        s, p = sample.numel(), k / n
        rank = min(s, math.ceil(p * s + 3 * math.sqrt(s * p * (1 - p)) + 8))
        bound = sample.topk(rank, sorted=False).values.min()
        candidates = _at_least(flat, bound)
        if candidates.numel() >= k:
            values, picked = _largest(flat.index_select(0, candidates), k)
            return values, candidates.index_select(0, picked)
    return _largest(flat, k)


def _largest(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of `k` largest entries of 1-D `flat`, in no particular order. On CPU, when more
    than half are kept, the others are found instead (torch.topk's cost grows with k: keeping 500k of 510k
    entries this way is about 20x faster) and left out."""
    n = flat.numel()
    if flat.device.type != "cpu" or 2 * k <= n:
        return flat.topk(k, sorted=False)
    left_out = flat.topk(n - k, largest=False, sorted=False).indices
    kept = torch.ones(n, dtype=torch.bool).index_fill_(0, left_out, False).nonzero().squeeze(1)
    return flat.index_select(0, kept), kept


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


def group_top(score: torch.Tensor, need: torch.Tensor | int, generator: torch.Generator) -> torch.Tensor:
    """Bool mask of `score`'s shape (groups, M) choosing, in each row g, the `need[g]` (or `need`) largest
    entries; ties are broken by a keyed random order (a score of zeros gives a uniformly random choice)."""
    groups, m = score.shape
    perm = torch.rand(groups, m, generator=generator).argsort(dim=1).to(score.device)
    order = score.gather(1, perm).sort(dim=1, descending=True, stable=True).indices
    need = torch.as_tensor(need, device=score.device).reshape(-1, 1)
    take = torch.arange(m, device=score.device).expand(groups, m) < need
    return torch.zeros(groups, m, dtype=torch.bool, device=score.device).scatter_(1, perm.gather(1, order), take)


def random_mask(shape: torch.Size, k: int, generator: torch.Generator) -> torch.Tensor:
    """Boolean CPU mask of `shape` with exactly `k` positions chosen uniformly at random."""
    mask = torch.zeros(math.prod(shape), dtype=torch.bool)
    mask[torch.randperm(mask.numel(), generator=generator)[:k]] = True
    return mask.view(shape)
