"""Bad definitions and bad data get a clear message and leave the registry exactly as it was."""

from __future__ import annotations

import hashlib
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlplatform.errors import DefinitionError
from mlplatform.features.definitions import apply_definitions
from mlplatform.features.validate import validate_definitions
from mlplatform.settings import PROJECT_ROOT
from tests.conftest import make_settings


@pytest.fixture()
def applied(world, tmp_path):
    repo = tmp_path / "feature_repo"
    shutil.copytree(PROJECT_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    settings = make_settings(world, feature_repo=repo)
    apply_definitions(settings)
    return settings


def _registry_digest(settings) -> str:
    return hashlib.sha256(settings.layout.registry_path.read_bytes()).hexdigest()


def _rewrite(path, change) -> None:
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def test_good_repo_validates_clean(applied):
    assert validate_definitions(applied) == []


@pytest.mark.parametrize(
    ("change", "column", "found"),
    [
        (lambda t: t.drop_columns(["txn_count_24h"]), "txn_count_24h", "missing"),
        (lambda t: t.set_column(t.schema.get_field_index("amount_sum_7d"), "amount_sum_7d",
                                pa.array([str(x) for x in t["amount_sum_7d"].to_pylist()])), "amount_sum_7d", "string"),
        (lambda t: t.drop_columns(["customer_id"]), "customer_id", "missing"),
        (lambda t: t.slice(0, 0), "*", "an empty table"),
    ],
    ids=["missing-column", "wrong-dtype", "unknown-entity-key", "empty-source"],
)
def test_bad_data_is_named_and_registry_unchanged(applied, change, column, found):
    before = _registry_digest(applied)
    _rewrite(applied.layout.features_dir / "customer_activity.parquet", change)
    problems = validate_definitions(applied)
    assert any(p.view == "customer_activity" and p.column == column and found in p.found for p in problems), problems
    with pytest.raises(DefinitionError, match="customer_activity"):
        apply_definitions(applied)
    assert _registry_digest(applied) == before


def test_definition_naming_a_column_the_data_lacks(applied):
    before = _registry_digest(applied)
    views = applied.feature_repo / "views.py"
    views.write_text(views.read_text().replace(
        'Field(name="home_country", dtype=String',
        'Field(name="home_country", dtype=String, description="x"), Field(name="loyalty_tier", dtype=String'))
    problems = validate_definitions(applied)
    assert [(p.view, p.column, p.found) for p in problems] == [("customer_profile", "loyalty_tier", "missing")]
    with pytest.raises(DefinitionError, match="loyalty_tier"):
        apply_definitions(applied)
    assert _registry_digest(applied) == before


def test_definition_that_does_not_import(applied):
    before = _registry_digest(applied)
    (applied.feature_repo / "views.py").write_text("from feast import FeatureView\nbroken = FeatureView(\n")
    with pytest.raises(DefinitionError, match="does not load"):
        apply_definitions(applied)
    assert _registry_digest(applied) == before


def test_apply_failing_inside_feast_restores_the_registry(applied):
    """Skip our checks and let Feast itself fail (an on-demand view reading a feature no view has)."""
    before = _registry_digest(applied)
    od = applied.feature_repo / "on_demand.py"
    od.write_text(od.read_text().replace('customer_activity[["amount_mean_7d", "last_txn_epoch"]]',
                                         'customer_activity[["amount_mean_7d", "no_such_feature"]]'))
    with pytest.raises(DefinitionError, match="registry left as it was"):
        apply_definitions(applied, validate=False)
    assert _registry_digest(applied) == before
    assert pd.read_parquet(applied.layout.features_dir / "customer_activity.parquet").shape[0] > 0
