"""Webhooks against real local HTTP receivers: delivered, retried a bounded number of times, never blocking."""

from __future__ import annotations

import json
import time

from mlplatform.notifications import notify, wait_for
from tests.conftest import make_settings
from tests.pipelines.receivers import Receiver


def test_ok_slow_and_failing_webhooks(tmp_path):
    with Receiver(200) as good, Receiver(500) as failing, Receiver(200, delay=3.0) as slow:
        settings = make_settings(
            tmp_path, webhooks=[good.url, failing.url, slow.url], webhook_retries=2, webhook_timeout_seconds=0.4
        )
        t0 = time.perf_counter()
        futures = notify(
            settings,
            "pipeline_failed",
            "Pipeline daily FAILED at step materialize",
            {"pipeline": "daily", "failed_step": "materialize"},
            severity="error",
        )
        assert time.perf_counter() - t0 < 0.2, "notify must return at once"
        deliveries = {d.url: d for d in wait_for(futures, timeout=20)}
    assert len(deliveries) == 3
    ok = next(d for d in deliveries.values() if d.ok)
    assert ok.attempts == 1 and ok.status == 200
    body = good.bodies[0]
    assert body["text"].startswith("Pipeline daily FAILED")  # what Slack/Mattermost/Teams display
    assert body["event"] == "pipeline_failed" and body["fields"]["failed_step"] == "materialize"
    assert {"title": "pipeline", "value": "daily", "short": True} in body["attachments"][0]["fields"]
    assert failing.hits == 3  # 1 + webhook_retries, then given up
    assert slow.hits == 3
    failed = [d for d in deliveries.values() if not d.ok]
    assert len(failed) == 2 and all(d.attempts == 3 for d in failed)
    assert any("HTTP 500" in d.error for d in failed) and any("Timeout" in d.error for d in failed)
    log = [json.loads(line) for line in (make_settings(tmp_path).layout.deliveries_log).read_text().splitlines()]
    assert sorted(r["ok"] for r in log) == [False, False, True]
    assert all("secret" not in r["url"] for r in log), "webhook secrets must not be logged"


def test_client_error_is_not_retried(tmp_path):
    with Receiver(404) as gone:
        settings = make_settings(tmp_path, webhooks=[gone.url], webhook_retries=3, webhook_timeout_seconds=1)
        (delivery,) = wait_for(notify(settings, "promote", "Model promoted"), timeout=10)
    assert not delivery.ok and delivery.attempts == 1 and gone.hits == 1


def test_promotion_audit_record_notifies(tmp_path):
    from mlplatform.audit import record

    with Receiver(200) as good:
        settings = make_settings(tmp_path, webhooks=[good.url], actor="ci-bot")
        record(settings, "promote", "model fraud v3", details={"version": 3}, reason="beats v2 by 0.01 AUC")
        deadline = time.monotonic() + 10
        while not good.bodies and time.monotonic() < deadline:
            time.sleep(0.05)
    assert good.bodies, "a promotion must reach the webhook"
    body = good.bodies[0]
    assert body["event"] == "promote" and "model fraud v3" in body["text"] and "ci-bot" in body["text"]
    assert body["fields"]["version"] == 3


def test_no_webhooks_no_work(tmp_path):
    assert notify(make_settings(tmp_path), "promote", "x") == []
