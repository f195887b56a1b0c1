"""Steps for pipeline tests: each leaves a trace in <data_dir>/trace.jsonl so tests see what ran, and fails as told."""

from __future__ import annotations

import json
import time

from mlplatform.errors import InvalidInputError, OnlineStoreUnavailable


def _trace(settings, name: str) -> int:
    path = settings.data_path / "trace.jsonl"
    with open(path, "a") as fh:
        fh.write(json.dumps({"step": name, "t": time.time()}) + "\n")
    return sum(1 for line in path.read_text().splitlines() if json.loads(line)["step"] == name)


def ok(settings, name: str = "ok") -> dict:
    """Always succeeds."""
    return {"calls": _trace(settings, name)}


def flaky(settings, name: str = "flaky", failures: int = 2) -> dict:
    """Redis 'unreachable' for the first ``failures`` calls, then fine."""
    calls = _trace(settings, name)
    if calls <= failures:
        raise OnlineStoreUnavailable(f"Redis does not answer (simulated, call {calls})")
    return {"calls": calls}


def broken_until_fixed(settings, name: str = "broken") -> dict:
    """A permanent failure until the file <data_dir>/fixed exists (someone fixed the cause)."""
    calls = _trace(settings, name)
    if not (settings.data_path / "fixed").exists():
        raise InvalidInputError("bad input (simulated): fix it, then resume")
    return {"calls": calls}


def slow(settings, seconds: float = 3.0, name: str = "slow") -> dict:
    """Takes a while (to hold the lock)."""
    _trace(settings, name)
    (settings.data_path / "slow-started").touch()
    time.sleep(seconds)
    return {}
