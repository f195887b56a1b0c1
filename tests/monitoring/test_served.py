"""Consistency and quality over what the real service logged: the small world in the test Redis, a real XGBoost
golden model, the FastAPI app with its lifespan, and its Parquet feature logs.

Requests are stamped after every feature row (the online store is fresh for them, the requirement of the
consistency check); a few are stamped inside the data (back-dated) and must be skipped, not compared.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from mlplatform.errors import ExitCode
from monitoring.consistency import run_consistency
from monitoring.quality import run_quality
from serving.app import create_app
from tests.conftest import make_settings
from tests.monitoring.conftest import buggy_feature_repo, monitor_settings, send

INJECTED = {"log_amount", "amount_vs_mean_7d"}  # what an amount in cents changes in transaction_context


def _service_settings(sw, data_dir, **overrides):
    # the live rows reuse raw transaction ids (so labels join) at arbitrary later times: a replay whose shift is
    # not whole days, which only the stored-rows path can be judged on; consistency over the event logs is pinned
    # by tests/serving/test_replay_consistency.py and tests/serving/test_backdated.py
    overrides.setdefault("serving_stream_features", False)
    return monitor_settings(data_dir, sw.settings, models_dir=sw.models_dir, feature_log_flush_seconds=0.2,
                            serving_latency_budget_ms=0.0, serving_model_refresh_seconds=30, **overrides)


@pytest.fixture(scope="module")
def correct_log(served_world, tmp_path_factory):
    """The correct pipeline served live and back-dated requests; returns (settings, predictions)."""
    settings = _service_settings(served_world, tmp_path_factory.mktemp("served-correct"))
    preds = send(create_app(settings), pd.concat([served_world.live, served_world.backdated]))
    # labels live with the raw data: give this data dir the world's raw folder
    (settings.data_path / "raw").symlink_to(served_world.settings.layout.raw_dir)
    return settings, preds


def test_correct_pipeline_has_zero_mismatches(correct_log, served_world):
    settings, _ = correct_log
    result = run_consistency(settings)
    assert result.requests == len(served_world.live) + len(served_world.backdated)
    assert result.skipped_backdated == len(served_world.backdated)
    assert result.compared == len(served_world.live)
    assert {f.feature for f in result.features} == set(served_world.names)
    assert [(f.feature, f.mismatches, f.examples[:1]) for f in result.features if f.mismatches] == []
    body = json.loads(result.files.json_path.read_text())
    assert body["status"] == "ok" and body["skipped_backdated"] == len(served_world.backdated)


def test_the_terminal_and_the_check_report_name_every_skip(correct_log, served_world, cli):
    from mlplatform.features.pipelines import raw_watermark

    settings, _ = correct_log
    end = raw_watermark(served_world.settings.data_path).isoformat()  # the feature tables' end (a full build)
    shown = cli(settings, ["monitor", "consistency"])
    assert shown.exit_code == 0, shown.output
    assert (f"{len(served_world.live)} of {len(served_world.live) + len(served_world.backdated)} requests compared; "
            f"{len(served_world.backdated)} back-dated skipped, 0 after the offline data's end ({end}) skipped"
            ) in shown.output
    cli(settings, ["monitor", "check"])
    report = json.loads(sorted(settings.layout.reports_dir.glob("check-*.json"))[-1].read_text())
    (part,) = [p for p in report["parts"] if p["name"] == "consistency"]
    assert f"0 after the offline data's end ({end}) skipped" in part["headline"]


def test_serving_only_cents_bug_is_caught_and_named(served_world, tmp_path, cli):
    from mlplatform.features.definitions import apply_definitions

    repo = buggy_feature_repo(tmp_path)
    # the buggy definitions go to a registry of their own, used by the service only; the offline side is untouched
    buggy = make_settings(served_world.settings.data_path, redis_addr=served_world.settings.redis_addr,
                          registry=tmp_path / "buggy-registry.db", feature_repo=repo)
    apply_definitions(buggy)
    serve = _service_settings(served_world, tmp_path / "served-buggy", registry=buggy.layout.registry_path,
                              feature_repo=repo)
    send(create_app(serve), served_world.live)
    # monitoring reads the correct definitions (and the same model registry)
    monitor = monitor_settings(tmp_path / "served-buggy", served_world.settings, models_dir=served_world.models_dir)
    result = run_consistency(monitor)
    wrong = {f.feature for f in result.features if f.mismatches}
    assert wrong == INJECTED
    by_name = {f.feature: f for f in result.features}
    assert by_name["log_amount"].rate == 1.0  # log1p(100 a) != log1p(a) for every amount > 0
    example = by_name["log_amount"].examples[0]
    assert example["served"] > example["offline"]

    check = cli(monitor, ["monitor", "check"])
    assert check.exit_code == ExitCode.BREACH, check.output
    breach_lines = [line for line in check.output.splitlines() if "consistency:" in line]
    assert {name for name in INJECTED if any(name in line for line in breach_lines)} == INJECTED
    assert not any(n in line for line in breach_lines for n in set(served_world.names) - INJECTED
                   if n not in ("amount_mean_7d",))  # amount_mean_7d is a substring of amount_vs_mean_7d's line


def test_quality_equals_scikit_learn_on_the_same_joined_rows(correct_log, served_world):
    settings, preds = correct_log
    result = run_quality(settings)
    # independent join: every logged file, plain pandas, the raw labels
    logs = pd.concat([pd.read_parquet(f) for f in settings.layout.feature_logs_dir.glob("date=*/*.parquet")])
    logs = logs[logs["served"]]
    labels = pd.read_parquet(served_world.settings.layout.raw_dir / "labels")
    labels["transaction_id"] = labels["transaction_id"].astype(str)
    joined = logs.merge(labels[["transaction_id", "is_fraud"]], on="transaction_id")
    assert result.served == len(logs) == len(preds)
    assert result.labeled == len(joined)
    assert len(logs) - len(joined) >= 20  # the 20 sent without an arrived label (and any back-dated ones) drop out
    (row,) = result.by_version
    y, p = joined["is_fraud"].to_numpy(), joined["prediction"].to_numpy()
    assert row["model_version"] == served_world.version
    assert row["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert row["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert row["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert row["training"]["roc_auc"] == 0.9  # the registered training-time metric, shown beside the live one
    # per daily window of transaction time
    joined["day"] = pd.to_datetime(joined["transaction_ts"], unit="s", utc=True).dt.floor("1D")
    expected = {}
    for day, g in joined.groupby("day"):
        if g["is_fraud"].nunique() == 2:
            expected[day.isoformat()] = roc_auc_score(g["is_fraud"], g["prediction"])
    got = {w["window_start"]: w["roc_auc"] for w in result.by_window if w["roc_auc"] is not None}
    assert len(expected) >= 2
    assert got == pytest.approx(expected, abs=1e-12)
    # serving figures: counts and latency straight from the log
    (serving,) = result.serving
    assert serving["served"] == len(logs)
    assert serving["latency_ms_max"] == pytest.approx(logs["latency_ms"].max())
    assert serving["latency_ms_min"] == pytest.approx(logs["latency_ms"].min())
    assert serving["registered_at"] is not None
