"""Batch scoring: rows/s and peak memory (RSS) of `mlplatform score` for windows of growing size over one world,
against a floor (XGBoost ``inplace_predict`` alone on as many rows).

    python -m bench.run --only scoring [--quick]

Full size: a world of ~5.1M transactions (54,000 customers x 28 days); windows of the last 1M and 5M rows.
Quick: 600 customers x 10 days (~20k transactions); windows of the last 5k and all rows. Each measurement runs in a
fresh subprocess that reports its own peak RSS (VmHWM), so runs do not inherit each other's memory.
Memory should stay flat as the window grows (chunks of ``CHUNK_ROWS``); time grows linearly.

Throughput is the run itself (``score_window``'s own clock, from planning the chunks to the renamed file), with the
heavy imports done first: Feast (~5 s, most of it typeguard instrumenting Feast at import), MLflow and XGBoost.
Their time is measured in the same process and shown in the note, with the throughput they would leave.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REDIS = "127.0.0.1:6379,db=13"  # not used by scoring (offline only), but settings need an address


def _settings(root: Path):
    from mlplatform.settings import Settings

    s = Settings(
        data_dir=root, redis_addr=REDIS, registry=root / "registry.db", models_dir=root / "models", actor="bench"
    )
    s.export_feast_env()
    return s


def _world(root: Path, customers: int, days: int) -> None:
    """Raw data, features, applied definitions and a small real XGBoost model as golden."""
    import numpy as np
    import xgboost as xgb

    from mlplatform.data.generator import WorldSpec, generate
    from mlplatform.features.definitions import apply_definitions
    from mlplatform.features.pipelines import build_features
    from mlplatform.features.service import feature_signature
    from mlplatform.models.registry import ModelRegistry
    from mlplatform.stores import open_feature_store

    generate(WorldSpec(customers=customers, days=days, seed=5), root)
    build_features(root)
    settings = _settings(root)
    apply_definitions(settings)
    signature = feature_signature(open_feature_store(settings), settings.feature_service)
    names, types = [n for n, _ in signature], [t for _, t in signature]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, len(names)))
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 6, "nthread": 1},
        xgb.DMatrix(X, label=(X[:, 0] + X[:, 3] > 0).astype(int)),
        num_boost_round=100,
    )
    registry = ModelRegistry(settings)
    mv = registry.register(
        booster,
        feature_names=names,
        feature_types=types,
        feature_service=settings.feature_service,
        metrics={},
        params={"max_depth": 6, "rounds": 100},
        lineage={"fingerprint": "bench"},
    )
    registry.set_alias("golden", mv.version)


def _window_start(root: Path, rows: int) -> datetime:
    """The start of the window holding the last ``rows`` transactions (every window ends with the data, so each
    chunk joins against equally long feature histories and only the window's length differs)."""
    import duckdb

    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        ts = con.execute(
            "SELECT event_timestamp FROM read_parquet(?) ORDER BY event_timestamp DESC LIMIT 1 OFFSET ?",
            [str(root / "raw" / "transactions" / "*.parquet"), rows - 1],
        ).fetchone()
    return ts[0] if ts else datetime(2000, 1, 1, tzinfo=UTC)


# Rows per chunk: each chunk pays a fixed cost (a DuckDB query per view and step, a parquet range read, a Parquet
# row group), so bigger chunks are faster; memory grows with the chunk (~1.0 GB peak at 200k on the full world,
# ~1.5 GB at 500k) and stays flat as the window grows.
CHUNK_ROWS = 200_000


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not ru_maxrss: Linux carries that over fork+exec from the parent,
    so a child of a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(kind: str, root: str, start: str, rows: int) -> None:
    """Run one measurement in this (fresh) process; print JSON with seconds, rows and peak RSS."""
    import warnings

    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    imports = 0.0
    if kind == "score":
        from scoring.batch import score_window

        settings = _settings(Path(root))
        t_imports = time.perf_counter()
        import feast  # noqa: F401 - the one-off imports, timed apart (see the module docstring)
        import xgboost  # noqa: F401

        from mlplatform.models.registry import ModelRegistry

        ModelRegistry(settings).golden()  # imports MLflow and opens its store
        imports = time.perf_counter() - t_imports
        result = score_window(
            settings,
            datetime.fromisoformat(start),
            datetime(2100, 1, 1, tzinfo=UTC),
            output=Path(root) / "scores" / "bench.parquet",
            chunk_rows=CHUNK_ROWS,
        )
        rows, t0 = result.rows, time.perf_counter() - result.seconds  # the run itself, not Python's imports
    else:  # the floor: the model alone on as many rows, features already in memory
        import numpy as np

        from mlplatform.models.registry import ModelRegistry

        settings = _settings(Path(root))
        registry = ModelRegistry(settings)
        mv = registry.golden()
        booster = registry.load_booster(mv.version)
        X = np.random.default_rng(1).normal(size=(rows, len(mv.feature_names))).astype(np.float32)
        X[::7, 3] = np.nan
        t0 = time.perf_counter()
        for lo in range(0, rows, 100_000):
            booster.inplace_predict(X[lo : lo + 100_000])
    seconds = time.perf_counter() - t0
    peak_mb = _peak_rss_mb()
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mb": peak_mb, "imports_seconds": imports}))


def _measure(kind: str, root: Path, start: datetime, rows: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.scoring", kind, str(root), start.isoformat(), str(rows)],
        check=True,
        capture_output=True,
        text=True,
        cwd=HERE.parent,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    """Rows/s and peak RSS of batch scoring for two window sizes over one world, and the inplace_predict floor."""
    customers, days, sizes = (600, 10, [5_000, None]) if quick else (54_000, 28, [1_000_000, 5_000_000])
    rows_out: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        root = Path(tmp) / "world"
        t0 = time.perf_counter()
        _world(root, customers, days)
        setup = time.perf_counter() - t0
        for size in sizes:
            start = _window_start(root, size) if size else datetime(2000, 1, 1, tzinfo=UTC)
            got = _measure("score", root, start, 0)
            floor = _measure("floor", root, start, got["rows"])
            label = f"batch scoring, {got['rows']:,} transactions"
            with_imports = got["rows"] / (got["seconds"] + got["imports_seconds"])
            note = (f"world {customers:,} customers x {days} d (setup {setup:.0f}s), {CHUNK_ROWS // 1000}k-row chunks; "
                    f"imports of Feast, MLflow, XGBoost first ({got['imports_seconds']:.1f}s, not counted; "
                    f"{with_imports:,.0f} rows/s counting them)")
            rows_out += [
                {
                    "benchmark": label,
                    "metric": "throughput",
                    "value": got["rows"] / got["seconds"],
                    "unit": "rows/s",
                    "note": note,
                },
                {
                    "benchmark": label,
                    "metric": "peak memory (RSS)",
                    "value": got["peak_rss_mb"],
                    "unit": "MB",
                    "note": "whole process: Python, Feast, DuckDB, XGBoost",
                },
                {
                    "benchmark": label,
                    "metric": "floor: inplace_predict alone",
                    "value": got["rows"] / floor["seconds"],
                    "unit": "rows/s",
                    "note": f"scoring is {floor['seconds'] / got['seconds']:.3f}x the floor's speed (the rest: the "
                    f"point-in-time join, reads, on-demand features, writes); floor RSS {floor['peak_rss_mb']:.0f} MB",
                },
            ]
    return rows_out


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
