"""Settings dataclasses: the base every concern's settings extend, the settings all methods share
(which weights are sparse and how sparse, the drop/grow schedule) and each method's own knobs (one
class per method or concern: SNFS, GMP, SNIP, DSR, DeepR, the execution). They live here, without
torch, so that the command line lists and checks settings without importing it;
`methods.config.SparsityConfig` joins them, and the harness makes a command-line flag of every field.

`Settings.validate()` is the one place settings are checked: every field's type (numbers finite),
then the `checks()` of every settings class the object is made of.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .distributions import (CUSTOM, DISTRIBUTIONS, check_sparsity, explicit_counts, forced_dense, layer_counts,
                            parse_structure, structured_counts)
from .schedules import ANNEALS

Check = tuple[bool, str, str]  # (holds, what must hold, the field to show)


def setting(default: Any, help: str) -> Any:
    """A settings field with the help text of its command-line flag."""
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
class Settings:
    """Base of every settings dataclass: a subclass lists its own range checks in `checks()`."""

    def checks(self) -> list[Check]:
        """(holds, message, field) for this class's own fields (not its bases')."""
        return []

    def validate(self) -> None:
        """Raise a ValueError naming the fix for any field of the wrong type (every number finite) or out of
        range, checking the fields of every settings class this object is made of."""
        check_types(self)
        for cls in reversed(type(self).__mro__):
            own = cls.__dict__.get("checks")
            for ok, message, name in own(self) if own else ():
                if not ok:
                    raise ValueError(f"{message}; got {name}={getattr(self, name)!r}")


@dataclass
class LayerSettings(Settings):
    """Which sparse layers get how many active weights, and the seed of every keyed choice."""

    sparsity: float = setting(0.9, "fraction of zeros over the sparse layers, in [0, 1)")
    distribution: str = setting("uniform", "how sparsity is split across layers: uniform, er, erk, or custom "
                                           "(layer_sparsity gives each layer's)")
    dense_first: bool | None = setting(None, "keep the first sparse layer dense (default: yes under uniform, no "
                                             "under er/erk, the paper's choice)")
    dense_last: bool = setting(False, "keep the last sparse layer dense")
    layer_sparsity: tuple[float, ...] = setting((), "one sparsity per sparse layer, in order, for distribution "
                                                    "custom (e.g. 0.98,0.882,0: the paper's MNIST LeNet-300-100)")
    structure: str = setting("", "N:M structured sparsity (e.g. 2:4): every M consecutive weights along each sparse "
                                 "layer's input dimension keep exactly N (static, snip, set, rigl); it sets every "
                                 "sparse layer's density to N/M in place of sparsity (distribution uniform; the "
                                 "dense_first/dense_last layers stay dense)")
    seed: int = setting(0, "seed of the model's init, the data order and every keyed random choice")

    def nm(self) -> tuple[int, int] | None:
        """(N, M) of `structure`, or None when the masks are unstructured."""
        return parse_structure(self.structure)

    def layer_counts(self, shapes: list[tuple[int, ...]]) -> list[int]:
        """Active-weight count of each sparse layer of these weight shapes: `layer_sparsity`'s under
        distribution custom, N/M of each layer under `structure`, else `sparsity` split by the distribution (with
        the forced-dense layers)."""
        if self.distribution == CUSTOM:
            return explicit_counts(shapes, self.layer_sparsity)
        dense = forced_dense(len(shapes), self.distribution, self.dense_first, self.dense_last)
        if nm := self.nm():
            return structured_counts(shapes, *nm, dense)
        return layer_counts(shapes, self.sparsity, self.distribution, dense)

    def checks(self) -> list[Check]:
        for s in (self.sparsity, *self.layer_sparsity):
            check_sparsity(s)
        self.nm()
        return [
            (self.distribution in (*DISTRIBUTIONS, CUSTOM),
             f"distribution must be one of {', '.join((*DISTRIBUTIONS, CUSTOM))}", "distribution"),
            ((self.distribution == CUSTOM) == bool(self.layer_sparsity),
             "distribution custom goes with layer_sparsity (one sparsity per layer) and only with it", "distribution"),
            (self.seed >= 0, "seed must be >= 0", "seed"),
            (self.nm() is None or self.distribution == "uniform",
             ("structure N:M gives every sparse layer density N/M; use it with distribution uniform "
              "(dense_first/dense_last choose the dense layers)"), "distribution"),
        ]


@dataclass
class DropGrowSettings(Settings):
    """The schedule of the methods that drop and grow connections (SET, SNFS, RigL, DSR)."""

    delta_t: int = setting(100, "steps between mask updates of dynamic methods")
    t_end: float = setting(0.75, "fraction of training after which masks stop changing")
    alpha: float = setting(0.3, "initial fraction of each layer's active weights dropped and regrown per update")
    anneal: str = setting("cosine", "decay of the drop fraction: cosine, constant or linear")
    skip_step_on_update: bool | None = setting(False, "a mask update takes an iteration of its own instead of "
                                                      "that iteration's optimizer step, and the schedules do not "
                                                      "advance on it (the reference RigL code); None: what each "
                                                      "method's reference code does (rigl skips, the others step)")
    update_at_start: bool = setting(False, "drop/grow methods update the masks at step 0 too, as the reference "
                                           "code does (else first at step delta_t)")

    def checks(self) -> list[Check]:
        return [
            (self.anneal in ANNEALS, f"anneal must be one of {', '.join(ANNEALS)}", "anneal"),
            (self.delta_t >= 1, "delta_t must be a positive number of steps", "delta_t"),
            (0 < self.t_end <= 1, "t_end must be a fraction of training in (0, 1]", "t_end"),
            (0 <= self.alpha <= 1, "alpha (the initial drop fraction) must be in [0, 1]", "alpha"),
        ]


@dataclass
class DeepRSettings(Settings):
    """DeepR's L1 penalty and temperature (Bellec et al.'s MNIST script)."""

    deepr_l1: float = setting(1e-5, "DeepR's L1 penalty on active magnitudes (Bellec et al.'s MNIST script)")
    deepr_temperature: float = setting(2.5e-11, "DeepR's temperature T: noise sqrt(2 lr T) per step")

    def checks(self) -> list[Check]:
        return [(self.deepr_l1 >= 0, "deepr_l1 must be >= 0", "deepr_l1"),
                (self.deepr_temperature >= 0, "deepr_temperature must be >= 0", "deepr_temperature")]


@dataclass
class DSRSettings(Settings):
    """DSR's threshold and its adjustment (defaults of Mostafa & Wang's code)."""

    dsr_threshold: float = setting(1e-3, "DSR's initial global pruning threshold H (Mostafa & Wang's code)")
    dsr_prune_fraction: float = setting(0.01, "DSR's weights pruned per update, K, as a fraction of all parameters")
    dsr_tolerance: float = setting(0.1, "DSR doubles / halves H when the pruned count leaves K (1 -+ tolerance)")

    def checks(self) -> list[Check]:
        return [
            (self.dsr_threshold > 0, "dsr_threshold (DSR's initial threshold) must be > 0", "dsr_threshold"),
            (0 < self.dsr_prune_fraction < 1, "dsr_prune_fraction must be in (0, 1)", "dsr_prune_fraction"),
            (0 <= self.dsr_tolerance < 1, "dsr_tolerance must be in [0, 1)", "dsr_tolerance"),
        ]


@dataclass
class SNFSSettings(Settings):
    """SNFS's own knob."""

    snfs_momentum: float = setting(0.9, "momentum of SNFS's moving average of the dense gradient")

    def checks(self) -> list[Check]:
        return [(0 <= self.snfs_momentum < 1, "snfs_momentum must be in [0, 1)", "snfs_momentum")]


@dataclass
class ExecutionSettings(Settings):
    """Which execution trains the sparse layers."""

    execution: str = setting("masked", "how sparse layers compute with their active weights: masked (zeros in "
                                       "dense tensors, dense kernels), sparse (sparse Linear layers on sparse "
                                       "kernels, with compact values and optimizer state) or auto (sparse for the "
                                       "methods it trains faster, masked for the others: dense, small-dense, deepr)")

    def checks(self) -> list[Check]:
        from .execution import AUTO, EXECUTIONS  # the execution classes need torch: imported when checked

        names = [*EXECUTIONS, AUTO]
        return [(self.execution in names, f"execution must be one of {', '.join(names)}", "execution")]


@dataclass
class SnipSettings(Settings):
    """SNIP's ranking scope."""

    snip_scope: str = setting("layer", "SNIP keeps the top saliency per layer (layer, the distribution's counts) "
                                       "or under one global threshold (global, the SNIP paper's)")

    def checks(self) -> list[Check]:
        return [(self.snip_scope in ("layer", "global"), "snip_scope must be 'layer' or 'global'", "snip_scope"),
                (not (self.snip_scope == "global" and getattr(self, "structure", "")),
                 "snip_scope global ranks across layers, which N:M structure does not allow; use snip_scope layer",
                 "snip_scope")]


@dataclass
class GMPSettings(Settings):
    """GMP's pruning schedule."""

    gmp_start: float = setting(0.2, "fraction of training where GMP starts pruning")
    gmp_stop: float = setting(0.75, "fraction of training where GMP reaches the target sparsity")
    gmp_every: int = setting(0, "steps between GMP pruning events (0: about every 1%% of training)")

    def checks(self) -> list[Check]:
        return [
            (0 <= self.gmp_start < self.gmp_stop <= 1, "need 0 <= gmp_start < gmp_stop <= 1 (fractions of training)",
             "gmp_stop"),
            (self.gmp_every >= 0, "gmp_every must be >= 0 (0: about every 1% of training)", "gmp_every"),
        ]
