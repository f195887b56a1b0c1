"""Behavioural tests of a fraud model: directional expectations and invariances, run on real feature rows.

- burst: a burst of recent transactions (3 more in the last hour and day, the previous one a minute ago) must
  not lower any row's score;
- high amount: an amount 10x higher (so far above the customer's usual) must not lower any row's score;
- invariance: scores must not change when fields the model must ignore (ids, category, label, column order)
  change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mlplatform.models.scoring import predict

TOLERANCE = 1e-6
IGNORED = ("transaction_id", "customer_id", "merchant_id", "merchant_category", "is_fraud", "label_timestamp")


@dataclass(frozen=True)
class BehaviourResult:
    """One behavioural test: passed or not, and what was seen."""

    name: str
    passed: bool
    detail: str
    violations: int = 0
    rows: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def burst(frame: pd.DataFrame) -> pd.DataFrame:
    """The same transactions as if 3 more had happened in the last minutes."""
    out = frame.copy()
    for col in ("txn_count_1h", "txn_count_24h", "txn_count_7d"):
        if col in out.columns:
            out[col] = pd.to_numeric(out[col]).fillna(0) + 3
    if "seconds_since_last_txn" in out.columns:
        out["seconds_since_last_txn"] = np.minimum(pd.to_numeric(out["seconds_since_last_txn"]).fillna(60), 60)
    return out


def high_amount(frame: pd.DataFrame, factor: float = 10.0) -> pd.DataFrame:
    """The same transactions with an amount ``factor`` times higher (request-time features recomputed)."""
    out = frame.copy()
    if "amount" in out.columns:
        amount = pd.to_numeric(out["amount"]).astype(float)
    else:
        amount = np.expm1(pd.to_numeric(out["log_amount"]).astype(float))
    new_amount = amount * factor
    if "amount" in out.columns:
        out["amount"] = new_amount
    if "log_amount" in out.columns:
        out["log_amount"] = np.log1p(new_amount)
    if "amount_vs_mean_7d" in out.columns:
        out["amount_vs_mean_7d"] = pd.to_numeric(out["amount_vs_mean_7d"]).astype(float) * factor
    return out


def scramble_ignored(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Shuffle every field the model must ignore and reverse the column order."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    for col in IGNORED:
        if col in out.columns:
            out[col] = rng.permutation(out[col].to_numpy())
    return out[list(reversed(out.columns))]


def _directional(name: str, booster, frame: pd.DataFrame, changed: pd.DataFrame, feature_names: list[str],
                 needs: tuple[str, ...]) -> BehaviourResult:
    if not any(c in feature_names for c in needs):
        return BehaviourResult(name, True, f"skipped: the model uses none of {list(needs)}")
    before = predict(booster, frame, feature_names)
    after = predict(booster, changed, feature_names)
    drops = before - after
    bad = int((drops > TOLERANCE).sum())
    detail = (f"score lower on {bad}/{len(frame)} rows (largest drop {drops.max():.4f})" if bad else
              f"never lower on {len(frame)} rows; mean score {before.mean():.4f} -> {after.mean():.4f}")
    return BehaviourResult(name, bad == 0, detail, bad, len(frame))


def run_behaviour_suite(booster, frame: pd.DataFrame, feature_names: list[str], max_rows: int = 5000,
                        seed: int = 0) -> list[BehaviourResult]:
    """Every behavioural test on (a seeded sample of at most ``max_rows`` of) ``frame``."""
    if len(frame) > max_rows:
        frame = frame.sample(max_rows, random_state=seed)
    frame = frame.reset_index(drop=True)
    results = [
        _directional("burst_does_not_lower_score", booster, frame, burst(frame), feature_names,
                     ("txn_count_1h", "txn_count_24h", "txn_count_7d", "seconds_since_last_txn")),
        _directional("high_amount_does_not_lower_score", booster, frame, high_amount(frame), feature_names,
                     ("log_amount", "amount_vs_mean_7d")),
    ]
    before = predict(booster, frame, feature_names)
    scrambled = scramble_ignored(frame, seed)
    after = predict(booster, scrambled, feature_names)
    changed = int((before != after).sum())
    results.append(BehaviourResult(
        "invariant_to_ignored_fields", changed == 0,
        f"scores changed on {changed}/{len(frame)} rows" if changed else
        f"identical on {len(frame)} rows with ids, category and column order scrambled", changed, len(frame)))
    return results
