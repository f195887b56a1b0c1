"""Train/serve skew against the generator's documented drift, and `monitor check` exit codes.

Oracle: ``mlplatform.data.world`` documents which features the drifted period shifts and which it leaves alone.
The serving side is what a fresh online store would have served for each transaction at its own time
(``get_historical_features`` at t - 1 µs), written with serving's own feature-log writer.
"""

from __future__ import annotations

import json

import pandas as pd

from mlplatform.contracts.feature_log import write_feature_log
from mlplatform.data import world
from mlplatform.errors import ExitCode
from monitoring.skew import run_skew
from tests.monitoring.conftest import DRIFT_WORLD, log_rows, monitor_settings, score


def _served(dw, frame: pd.DataFrame, tmp_path, name: str):
    settings = monitor_settings(tmp_path / name, dw.settings)
    ts = pd.to_datetime(frame["event_timestamp"], utc=True) + pd.Timedelta(microseconds=1)
    scores = score(dw.booster, frame, dw.names)
    write_feature_log(settings.layout.feature_logs_dir, log_rows(frame, dw.names, dw.version, scores, ts))
    return settings


def test_drifted_features_are_flagged_and_undrifted_are_not(drift_world, tmp_path):
    settings = _served(drift_world, drift_world.drifted, tmp_path, "drifted")
    result = run_skew(settings)
    flagged = set(result.drifted)
    assert set(world.DRIFTED_FEATURES) <= flagged
    assert not flagged & set(world.UNDRIFTED_FEATURES)
    assert result.model_version == drift_world.version
    assert result.current_rows == len(drift_world.drifted)
    # the machine-readable summary and the page a person opens
    summary = json.loads(result.files.json_path.read_text())
    assert summary["kind"] == "skew" and summary["status"] == "breach"
    assert {f["feature"] for f in summary["features"] if f["drifted"]} == flagged
    assert result.files.html_path.stat().st_size > 10_000
    assert result.files.html_path.name in (result.files.json_path.parent / "index.html").read_text()


def test_distinct_merchants_really_shift_in_the_drifted_period(drift_world):
    """Independent of the monitoring code: distinct merchants per customer-day, from raw transactions."""
    tx = pd.read_parquet(drift_world.settings.layout.raw_dir / "transactions")
    tx["day"] = tx["event_timestamp"].dt.floor("D")
    per_day = tx.groupby(["customer_id", "day"])["merchant_id"].agg(["nunique", "size"]).reset_index()
    busy = per_day[per_day["size"] >= 3]  # same number of transactions: only the merchant choice differs
    drifted = busy["day"] >= pd.Timestamp(DRIFT_WORLD.base_end)
    share_base = (busy.loc[~drifted, "nunique"] / busy.loc[~drifted, "size"]).mean()
    share_drift = (busy.loc[drifted, "nunique"] / busy.loc[drifted, "size"]).mean()
    assert share_drift > share_base + 0.05
    assert "distinct_merchants_24h" in world.DRIFTED_FEATURES  # as world.py documents


def test_no_drift_flags_nothing(drift_world, tmp_path):
    settings = _served(drift_world, drift_world.same, tmp_path, "same")
    result = run_skew(settings)
    assert result.drifted == [], [(f.feature, f.score) for f in result.features if f.drifted]
    assert len(result.features) == len(drift_world.names)


def test_check_exit_codes_breach_and_no_breach(drift_world, tmp_path, cli):
    drifted = _served(drift_world, drift_world.drifted, tmp_path, "check-drifted")
    breach = cli(drifted, ["monitor", "check"])
    assert breach.exit_code == ExitCode.BREACH, breach.output
    assert "breach" in breach.output and "skew:" in breach.output
    for name in world.DRIFTED_FEATURES:
        assert name in breach.output

    same = _served(drift_world, drift_world.same, tmp_path, "check-same")
    ok = cli(same, ["monitor", "check"])
    assert ok.exit_code == 0, ok.output
    check = json.loads(sorted((same.data_path / "reports").glob("check-*.json"))[-1].read_text())
    parts = {p["name"]: p["status"] for p in check["parts"]}
    # the logged rows are historical transactions: the online store had newer rows, so none can be compared
    assert parts == {"skew": "ok", "consistency": "too few rows", "quality": "too few labels"}


def test_retrain_request_is_what_trainings_hook_reads(drift_world, tmp_path):
    from monitoring.check import CheckResult, PartOutcome, request_retrain
    from training.retrain import check_retrain

    settings = monitor_settings(tmp_path / "retrain", drift_world.settings)
    (settings.data_path / "raw").symlink_to(drift_world.settings.layout.raw_dir)  # training counts new labels there
    before = check_retrain(settings, as_of=pd.Timestamp(DRIFT_WORLD.drift_end))
    assert "monitoring asked" not in before.reason
    result = CheckResult([PartOutcome("skew", "breach", "", ["skew: 7/16 features drifted"])], {"start": "", "end": ""})
    out = request_retrain(settings, result, launch=False)
    assert out["request"].endswith("monitoring/retrain_request.json")
    # training reads the request; by default it still needs new labels since the golden's training set (none here:
    # this golden records no as-of, so it counts from its registration, after every label of the world)
    waiting = check_retrain(settings, as_of=pd.Timestamp(DRIFT_WORLD.drift_end))
    assert not waiting.retrain and waiting.request_pending and waiting.new_labels == 0
    assert "monitoring asked" in waiting.reason and "7/16" in waiting.reason
    assert "but only 0 new labels" in waiting.reason
    any_request = settings.model_copy(update={"retrain_min_new_labels_on_request": 0})  # 0: every request retrains
    decision = check_retrain(any_request, as_of=pd.Timestamp(DRIFT_WORLD.drift_end))
    assert decision.retrain and "monitoring asked for it" in decision.reason and "7/16" in decision.reason
