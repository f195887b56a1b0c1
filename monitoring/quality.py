"""Live model quality: served predictions joined with the labels that have since arrived (late: chargebacks and
confirmations come days later), as ROC AUC, PR AUC (average precision), Brier score and calibration per model
version and per time window, next to the model's training-time metrics; plus the serving figures a platform team
asks for (serve counts, latency, when each version was registered, promoted and first served).

The metric functions are plain numpy (ties handled as scikit-learn does) so that tests can check them against
scikit-learn as an independent oracle. Logged rows it cannot score (no transaction time, model or prediction:
``QUALITY_NEEDS``; see ``monitoring.logs``) are left out and counted by reason (``unjudged``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.errors import InvalidInputError
from mlplatform.settings import Settings
from monitoring.logs import QUALITY_NEEDS, LogWindow, UnjudgedRows, resolve_window, served_rows
from monitoring.reports import ReportFiles, render_table_page, with_banner, write_report

CALIBRATION_BINS = 10
# Names training may give its held-out metrics, most specific first.
TRAINING_METRIC_KEYS = {
    "roc_auc": ("test_roc_auc", "roc_auc", "test_auc", "auc", "validation_roc_auc", "val_roc_auc"),
    "pr_auc": ("test_pr_auc", "pr_auc", "test_average_precision", "average_precision", "validation_pr_auc"),
    "brier": ("test_brier", "brier", "brier_score", "validation_brier"),
}


# --- metrics (pure) -------------------------------------------------------------------------------------------
def roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney with average ranks for ties); None with a single class."""
    y = np.asarray(y, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = pd.Series(np.asarray(p, dtype=float)).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: np.ndarray, p: np.ndarray) -> float | None:
    """PR AUC as average precision: sum over score thresholds of (recall gain) x precision; None without positives."""
    y = np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    if n_pos == 0:
        return None
    order = np.argsort(-np.asarray(p, dtype=float), kind="mergesort")
    scores, hits = np.asarray(p, dtype=float)[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]
    tps = np.cumsum(hits)[last_of_tie]
    precision = tps / (last_of_tie + 1)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def brier(y: np.ndarray, p: np.ndarray) -> float | None:
    """Mean squared difference between predicted probability and outcome."""
    if len(y) == 0:
        return None
    return float(np.mean((np.asarray(p, dtype=float) - np.asarray(y, dtype=float)) ** 2))


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    """Predictions in equal-width probability bins: rows, mean prediction and observed positive rate per bin."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        inside = idx == b
        if inside.any():
            out.append({"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "rows": int(inside.sum()),
                        "mean_prediction": float(p[inside].mean()), "observed_rate": float(y[inside].mean())})
    return out


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> float | None:
    """Row-weighted mean |mean prediction - observed rate| over the calibration bins."""
    if len(y) == 0:
        return None
    table = calibration_table(y, p, bins)
    return float(sum(r["rows"] * abs(r["mean_prediction"] - r["observed_rate"]) for r in table) / len(y))


def quality_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Every live-quality figure of labels ``y`` and predictions ``p``."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    return {
        "rows": len(y), "positives": int(y.sum()), "roc_auc": roc_auc(y, p), "pr_auc": average_precision(y, p),
        "brier": brier(y, p), "ece": expected_calibration_error(y, p),
        "mean_prediction": float(p.mean()) if len(p) else None, "positive_rate": float(y.mean()) if len(y) else None,
    }


# --- joining and grouping (pure) ------------------------------------------------------------------------------
def join_labels(served: pd.DataFrame, labels: pd.DataFrame, as_of: datetime | None = None) -> pd.DataFrame:
    """Served rows with the label of their transaction (rows without an arrived label are dropped).

    With ``as_of``, a replayed row (served later than its transaction happened, e.g. by ``monitor replay``) sees
    its label only once it would have arrived on the replay's clock: ``label_timestamp`` moved forward by the same
    shift as the transaction must be at or before ``as_of``. Needs ``transaction_timestamp`` in the labels and
    ``transaction_ts`` (seconds) in the served rows; rows served at their own time are unaffected."""
    lab = labels.sort_values("label_timestamp").drop_duplicates("transaction_id", keep="last")
    lab = pd.DataFrame({"transaction_id": lab["transaction_id"].astype(str).to_numpy(),
                        "is_fraud": lab["is_fraud"].astype(int).to_numpy(),
                        "label_timestamp": pd.to_datetime(lab["label_timestamp"], utc=True).to_numpy(),
                        **({"_happened": pd.to_datetime(lab["transaction_timestamp"], utc=True).to_numpy()}
                           if "transaction_timestamp" in lab.columns else {})})
    rows = served[served["transaction_id"].notna()].copy()
    rows["transaction_id"] = rows["transaction_id"].astype(str)
    joined = rows.merge(lab, on="transaction_id", how="inner")
    if "_happened" not in joined.columns:
        return joined
    if as_of is not None and "transaction_ts" in joined.columns:
        served_at = pd.to_datetime(pd.to_numeric(joined["transaction_ts"], errors="coerce"), unit="s", utc=True)
        shift = (served_at - pd.to_datetime(joined["_happened"], utc=True).dt.floor("s")).clip(
            lower=pd.Timedelta(0)).fillna(pd.Timedelta(0))
        arrived = pd.to_datetime(joined["label_timestamp"], utc=True) + shift
        joined = joined[(arrived <= pd.Timestamp(as_of)).to_numpy()]
    return joined.drop(columns="_happened").reset_index(drop=True)


def quality_by_window(joined: pd.DataFrame, period: str) -> list[dict[str, Any]]:
    """Quality per model version and per window of transaction time of width ``period``."""
    if joined.empty:
        return []
    when = pd.to_datetime(joined["transaction_ts"].astype("int64"), unit="s", utc=True)
    starts = when.dt.floor(check_period(period))
    out = []
    keyed = joined.assign(_window=starts)
    for (name, version, start), g in keyed.groupby(["model_name", "model_version", "_window"], sort=True):
        out.append({"model_name": name, "model_version": int(version), "window_start": start.isoformat(),
                    **quality_metrics(g["is_fraud"].to_numpy(), g["prediction"].to_numpy())})
    return out


def check_period(period: str) -> str:
    """``period`` if pandas reads it as a fixed frequency (1D, 6h, 7D); InvalidInputError otherwise."""
    try:
        pd.Timestamp("2026-01-01", tz="UTC").floor(period)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"monitoring_quality_period {period!r} is not a fixed pandas frequency (use e.g. 1D, 6h, 7D)"
        ) from exc
    return period


def quality_by_version(joined: pd.DataFrame) -> list[dict[str, Any]]:
    """Quality per model version over the whole window."""
    out = []
    for (name, version), g in joined.groupby(["model_name", "model_version"], sort=True):
        out.append({"model_name": name, "model_version": int(version),
                    **quality_metrics(g["is_fraud"].to_numpy(), g["prediction"].to_numpy())})
    return out


def serving_figures(served: pd.DataFrame) -> list[dict[str, Any]]:
    """Per model version: served count, share of fallbacks and cache hits, min/mean/max latency, first/last served."""
    out = []
    for (name, version), g in served.groupby(["model_name", "model_version"], sort=True):
        lat = pd.to_numeric(g["latency_ms"], errors="coerce")
        logged = pd.to_datetime(g["logged_at"], utc=True)
        out.append({
            "model_name": name, "model_version": int(version), "served": len(g),
            "fallbacks": int(g["fallback"].fillna(False).astype(bool).sum()) if "fallback" in g else None,
            "cached": int(g["cached"].fillna(False).astype(bool).sum()) if "cached" in g else None,
            "latency_ms_min": float(lat.min()), "latency_ms_mean": float(lat.mean()),
            "latency_ms_max": float(lat.max()),
            "first_served_at": logged.min().isoformat(), "last_served_at": logged.max().isoformat(),
        })
    return out


def training_metric(metrics: dict[str, float], name: str) -> float | None:
    """The model's training-time value of ``name`` (roc_auc, pr_auc, brier) under any name training used."""
    for key in TRAINING_METRIC_KEYS[name]:
        if key in metrics:
            return float(metrics[key])
    return None


# --- I/O edges -------------------------------------------------------------------------------------------------
def labels_folder(data_dir: Path) -> Path:
    """Where the raw label files live (``raw/labels``)."""
    return Path(data_dir) / "raw" / "labels"


def read_labels(data_dir: Path, as_of: datetime) -> pd.DataFrame:
    """Labels that had arrived by ``as_of`` (raw/labels/*.parquet); empty if none have arrived yet. Columns:
    transaction_id, is_fraud, label_timestamp, and transaction_timestamp when the files carry it."""
    import pyarrow.parquet as pq

    files = sorted(labels_folder(data_dir).glob("*.parquet"))
    columns = ["transaction_id", "is_fraud", "label_timestamp"]
    if not files:
        return pd.DataFrame(columns=columns)
    frames = []
    for f in files:
        present = pq.read_schema(f).names
        frames.append(pd.read_parquet(f, columns=columns + [c for c in ("transaction_timestamp",) if c in present]))
    labels = pd.concat(frames, ignore_index=True)
    return labels[pd.to_datetime(labels["label_timestamp"], utc=True) <= pd.Timestamp(as_of)]


def label_delay(labels: pd.DataFrame) -> dict[str, float] | None:
    """How late labels arrived after their transaction (median and 90th percentile, days); None if unknown."""
    if labels.empty or "transaction_timestamp" not in labels.columns:
        return None
    delay = (pd.to_datetime(labels["label_timestamp"], utc=True)
             - pd.to_datetime(labels["transaction_timestamp"], utc=True)).dropna() / pd.Timedelta(days=1)
    if delay.empty:
        return None
    return {"median_days": float(delay.median()), "p90_days": float(delay.quantile(0.9))}


def model_lifecycle(settings: Settings, versions: list[int]) -> dict[int, dict[str, Any]]:
    """Per version: training-time metrics, registration time, aliases and latest promotion time (if recorded)."""
    from mlplatform.errors import MLPlatformError
    from mlplatform.models.registry import ModelRegistry

    registry = ModelRegistry(settings)
    promotions = _promotion_times(settings)
    out: dict[int, dict[str, Any]] = {}
    for v in versions:
        try:
            mv = registry.get(v)
        except MLPlatformError as exc:
            out[v] = {"error": str(exc)}
            continue
        out[v] = {
            "registered_at": mv.created_at.isoformat(), "aliases": mv.aliases,
            "promoted_at": promotions.get(v),
            "training": {k: training_metric(mv.metrics, k) for k in TRAINING_METRIC_KEYS},
            "training_metrics": mv.metrics,
        }
    return out


def _promotion_times(settings: Settings) -> dict[int, str]:
    """Latest promote/rollback time per version from the audit log (best effort: {} if absent or unreadable)."""
    try:
        from mlplatform.audit import list_records

        records = list_records(settings, action="*promote")
    except Exception:  # the audit log is optional for monitoring
        return {}
    out: dict[int, str] = {}
    for rec in records:
        version = rec.details.get("version") or rec.details.get("promoted")
        try:
            out[int(version)] = rec.time
        except (TypeError, ValueError):
            continue
    return out


@dataclass
class QualityResult:
    """The quality report's figures."""

    window: LogWindow
    as_of: datetime
    served: int
    labeled: int
    by_version: list[dict[str, Any]]
    by_window: list[dict[str, Any]]
    serving: list[dict[str, Any]]
    calibration: list[dict[str, Any]]
    seconds: float = 0.0
    files: ReportFiles | None = field(default=None, repr=False)
    labels_arrived: int = 0  # labels under raw/labels that had arrived by as_of, for any transaction
    min_labeled_rows: int = 0  # monitoring_min_labeled_rows when it ran
    label_delay: dict[str, float] | None = None  # median / p90 days from transaction to label, of arrived labels
    newest_transaction: datetime | None = None  # transaction time of the newest served row
    newest_label: datetime | None = None  # arrival time of the newest label that had arrived by as_of
    labels_dir: str = ""
    unjudged: UnjudgedRows = field(default_factory=UnjudgedRows)  # logged rows left out, by reason

    def judged_versions(self) -> list[dict[str, Any]]:
        """Versions with enough labeled rows (``min_labeled_rows``) and both classes: the ones a verdict covers."""
        return [r for r in self.by_version if r["rows"] >= self.min_labeled_rows and r["roc_auc"] is not None]

    @property
    def judged(self) -> bool:
        """Whether at least one served model version could be judged."""
        return bool(self.judged_versions())

    def explanation(self) -> str:
        """Empty when judged; else why not: served rows, labels arrived, the minimum, and when labels arrive."""
        if self.judged:
            return ""
        when = f"{self.as_of:%Y-%m-%d %H:%M}Z"
        if self.labeled == 0:
            head = f"none of the {self.served:,} served rows has a label that arrived by {when}"
        else:
            short = [f"v{r['model_version']}: {r['rows']:,} labeled, {r['positives']} fraud"
                     + (", only one class" if r["rows"] >= self.min_labeled_rows else "") for r in self.by_version]
            head = (f"only {self.labeled:,} of {self.served:,} served rows have a label that arrived by {when} "
                    f"({'; '.join(short)})")
        newest = f", the newest at {self.newest_label:%Y-%m-%d %H:%M}Z" if self.newest_label is not None else ""
        out = [f"{head}; {self.labels_arrived:,} labels had arrived by then under {self.labels_dir or 'raw/labels'} "
               f"for any transaction{newest}. Quality is judged per model version with at least "
               f"{self.min_labeled_rows:,} labeled served rows and both classes (monitoring_min_labeled_rows)."]
        if self.labels_arrived == 0:
            out.append("No labels have arrived at all yet: labels come with the raw data (`mlplatform data generate`"
                       " writes each period's arrived labels).")
        if self.label_delay is None:
            out.append("Labels arrive days after their transaction (chargebacks and confirmations); run it again "
                       "later, or with --as-of.")
            return " ".join(out)
        d = self.label_delay
        out.append(f"Labels arrive late: those arrived so far came a median {d['median_days']:.1f} days (90% within "
                   f"{d['p90_days']:.1f} days) after their transaction.")
        if self.newest_transaction is not None:
            ready = self.newest_transaction + pd.Timedelta(days=d["p90_days"])
            seen = f"The newest served transaction is from {self.newest_transaction:%Y-%m-%d %H:%M}Z, so most labels " \
                   f"for this window are due by about {ready:%Y-%m-%d}"
            if ready > pd.Timestamp(self.as_of):
                out.append(f"{seen}: run it again then, or with a later --as-of.")
            else:
                out.append(f"{seen}, yet no label newer than the one above has arrived: the labels come with new raw "
                           "data.")
        return " ".join(out)

    def headline(self) -> str:
        left_out = f"; {self.unjudged.short()}" if self.unjudged else ""
        return self._verdict() + left_out

    def _verdict(self) -> str:
        if not self.judged:
            return (f"not judged: {self.labeled:,} of {self.served:,} served rows labeled by "
                    f"{self.as_of:%Y-%m-%d %H:%M}Z ({self.labels_arrived:,} labels arrived in all); a version needs "
                    f"{self.min_labeled_rows:,} labeled rows and both classes")
        parts = [f"v{r['model_version']}: ROC AUC {_fmt(r['roc_auc'])}, PR AUC {_fmt(r['pr_auc'])}, "
                 f"Brier {_fmt(r['brier'])} on {r['rows']:,} labeled ({r['positives']} fraud)" for r in self.by_version]
        return (f"{self.labeled:,} of {self.served:,} served rows labeled by {self.as_of:%Y-%m-%d %H:%M}Z; "
                + "; ".join(parts))

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window.to_dict(), "as_of": self.as_of.isoformat(), "served": self.served,
                "labeled": self.labeled, "labels_arrived": self.labels_arrived,
                "min_labeled_rows": self.min_labeled_rows, "label_delay": self.label_delay,
                "newest_transaction": self.newest_transaction, "newest_label": self.newest_label,
                "judged": self.judged,
                "explanation": self.explanation() or None, "by_version": self.by_version, "by_window": self.by_window,
                "serving": self.serving, "calibration": self.calibration, "seconds": self.seconds,
                "headline": self.headline(), "unjudged": self.unjudged.to_dict()}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def run_quality(settings: Settings, since: datetime | None = None, until: datetime | None = None,
                as_of: datetime | None = None, write: bool = True) -> QualityResult:
    """Join the window's served predictions with arrived labels; report quality and serving figures."""
    t0 = time.perf_counter()
    check_period(settings.monitoring_quality_period)
    window = resolve_window(settings, since, until)
    as_of = as_of or datetime.now(UTC)
    read = served_rows(settings, window, columns=[
        "transaction_id", "transaction_ts", "model_name", "model_version", "prediction", "latency_ms", "fallback",
        "cached"], require=QUALITY_NEEDS)
    served = read.frame
    labels = read_labels(settings.data_path, as_of)
    joined = join_labels(served, labels, as_of)
    by_version = quality_by_version(joined)
    lifecycle = model_lifecycle(settings, sorted({int(v) for v in served["model_version"].dropna()}))
    for row in by_version:
        row["training"] = lifecycle.get(row["model_version"], {}).get("training", {})
    serving = serving_figures(served)
    for row in serving:
        life = lifecycle.get(row["model_version"], {})
        row.update(registered_at=life.get("registered_at"), promoted_at=life.get("promoted_at"),
                   aliases=life.get("aliases"))
    calibration = calibration_table(joined["is_fraud"].to_numpy(), joined["prediction"].to_numpy()) \
        if len(joined) else []
    tx_ts = pd.to_numeric(served["transaction_ts"], errors="coerce").dropna()
    newest_label = pd.to_datetime(labels["label_timestamp"], utc=True).max() if len(labels) else None
    newest = pd.Timestamp(int(tx_ts.max()), unit="s", tz="UTC").to_pydatetime() if len(tx_ts) else None
    result = QualityResult(window, as_of, len(served), len(joined), by_version,
                           quality_by_window(joined, settings.monitoring_quality_period), serving, calibration,
                           seconds=time.perf_counter() - t0, labels_arrived=len(labels),
                           min_labeled_rows=settings.monitoring_min_labeled_rows, label_delay=label_delay(labels),
                           newest_transaction=newest, labels_dir=str(labels_folder(settings.data_path)),
                           newest_label=newest_label, unjudged=read.unjudged)
    if write:
        status = quality_status(result, settings)
        page = render_table_page(
            "Live model quality", result.headline(),
            [("Per model version (live, next to training-time metrics)",
              [{k: v for k, v in r.items() if k != "training"} | {f"training_{k}": v for k, v in r["training"].items()}
               for r in by_version]),
             (f"Per {settings.monitoring_quality_period} window of transaction time", result.by_window),
             ("Calibration (all labeled rows)", calibration),
             ("Serving figures per model version", serving),
             ("Logged rows not judged", result.unjudged.table())])
        if not result.judged:
            page = with_banner(page, result.explanation())
        result.files = write_report(settings, "quality", {**result.to_dict(), "status": status}, page,
                                    when=datetime.now(UTC))
    return result


def quality_breaches(result: QualityResult, settings: Settings) -> list[str]:
    """Threshold breaches of live quality, one message each (versions with too few labels are not judged)."""
    out = []
    for row in result.by_version:
        if row["rows"] < settings.monitoring_min_labeled_rows or row["roc_auc"] is None:
            continue
        name = f"{row['model_name']} v{row['model_version']}"
        if row["roc_auc"] < settings.monitoring_min_roc_auc:
            out.append(f"quality: {name} live ROC AUC {row['roc_auc']:.3f} < {settings.monitoring_min_roc_auc} "
                       f"({row['rows']:,} labeled rows)")
        trained = row.get("training", {}).get("roc_auc")
        if trained is not None and trained - row["roc_auc"] > settings.monitoring_max_roc_auc_drop:
            out.append(f"quality: {name} live ROC AUC {row['roc_auc']:.3f} is {trained - row['roc_auc']:.3f} below "
                       f"its training-time {trained:.3f} (allowed drop {settings.monitoring_max_roc_auc_drop})")
    return out


def quality_status(result: QualityResult, settings: Settings) -> str:
    """``breach``, ``ok``, or ``too few labels`` when no version has enough labeled rows to be judged."""
    judged = [r for r in result.by_version
              if r["rows"] >= settings.monitoring_min_labeled_rows and r["roc_auc"] is not None]
    if not judged:
        return "too few labels"
    return "breach" if quality_breaches(result, settings) else "ok"
