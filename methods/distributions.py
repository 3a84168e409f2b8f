"""How a global sparsity S is split across layers: exact active-weight counts per layer.

Spec section 2. Every function returns integer counts, never densities to sample from,
so a mask built from them has exactly the intended number of nonzeros.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

DISTRIBUTIONS = ("uniform", "er", "erk")
CUSTOM = "custom"  # one sparsity per layer given explicitly (`explicit_counts`)


def check_sparsity(sparsity: float) -> float:
    """Return `sparsity` as a float if it lies in [0, 1), else raise a ValueError naming the fix."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(
            f"sparsity must be a number in [0, 1) (the fraction of zeros), got {sparsity!r}; "
            "pass e.g. sparsity=0.9 for 90% zeros"
        )
    return float(sparsity)


def raw_density(shape: Sequence[int], distribution: str) -> float:
    """Unnormalised density of a weight of `shape` (out, in, *kernel) under ER or ERK."""
    n_out, n_in, *kernel = shape
    if distribution == "er":
        return (n_in + n_out) / (n_in * n_out)
    return (n_in + n_out + sum(kernel)) / math.prod(shape)


def layer_counts(
    shapes: Sequence[Sequence[int]],
    sparsity: float,
    distribution: str = "uniform",
    dense: Sequence[int] = (),
) -> list[int]:
    """Active-weight count of each layer for a global `sparsity`.

    `shapes` are the weight shapes (out, in, *kernel) of the sparse layers, `dense` the
    indices of layers kept fully dense. Uniform gives every other layer
    `round((1 - sparsity) * N_l)`. ER/ERK scale densities by `eps * raw_density`, with
    `eps` solved so the total equals `round((1 - sparsity) * N)` over all layers (dense ones
    charged to the budget); layers that would exceed density 1 are made dense and `eps` is
    solved again. Rounding uses largest remainders, so the ER/ERK total is exact.
    """
    sparsity = check_sparsity(sparsity)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"unknown distribution {distribution!r}; known distributions: {', '.join(DISTRIBUTIONS)}"
        )
    sizes = [math.prod(s) for s in shapes]
    dense = set(dense)
    if distribution == "uniform":
        return [n if i in dense else round((1 - sparsity) * n) for i, n in enumerate(sizes)]

    target = round((1 - sparsity) * sum(sizes))
    raw = [raw_density(s, distribution) for s in shapes]
    while True:
        pool = [i for i in range(len(sizes)) if i not in dense]
        budget = target - sum(sizes[i] for i in dense)
        scale = sum(raw[i] * sizes[i] for i in pool)
        eps = budget / scale if scale else 0.0
        overflow = {i for i in pool if eps * raw[i] > 1}
        if not overflow:
            break
        dense |= overflow
    ideal = {i: eps * raw[i] * sizes[i] for i in pool}
    counts = [sizes[i] if i in dense else math.floor(ideal[i]) for i in range(len(sizes))]
    remainder = max(0, target - sum(counts))
    by_fraction = sorted(pool, key=lambda i: (-(ideal[i] - counts[i]), i))
    for i in by_fraction[:remainder]:
        counts[i] += 1
    return counts


def explicit_counts(shapes: Sequence[Sequence[int]], layer_sparsity: Sequence[float]) -> list[int]:
    """Active-weight count of each layer from one sparsity per layer: `round((1 - s_l) * N_l)`
    (the paper's MNIST LeNet-300-100 uses 0.98, 0.882 and a dense output layer)."""
    if len(layer_sparsity) != len(shapes):
        raise ValueError(f"layer_sparsity has {len(layer_sparsity)} value(s) but the model has {len(shapes)} sparse "
                         f"layer(s); pass one sparsity per layer, in order (e.g. 0.98,0.882,0 for LeNet-300-100)")
    return [round((1 - check_sparsity(s)) * math.prod(shape)) for s, shape in zip(layer_sparsity, shapes)]


def parse_structure(structure: str) -> tuple[int, int] | None:
    """(N, M) of an N:M structure such as "2:4" (None for ""); ValueError naming the fix unless 1 <= N < M."""
    if not structure:
        return None
    n, sep, m = structure.partition(":")
    if not (sep and n.isdigit() and m.isdigit() and 1 <= int(n) < int(m)):
        raise ValueError(f"structure must be N:M with 1 <= N < M (e.g. 2:4: 2 of every 4 consecutive weights "
                         f"along a layer's input dimension), got {structure!r}")
    return int(n), int(m)


def structured_counts(shapes: Sequence[Sequence[int]], n: int, m: int, dense: Sequence[int] = ()) -> list[int]:
    """Active-weight count of each layer under N:M structure: `N_l * n / m`, the `dense` layers full. Every
    structured layer's input size (in x kernel: the row of its weight matrix) must be a multiple of m."""
    counts = []
    for i, shape in enumerate(shapes):
        size, fan_in = math.prod(shape), math.prod(shape[1:])
        if i not in dense and fan_in % m:
            raise ValueError(f"structure {n}:{m} needs every sparse layer's input size to be a multiple of {m}, but "
                             f"sparse layer {i} (weight {'x'.join(map(str, shape))}) has {fan_in}; choose an M that "
                             "divides it, or keep that layer dense (dense_first / dense_last)")
        counts.append(size if i in dense else size // m * n)
    return counts


def forced_dense(n_layers: int, distribution: str, dense_first: bool | None, dense_last: bool) -> list[int]:
    """Indices of the layers kept dense: the first one when asked (by default under uniform only,
    the paper's choice) and the last one when asked."""
    dense = set()
    if dense_first if dense_first is not None else distribution == "uniform":
        dense.add(0)
    if dense_last:
        dense.add(n_layers - 1)
    return sorted(dense)
