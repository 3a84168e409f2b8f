"""A run is trained by one process at a time: it is claimed by an exclusive lock in its folder.

The lock is an `flock` on `<run folder>/claim.lock`, held from before the run's row is looked up
until after its row is appended. The operating system drops it when its process dies, so the claim
of a killed run is taken over at once (the run resumes from its checkpoint) and never deadlocks.
The lock file is removed on release; a process that locked a file that was removed meanwhile sees
that the path now names another file (or none) and tries again.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

CLAIM_FILE = "claim.lock"


@contextlib.contextmanager
def claim(run_dir: Path, wait: bool = False) -> Iterator[bool]:
    """Hold the claim of `run_dir` inside the block: yields True when this process holds it, False
    when another process does (with `wait=True` it waits for the claim instead). The run folder, and
    the folders above it that the claim created, are removed if still empty on release (nothing was
    trained)."""
    created = [run_dir, *(d for d in run_dir.parents if not d.exists())]  # deepest first
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM_FILE
    while True:
        f = open(path, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.close()
            yield False  # the holder created the folder and will remove the file: nothing to clean up
            return
        if _same_file(f, path):
            break
        f.close()  # the holder released and removed it between our open and lock: try again
    try:
        yield True
    finally:
        os.unlink(path)
        f.close()
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds if nothing was written in it


def _same_file(f, path: Path) -> bool:
    try:
        return os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
