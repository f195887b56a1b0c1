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


def test_views_without_ttl_say_so(scoring_world, cli):
    """Profiles have no TTL (Feast stores 0): lineage says "no TTL", never "ttl 0s"; others show the declared one."""
    from mlplatform.stores import open_feature_store

    w = scoring_world
    store = open_feature_store(w.settings)
    assert not store.get_feature_view("customer_profile").ttl  # the definition's own word: no TTL
    assert feature_view_impact(w.settings, "customer_profile")["feature_view"]["ttl_seconds"] is None
    activity = feature_view_impact(w.settings, "customer_activity")["feature_view"]
    assert activity["ttl_seconds"] == store.get_feature_view("customer_activity").ttl.total_seconds() == 30 * 86_400
    profile_tree = cli(w.settings, ["lineage", "--feature-view", "customer_profile"])
    assert profile_tree.exit_code == 0 and "no TTL" in profile_tree.output and "ttl 0s" not in profile_tree.output
    model_tree = cli(w.settings, ["lineage", "golden"])
    assert "ttl 30d" in model_tree.output and "ttl 60d" in model_tree.output and "no TTL" in model_tree.output


def test_lineage_compares_view_definitions_with_training(scoring_world, tmp_path, cli):
    """A model whose training set recorded a different hash for a view is flagged as trained on another definition;
    views with the same hash are not; a model without hashes (older scheme) is not judged."""
    from mlplatform.lineage import HASH_SCHEME, definition_hash
    from mlplatform.models.registry import ModelRegistry
    from mlplatform.stores import open_feature_store
    from tests.conftest import make_settings

    w = scoring_world
    store = open_feature_store(w.settings)
    now = {"customer_activity": definition_hash(store.get_feature_view("customer_activity")),
           "merchant_risk": definition_hash(store.get_feature_view("merchant_risk")),
           "transaction_context": definition_hash(store.get_on_demand_feature_view("transaction_context"))}
    assert now["customer_activity"] == definition_hash(open_feature_store(w.settings).get_feature_view(
        "customer_activity"))  # stable across reads of the registry
    settings = make_settings(w.settings.data_path, models_dir=tmp_path / "models")
    registry = ModelRegistry(settings)
    mv = registry.register(
        ModelRegistry(w.settings).load_booster(w.version), feature_names=w.feature_names,
        feature_types=ModelRegistry(w.settings).get(w.version).feature_types, feature_service="fraud_model_v1",
        metrics={}, params={},
        lineage={"fingerprint": "fp", "feature_view_hash_scheme": HASH_SCHEME,
                 "feature_views": {**now, "merchant_risk": "0123456789abcdef"}},
    )
    views = {v["name"]: v for v in model_lineage(settings, mv.version)["feature_views"]}
    assert views["customer_activity"]["definition_changed"] is False
    assert views["transaction_context"]["definition_changed"] is False
    assert views["merchant_risk"]["definition_changed"] is True
    tree = cli(settings, ["lineage", str(mv.version)])
    assert tree.exit_code == 0, tree.output
    assert "changed since training: was 0123456789abcdef" in " ".join(tree.output.split())
    old = {v["name"]: v for v in model_lineage(w.settings, w.version)["feature_views"]}
    assert {v["definition_changed"] for v in old.values()} == {None}
