"""Inter-process file locks: serialize writes to the model registry and promotions across processes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from mlplatform.errors import ConflictError

_held = threading.local()  # locks this thread already holds: taking one again is a no-op (re-entrant)


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 60.0, what: str = "the model registry") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the block; ConflictError if not obtained within ``timeout``."""
    key = str(path.absolute())
    held: set[str] = getattr(_held, "paths", None) or set()
    _held.paths = held
    if key in held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConflictError(
                        f"another process holds {what} ({path}) for more than {timeout:.0f}s; try again later"
                    ) from None
                time.sleep(0.05)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
