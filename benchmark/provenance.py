"""Which code produced a run: the git commit, and a fingerprint of the code that trains.

The commit says where to look; the fingerprint decides whether a finished run is still what the
current code would compute. It hashes the source of `benchmark/train.py` and of every project
module it imports, transitively (methods/, data, models, FLOP counting...), the C kernels compiled
for them, and the torch version, so a change to the command line, the presets, summaries or plots
leaves it as it is.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import subprocess
from pathlib import Path
from typing import Any

import torch

from .files import RERUN, read_json

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("benchmark", "methods")
TRAINING_ENTRY = REPO / "benchmark" / "train.py"


def git_commit() -> str:
    """The commit of the code that runs (with `+dirty` if tracked files other than the committed
    results under results/, which sweeps append to, have uncommitted changes), or `unknown`."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _module_file(name: str) -> Path | None:
    """The source file of project module `name` ("methods.base", "benchmark"), or None if it is not ours."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path) -> set[Path]:
    """Project source files `path` imports (at any depth of its code, relative imports resolved)."""
    package = ".".join(path.parent.relative_to(REPO).parts)  # what a relative import of level 1 names
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *filter(None, [base])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for name in names:
            for i in range(1, len(name.split(".")) + 1):  # a package's __init__ runs before its modules
                file = _module_file(".".join(name.split(".")[:i]))
                if file is not None:
                    found.add(file)
    return found


def training_sources() -> list[Path]:
    """`benchmark/train.py`, every project file it imports, transitively, and the C sources compiled for
    those packages (`csrc/*.c`: the sparse-kernel execution's kernels), sorted."""
    seen, todo = set(), [TRAINING_ENTRY]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(_imports(path) - seen)
    compiled = {c for folder in {p.parent for p in seen} for c in (folder / "csrc").glob("*.c")}
    return sorted(seen | compiled)


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """12 hex digits of the SHA-256 of the training sources (path and content) and the torch version."""
    digest = hashlib.sha256(f"torch {torch.__version__}\n".encode())
    for path in training_sources():
        digest.update(f"{path.relative_to(REPO).as_posix()}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class StaleRun(ValueError):
    """A run folder that other training code wrote (`provenance.code_fingerprint` differs)."""


def recorded_code(record: dict[str, Any]) -> str:
    """The code fingerprint a config.json or metrics.json records (`unrecorded` before fingerprints)."""
    return record.get("code") or "unrecorded"


def resumed_code(run_dir: Path) -> str | None:
    """The code fingerprint that started the interrupted run in `run_dir` (None without a checkpoint
    and its config.json: nothing to resume, or nothing to tell who wrote it)."""
    record = run_dir / "config.json"
    if not ((run_dir / "checkpoint.pt").exists() and record.exists()):
        return None
    return recorded_code(read_json(record, RERUN))
