"""Fast tests of monitoring's pure parts: metrics against scikit-learn, windows, report files and the index."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from mlplatform.errors import InvalidInputError
from monitoring import quality
from monitoring.logs import LogWindow, read_served, resolve_window
from monitoring.reports import list_reports, reports_path, write_report
from tests.conftest import make_settings


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(500) < 0.1).astype(int)
    p = np.round(np.clip(rng.random(500) * 0.5 + y * 0.3, 0, 1), 2)  # rounded: many ties
    assert quality.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert quality.average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert quality.brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    ece = quality.expected_calibration_error(y, p)
    bins = np.minimum((p * 10).astype(int), 9)
    expected = sum((bins == b).sum() * abs(p[bins == b].mean() - y[bins == b].mean()) for b in np.unique(bins)) / 500
    assert ece == pytest.approx(expected, abs=1e-12)


def test_single_class_has_no_auc():
    assert quality.roc_auc(np.zeros(5), np.linspace(0, 1, 5)) is None
    assert quality.average_precision(np.zeros(5), np.linspace(0, 1, 5)) is None


def test_window_defaults_and_bad_order(tmp_path):
    settings = make_settings(tmp_path, monitoring_window_days=2)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    w = resolve_window(settings, now=now)
    assert (w.start, w.end) == (now - timedelta(days=2), now)
    with pytest.raises(InvalidInputError):
        resolve_window(settings, since=now, until=now - timedelta(hours=1))
    with pytest.raises(InvalidInputError):
        quality.check_period("fortnightly")


def test_empty_window_is_a_clear_error(tmp_path):
    from mlplatform.contracts.feature_log import write_feature_log

    settings = make_settings(tmp_path)
    row = {"request_id": "r1", "logged_at": datetime.now(UTC), "served": True, "model_name": "fraud",
           "model_version": 1, "features": {"x": 1.0}}
    write_feature_log(settings.layout.feature_logs_dir, [row])
    window = LogWindow(datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 2, tzinfo=UTC))
    with pytest.raises(Exception, match="no served requests were logged in 2020-01-01"):
        read_served(settings, window)
    now = datetime.now(UTC)
    assert len(read_served(settings, LogWindow(now - timedelta(hours=1), now + timedelta(minutes=1)))) == 1


def test_check_on_empty_log_window_exits_3_with_message(tmp_path, cli):
    settings = make_settings(tmp_path)
    result = cli(settings, ["monitor", "check"])
    assert result.exit_code == 3, result.output
    assert "no served requests were logged" in result.output
    assert "Traceback" not in result.output
    bad = cli(settings, ["monitor", "check", "--since", "yesterday-ish"])
    assert bad.exit_code == 2 and "cannot read" in bad.output


def test_reports_are_listed_newest_first_and_served_read_only(tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from serving.routes.reports import reports_router

    settings = make_settings(tmp_path)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    write_report(settings, "skew", {"status": "ok", "headline": "alpha-report"}, "<html>a</html>", when=t0)
    write_report(settings, "check", {"status": "breach", "headline": "beta-report"}, "<html>b</html>",
                 when=t0 + timedelta(hours=1))
    folder = reports_path(settings)
    assert [r["headline"] for r in list_reports(folder)] == ["beta-report", "alpha-report"]
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temp files
    summary = json.loads(next(folder.glob("check-*.json")).read_text())
    assert summary["kind"] == "check" and summary["html"].endswith(".html")
    index = (folder / "index.html").read_text()
    assert index.index("beta-report") < index.index("alpha-report")

    app = FastAPI()
    app.include_router(reports_router(settings))
    client = TestClient(app)
    page = client.get("/reports/")
    assert page.status_code == 200 and page.text.index("beta-report") < page.text.index("alpha-report")
    assert client.get(f"/reports/{summary['html']}").text == "<html>b</html>"
    assert client.get("/reports/..%2Fsecret.txt").status_code == 404
    assert client.get("/reports/notes.txt").status_code == 404


def test_join_keeps_only_arrived_labels():
    served = pd.DataFrame({"transaction_id": ["1", "2", None, "4"], "prediction": [0.1, 0.9, 0.5, 0.2]})
    labels = pd.DataFrame({"transaction_id": [1, 2, 3], "is_fraud": [0, 1, 1],
                           "label_timestamp": pd.to_datetime(["2026-10-01"] * 3, utc=True)})
    joined = quality.join_labels(served, labels)
    assert joined["transaction_id"].tolist() == ["1", "2"]
    assert joined["is_fraud"].tolist() == [0, 1]


def test_a_replayed_rows_label_arrives_on_the_replays_clock():
    """A transaction of Oct 1 replayed 10 days later (served Oct 11) whose label arrived Oct 4 on the original
    clock: on the replay's clock it arrives Oct 14, so it joins at Oct 14 and not at Oct 13; a row served at its own
    time sees its Oct 4 label from Oct 4 on."""
    happened = pd.Timestamp("2026-10-01 12:00:00", tz="UTC")
    day = pd.Timedelta(days=1)
    served = pd.DataFrame({"transaction_id": ["1", "2"], "prediction": [0.3, 0.7],
                           "transaction_ts": [int((happened + 10 * day).timestamp()), int(happened.timestamp())]})
    labels = pd.DataFrame({"transaction_id": [1, 2], "is_fraud": [1, 0],
                           "transaction_timestamp": [happened, happened],
                           "label_timestamp": [happened + 3 * day, happened + 3 * day]})

    def joined_at(when):
        return quality.join_labels(served, labels, when.to_pydatetime())["transaction_id"].tolist()

    assert joined_at(happened + 3 * day - pd.Timedelta(seconds=1)) == []
    assert joined_at(happened + 3 * day) == ["2"]
    assert joined_at(happened + 13 * day - pd.Timedelta(seconds=1)) == ["2"]
    assert joined_at(happened + 13 * day) == ["1", "2"]
    assert quality.join_labels(served, labels)["transaction_id"].tolist() == ["1", "2"]  # no clock: all arrived
