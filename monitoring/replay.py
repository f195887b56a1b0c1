"""Replay a period of raw transactions through the running service (the demo's "a drifted period goes live").

Timestamps are moved forward by whole days so that the period ends at (or just before) now: hour of day and the
spacing of transactions are kept, and the requests are live in the sense the consistency check needs (stamped
after the data the online store was materialized from, as long as the gap since the data's end is at least the
period's length; requests that still fall inside the data are reported by the check as back-dated and skipped).
Transaction ids are kept, so late labels join the logged predictions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from mlplatform.errors import DataNotFoundError, InvalidInputError, MLPlatformError
from mlplatform.settings import Settings

DAY_SECONDS = 86_400


@dataclass(frozen=True)
class ReplayResult:
    """What was sent."""

    period: str
    sent: int
    failed: int
    shift_days: int
    seconds: float


def shift_days(period_end: datetime, now: datetime) -> int:
    """Whole days that move a period ending at ``period_end`` to end at or before ``now`` (never backwards)."""
    return max(0, int((now - period_end).total_seconds() // DAY_SECONDS))


def period_transactions(settings: Settings, period: str | None) -> tuple[str, datetime, pd.DataFrame]:
    """(name, end, transactions) of a generated period; default the latest (the drifted one after --drift)."""
    from mlplatform.data.generator import read_manifest

    manifest = read_manifest(settings.data_path)
    periods = manifest["periods"]
    chosen = periods[-1] if period is None else next((p for p in periods if p["name"] == period), None)
    if chosen is None:
        names = ", ".join(p["name"] for p in periods)
        raise InvalidInputError(f"no period {period!r} in {settings.data_path} (generated: {names})")
    path = settings.layout.raw_dir / "transactions" / f"{chosen['name']}.parquet"
    if not path.is_file():
        raise DataNotFoundError(f"{path} is missing: run `mlplatform data generate` again")
    return chosen["name"], datetime.fromisoformat(chosen["end"]), pd.read_parquet(path)


def replay_bodies(tx: pd.DataFrame, days: int) -> list[dict]:
    """Request bodies for POST /v1/predict/batch, timestamps moved forward by ``days``."""
    ts = pd.to_datetime(tx["event_timestamp"], utc=True) + pd.Timedelta(days=days)
    return [
        {"customer_id": int(c), "merchant_id": int(m), "amount": float(a), "transaction_ts": int(t.timestamp()),
         "transaction_id": str(i)}
        for c, m, a, t, i in zip(tx["customer_id"], tx["merchant_id"], tx["amount"], ts, tx["transaction_id"],
                                 strict=True)
    ]


def replay(settings: Settings, url: str | None = None, period: str | None = None, limit: int = 5000,
           now: datetime | None = None, seed: int = 0, on_progress=None) -> ReplayResult:
    """Send (a uniform sample of at most ``limit``) transactions of a period to the service, in batches."""
    import httpx

    t0 = time.perf_counter()
    name, end, tx = period_transactions(settings, period)
    if limit and len(tx) > limit:
        tx = tx.iloc[np.sort(np.random.default_rng(seed).choice(len(tx), limit, replace=False))]
    days = shift_days(end, now or datetime.now(UTC))
    bodies = replay_bodies(tx, days)
    base = url or f"http://{settings.serving_host}:{settings.serving_port}"
    size = settings.serving_max_batch
    sent = failed = 0
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for i in range(0, len(bodies), size):
                chunk = bodies[i:i + size]
                response = client.post("/v1/predict/batch", json={"transactions": chunk})
                if response.status_code == 200:
                    sent += len(chunk)
                else:
                    failed += len(chunk)
                if on_progress:
                    on_progress(sent + failed, len(bodies))
    except httpx.HTTPError as exc:
        raise MLPlatformError(
            f"the service at {base} did not answer ({exc}); start it with `mlplatform serve`"
        ) from exc
    return ReplayResult(name, sent, failed, days, time.perf_counter() - t0)
