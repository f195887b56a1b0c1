"""Webhooks fired by real state changes: a gated promotion, a second promotion, a refused one (which notifies
nobody), a rollback, and a monitoring breach found by `run_check` on drifted served logs.

Two real HTTP receivers (tests/pipelines/receivers.py) listen on every webhook; each must get exactly the expected
events, in order, carrying the version numbers the registry shows. The registry is a real one with a model trained
by `train_and_register` on the small world (tests/training/conftest.py `trained`); the audit log, and so the
notifications, belong to this test's own data folder.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pandas as pd

from mlplatform.contracts.feature_log import write_feature_log
from mlplatform.models.promotion import promote_model, rollback
from mlplatform.models.registry import ModelRegistry
from tests.conftest import make_settings
from tests.monitoring.conftest import log_rows
from tests.pipelines.receivers import Receiver
from tests.training.conftest import empty_registry_db, trained  # noqa: F401 - fixtures used below


def _wait_bodies(receivers: list[Receiver], n: int, timeout: float = 20.0) -> None:
    """Until every receiver holds ``n`` bodies (webhooks are delivered in the background)."""
    deadline = time.monotonic() + timeout
    while any(len(r.bodies) < n for r in receivers):
        assert time.monotonic() < deadline, [len(r.bodies) for r in receivers]
        time.sleep(0.02)


def _events(receiver: Receiver) -> list[tuple]:
    return [(b["event"], b["fields"].get("version"), b["fields"].get("golden_before"), b["fields"].get("golden_after"))
            for b in receiver.bodies]


def _register_copy(source: ModelRegistry, version: int, target: ModelRegistry | None = None) -> int:
    """Register ``source``'s ``version`` (booster, signature, training set) again, in ``target`` (default: the same
    registry), as a new version: a retrain on the same data. Returns the new version."""
    info = source.get(version)
    mv = (target or source).register(
        source.load_booster(version), feature_names=info.feature_names, feature_types=info.feature_types,
        feature_service=info.feature_service, metrics=info.metrics, params=info.params, lineage=info.lineage,
        training_set_path=source.training_set_path(version))
    return mv.version


def test_promotions_and_a_rollback_notify_with_their_versions(trained, tmp_path):  # noqa: F811
    trained_settings, _, outcome = trained
    v1 = outcome.version.version
    with Receiver(200) as first, Receiver(200) as second:
        receivers = [first, second]
        settings = make_settings(tmp_path / "ops", models_dir=trained_settings.layout.models_path,
                                 webhooks=[first.url, second.url], actor="release-bot")
        registry = ModelRegistry(settings)
        assert registry.golden() is None

        result = promote_model(settings, v1, reason="first model")
        assert result.action == "promoted" and (result.golden_before, result.golden_after) == (None, v1)
        _wait_bodies(receivers, 1)

        v2 = _register_copy(registry, v1)  # the same model again: it ties the golden (delta 0.0000)
        tie_passes = settings.model_copy(update={"promotion_margin": 0.0})
        result = promote_model(tie_passes, v2, reason="retrained")
        assert result.action == "promoted" and (result.golden_before, result.golden_after) == (v1, v2)
        _wait_bodies(receivers, 2)

        v3 = _register_copy(registry, v1)
        refused = promote_model(settings, v3, reason="no better")  # the default margin: a tie is not enough
        assert refused.action == "refused" and registry.golden().version == v2

        result = rollback(settings, reason="bad release")
        assert result.action == "rolled_back" and (result.golden_before, result.golden_after) == (v2, v1)
        assert registry.golden().version == v1
        _wait_bodies(receivers, 3)
        time.sleep(0.5)  # anything else would have arrived by now

    expected = [("promote", v1, None, v1), ("promote", v2, v1, v2), ("rollback", v1, v2, v1)]
    for receiver in receivers:
        assert _events(receiver) == expected, receiver.bodies
        texts = [b["text"] for b in receiver.bodies]
        assert texts[0].startswith(f"Model promoted: model {settings.model_name} v{v1}") and "release-bot" in texts[0]
        assert texts[2].startswith(f"Model rolled back: model {settings.model_name} v{v1}")
        assert all(b["fields"]["channel"] == "cli" for b in receiver.bodies)
    # the refusal is in the audit log, not on the webhooks
    from mlplatform.audit import list_records

    actions = [(r.action, r.details.get("version")) for r in list_records(settings, action="promote")]
    assert actions == [("promote", v1), ("promote", v2), ("promote_refused", v3), ("rollback", v1)]


def _drifted_logs(frame: pd.DataFrame, names: list[str], version: int) -> list[dict]:
    """Serving's feature-log rows for ``frame`` after the world drifted: amounts x3, every merchant foreign."""
    drifted = frame.copy()
    for name in names:
        if name.startswith("amount_") and not name.startswith("amount_vs"):
            drifted[name] = drifted[name] * 3
    drifted["amount"] = drifted["amount"] * 3
    drifted["log_amount"] = np.log1p(drifted["amount"])
    drifted["is_foreign"] = 1
    ts = pd.to_datetime(drifted["event_timestamp"], utc=True) + pd.Timedelta(microseconds=1)
    return log_rows(drifted, names, version, np.full(len(drifted), 0.1), ts)


def test_a_monitoring_breach_notifies_once(trained, empty_registry_db, applied_world, tmp_path):  # noqa: F811
    from monitoring.check import run_check

    trained_settings, _, outcome = trained
    source = ModelRegistry(trained_settings)
    v1 = outcome.version.version
    with Receiver(200) as first, Receiver(200) as second:
        receivers = [first, second]
        models = tmp_path / "models"
        models.mkdir()
        shutil.copyfile(empty_registry_db, models / "mlflow.db")  # a registry of its own: its golden is set here
        settings = make_settings(tmp_path / "watch", models_dir=models, registry=applied_world.layout.registry_path,
                                 webhooks=[first.url, second.url])
        registry = ModelRegistry(settings)
        golden = _register_copy(source, v1, registry)
        registry.set_alias("golden", golden)
        served = pd.read_parquet(registry.training_set_path(golden))
        served = served[served["split"] == "test"]
        names = registry.get(golden).feature_names
        write_feature_log(settings.layout.feature_logs_dir, _drifted_logs(served, names, golden))
        watched = settings.model_copy(update={"monitoring_min_rows": len(served)})

        result = run_check(watched)
        assert result.breaches, result.headline()
        assert any(b.startswith("skew") for b in result.breaches), result.breaches
        _wait_bodies(receivers, 1)
        time.sleep(0.5)

    for receiver in receivers:
        assert [b["event"] for b in receiver.bodies] == ["monitor_breach"], receiver.bodies
        fields = receiver.bodies[0]["fields"]
        assert fields["breaches"] == len(result.breaches) and fields["first"] == result.breaches[0]
        assert receiver.bodies[0]["text"].startswith(f"Monitoring breach: model {settings.model_name}")
        assert receiver.bodies[0]["severity"] == "error"

