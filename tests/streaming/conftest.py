"""Streaming fixtures and oracles: generated transaction events, the event logs a set of events must give (computed
here from the contract's documented layout, not with the code under test), and the logs Redis holds."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import pytest

from tests.serving.conftest import trained_models  # noqa: F401 - the registered boosters /v1/predict needs

PROJECT = "fraud"  # feature_repo/feature_store.yaml's project: the namespace of the event-log keys
LOG_PATTERN = f"mlplatform:activity:{PROJECT}:*"
STREAM = "mlplatform:transactions"  # the events_stream default
GROUP = "mlplatform-activity"
ADMIN = {"X-API-Key": "stream-key"}


@dataclass(frozen=True)
class Ev:
    """One transaction event as a test posts it."""

    transaction_id: str
    customer_id: int
    merchant_id: int
    amount: float
    ts: int  # unix seconds

    def body(self) -> dict:
        """Its POST /v1/events item."""
        return {"transaction_id": self.transaction_id, "customer_id": self.customer_id,
                "merchant_id": self.merchant_id, "amount": self.amount, "transaction_ts": self.ts}

    def fields(self) -> dict:
        """Its stream entry as the contract documents it (XADD fields)."""
        return {"transaction_id": self.transaction_id, "customer_id": str(self.customer_id),
                "merchant_id": str(self.merchant_id), "amount": repr(float(self.amount)),
                "ts_us": str(self.ts * 1_000_000)}


def make_events(n: int, customers: int, seed: int, prefix: str = "t", span_s: int = 5 * 86_400) -> list[Ev]:
    """``n`` events of ``customers`` customers over the ``span_s`` seconds before now, distinct ids."""
    rng = random.Random(seed)
    now = int(time.time())
    return [Ev(f"{prefix}{seed}-{i}", rng.randrange(1, customers + 1) * 7919, rng.randrange(10_000, 10_050),
               round(rng.uniform(0.5, 900.0), 2), now - rng.randrange(60, span_s)) for i in range(n)]


def expected_logs(events: list[Ev]) -> dict[bytes, dict[bytes, float]]:
    """The oracle: per log key, member ``transaction_id|merchant_id|amount`` -> event time in µs."""
    out: dict[bytes, dict[bytes, float]] = {}
    for e in events:
        key = f"mlplatform:activity:{PROJECT}:{e.customer_id}".encode()
        out.setdefault(key, {})[f"{e.transaction_id}|{e.merchant_id}|{float(e.amount)!r}".encode()] = float(
            e.ts * 1_000_000)
    return out


def stored_logs(client) -> dict[bytes, dict[bytes, float]]:
    """Every event log in the database, as Redis holds it (ZRANGE with scores)."""
    return {key: dict(client.zrange(key, 0, -1, withscores=True)) for key in client.scan_iter(LOG_PATTERN, 1000)}


def group_info(client) -> dict:
    """The consumer group's XINFO GROUPS entry, read directly (str keys)."""
    (info,) = [g for g in client.xinfo_groups(STREAM) if g["name"] in (GROUP, GROUP.encode())]
    return info


def xadd_all(client, events: list[Ev], chunk: int = 1000) -> None:
    """Put events on the stream directly (as the service would), in pipelined chunks."""
    for i in range(0, len(events), chunk):
        pipe = client.pipeline(transaction=False)
        for e in events[i:i + chunk]:
            pipe.xadd(STREAM, e.fields())
        pipe.execute()


@pytest.fixture()
def stream_settings(tmp_path, redis_addr):
    """Settings on this run's first Redis database (the project's feature repo: project ``fraud``)."""
    from tests.conftest import make_settings

    def build(**overrides):
        return make_settings(tmp_path / "data", redis_addr=redis_addr, **overrides)

    return build
