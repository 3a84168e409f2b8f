"""Data-parallel training under torchrun: the process group, batch sharding and replica checks.

One run is trained by all ranks together: every rank draws the same keyed global batch and
trains on its slice, DistributedDataParallel all-reduces the gradients during backward, and the
methods see the reduced dense gradient before masking it. Keyed randomness and identical inputs
keep the masks identical on every rank without ever broadcasting them; `check` verifies it.
"""
from __future__ import annotations

import atexit
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .config import check_device


@dataclass(frozen=True)
class Replicas:
    """This process's place in the data-parallel group (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only the main rank writes logs, checkpoints and CSV rows."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch."""
        return batch.chunk(self.world_size)[self.rank] if self.parallel else batch

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over ranks, in place."""
        if self.parallel:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if `flag` is true on any rank (so all ranks stop at the same step)."""
        if not self.parallel:
            return flag
        return bool(self.all_sum(torch.tensor([float(flag)], device=device)).item())

    def barrier(self) -> None:
        if self.parallel:
            dist.barrier()

    def check(self, label: str, tensors: list[torch.Tensor]) -> list[str]:
        """Fingerprints of `tensors` on every rank; raises RuntimeError if any rank's differ."""
        mine = fingerprint(tensors)
        if not self.parallel:
            return [mine]
        everyone: list[str] = [""] * self.world_size
        dist.all_gather_object(everyone, mine)
        if len(set(everyone)) > 1:
            raise RuntimeError(f"replicas diverged: {label} differ across ranks ({', '.join(e[:12] for e in everyone)}); "
                               "this is a bug: please report it with the run's config.json")
        return everyone


def fingerprint(tensors: list[torch.Tensor]) -> str:
    """SHA-256 of the exact bytes of `tensors`."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def setup(device_name: str) -> Replicas:
    """Join torchrun's process group if this process was started by torchrun, else a single replica.

    The backend is NCCL for CUDA runs and gloo for CPU runs.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Replicas()
    replicas = Replicas(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(replicas.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(_leave)
    return replicas


def _leave() -> None:
    """Leave the process group before the interpreter exits: a group torn down with the interpreter can abort
    the process ("terminate called without an active exception") while its threads still run."""
    if dist.is_initialized():
        dist.destroy_process_group()


def current() -> Replicas:
    """The replica group this process belongs to (set up by `setup`)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Replicas()
    return Replicas(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available (this process's GPU under torchrun), else CPU; anything else must be
    a device name `check_device` knows, and available here (ValueError naming the fix otherwise)."""
    check_device(name)
    if name == "auto":
        return torch.device(f"cuda:{current().local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available; use --device cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} asked for but this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s); use --device cuda:0 .. cuda:{torch.cuda.device_count() - 1} or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for but MPS is not available; use --device cpu or auto")
    return device
