"""`mlplatform monitor check --retrain` end to end: served logs that breach, enough new labels, and the command files
the request, trains a new version through the registered `train.if_needed` step and lets `promotion.gate` decide.

World: a private copy of the drift world's data with a fresh model registry. The golden is a real booster trained on
base-period features, registered with its training set as of the end of the base period; the served logs are the
drifted period's features (as serving logs them). Oracles: the number of labels that arrived after the golden's
as-of, counted here with plain pandas from the raw label files up to the world's end (from its WorldSpec); the
request threshold is set to exactly that number; versions counted in the registry; the audit log read back.
"""

from __future__ import annotations

import shutil
import uuid

import pandas as pd
import pytest
import yaml

from mlplatform.audit import list_records
from mlplatform.contracts.feature_log import write_feature_log
from mlplatform.errors import ExitCode
from mlplatform.models.registry import ModelRegistry
from tests.conftest import make_settings
from tests.monitoring.conftest import DRIFT_WORLD, log_rows, score

PROMOTION_FAMILY = ("promote", "force_promote", "promote_refused")
SERVED = 800  # drifted requests logged: plenty for a clear skew verdict, few enough to check quickly


def _arrived(raw_dir, after: pd.Timestamp, until: pd.Timestamp) -> int:
    """Labels whose arrival time is in (after, until], from the raw files."""
    labels = pd.concat([pd.read_parquet(f) for f in sorted((raw_dir / "labels").glob("*.parquet"))])
    ts = pd.to_datetime(labels["label_timestamp"], utc=True)
    return int(((ts > after) & (ts <= until)).sum())


@pytest.fixture()
def breached_world(drift_world, tmp_path):
    """The drift world's data in a folder of its own, a fresh registry with a golden as of the base period's end,
    and the drifted period's features in the feature log."""
    from mlplatform.features.service import feature_signature
    from mlplatform.stores import open_feature_store

    base = drift_world.settings
    data = tmp_path / "world"
    for part in ("raw", "features", "oracle"):  # what training reads; Feast's registry (sources) stays base's
        shutil.copytree(base.data_path / part, data / part)
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({"num_boost_round": 80, "early_stopping_rounds": 20}))
    golden_as_of = pd.Timestamp(DRIFT_WORLD.base_end)
    world_end = pd.Timestamp(DRIFT_WORLD.drift_end)
    new_labels = _arrived(data / "raw", golden_as_of, world_end)
    assert new_labels >= 100, "the drifted week brings labels"
    settings = make_settings(
        data, models_dir=tmp_path / "models", registry=base.layout.registry_path, feature_repo=base.feature_repo,
        training_config=config, monitoring_min_rows=SERVED, monitoring_sample_rows=SERVED,
        retrain_min_new_labels=10**9,  # only the monitoring request's rule can decide here
        retrain_min_new_labels_on_request=new_labels,  # exactly what arrived: enough, with nothing to spare
    )
    store = open_feature_store(settings)
    types = [t for _, t in feature_signature(store, settings.feature_service)]
    training = tmp_path / f"training-{uuid.uuid4().hex[:6]}.parquet"
    drift_world.reference.assign(split="train").to_parquet(training)
    registry = ModelRegistry(settings)
    golden = registry.register(drift_world.booster, feature_names=drift_world.names, feature_types=types,
                               feature_service=settings.feature_service, metrics={}, params={"rounds": 20},
                               lineage={"as_of": golden_as_of.isoformat(), "fingerprint": "retrain-e2e"},
                               training_set_path=training)
    registry.set_alias("golden", golden.version)
    drifted = drift_world.drifted.sample(SERVED, random_state=0).sort_values("event_timestamp")
    ts = pd.to_datetime(drifted["event_timestamp"], utc=True) + pd.Timedelta(microseconds=1)
    write_feature_log(settings.layout.feature_logs_dir,
                      log_rows(drifted, drift_world.names, golden.version,
                               score(drift_world.booster, drifted, drift_world.names), ts))
    return settings, golden.version, new_labels, world_end


def test_check_retrain_files_the_request_trains_and_lets_the_gate_decide(breached_world, cli):
    import json

    settings, golden, new_labels, world_end = breached_world
    assert [v.version for v in ModelRegistry(settings).list_versions()] == [golden]

    res = cli(settings, ["monitor", "check", "--retrain"])
    assert res.exit_code == ExitCode.BREACH, res.output
    text = " ".join(res.output.split())
    assert "breach:" in text and "skew" in text

    registry = ModelRegistry(settings)
    versions = [v.version for v in registry.list_versions()]
    assert len(versions) == 2 and versions[0] == golden, versions
    new = versions[1]
    assert f"retraining requested ({settings.layout.retrain_request}): new version v{new}" in text
    info = registry.get(new)
    assert info.lineage["trigger"].startswith("if-needed: monitoring asked for it")
    assert pd.Timestamp(info.lineage["as_of"]) == world_end, "trained on every label known at the watermark"
    assert not settings.layout.retrain_request.exists(), "the answered request is marked done"

    report = json.loads(sorted(settings.layout.reports_dir.glob("check-*.json"))[-1].read_text())
    trained = report["retrain"]["train"]
    assert trained["trained"] is True and trained["version"] == new
    assert trained["rule"] == "monitoring request" and trained["new_labels"] == new_labels
    assert report["retrain"]["new_version"] == new

    # the audit log: breach, trigger, the training run, then exactly one gate decision about the new version
    records = list_records(settings)
    actions = [r.action for r in records]
    assert actions.count("monitor_breach") == 1 and actions.count("retrain_trigger") == 1
    trains = [r for r in records if r.action == "train"]
    assert [r.details["version"] for r in trains] == [new]
    decisions = [r for r in records if r.action in PROMOTION_FAMILY]
    assert len(decisions) == 1, [(r.action, r.details) for r in decisions]
    decision = decisions[0]
    assert decision.details["version"] == new and decision.channel == "monitoring"
    assert decision.action != "force_promote", "monitoring never forces"
    order = [actions.index("monitor_breach"), actions.index("retrain_trigger"), records.index(trains[0]),
             records.index(decision)]
    assert order == sorted(order), actions
    # the gate's verdict is what the registry shows
    if decision.action == "promote":
        assert registry.golden().version == new and registry.previous_golden().version == golden
        assert report["retrain"]["promoted"] is True and f"new version v{new} promoted" in text
    else:
        assert registry.golden().version == golden
        assert report["retrain"]["promoted"] is False and "refused by the promotion gate" in text
