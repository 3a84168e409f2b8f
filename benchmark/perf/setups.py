"""What perf times each model with: the preset it is trained by, its input shape and a training batch;
and the measuring helpers the parts share."""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch

from ..data import DATASETS
from ..models import WRN_PATTERN
from ..presets import PRESETS

TIMERS = {"wall": time.perf_counter, "cpu": time.process_time}
MAX_BATCH = 128  # timing batches stay small enough for a CPU (the ImageNet preset's is 4096)


@dataclass(frozen=True)
class ModelSetup:
    preset: str
    input_shape: tuple[int, int, int]
    batch_size: int


def model_setup(name: str) -> ModelSetup:
    """The first preset that trains model `name` (any wrn-D-K counts as the WRN preset's), its dataset's
    input shape and the preset's batch (at most MAX_BATCH)."""
    for preset, settings in PRESETS.items():
        model = settings["model"]
        if model == name or (WRN_PATTERN.fullmatch(name) and WRN_PATTERN.fullmatch(model)):
            return ModelSetup(preset, DATASETS[settings["dataset"]].input_shape, min(settings["batch_size"], MAX_BATCH))
    known = sorted({s["model"] for s in PRESETS.values()} - {m for m in (s["model"] for s in PRESETS.values())
                                                            if WRN_PATTERN.fullmatch(m)})
    raise ValueError(f"perf knows models {', '.join(known)} and wrn-D-K (those of the presets); got {name!r}")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def nbytes(tensors) -> int:
    total = 0
    for t in tensors:
        if t.layout == torch.strided:
            total += t.numel() * t.element_size()
        elif t.layout == torch.sparse_csr:
            total += sum(x.numel() * x.element_size() for x in (t.crow_indices(), t.col_indices(), t.values()))
    return total


_clock = time.perf_counter


def set_timer(name: str) -> None:
    """What `clock()` reads: wall time (`wall`) or the process's CPU time (`cpu`, all its threads)."""
    global _clock
    _clock = TIMERS[name]


def clock() -> float:
    return _clock()
