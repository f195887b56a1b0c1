"""Every answer is counted in mlplatform_requests_total by endpoint (the route's template) and status: the alert on
the 5xx share (infra/observability) rests on it. Oracle: the statuses the test's own requests got back."""

from __future__ import annotations

from collections import Counter

import httpx
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app, endpoint_label
from tests.serving.conftest import make_txns, set_aliases, txn_body


def test_each_answer_is_counted_by_endpoint_and_status(serving_settings, trained_models, online_world, live_server):
    settings = serving_settings()
    set_aliases(settings, golden=trained_models.versions[0])
    txns = make_txns(online_world, 3, seed=31, when=trained_models.scoring_time)
    seen: Counter = Counter()
    with live_server(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        calls = [("POST", "/v1/predict", {"json": txn_body(r)}) for r in txns.itertuples()]
        calls += [("POST", "/v1/predict", {"json": {"customer_id": 1}}),
                  ("POST", "/v1/features", {"json": txn_body(next(txns.itertuples()))}),
                  ("POST", "/v1/push", {"json": {"rows": [{}]}, "headers": {"X-API-Key": "wrong"}}),
                  ("POST", "/v1/models/999/promote", {"json": {}, "headers": {"X-API-Key": "test-key"}}),
                  ("GET", "/reports/nothing-here.json", {})]
        for method, path, kwargs in calls:
            seen[(endpoint_label(path), str(client.request(method, path, **kwargs).status_code))] += 1
        text = client.get("/metrics").text
    counted = {(s.labels["endpoint"], s.labels["status"]): s.value for f in text_string_to_metric_families(text)
               if f.name == "mlplatform_requests" for s in f.samples if s.name == "mlplatform_requests_total"}
    assert {k: v for k, v in counted.items() if k[0] != "/metrics"} == dict(seen)
    assert {("/v1/predict", "200"), ("/v1/predict", "422"), ("/v1/push", "401"),
            ("/v1/models/{version}/promote", "404"), ("/reports", "404")} <= set(seen)
