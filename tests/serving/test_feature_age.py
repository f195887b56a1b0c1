"""The age of the newest data behind each served customer_activity: in the answer's feature-log row and on /metrics.

Oracle: the marks planted by hand in Redis (the event logs' newest applied event, ``<project>:to`` of the coverage
hash; the view's materialized watermark end) and the request times sent: age = max(0, t − mark) in seconds.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from mlplatform.contracts.activity_log import COVERAGE_KEY, coverage_fields
from mlplatform.contracts.redis_layout import MATERIALIZED_KEY, Watermark, materialized_field
from mlplatform.features.pipelines import raw_watermark
from serving.app import create_app
from tests.serving.conftest import set_aliases

US = 1_000_000
VIEW = "customer_activity"


def _iso(t_us: int) -> str:
    return pd.Timestamp(t_us, unit="us", tz="UTC").isoformat()


def _age_histogram(metrics_text: str) -> tuple[float, float]:
    """(count, sum) of mlplatform_feature_age_seconds for customer_activity (0, 0 when absent)."""
    def one(suffix: str) -> float:
        found = re.search(rf'^mlplatform_feature_age_seconds_{suffix}\{{view="{VIEW}"\}} (\S+)$', metrics_text, re.M)
        return float(found.group(1)) if found else 0.0
    return one("count"), one("sum")


@pytest.fixture()
def planted(online_world, online_store, redis_dbs):
    """Plant marks in the module's Redis (``plant(logs_to_us, materialized_end_us)``); the originals come back after."""
    client = redis_dbs.client(0)
    to_field = coverage_fields(online_store.project)[2]
    mark_field = materialized_field(online_store.project, VIEW)
    saved = client.hget(COVERAGE_KEY, to_field), client.hget(MATERIALIZED_KEY, mark_field)

    def plant(logs_to_us: int, materialized_end_us: int) -> None:
        client.hset(COVERAGE_KEY, to_field, str(logs_to_us))
        end = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=materialized_end_us)
        client.hset(MATERIALIZED_KEY, mark_field, Watermark(end, 100).encode())

    yield plant
    for key, name, value in ((COVERAGE_KEY, to_field, saved[0]), (MATERIALIZED_KEY, mark_field, saved[1])):
        if value is None:
            client.hdel(key, name)
        else:
            client.hset(key, name, value)


@pytest.mark.parametrize("stream_features", [True, False], ids=["event logs", "stored rows"])
def test_each_served_row_records_its_age_and_metrics_count_it(serving_settings, trained_models, online_world,
                                                              planted, stream_features):
    from fastapi.testclient import TestClient

    from mlplatform.contracts.feature_log import ACTIVITY_FROM_LOGS, ACTIVITY_FROM_ROWS, read_feature_logs
    from tests.oracles import read_raw

    settings = serving_settings(serving_stream_features=stream_features)
    set_aliases(settings, golden=trained_models.versions[0])
    raw = read_raw(online_world.data_path)
    until_us = raw_watermark(online_world.data_path).value // 1000
    logs_to = until_us - 3 * 3600 * US - 250_000  # the logs' newest applied event: 3 h 0.25 s before the end
    materialized_end = until_us - 2 * 86_400 * US  # the view's rows landed up to two days before the end
    planted(logs_to, materialized_end)
    mark = logs_to if stream_features else materialized_end
    tx = raw["transactions"].drop_duplicates("customer_id").head(8)
    offsets = [-7 * 86_400 * US, -1, 0, 1, 12_345, 90 * US, 3600 * US + 7, 26 * 3600 * US]  # around the mark
    times = [mark + d for d in offsets]
    bodies = [{"customer_id": int(r.customer_id), "merchant_id": int(r.merchant_id), "amount": 10.0 + i,
               "timestamp": _iso(t)} for i, (r, t) in enumerate(zip(tx.itertuples(), times, strict=True))]
    expected = {b["timestamp"]: max(0, t - mark) / US for b, t in zip(bodies, times, strict=True)}

    with TestClient(create_app(settings)) as client:
        before = _age_histogram(client.get("/metrics").text)
        response = client.post("/v1/predict/batch", json={"transactions": bodies[:5]})
        assert response.status_code == 200, response.text
        answers = response.json()["predictions"]
        for body in bodies[5:]:
            response = client.post("/v1/predict", json=body)
            assert response.status_code == 200, response.text
            answers.append(response.json())
        after = _age_histogram(client.get("/metrics").text)

    assert after[0] - before[0] == len(bodies)
    assert after[1] - before[1] == pytest.approx(sum(expected.values()), abs=1e-6)
    logs = read_feature_logs(settings.layout.feature_logs_dir)
    logged = logs[logs["served"]].set_index("request_id")
    source = ACTIVITY_FROM_LOGS if stream_features else ACTIVITY_FROM_ROWS
    for answer, body in zip(answers, bodies, strict=True):
        row = logged.loc[answer["request_id"]]
        assert row["activity_source"] == source
        assert row["activity_age_s"] == pytest.approx(expected[body["timestamp"]], abs=1e-9), body
    assert sorted(expected.values())[:3] == [0.0, 0.0, 0.0]  # back-dated and exact: no age


def test_without_a_mark_the_age_is_unknown_and_not_counted(serving_settings, trained_models, online_world,
                                                            online_store, redis_dbs, planted):
    """A Redis without the view's watermark (wiped, or never materialized): the age is null, /metrics unchanged."""
    from fastapi.testclient import TestClient

    from mlplatform.contracts.feature_log import read_feature_logs
    from tests.oracles import read_raw

    settings = serving_settings(serving_stream_features=False)
    set_aliases(settings, golden=trained_models.versions[0])
    until_us = raw_watermark(online_world.data_path).value // 1000
    planted(until_us, until_us)
    redis_dbs.client(0).hdel(MATERIALIZED_KEY, materialized_field(online_store.project, VIEW))
    r = read_raw(online_world.data_path)["transactions"].iloc[0]
    body = {"customer_id": int(r.customer_id), "merchant_id": int(r.merchant_id), "amount": 5.0,
            "timestamp": _iso(until_us + 60 * US)}
    with TestClient(create_app(settings)) as client:
        before = _age_histogram(client.get("/metrics").text)
        response = client.post("/v1/predict", json=body)
        assert response.status_code == 200, response.text
        after = _age_histogram(client.get("/metrics").text)
    assert after == before
    logs = read_feature_logs(settings.layout.feature_logs_dir)
    assert logs.loc[logs["request_id"] == response.json()["request_id"], "activity_age_s"].isna().all()
