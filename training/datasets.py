"""Point-in-time training sets: labeled transactions known at an as-of time, features from the FeatureService.

A training set is a folder ``<data_dir>/datasets/<id>/`` holding ``training_set.parquet`` and ``lineage.json``.
It is written to a temporary folder and renamed into place, so a crash never leaves half a dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mlplatform.data.generator import history_end
from mlplatform.errors import DataNotFoundError, InvalidInputError
from mlplatform.features.service import feature_signature, transaction_entity_rows
from mlplatform.lineage import HASH_SCHEME
from mlplatform.settings import Settings
from mlplatform.timeutil import utc

LABEL = "is_fraud"
TIME = "event_timestamp"  # the entity row's time: the transaction's time minus 1 µs
META_COLUMNS = ("transaction_id", "customer_id", "merchant_id", "amount", "transaction_ts", TIME, LABEL,
                "label_timestamp", "merchant_category")
DATASET_FILE = "training_set.parquet"
LINEAGE_FILE = "lineage.json"


@dataclass(frozen=True)
class TrainingSet:
    """A training set on disk: its rows, its lineage and where it lives."""

    path: Path
    frame: pd.DataFrame
    lineage: dict

    @property
    def feature_names(self) -> list[str]:
        return list(self.lineage["feature_names"])

    @property
    def feature_types(self) -> list[str]:
        return list(self.lineage["feature_types"])

    @property
    def fingerprint(self) -> str:
        return str(self.lineage["fingerprint"])


def read_labels(raw_dir: Path) -> pd.DataFrame:
    """Every label file under ``raw/labels`` (labels arrive late; each row carries its label_timestamp)."""
    files = sorted((raw_dir / "labels").glob("*.parquet"))
    if not files:
        raise DataNotFoundError(f"no label files in {raw_dir / 'labels'}: run `mlplatform data generate` first")
    labels = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    for col in ("label_timestamp", "transaction_timestamp"):
        labels[col] = pd.to_datetime(labels[col], utc=True).dt.as_unit("us")
    return labels


def read_transactions(raw_dir: Path) -> pd.DataFrame:
    """Every raw transaction."""
    files = sorted((raw_dir / "transactions").glob("*.parquet"))
    if not files:
        raise DataNotFoundError(f"no transactions in {raw_dir / 'transactions'}: run `mlplatform data generate` first")
    tx = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    tx["event_timestamp"] = pd.to_datetime(tx["event_timestamp"], utc=True).dt.as_unit("us")
    return tx


def labels_known_at(labels: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Labels that had arrived by ``as_of`` (label_timestamp <= as_of); the latest one wins per transaction."""
    known = labels[labels["label_timestamp"] <= as_of]
    known = known.sort_values(["transaction_id", "label_timestamp"], kind="stable")
    return known.drop_duplicates("transaction_id", keep="last").reset_index(drop=True)


def labeled_entity_rows(transactions: pd.DataFrame, labels: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Entity rows (via the feature contract) for transactions whose label was known at ``as_of``, with the label."""
    known = labels_known_at(labels, as_of)[["transaction_id", LABEL, "label_timestamp"]]
    tx = transactions[transactions["event_timestamp"] <= as_of]
    joined = tx.merge(known, on="transaction_id", how="inner", validate="one_to_one")
    rows = transaction_entity_rows(joined)
    rows[LABEL] = joined[LABEL].to_numpy().astype(np.int8)
    rows["label_timestamp"] = joined["label_timestamp"].to_numpy()
    rows["label_timestamp"] = pd.to_datetime(rows["label_timestamp"], utc=True).dt.as_unit("us")
    return rows.sort_values(["event_timestamp", "transaction_id"], kind="stable").reset_index(drop=True)


def content_fingerprint(frame: pd.DataFrame, feature_service: str, feature_names: list[str]) -> str:
    """SHA-256 of the training set's content (rows in transaction order, columns by name) and its signature."""
    ordered = frame.sort_values("transaction_id", kind="stable")[sorted(frame.columns)].reset_index(drop=True)
    digest = hashlib.sha256()
    digest.update(json.dumps({"service": feature_service, "features": feature_names,
                              "columns": list(ordered.columns)}).encode())
    digest.update(pd.util.hash_pandas_object(ordered, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def definition_versions(store, service_name: str) -> dict[str, str]:
    """A content hash of each feature view behind the service, equal for equal definitions
    (``mlplatform.lineage.definition_hash``: Feast has no view versions, so the spec is hashed)."""
    from mlplatform.lineage import definition_hash

    service = store.get_feature_service(service_name)
    views = {v.name: v for v in store.list_stream_feature_views()}
    views |= {v.name: v for v in store.list_feature_views()}
    views |= {v.name: v for v in store.list_on_demand_feature_views()}
    return {p.name: definition_hash(views[p.name]) for p in service.feature_view_projections if p.name in views}


def class_balance(labels: pd.Series) -> dict:
    """Rows, positives and the positive rate of a label column."""
    n = int(len(labels))
    pos = int(labels.sum())
    return {"rows": n, "positives": pos, "negatives": n - pos, "positive_rate": pos / n if n else float("nan")}


def default_as_of(settings: Settings) -> pd.Timestamp:
    """The latest time features were built up to (the feature build watermark)."""
    from mlplatform.features.pipelines import read_build_state

    state = read_build_state(settings.layout.features_dir)
    if "until" not in state:
        raise DataNotFoundError(
            f"no feature tables in {settings.layout.features_dir}: run `mlplatform features build` first"
        )
    return utc(state["until"])


def build_training_set(settings: Settings, as_of: datetime | None = None, store=None,
                       out_dir: Path | None = None) -> TrainingSet:
    """Build, save and return the training set of labels known at ``as_of`` with features from the FeatureService."""
    from mlplatform.stores import open_feature_store

    watermark = default_as_of(settings)
    as_of_ts = watermark if as_of is None else utc(as_of)
    if as_of_ts > watermark:
        raise InvalidInputError(
            f"--as-of {as_of_ts.isoformat()} is after the feature tables' end ({watermark.isoformat()}): "
            "features after it are unknown; run `mlplatform features build` on newer data or pick an earlier time"
        )
    transactions = read_transactions(settings.layout.raw_dir)
    labels = read_labels(settings.layout.raw_dir)
    since = history_end(settings.data_path)  # a generated world's history fills windows, it is never trained on
    if since is not None:
        transactions = transactions[transactions["event_timestamp"] >= pd.Timestamp(since)]
    rows = labeled_entity_rows(transactions, labels, as_of_ts)
    if rows.empty:
        first = labels["label_timestamp"].min()
        raise InvalidInputError(f"no labels were known at {as_of_ts.isoformat()} (the first arrived {first}); "
                                "pick a later --as-of")
    store = store or open_feature_store(settings)
    service_name = settings.feature_service
    try:
        service = store.get_feature_service(service_name)
    except Exception as exc:
        raise DataNotFoundError(f"feature service {service_name!r} is not in the Feast registry: run "
                                f"`mlplatform apply` first ({type(exc).__name__})") from exc
    signature = feature_signature(store, service_name)
    names = [n for n, _ in signature]
    types = [t for _, t in signature]
    frame = store.get_historical_features(entity_df=rows, features=service).to_df()
    if len(frame) != len(rows):
        raise InvalidInputError(f"feature retrieval returned {len(frame)} rows for {len(rows)} entity rows")
    for column in frame.columns:  # every time as UTC microseconds: Spark returns the entity rows' other times naive
        if column == TIME or pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = pd.to_datetime(frame[column], utc=True).dt.as_unit("us")
    merchants = pd.read_parquet(settings.layout.raw_dir / "merchants.parquet", columns=["merchant_id", "category"])
    frame = frame.merge(merchants.rename(columns={"category": "merchant_category"}), on="merchant_id", how="left")
    frame = frame[[c for c in META_COLUMNS if c in frame.columns] + names]
    frame = frame.sort_values([TIME, "transaction_id"], kind="stable").reset_index(drop=True)

    fingerprint = content_fingerprint(frame, service_name, names)
    lineage = {
        "fingerprint": fingerprint,
        "as_of": as_of_ts.isoformat(),
        "since": since.isoformat() if since is not None else None,
        "feature_service": service_name,
        "feature_names": names,
        "feature_types": types,
        "feature_views": definition_versions(store, service_name),
        "feature_view_hash_scheme": HASH_SCHEME,
        "feast_project": store.project,
        "rows": int(len(frame)),
        "class_balance": class_balance(frame[LABEL]),
        "labels_known": int(len(rows)),
        "labels_total": int(len(labels)),
        "transactions_total": int((transactions["event_timestamp"] <= as_of_ts).sum()),
        "time_range": [frame[TIME].min().isoformat(), frame[TIME].max().isoformat()],
        "data_dir": str(settings.data_path),
        "built_at": datetime.now(UTC).isoformat(),
    }
    target = out_dir or settings.layout.datasets_dir / f"asof-{as_of_ts:%Y%m%dT%H%M%S}-{fingerprint[:12]}"
    save_training_set(frame, lineage, target)
    return TrainingSet(target, frame, lineage)


def save_training_set(frame: pd.DataFrame, lineage: dict, target: Path) -> None:
    """Write the set and its lineage into a temporary folder, then rename it to ``target`` (all or nothing)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        frame.to_parquet(tmp / DATASET_FILE, index=False)
        (tmp / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, default=str))
        if target.exists():  # same inputs -> same id: replace it whole
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_training_set(path: Path) -> TrainingSet:
    """A training set saved by ``build_training_set`` (a folder, or its Parquet file)."""
    path = Path(path)
    folder = path.parent if path.suffix == ".parquet" else path
    data, meta = folder / DATASET_FILE, folder / LINEAGE_FILE
    if not data.is_file() or not meta.is_file():
        raise DataNotFoundError(f"{folder} is not a training set (expected {DATASET_FILE} and {LINEAGE_FILE}); "
                                "build one with `mlplatform dataset build`")
    try:
        frame = pd.read_parquet(data)
        lineage = json.loads(meta.read_text())
    except Exception as exc:
        raise InvalidInputError(f"training set {folder} cannot be read: {type(exc).__name__}: {exc}") from exc
    missing = [c for c in [*lineage.get("feature_names", []), LABEL, TIME] if c not in frame.columns]
    if missing:
        raise InvalidInputError(f"training set {data} lacks columns {missing}")
    return TrainingSet(folder, frame, lineage)


def latest_training_set(settings: Settings) -> Path:
    """The most recently built training set under ``<data_dir>/datasets``."""
    root = settings.layout.datasets_dir
    found = [p for p in root.glob("asof-*") if (p / LINEAGE_FILE).is_file()] if root.exists() else []
    if not found:
        raise DataNotFoundError(f"no training set in {root}: run `mlplatform dataset build` first")
    return max(found, key=lambda p: (p / LINEAGE_FILE).stat().st_mtime)
