"""Split strategies: no time leakage, reproducible seeded splits, loud warnings, refusals of impossible splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlplatform.errors import InvalidInputError
from training.splits import SplitSpec, split_rows


def _frame(n: int = 2000, pos_rate: float = 0.05, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 20 * 86400, n)), unit="s")
    return pd.DataFrame({"transaction_id": rng.permutation(np.arange(10_000, 10_000 + n)),
                         "event_timestamp": ts, "is_fraud": (rng.random(n) < pos_rate).astype(int)})


def test_time_split_has_no_future_rows_in_training():
    frame = _frame().sample(frac=1, random_state=1)  # row order must not matter
    result = split_rows(frame, SplitSpec("time", 0.15, 0.2))
    part = {s: frame[result.labels.to_numpy() == s]["event_timestamp"] for s in ("train", "validation", "test")}
    assert part["train"].max() < part["validation"].min()
    assert part["validation"].max() < part["test"].min()
    assert sum(len(p) for p in part.values()) == len(frame)
    assert abs(len(part["test"]) / len(frame) - 0.2) < 0.02
    assert abs(len(part["validation"]) / len(frame) - 0.15) < 0.02
    assert not any("overlap" in w for w in result.warnings)


def test_time_split_never_cuts_through_a_timestamp():
    frame = _frame(1000)
    frame["event_timestamp"] = frame["event_timestamp"].dt.floor("D")  # many ties
    labels = split_rows(frame, SplitSpec("time", 0.2, 0.2)).labels
    per_time = frame.assign(split=labels.to_numpy()).groupby("event_timestamp")["split"].nunique()
    assert (per_time == 1).all()


def test_random_split_is_reproducible_and_seeded():
    frame = _frame()
    a = split_rows(frame, SplitSpec("random", seed=3)).labels
    shuffled = frame.sample(frac=1, random_state=9)
    b = split_rows(shuffled, SplitSpec("random", seed=3)).labels
    c = split_rows(frame, SplitSpec("random", seed=4)).labels
    by_id = lambda f, lab: dict(zip(f["transaction_id"], lab, strict=True))  # noqa: E731
    assert by_id(frame, a) == by_id(shuffled, b)  # same seed, same rows -> same assignment, whatever the order
    assert (a != c).mean() > 0.2
    counts = a.value_counts()
    assert counts["test"] == round(len(frame) * 0.2) and counts["validation"] == round(len(frame) * 0.15)


def test_random_split_warns_about_overlapping_time_ranges():
    result = split_rows(_frame(), SplitSpec("random"))
    assert any("overlap" in w and "test" in w for w in result.warnings)


def test_degenerate_splits_warn():
    frame = _frame(3000, pos_rate=0.05)
    # test split holds only negatives; validation has a handful of positives
    labels = split_rows(frame, SplitSpec("time")).labels.to_numpy()
    frame.loc[labels == "test", "is_fraud"] = 0
    val_idx = np.flatnonzero(labels == "validation")
    frame.loc[frame.index[val_idx], "is_fraud"] = 0
    frame.loc[frame.index[val_idx[:3]], "is_fraud"] = 1
    warnings = split_rows(frame, SplitSpec("time")).warnings
    assert any("test split has a single class" in w for w in warnings)
    assert any("validation split has only 3 positives" in w for w in warnings)
    tiny = split_rows(_frame(600, 0.3), SplitSpec("time", validation_fraction=0.05, test_fraction=0.3)).warnings
    assert any("validation split is tiny" in w for w in tiny)


def test_impossible_splits_are_refused():
    frame = _frame()
    with pytest.raises(InvalidInputError, match="sum must be < 1"):
        split_rows(frame, SplitSpec("time", 0.5, 0.5))
    with pytest.raises(InvalidInputError, match="unknown split strategy 'kfold'"):
        split_rows(frame, SplitSpec("kfold"))
    one_class = frame.assign(is_fraud=0)
    with pytest.raises(InvalidInputError, match="only negatives"):
        split_rows(one_class, SplitSpec("time"))
    with pytest.raises(InvalidInputError, match="empty"):
        split_rows(frame.head(3), SplitSpec("time", 0.1, 0.1))


def test_custom_split_from_a_file(tmp_path):
    frame = _frame()
    rng = np.random.default_rng(5)
    choice = rng.choice(["train", "validation", "test"], size=len(frame), p=[0.6, 0.2, 0.2])
    path = tmp_path / "split.csv"
    pd.DataFrame({"transaction_id": frame["transaction_id"], "split": choice}).to_csv(path, index=False)
    labels = split_rows(frame, SplitSpec("custom", assignment_path=path)).labels
    assert list(labels) == list(choice)
    pd.DataFrame({"transaction_id": frame["transaction_id"][:10], "split": choice[:10]}).to_csv(path, index=False)
    with pytest.raises(InvalidInputError, match="does not assign 1990 transactions"):
        split_rows(frame, SplitSpec("custom", assignment_path=path))
    with pytest.raises(InvalidInputError, match="--split-file"):
        split_rows(frame, SplitSpec("custom"))
