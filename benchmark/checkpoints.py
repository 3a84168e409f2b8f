"""Checkpoints: written atomically, read as tensors and plain values only (`weights_only=True`), so
that opening someone else's results folder never runs code from it."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import replace_atomic


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message says how to recover."""


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temporary file: a crash never leaves half a checkpoint, a failure no temporary file."""
    replace_atomic(path, lambda tmp: torch.save(obj, tmp))


def checkpoint_file(path: str | Path) -> Path:
    """A run folder's checkpoint.pt, or the file itself."""
    path = Path(path)
    path = path / "checkpoint.pt" if path.is_dir() else path
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; pass a run folder or its checkpoint.pt")
    return path


def load_checkpoint(path: Path, device: torch.device) -> Any:
    """Read a checkpoint of tensors and plain values (`weights_only=True`: loading never runs code from the
    file), or raise CheckpointError naming the file and the fix."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # any unpickling or zip error means the file is unusable
        text = str(err).split("WeightsUnpickler error:")[-1]  # torch's cause, after its general advice
        code = re.search(r"GLOBAL (\S+)", text)
        if code:
            raise CheckpointError(
                f"checkpoint {path} holds Python objects ({code[1]}) that loading would run as code, not only "
                "tensors and plain values; it was not written by sparsebench and is refused: delete it to restart "
                "that run from step 0") from None
        cause = next((line.strip() for line in text.splitlines() if line.strip()), "")[:120]
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(err).__name__}{': ' * bool(cause)}{cause}); "
                              "delete it to restart that run from step 0") from None


def _tensor_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(torch.is_tensor(v) for v in value.values())


def load_run_state(source: str | Path, device: torch.device) -> dict[str, Any]:
    """The checkpoint of a run folder (or the checkpoint.pt itself), checked to hold model weights and
    masks; CheckpointError naming the file and the fix otherwise."""
    path = checkpoint_file(source)
    state = load_checkpoint(path, device)
    sparsifier = state.get("sparsifier") if isinstance(state, dict) else None
    if not (isinstance(sparsifier, dict) and _tensor_dict(state.get("model")) and _tensor_dict(sparsifier.get("masks"))):
        raise CheckpointError(f"checkpoint {path} holds no model weights and masks; pass a run folder written by "
                              "`python -m benchmark run` (or its checkpoint.pt)")
    return state


def load_weights(model: nn.Module, weights: Any, path: Path) -> None:
    """`model.load_state_dict(weights)`, or CheckpointError naming checkpoint `path` when they do not fit."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError) as err:
        cause = str(err).strip().splitlines()[-1].strip()[:150]  # after torch's "Error(s) in loading ..." line
        raise CheckpointError(f"checkpoint {path} does not fit the model of the run's settings ({cause}); pass a run "
                              "of the same model, dataset and width") from None


def rewind_file(dense_run: Path) -> Path:
    """A finished dense run's `rewind.pt`, or CheckpointError saying how to get one."""
    path = dense_run / "rewind.pt"
    if not path.exists():
        raise CheckpointError(f"dense run {dense_run} has no rewind.pt (it predates lottery runs); "
                              "delete that folder to train it again")
    return path
