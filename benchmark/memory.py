"""Whether a run's dense training state fits in memory, checked before anything is allocated.

The harness holds every sparse layer as a dense weight with its gradient and optimizer state, under
either execution (sparse-kernel execution keeps a dense mirror of the weight and computes the dense
gradient on update steps). A model whose dense state does not fit is refused with one line naming
the way to train it: compact sparse layers on sparse kernels (`methods.compact`,
`examples/huge_sparse_mlp.py`), which never hold a dense tensor of a sparse layer.
"""
from __future__ import annotations

import psutil
import torch

from .config import RunConfig
from .data import DATASETS
from .models import build_model

FLOAT_BYTES = 4


def optimizer_slots(cfg: RunConfig) -> int:
    """Tensors the optimizer keeps per parameter: SGD's momentum buffer (none without momentum), AdamW's two moments."""
    return 2 if cfg.optimizer == "adamw" else int(cfg.momentum > 0)


def dense_state_bytes(cfg: RunConfig) -> tuple[int, int]:
    """(parameters, bytes of their weights, gradients and optimizer state in fp32) of the run's model at full
    width, built on the meta device (no memory)."""
    info = DATASETS[cfg.dataset]
    with torch.device("meta"):
        model = build_model(cfg.model, info.num_classes, info.input_shape)
    params = sum(p.numel() for p in model.parameters())
    return params, params * FLOAT_BYTES * (2 + optimizer_slots(cfg))


def distinct_states(configs: list[RunConfig]) -> list[RunConfig]:
    """One config per distinct dense training state among `configs` (model, dataset, optimizer, momentum or not):
    the ones `dense_state_bytes` needs to see."""
    return list({(c.model, c.dataset, c.optimizer, c.momentum > 0): c for c in configs}.values())


def available_bytes(device: torch.device) -> int:
    """Memory a run on `device` can still allocate: free GPU memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def check_fits(cfg: RunConfig, device: torch.device) -> None:
    """ValueError (one line) when the run's dense training state exceeds the memory available on `device`."""
    params, need = dense_state_bytes(cfg)
    have = available_bytes(device)
    if need > have:
        raise ValueError(
            f"model {cfg.model} has {params:,} parameters: its dense training state (weights, gradients, "
            f"{cfg.optimizer} state) needs {need / 2**30:.1f} GiB and {device} has {have / 2**30:.1f} GiB available, "
            "and the harness holds sparse layers densely under either execution; train it with sparse-kernel "
            "execution on compact layers, which hold only the active weights: python examples/huge_sparse_mlp.py")
