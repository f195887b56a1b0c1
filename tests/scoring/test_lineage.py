"""Lineage joins the model card, the Feast registry and the raw manifest; impact lists every consumer of a view."""

from __future__ import annotations

import json

from mlplatform.lineage import feature_view_impact, model_lineage


def test_model_lineage_reaches_raw_data_and_seed(scoring_world):
    w = scoring_world
    info = model_lineage(w.settings, w.version)
    assert info["model"]["version"] == w.version and "golden" in info["model"]["aliases"]
    assert info["training_set"]["fingerprint"] == "scoring-test-fp"
    assert info["feature_service"]["name"] == "fraud_model_v1" and info["feature_service"]["matches_model"]
    views = {v["name"]: v for v in info["feature_views"]}
    assert set(views) == {"customer_activity", "merchant_risk", "transaction_context"}
    assert views["customer_activity"]["raw"] == ["raw/transactions/*.parquet"]
    assert views["merchant_risk"]["raw"] == ["raw/labels/*.parquet"]
    deps = {d["name"] for d in views["transaction_context"]["depends_on"]}
    assert deps == {"customer_activity", "customer_profile", "merchant_profile"}
    assert info["raw"]["seed"] == 11  # SMALL_WORLD's generator seed
    assert info == model_lineage(w.settings, "golden")


def test_feature_view_impact_lists_services_and_models(scoring_world):
    w = scoring_world
    impact = feature_view_impact(w.settings, "merchant_profile")
    assert impact["on_demand_views"] == ["transaction_context"]
    (service,) = impact["feature_services"]
    assert service["name"] == "fraud_model_v1" and service["direct_features"] == []
    assert "is_foreign" in service["via_on_demand"]["transaction_context"]
    (model,) = impact["models"]
    assert model["version"] == w.version and "is_foreign" in model["uses"] and "txn_count_1h" not in model["uses"]
    unused = feature_view_impact(w.settings, "customer_realtime")
    assert unused["feature_services"] == [] and unused["models"] == []


def test_lineage_cli(scoring_world, cli):
    w = scoring_world
    out = cli(w.settings, ["lineage", str(w.version), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["training_set"]["fingerprint"] == "scoring-test-fp"
    tree = cli(w.settings, ["lineage", "--feature-view", "customer_activity"])
    assert tree.exit_code == 0 and "fraud_model_v1" in tree.output
    unknown = cli(w.settings, ["lineage", "--feature-view", "nope"])
    assert unknown.exit_code == 3 and "known:" in unknown.output and "Traceback" not in unknown.output
