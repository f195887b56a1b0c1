"""Monitoring benchmarks: the train/serve skew report over 100k logged rows x all model features, and how
Evidently's time grows with rows and with columns (the reason the skew report samples each side).

Data: synthetic frames shaped like the fraud model's inputs (16 features, 2 of them binary, heavy-tailed
amounts), written as real feature logs with serving's writer; a real XGBoost booster registered with a real
training set in a throw-away model registry, so the end-to-end figure is `run_skew` exactly as the command runs.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = [
    "txn_count_1h", "txn_count_24h", "txn_count_7d", "amount_sum_24h", "amount_mean_24h", "amount_sum_7d",
    "amount_mean_7d", "distinct_merchants_24h", "fraud_rate_30d", "label_count_30d", "log_amount",
    "amount_vs_mean_7d", "hour_of_day", "is_night", "is_foreign", "seconds_since_last_txn",
]
BINARY = {"is_night", "is_foreign"}


def model_frame(rows: int, seed: int, columns: list[str] | None = None, scale: float = 1.0) -> pd.DataFrame:
    """Synthetic model inputs: counts, heavy-tailed amounts (times ``scale``), rates, hours and flags."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, name in enumerate(columns or FEATURES):
        if name in BINARY or name.startswith("flag"):
            out[name] = (rng.random(rows) < 0.1).astype(float)
        elif "count" in name or "distinct" in name:
            out[name] = rng.poisson(3 + i, rows).astype(float)
        elif "amount" in name:
            out[name] = rng.lognormal(3.3, 0.6, rows) * scale
        elif name == "hour_of_day":
            out[name] = rng.integers(0, 24, rows).astype(float)
        else:
            out[name] = rng.gamma(2.0, 1.0 + i, rows)
    return pd.DataFrame(out)


def _kinds(columns: list[str]) -> dict[str, str]:
    return {c: "binary" if c in BINARY or c.startswith("flag") else "numerical" for c in columns}


def _evidently_seconds(rows: int, columns: list[str]) -> float:
    from monitoring.skew import drift_snapshot

    ref, cur = model_frame(rows, 1, columns), model_frame(rows, 2, columns, scale=1.3)
    t0 = time.perf_counter()
    drift_snapshot(ref, cur, _kinds(columns), 0.1)
    return time.perf_counter() - t0


def _wide_columns(n: int) -> list[str]:
    base = FEATURES[:n] if n <= len(FEATURES) else FEATURES + [f"extra_{i}" for i in range(n - len(FEATURES))]
    return base


def _end_to_end(tmp: Path, logged_rows: int, sample_rows: int) -> tuple[float, float, int]:
    """(seconds of run_skew, seconds to read the logs alone, drifted features) over ``logged_rows`` logged rows."""
    import uuid

    import xgboost as xgb

    from mlplatform.contracts.feature_log import write_feature_log
    from mlplatform.models.registry import ModelRegistry
    from mlplatform.settings import Settings
    from monitoring.logs import read_served, resolve_window
    from monitoring.skew import run_skew

    settings = Settings(data_dir=tmp, monitoring_sample_rows=sample_rows)
    training = model_frame(50_000, 3)
    y = (np.random.default_rng(4).random(len(training)) < 0.02).astype(float)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                        xgb.DMatrix(training.to_numpy(), label=y), num_boost_round=5)
    path = tmp / "training_set.parquet"
    training.assign(split="train").to_parquet(path)
    registry = ModelRegistry(settings)
    mv = registry.register(booster, feature_names=FEATURES, feature_types=["Float64"] * len(FEATURES),
                           feature_service="fraud_model_v1", metrics={}, params={}, lineage={"fingerprint": "bench"},
                           training_set_path=path)
    registry.set_alias("golden", mv.version)
    served = model_frame(logged_rows, 5, scale=1.3)
    now = datetime.now(UTC)
    records = served.to_dict(orient="records")
    for start in range(0, logged_rows, settings.feature_log_batch_rows):  # files as the service writes them
        rows = [{"request_id": uuid.uuid4().hex, "logged_at": now, "served": True, "model_name": "fraud",
                 "model_version": mv.version, "role": "golden", "prediction": 0.1, "latency_ms": 1.0,
                 "features": r} for r in records[start:start + settings.feature_log_batch_rows]]
        write_feature_log(settings.layout.feature_logs_dir, rows)
    t0 = time.perf_counter()
    read_served(settings, resolve_window(settings), columns=FEATURES)
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = run_skew(settings)
    return time.perf_counter() - t0, read_s, len(result.drifted)


def run(quick: bool) -> list[dict]:
    """Benchmark rows: end-to-end skew report at 100k logged rows, and Evidently's growth in rows and columns."""
    import warnings

    warnings.filterwarnings("ignore")
    rows_out: list[dict] = []
    t0 = time.perf_counter()
    import evidently  # noqa: F401 - the import itself is part of every cold `monitor skew`

    rows_out.append({"benchmark": "monitoring: import", "metric": "import evidently", "value": time.perf_counter() - t0,
                     "unit": "s", "note": "paid once per `mlplatform monitor skew|check` process"})
    sample = 10_000
    with tempfile.TemporaryDirectory(prefix="mlplatform-bench-monitoring-") as tmp:
        total, read_s, drifted = _end_to_end(Path(tmp), 100_000, sample)
    rows_out.append({"benchmark": "monitoring: skew report", "metric": "100k logged rows x 16 features, end to end",
                     "value": total, "unit": "s",
                     "note": f"read logs + sample {sample:,}/side + Evidently + HTML/JSON; {drifted} drifted"})
    rows_out.append({"benchmark": "monitoring: skew report", "metric": "read 100k logged rows (50 Parquet files)",
                     "value": read_s, "unit": "s", "note": "part of the end-to-end figure"})

    row_sizes = [2_000, 10_000] if quick else [2_000, 10_000, 30_000, 100_000]
    base = None
    for n in row_sizes:
        s = _evidently_seconds(n, FEATURES)
        base = base or s
        rows_out.append({"benchmark": "monitoring: Evidently vs rows", "metric": f"{n:,} rows/side x 16 features",
                         "value": s, "unit": "s", "note": f"{s / base:.1f}x the {row_sizes[0]:,}-row time"})
    col_sizes = [4, 16] if quick else [4, 8, 16, 32]
    base = None
    for c in col_sizes:
        s = _evidently_seconds(5_000, _wide_columns(c))
        base = base or s
        rows_out.append({"benchmark": "monitoring: Evidently vs columns", "metric": f"5,000 rows/side x {c} features",
                         "value": s, "unit": "s", "note": f"{s / base:.1f}x the {col_sizes[0]}-feature time"})
    return rows_out


if __name__ == "__main__":  # pragma: no cover
    import argparse
    import json

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=1))
