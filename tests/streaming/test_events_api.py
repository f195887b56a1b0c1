"""POST /v1/events: posted events reach the customers' logs through `stream run`, exactly (oracle: the events
posted); one event out of bounds refuses the whole call and appends nothing (XLEN); Redis down is a 503 in the
error shape; /metrics counts accepted events and shows the group's lag and pending as XINFO GROUPS reads them."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.conftest import make_settings
from tests.streaming.conftest import ADMIN, GROUP, STREAM, expected_logs, group_info, make_events, stored_logs

KEY = ADMIN["X-API-Key"]


@pytest.fixture()
def service(applied_world, redis_addr, tmp_path):
    """Factory: the service (no model needed for events) on this run's first database, or on ``redis_addr``."""

    def start(addr: str = redis_addr, **overrides):
        settings = make_settings(tmp_path / "svc", registry=applied_world.layout.registry_path, redis_addr=addr,
                                 serving_api_key=KEY, serving_redis_timeout_seconds=0.3, **overrides)
        return TestClient(create_app(settings))

    return start


def _post(client, events, **kw):
    return client.post("/v1/events", json={"events": [e.body() for e in events]}, headers=ADMIN, **kw)


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_posted_events_reach_the_logs_exactly(service, cli, redis_db, redis_addr, tmp_path):
    events = make_events(250, customers=12, seed=21)
    with service() as client:
        r = _post(client, events)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["accepted"] == 250 and body["stream"] == STREAM and len(body["ids"]) == 250
        assert [i.encode() for i in body["ids"]] == [e[0] for e in redis_db.xrange(STREAM)]
        assert _post(client, events[:100]).status_code == 200  # sent again (a client retry): changes nothing
        assert _metric(client.get("/metrics").text, "mlplatform_events_accepted_total") == 350
    res = cli(make_settings(tmp_path / "c", redis_addr=redis_addr), ["stream", "run", "--quiet", "--idle-exit", "1"])
    assert res.exit_code == 0, res.output
    logs = stored_logs(redis_db)
    assert logs == expected_logs(events)
    assert sum(redis_db.zcard(k) for k in logs) == 250


def test_one_bad_event_refuses_the_whole_call_and_appends_nothing(service, redis_db):
    good = make_events(5, customers=3, seed=22)
    now = int(time.time())
    with service(serving_max_amount=1000.0, serving_max_clock_skew=60.0) as client:
        assert _post(client, good[:1]).status_code == 200
        before = redis_db.xlen(STREAM)
        cases = [
            ({**good[3].body(), "amount": 5000.0}, "events[3].amount"),
            ({**good[3].body(), "transaction_ts": now + 3600}, "events[3].transaction_ts"),
            ({**good[3].body(), "transaction_ts": now - 500 * 86_400}, "events[3].transaction_ts"),
            ({**good[3].body(), "customer_id": 2**63}, "events[3].customer_id"),
            ({k: v for k, v in good[3].body().items() if k != "transaction_id"}, "events[3].transaction_id"),
            ({**good[3].body(), "amount": "NaN"}, "events[3].amount"),
        ]
        for bad, field in cases:
            r = client.post("/v1/events", json={"events": [*(e.body() for e in good[:3]), bad, good[4].body()]},
                            headers=ADMIN)
            assert r.status_code == 422, r.text
            fields = [f["field"] for f in r.json()["fields"]]
            assert any(field in f for f in fields), (field, r.json())
            assert redis_db.xlen(STREAM) == before, "a refused call appended events"
        too_many = [{**good[0].body(), "transaction_id": f"x{i}"} for i in range(1001)]
        r = client.post("/v1/events", json={"events": too_many}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.events"
        assert client.post("/v1/events", json={"events": [good[0].body()]}).status_code == 401
        assert redis_db.xlen(STREAM) == before


def test_redis_down_is_a_503_in_the_error_shape(service):
    with service("127.0.0.1:1") as client:
        t0 = time.monotonic()
        r = _post(client, make_events(3, customers=2, seed=23))
        assert r.status_code == 503 and time.monotonic() - t0 < 3
        body = r.json()
        assert body["error"] == "OnlineStoreUnavailable" and "Redis" in body["detail"] and body["fields"] == []
        assert r.headers["retry-after"] == "1" and "Traceback" not in r.text
        assert _metric(client.get("/metrics").text, "mlplatform_events_accepted_total") == 0


def test_metrics_show_the_groups_lag_and_pending_as_xinfo_reads_them(service, redis_db):
    events = make_events(40, customers=4, seed=24)
    with service() as client:
        text = client.get("/metrics").text
        assert "# TYPE mlplatform_stream_lag gauge" in text
        assert _metric(text, "mlplatform_stream_lag") is None, "no group yet: the gauge is unset"
        redis_db.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        assert _post(client, events).status_code == 200
        redis_db.xreadgroup(GROUP, "somebody", {STREAM: ">"}, count=15)  # read, not acknowledged
        info = group_info(redis_db)
        assert (info["lag"], info["pending"]) == (25, 15)
        deadline = time.monotonic() + 5
        while True:
            text = client.get("/metrics").text
            seen = (_metric(text, "mlplatform_stream_lag"), _metric(text, "mlplatform_stream_pending"))
            if seen == (info["lag"], info["pending"]) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert seen == (25, 15)
