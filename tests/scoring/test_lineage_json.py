"""`mlplatform lineage --json` (docs/cli-json.md): one document with what the tree shows, times as ISO-8601 UTC, the
data folder's files relative to it, and the tree's exit code. Oracles: the model registry read through
ModelRegistry, the Feast registry read through the FeatureStore, the raw manifest on disk."""

from __future__ import annotations

import json
from datetime import datetime

from mlplatform.models.registry import ModelRegistry
from mlplatform.stores import open_feature_store


def _doc(res) -> dict:
    assert res.stdout.count("\n") == 1, res.stdout
    return json.loads(res.stdout)


def test_lineage_json_matches_the_registries_and_the_tree(scoring_world, cli):
    w = scoring_world
    tree, out = cli(w.settings, ["lineage", "golden"]), cli(w.settings, ["lineage", "golden", "--json"])
    assert tree.exit_code == out.exit_code == 0, out.output
    doc = _doc(out)
    golden = ModelRegistry(w.settings).golden()
    assert (doc["model"]["version"], doc["model"]["aliases"]) == (golden.version, golden.aliases) == (
        w.version, golden.aliases)
    assert datetime.fromisoformat(doc["model"]["created_at"]) == golden.created_at
    assert doc["model"]["created_at"].endswith("+00:00")
    assert doc["training_set"]["fingerprint"] == "scoring-test-fp" and "scoring-test-fp" in tree.output
    store = open_feature_store(w.settings)
    for view in doc["feature_views"]:
        assert view["name"] in tree.output
        if view["kind"] == "on_demand":
            continue
        source = store.get_feature_view(view["name"]).batch_source.path  # absolute, under the data folder
        assert view["source"]["path"] == str(w.settings.data_path.joinpath(source).relative_to(w.settings.data_path))
        assert view["source"]["path"] == f"features/{view['name']}.parquet"
    manifest = json.loads((w.settings.layout.raw_dir / "manifest.json").read_text())
    assert doc["raw"]["manifest"] == "raw/manifest.json" and doc["raw"]["seed"] == manifest["spec"]["seed"]
    assert str(w.settings.data_path) not in out.stdout  # no absolute path of the data folder anywhere

    impact_tree = cli(w.settings, ["lineage", "--feature-view", "customer_activity"])
    impact = cli(w.settings, ["lineage", "--feature-view", "customer_activity", "--json"])
    assert impact_tree.exit_code == impact.exit_code == 0
    doc = _doc(impact)
    assert [m["version"] for m in doc["models"]] == [v.version for v in ModelRegistry(w.settings).list_versions()]
    assert [s["name"] for s in doc["feature_services"]] == ["fraud_model_v1"] and "fraud_model_v1" in impact_tree.output

    unknown = cli(w.settings, ["lineage", "--feature-view", "nope", "--json"])
    assert unknown.exit_code == 3 and _doc(unknown)["error"]["type"] == "DataNotFoundError"
    assert "known:" in _doc(unknown)["error"]["message"]
