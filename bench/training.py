"""Training benchmarks on the synthetic fraud world:

- training-set retrieval: Feast ``get_historical_features`` through the ``fraud_model_v1`` FeatureService (what
  `mlplatform dataset build` runs) vs a hand-written DuckDB ASOF JOIN over the same feature Parquet files, with the
  same TTLs and the on-demand features computed with numpy (the floor);
- training: our ``fit_booster`` (frame -> matrix, monotone constraints, early stopping off) vs a bare
  ``xgboost.train`` on a prebuilt DMatrix with the same parameters and rounds (the floor).

Entity rows are labeled transactions of a generated world, resampled to N rows (1M full, 100k quick).
"""

from __future__ import annotations

import copy
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

ROUNDS = 200


def _world(root: Path, customers: int, days: int):
    from mlplatform.data.generator import WorldSpec, generate
    from mlplatform.features.definitions import apply_definitions
    from mlplatform.features.pipelines import build_features
    from mlplatform.settings import Settings

    generate(WorldSpec(customers=customers, days=days, seed=7, start=datetime(2026, 10, 1, tzinfo=UTC)), root)
    build_features(root)
    settings = Settings(data_dir=root, registry=root / "registry.db", models_dir=root / "models")
    apply_definitions(settings)
    return settings


def _asof_sql(features: Path, ttl_c_s: int, ttl_m_s: int) -> str:
    f = lambda name: f"read_parquet('{features / (name + '.parquet')}')"  # noqa: E731
    return f"""
    WITH e AS (SELECT * FROM entity),
    ca AS (SELECT * FROM {f('customer_activity')}),
    mr AS (SELECT * FROM {f('merchant_risk')}),
    j1 AS (
      SELECT e.*, ca.event_timestamp AS ca_ts, ca.txn_count_1h, ca.txn_count_24h, ca.txn_count_7d, ca.amount_sum_24h,
             ca.amount_mean_24h, ca.amount_sum_7d, ca.amount_mean_7d, ca.distinct_merchants_24h, ca.last_txn_epoch
      FROM e ASOF LEFT JOIN ca ON e.customer_id = ca.customer_id AND e.event_timestamp >= ca.event_timestamp),
    j2 AS (
      SELECT j1.*, mr.event_timestamp AS mr_ts, mr.fraud_rate_30d, mr.label_count_30d
      FROM j1 ASOF LEFT JOIN mr ON j1.merchant_id = mr.merchant_id AND j1.event_timestamp >= mr.event_timestamp)
    SELECT j2.* EXCLUDE (txn_count_1h, txn_count_24h, txn_count_7d, amount_sum_24h, amount_mean_24h, amount_sum_7d,
                         amount_mean_7d, distinct_merchants_24h, last_txn_epoch, fraud_rate_30d, label_count_30d),
      {', '.join(f"CASE WHEN ca_ts >= event_timestamp - INTERVAL {ttl_c_s} SECOND THEN {c} END AS {c}" for c in (
          'txn_count_1h', 'txn_count_24h', 'txn_count_7d', 'amount_sum_24h', 'amount_mean_24h', 'amount_sum_7d',
          'amount_mean_7d', 'distinct_merchants_24h', 'last_txn_epoch'))},
      {', '.join(f"CASE WHEN mr_ts >= event_timestamp - INTERVAL {ttl_m_s} SECOND THEN {c} END AS {c}" for c in (
          'fraud_rate_30d', 'label_count_30d'))},
      cp.home_country, mp.country
    FROM j2
    LEFT JOIN (SELECT customer_id, home_country FROM {f('customer_profile')}) cp USING (customer_id)
    LEFT JOIN (SELECT merchant_id, country FROM {f('merchant_profile')}) mp USING (merchant_id)
    """


def _on_demand(frame: pd.DataFrame) -> pd.DataFrame:
    """The transaction_context features, vectorized (same definitions as feature_repo/on_demand.py)."""
    hour = (frame["transaction_ts"] // 3600) % 24
    mean7 = frame["amount_mean_7d"].astype(float)
    last = frame["last_txn_epoch"].astype(float)
    return frame.assign(
        log_amount=np.log1p(frame["amount"]),
        amount_vs_mean_7d=np.where(mean7 > 0, frame["amount"] / mean7, np.nan),
        hour_of_day=hour, is_night=(hour < 6).astype(int),
        is_foreign=np.where(frame["home_country"].notna() & frame["country"].notna(),
                            (frame["home_country"] != frame["country"]).astype(float), np.nan),
        seconds_since_last_txn=frame["transaction_ts"] - last,
    )


def run(quick: bool) -> list[dict]:
    """Training-set build (Feast vs DuckDB ASOF floor) and training time (ours vs bare xgboost floor)."""
    import xgboost as xgb

    from mlplatform.models.scoring import feature_matrix
    from mlplatform.stores import open_feature_store
    from training.config import load_config
    from training.datasets import labeled_entity_rows, read_labels, read_transactions
    from training.train import fit_booster

    n_rows = 100_000 if quick else 1_000_000
    customers, days = (300, 14) if quick else (2000, 28)
    rows_out: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        settings = _world(Path(tmp), customers, days)
        store = open_feature_store(settings)
        labeled = labeled_entity_rows(read_transactions(settings.layout.raw_dir), read_labels(settings.layout.raw_dir),
                                      pd.Timestamp("2030-01-01", tz="UTC"))
        entity = labeled.sample(n_rows, replace=True, random_state=0).reset_index(drop=True)
        service = store.get_feature_service(settings.feature_service)

        ttl_c = int(store.get_feature_view("customer_activity").ttl.total_seconds())
        ttl_m = int(store.get_feature_view("merchant_risk").ttl.total_seconds())
        t_feast = t_duck = float("inf")
        for _ in range(2):  # alternate and keep the best of two: the machine is shared and noisy
            t0 = time.perf_counter()
            feast_df = store.get_historical_features(entity_df=entity, features=service).to_df()
            t_feast = min(t_feast, time.perf_counter() - t0)
            con = duckdb.connect()
            con.execute("SET TimeZone = 'UTC'")
            t0 = time.perf_counter()
            con.register("entity", entity)
            asof_df = _on_demand(con.sql(_asof_sql(settings.layout.features_dir, ttl_c, ttl_m)).df())
            t_duck = min(t_duck, time.perf_counter() - t0)
            con.close()
        # same answers? compare one window feature and one on-demand feature row by row (by transaction and time)
        key = ["transaction_id", "event_timestamp"]
        a = feast_df.drop_duplicates(key).set_index(key).sort_index()
        b = asof_df.drop_duplicates(key).set_index(key).sort_index()
        mismatch = 0
        for col in ("txn_count_24h", "amount_vs_mean_7d"):
            av, bv = a[col].astype(float).to_numpy(), b.loc[a.index, col].astype(float).to_numpy()
            mismatch += int((~(np.isclose(av, bv, equal_nan=True))).sum())
        rows_out += [
            {"benchmark": "training_set", "metric": "feast_service_seconds", "value": t_feast, "unit": "s",
             "note": f"get_historical_features(...).to_df() via fraud_model_v1 (16 features incl. on-demand, "
                     f"pandas mode), {n_rows:,} rows; best of 2, alternating with the floor"},
            {"benchmark": "training_set", "metric": "duckdb_asof_seconds", "value": t_duck, "unit": "s",
             "note": "hand-written DuckDB ASOF JOIN + numpy on-demand features, same rows and files (floor); "
                     "best of 2"},
            {"benchmark": "training_set", "metric": "feast_vs_asof_ratio", "value": t_feast / t_duck, "unit": "x",
             "note": "how many times slower the FeatureService path is than the floor"},
            {"benchmark": "training_set", "metric": "rows_per_second_feast", "value": n_rows / t_feast,
             "unit": "rows/s", "note": ""},
            {"benchmark": "training_set", "metric": "value_mismatches", "value": float(mismatch), "unit": "cells",
             "note": "txn_count_24h and amount_vs_mean_7d, Feast vs ASOF (0 = same answers)"},
        ]

        # --- training: ours vs bare xgboost, fixed rounds (no early stopping) on the same rows -----------------
        names = [n for p in service.feature_view_projections for n in (f.name for f in p.features)]
        frame = feast_df  # entity rows carry is_fraud; Feast passes it through
        config = copy.deepcopy(load_config(settings))
        rounds = ROUNDS // 2 if quick else ROUNDS
        config["num_boost_round"] = rounds
        config["early_stopping_rounds"] = rounds + 1
        validation = frame.head(1000)
        t_ours = t_bare = float("inf")
        for _ in range(2):  # alternate and keep the best of two: the machine is shared and noisy
            t0 = time.perf_counter()
            fit = fit_booster(frame, validation, names, config)
            t_ours = min(t_ours, time.perf_counter() - t0)
            t0 = time.perf_counter()
            dtrain = xgb.DMatrix(feature_matrix(frame, names), label=frame["is_fraud"].to_numpy(),
                                 feature_names=names)
            xgb.train(fit.params, dtrain, num_boost_round=rounds)
            t_bare = min(t_bare, time.perf_counter() - t0)
        rows_out += [
            {"benchmark": "training", "metric": "fit_seconds", "value": t_ours, "unit": "s",
             "note": f"fit_booster, {len(frame):,} rows x {len(names)} features, {rounds} rounds, hist, 2 threads"},
            {"benchmark": "training", "metric": "bare_xgboost_seconds", "value": t_bare, "unit": "s",
             "note": "DMatrix + xgboost.train, same matrix, params and rounds, no validation set (floor)"},
            {"benchmark": "training", "metric": "fit_vs_bare_ratio", "value": t_ours / t_bare, "unit": "x",
             "note": "overhead of our wrapper (validation evaluation each round, best-iteration slicing)"},
        ]
    return rows_out


if __name__ == "__main__":  # pragma: no cover
    for row in run(quick=True):
        print(row)
