"""SparsityConfig: the settings of every method in one dataclass (the harness's flags), joined from the
settings all methods share and each method's own (all in `methods.settings`, importable without torch)."""
from __future__ import annotations

from dataclasses import dataclass

from .settings import (
    DeepRSettings,
    DropGrowSettings,
    DSRSettings,
    ExecutionSettings,
    GMPSettings,
    LayerSettings,
    SNFSSettings,
    SnipSettings,
)


@dataclass
class SparsityConfig(ExecutionSettings, DeepRSettings, DSRSettings, SnipSettings, GMPSettings, SNFSSettings,
                     DropGrowSettings, LayerSettings):
    """Hyper-parameters of all methods (each field is also a CLI flag of the harness); `validate()`
    checks every field, each by the checks of the class it comes from."""
