"""The synthetic world: reproducible, immutable, late labels, and the documented drift."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from mlplatform.data import world
from mlplatform.data.generator import generate
from mlplatform.errors import ConflictError, InvalidInputError
from tests.conftest import SMALL_WORLD


def _digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.parquet"))
    }


def test_same_seed_gives_byte_identical_files(tmp_path):
    generate(SMALL_WORLD, tmp_path / "a", drift=True)
    generate(SMALL_WORLD, tmp_path / "b", drift=True)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_base_period_does_not_depend_on_drift(tmp_path):
    generate(SMALL_WORLD, tmp_path / "base")
    generate(SMALL_WORLD, tmp_path / "both", drift=True)
    base, both = _digest(tmp_path / "base"), _digest(tmp_path / "both")
    assert base.items() <= both.items()
    assert len(both) > len(base)


def test_other_seed_gives_other_data(tmp_path):
    generate(SMALL_WORLD, tmp_path / "a")
    generate(replace(SMALL_WORLD, seed=SMALL_WORLD.seed + 1), tmp_path / "b")
    a = pd.read_parquet(tmp_path / "a" / "raw" / "transactions")
    b = pd.read_parquet(tmp_path / "b" / "raw" / "transactions")
    assert not a.equals(b)


def test_raw_data_is_immutable(tmp_path):
    generate(SMALL_WORLD, tmp_path)
    status = generate(SMALL_WORLD, tmp_path)  # same bytes again: a no-op
    assert set(status.values()) == {"unchanged"}
    with pytest.raises(ConflictError, match="immutable"):
        generate(replace(SMALL_WORLD, seed=99), tmp_path)


def test_bad_spec_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="--customers"):
        generate(replace(SMALL_WORLD, customers=0), tmp_path)
    assert not (tmp_path / "raw").exists()


def test_labels_arrive_late_and_in_the_period_they_arrive(world_dir):
    tx = pd.read_parquet(world_dir / "raw" / "transactions")
    for part in sorted((world_dir / "raw" / "labels").glob("*.parquet")):
        labels = pd.read_parquet(part)
        start, end = (pd.Timestamp(x, tz="UTC") for x in part.stem.split("-"))
        assert labels["label_timestamp"].between(start, end, inclusive="left").all()
        assert (labels["label_timestamp"] - labels["transaction_timestamp"] >= pd.Timedelta(days=1)).all()
    labels = pd.read_parquet(world_dir / "raw" / "labels")
    assert labels["transaction_id"].is_unique
    assert set(labels["transaction_id"]) <= set(tx["transaction_id"])


def test_fraud_follows_the_documented_rule(world_dir):
    """Labels are Bernoulli draws of the oracle probability, which rises with each documented signal."""
    labels = pd.read_parquet(world_dir / "raw" / "labels")
    oracle = pd.read_parquet(world_dir / "oracle", columns=None)
    oracle = oracle[oracle.columns.intersection(["transaction_id", "fraud_probability"])].dropna()
    joined = labels.merge(oracle, on="transaction_id")
    # calibrated: observed fraud rate close to the mean oracle probability
    assert abs(joined["is_fraud"].mean() - joined["fraud_probability"].mean()) < 0.01
    # monotone in the signal the rule names: the rule function itself, recomputed here on simple inputs
    p = world.fraud_probability(np.array([0, 3]), np.array([20.0, 20.0]), np.array([20.0, 20.0]),
                                np.array([False, False]), np.array([12, 12]), np.array([0.1, 0.1]))
    assert p[1] > p[0]


def test_drift_shifts_the_documented_signals_only(world_dir):
    tx = pd.read_parquet(world_dir / "raw" / "transactions")
    customers = pd.read_parquet(world_dir / "raw" / "customers.parquet")
    merchants = pd.read_parquet(world_dir / "raw" / "merchants.parquet")
    tx = tx.merge(customers[["customer_id", "home_country"]], on="customer_id").merge(
        merchants[["merchant_id", "country"]], on="merchant_id")
    cut = SMALL_WORLD.start + pd.Timedelta(days=SMALL_WORLD.days)
    before, after = tx[tx["event_timestamp"] < cut], tx[tx["event_timestamp"] >= cut]
    ratio = after["amount"].median() / before["amount"].median()
    assert 1.4 < ratio < 2.3  # DRIFT_AMOUNT_SCALE = 1.8
    foreign_before = (before["home_country"] != before["country"]).mean()
    foreign_after = (after["home_country"] != after["country"]).mean()
    assert foreign_after > 3 * foreign_before
    # undrifted: transactions per customer per day
    rate_before = len(before) / SMALL_WORLD.days
    rate_after = len(after) / SMALL_WORLD.drift_days
    assert 0.85 < rate_after / rate_before < 1.15
