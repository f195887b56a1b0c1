"""Crash-safe file writes, in one place: whole files replaced atomically, and append-only JSON lines.

``atomic_path`` gives a temporary path beside the target; whatever is written there is fsynced and renamed over
the target when the block ends without error (readers see the old file or the new one, never half), and removed
when it fails. ``append_jsonl`` appends one complete line under an exclusive ``flock`` then ``fsync``: concurrent
writers never interleave, and a crash leaves at worst a torn last line without its newline, which the next writer
terminates and ``read_jsonl`` skips.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; fsynced and renamed into place when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (bytes, or text as UTF-8) atomically."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as indented JSON, atomically."""
    write_atomic(path, json.dumps(obj, indent=2, default=json_default))


def json_default(value: Any) -> Any:
    """JSON for what the platform records: times as ISO-8601 UTC, paths as text, numpy scalars as numbers."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):  # numpy arrays
        return value.tolist()
    return str(value)


def append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    """Append ``obj`` as one line to ``path``: one write under an exclusive flock, then fsync (see module doc)."""
    append_jsonl_many(path, [obj])


def append_jsonl_many(path: Path, objs: list[dict[str, Any]]) -> None:
    """Append each of ``objs`` as a line to ``path`` in one write under an exclusive flock, then one fsync."""
    if not objs:
        return
    data = b"".join(json.dumps(o, default=json_default, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
                    + b"\n" for o in objs)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size and not _ends_with_newline(path, size):
                data = b"\n" + data  # a writer crashed mid-line: close its fragment so ours stays whole
            view = memoryview(data)
            while view:  # a regular-file write is complete in practice; loop in case it is not
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _ends_with_newline(path: Path, size: int) -> bool:
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Every complete record of ``path`` in order, and how many torn fragments were skipped."""
    if not path.exists():
        return [], 0
    records: list[dict[str, Any]] = []
    torn = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):  # the last line is being written (or a writer died): not a record yet
                if raw.strip():
                    torn += 1
                continue
            text = raw.strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
            except (ValueError, UnicodeDecodeError):
                torn += 1
                continue
            if isinstance(obj, dict):
                records.append(obj)
            else:
                torn += 1
    return records, torn
