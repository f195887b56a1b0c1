"""The synthetic world: reproducible, immutable, late labels, and the documented drift."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

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
    base = (tx["event_timestamp"] >= SMALL_WORLD.start) & (tx["event_timestamp"] < cut)  # not the history
    before, after = tx[base], tx[tx["event_timestamp"] >= cut]
    ratio = after["amount"].median() / before["amount"].median()
    assert 1.4 < ratio < 2.3  # DRIFT_AMOUNT_SCALE = 1.8
    foreign_before = (before["home_country"] != before["country"]).mean()
    foreign_after = (after["home_country"] != after["country"]).mean()
    assert foreign_after > 3 * foreign_before
    # undrifted: transactions per customer per day
    rate_before = len(before) / SMALL_WORLD.days
    rate_after = len(after) / SMALL_WORLD.drift_days
    assert 0.85 < rate_after / rate_before < 1.15


def test_a_history_fills_the_seven_day_windows_from_the_first_day(world_dir):
    """The world does not begin empty: ``history_days`` of transactions (and their labels) before its start, so a
    base-period transaction's 7-day window holds as many earlier transactions in the first week as later (brute
    force over the raw files)."""
    tx = pd.read_parquet(world_dir / "raw" / "transactions").sort_values("event_timestamp", ignore_index=True)
    tx["event_timestamp"] = tx["event_timestamp"].dt.as_unit("ns")
    labels = pd.read_parquet(world_dir / "raw" / "labels")
    start = pd.Timestamp(SMALL_WORLD.start)
    history = tx[tx["event_timestamp"] < start]
    days = pd.Timedelta(days=SMALL_WORLD.history_days)
    assert start - days <= history["event_timestamp"].min() < start - days + pd.Timedelta(hours=4)
    assert history["transaction_id"].isin(labels["transaction_id"]).mean() > 0.95  # labeled, like any transaction
    base = tx[(tx["event_timestamp"] >= start) & (tx["event_timestamp"] < start + pd.Timedelta(days=SMALL_WORLD.days))]
    week = pd.Timedelta(days=7)
    ns = tx["event_timestamp"].astype("int64")
    times = {c: ns[g.index].to_numpy() for c, g in tx.groupby("customer_id")}
    counts = [int(((times[c] < t) & (times[c] >= t - week.value)).sum())
              for c, t in zip(base["customer_id"], base["event_timestamp"].astype("int64"), strict=True)]
    first_week = base["event_timestamp"].astype("int64").to_numpy() < (start + week).value
    mean_first, mean_later = np.mean(np.array(counts)[first_week]), np.mean(np.array(counts)[~first_week])
    assert 0.9 < mean_first / mean_later < 1.1, (mean_first, mean_later)


# --- when the world is: a default world ends at the start of today -----------------------------------------------
def _periods(folder) -> list[dict]:
    import json

    return json.loads((folder / "raw" / "manifest.json").read_text())["periods"]


def _midnight(when: datetime) -> datetime:
    return datetime(when.year, when.month, when.day, tzinfo=UTC)


def test_default_world_ends_at_the_start_of_today(tmp_path):
    before = datetime.now(UTC)
    generate(replace(SMALL_WORLD, start=None), tmp_path, drift=True)
    after = datetime.now(UTC)
    base, drifted = _periods(tmp_path)
    end = datetime.fromisoformat(drifted["end"])
    assert end in {_midnight(before), _midnight(after)}  # the run may cross midnight
    assert datetime.fromisoformat(base["end"]) == end - timedelta(days=SMALL_WORLD.drift_days)
    assert datetime.fromisoformat(base["start"]) == end - timedelta(days=SMALL_WORLD.days + SMALL_WORLD.drift_days)
    # the data itself reaches the last day before today: what a request stamped now sees is hours old, not months
    tx = pd.read_parquet(tmp_path / "raw" / "transactions")
    newest = tx["event_timestamp"].max()
    assert pd.Timestamp(end) - pd.Timedelta(days=1) <= newest < pd.Timestamp(end)


def test_default_world_is_fixed_by_the_day_it_is_made(tmp_path):
    """Same day (any time of it) -> the same bytes; a world made on another day moves with it."""
    morning, evening = datetime(2031, 5, 7, 0, 0, 1, tzinfo=UTC), datetime(2031, 5, 7, 23, 59, tzinfo=UTC)
    generate(replace(SMALL_WORLD, start=None), tmp_path / "a", drift=True, now=morning)
    generate(replace(SMALL_WORLD, start=None), tmp_path / "b", drift=True, now=evening)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    explicit = datetime(2031, 5, 7, tzinfo=UTC) - timedelta(days=SMALL_WORLD.days + SMALL_WORLD.drift_days)
    generate(replace(SMALL_WORLD, start=explicit), tmp_path / "c", drift=True)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "c")  # the default is just that --start
    assert _periods(tmp_path / "a")[-1]["end"] == "2031-05-07T00:00:00+00:00"


def test_existing_folder_keeps_its_start(tmp_path):
    """Base generated one day, --drift a week later into the same folder: one world, not a conflict."""
    day1, day8 = datetime(2031, 5, 7, 9, tzinfo=UTC), datetime(2031, 5, 14, 9, tzinfo=UTC)
    generate(replace(SMALL_WORLD, start=None), tmp_path / "w", now=day1)
    status = generate(replace(SMALL_WORLD, start=None), tmp_path / "w", drift=True, now=day8)
    assert status["raw/customers.parquet"] == "unchanged"
    base, drifted = _periods(tmp_path / "w")
    assert drifted["end"] == "2031-05-07T00:00:00+00:00"  # day 1's world, not day 8's
    generate(replace(SMALL_WORLD, start=None), tmp_path / "fresh", drift=True, now=day1)
    assert _digest(tmp_path / "w") == _digest(tmp_path / "fresh")


def test_base_again_after_drift_keeps_the_drifted_period_listed(tmp_path):
    generate(SMALL_WORLD, tmp_path, drift=True)
    generate(SMALL_WORLD, tmp_path)
    assert [p["drifted"] for p in _periods(tmp_path)] == [False, True]


def test_another_world_in_the_same_folder_is_refused_by_name(tmp_path):
    generate(SMALL_WORLD, tmp_path)
    for change, flag in ((dict(days=SMALL_WORLD.days + 1), "--days"), (dict(drift_days=9), "--drift-days"),
                         (dict(start=SMALL_WORLD.start + timedelta(days=1)), "--start")):
        with pytest.raises(ConflictError, match=flag) as err:
            generate(replace(SMALL_WORLD, **change), tmp_path, drift=True)
        assert "MLPLATFORM_DATA_DIR" in str(err.value)
    # the base period and its history, no drifted part
    assert len(_periods(tmp_path)) == 1 and len(list((tmp_path / "raw" / "transactions").iterdir())) == 2


def test_cli_generate_relative_start_and_the_folder_hint(tmp_path, cli):
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    before = datetime.now(UTC)
    ok = cli(settings, ["data", "generate", "--customers", "20", "--days", "3", "--drift-days", "2",
                        "--start", "today-5d", "--drift"])
    assert ok.exit_code == 0, ok.output
    end = datetime.fromisoformat(_periods(tmp_path)[-1]["end"])
    assert end in {_midnight(before), _midnight(datetime.now(UTC))}
    again = cli(settings, ["data", "generate", "--customers", "20", "--days", "3", "--drift-days", "2", "--drift"])
    assert again.exit_code == 0, again.output  # no --start: the folder's start, so nothing differs
    clash = cli(settings, ["data", "generate", "--customers", "20", "--days", "3", "--seed", "8"])
    assert clash.exit_code == 6
    text = " ".join(clash.output.split())
    assert "MLPLATFORM_DATA_DIR" in text and "--data-dir" not in text and "--seed" in text


def test_immutable_file_message_names_the_setting(tmp_path):
    generate(SMALL_WORLD, tmp_path)
    (tmp_path / "raw" / "manifest.json").unlink()  # files without their manifest: the last line of defence
    with pytest.raises(ConflictError, match="immutable") as err:
        generate(replace(SMALL_WORLD, seed=99), tmp_path)
    assert "MLPLATFORM_DATA_DIR" in str(err.value) and "--data-dir" not in str(err.value)
