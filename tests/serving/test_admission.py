"""Admission control: at ``serving_max_in_flight`` requests in flight, one more is answered 503 with Retry-After at
once (not queued), counted on /metrics; health and metrics endpoints are never shed."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from serving.app import AdmissionControl, admission_limit, create_app
from tests.conftest import make_settings
from tests.serving.conftest import set_aliases


def _client(limit: int, gate: asyncio.Event) -> httpx.AsyncClient:
    """An in-process client of AdmissionControl around a route that answers only once the test opens ``gate``."""

    async def gated(scope, receive, send) -> None:
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"done"})

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=AdmissionControl(gated, limit)), base_url="http://svc")


def test_saturated_requests_are_shed_at_once_and_health_is_exempt():
    async def scenario():
        gate = asyncio.Event()
        async with _client(2, gate) as client:
            held = [asyncio.create_task(client.post("/v1/predict")) for _ in range(2)]
            await asyncio.sleep(0.05)  # both are in flight, waiting at the gate
            t0 = time.perf_counter()
            shed = await client.post("/v1/predict")
            took = time.perf_counter() - t0
            assert shed.status_code == 503 and shed.headers["retry-after"] == "1", shed.text
            assert shed.json()["error"] == "Overloaded" and shed.json()["fields"] == []
            assert took < 0.5  # answered at once, not after the held requests
            assert not any(t.done() for t in held)
            health = asyncio.create_task(client.get("/healthz"))  # exempt: admitted even now (it waits at the gate)
            await asyncio.sleep(0.05)
            gate.set()
            assert [r.status_code for r in await asyncio.gather(*held, health)] == [200, 200, 200]
            assert (await client.post("/v1/predict")).status_code == 200  # capacity is back

    asyncio.run(scenario())


def test_the_default_limit_is_derived_from_the_latency_budget(tmp_path):
    """Unset: one admitted request per 6 ms of budget (at least 1); no budget, no limit; a set value wins."""
    cases = [({}, 4), ({"serving_latency_budget_ms": 12.0}, 2), ({"serving_latency_budget_ms": 3.0}, 1),
             ({"serving_latency_budget_ms": 0.0}, 0), ({"serving_max_in_flight": 64}, 64),
             ({"serving_max_in_flight": 0, "serving_latency_budget_ms": 25.0}, 0)]
    for overrides, limit in cases:
        assert admission_limit(make_settings(tmp_path, **overrides)) == limit, overrides


def test_no_limit_sheds_nothing():
    async def scenario():
        gate = asyncio.Event()
        async with _client(0, gate) as client:
            held = [asyncio.create_task(client.post("/v1/predict")) for _ in range(50)]
            await asyncio.sleep(0.05)
            gate.set()
            assert {r.status_code for r in await asyncio.gather(*held)} == {200}

    asyncio.run(scenario())


def _start_slow_request(port: int, body: bytes) -> socket.socket:
    """POST /v1/predict whose body is only half sent: the request is in flight until the rest arrives."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def _finish(sock: socket.socket, body: bytes) -> tuple[int, dict]:
    sock.sendall(body[len(body) // 2:])
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0])
    while len(rest) < length:
        rest += sock.recv(65536)
    sock.close()
    return int(head.split()[1]), json.loads(rest)


@pytest.mark.timeout(120)
def test_limit_one_sheds_the_second_request_of_a_live_service(serving_settings, trained_models, live_server):
    settings = serving_settings(serving_max_in_flight=1)
    set_aliases(settings, golden=trained_models.versions[0])
    txn = {"customer_id": 1, "merchant_id": 10001, "amount": 12.5,
           "transaction_ts": int(trained_models.scoring_time.timestamp())}
    body = json.dumps(txn).encode()
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        assert client.post("/v1/predict", json=txn).status_code == 200  # one at a time is served
        slow = _start_slow_request(srv.port, body)
        time.sleep(0.3)  # the slow request reaches the app and waits for the rest of its body
        t0 = time.perf_counter()
        second = client.post("/v1/predict", json=txn)
        took = time.perf_counter() - t0
        assert second.status_code == 503, second.text
        assert second.headers["retry-after"] == "1" and second.json()["error"] == "Overloaded"
        assert "MLPLATFORM_SERVING_MAX_IN_FLIGHT" in second.json()["detail"]
        assert took < 0.5, took  # at once: the slow request is still in flight
        assert client.get("/healthz").status_code == 200  # exempt
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "mlplatform_shed_requests_total 1.0" in metrics.text
        status, answer = _finish(slow, body)
        assert status == 200 and 0 <= answer["score"] <= 1
        assert client.post("/v1/predict", json=txn).status_code == 200  # capacity is back
