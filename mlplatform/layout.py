"""The data folder's layout: every path under ``<data_dir>`` is built here, so each file has one address.

```
<data_dir>/
  raw/{transactions,labels}/*.parquet, raw/manifest.json   immutable raw data (mlplatform data generate)
  oracle/                                                    true fraud probabilities (never a feature)
  features/*.parquet, features/_build_state.json             feature tables and the build watermark
  registry.db                                                Feast registry (MLPLATFORM_REGISTRY overrides)
  datasets/asof-*/                                           training sets with their lineage
  models/                                                    MLflow model registry (MLPLATFORM_MODELS_DIR overrides)
  feature_logs/date=YYYY-MM-DD/part-*.parquet                what the service served (MLPLATFORM_FEATURE_LOGS_URI:
                                                             the parts are written here, then shipped there)
  feature_logs/_dead_letter/*.jsonl, feature_logs/_wal/      rows that did not fit; rows not yet in Parquet
  reports/                                                   monitoring reports (MLPLATFORM_MONITORING_REPORTS_DIR,
                                                             MLPLATFORM_REPORTS_URI)
  monitoring/retrain_request.json                            a retrain request from monitoring
  scores/                                                    batch scores (MLPLATFORM_SCORES_URI: written here,
                                                             then put there)
  pipelines/runs/*.json, pipelines/*.lock                    pipeline run records and locks
  audit/audit.jsonl                                          the one audit log
  notifications/deliveries.jsonl                             webhook deliveries
  .embedded-redis/                                           the demo's embedded Redis
```

Feature logs, scores and reports may live on another filesystem (``*_uri``: a ``file://``, ``memory://`` or ``s3://``
URL; ``mlplatform.filesystems.feature_logs_location(layout)`` and its siblings open them); unset, they are the local
folders above.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataLayout:
    """Paths of one data folder; ``registry``, ``models`` and ``reports`` may live elsewhere (settings say so), and
    feature logs, scores and reports on another filesystem (``*_uri``: a path or URL, ``mlplatform.filesystems``)."""

    root: Path
    registry: Path | None = None
    models: Path | None = None
    reports: Path | None = None
    feature_logs_uri: str | None = None
    scores_uri: str | None = None
    reports_uri: str | None = None

    @property
    def raw_dir(self) -> Path:
        """Immutable raw data: transactions and late labels by period, customers, merchants, manifest."""
        return self.root / "raw"

    @property
    def oracle_dir(self) -> Path:
        """The generator's true fraud probabilities."""
        return self.root / "oracle"

    @property
    def features_dir(self) -> Path:
        """Feature tables (Parquet) and the build state."""
        return self.root / "features"

    @property
    def registry_path(self) -> Path:
        """Feast's registry file."""
        return _resolved(self.registry or self.root / "registry.db")

    @property
    def models_path(self) -> Path:
        """The model registry folder: MLflow SQLite database, artifacts, locks."""
        return _resolved(self.models or self.root / "models")

    @property
    def datasets_dir(self) -> Path:
        """Saved training sets."""
        return self.root / "datasets"

    @property
    def feature_logs_dir(self) -> Path:
        """Where the service writes its feature logs (Parquet, one folder per day)."""
        return self.root / "feature_logs"

    @property
    def feature_log_dead_letter_dir(self) -> Path:
        """Feature-log rows that did not fit the schema, with the reason (JSON lines, one file per day)."""
        return self.feature_logs_dir / "_dead_letter"

    @property
    def feature_log_wal_dir(self) -> Path:
        """The feature-log writers' write-ahead files: rows accepted but not yet in Parquet (replayed at start)."""
        return self.feature_logs_dir / "_wal"

    @property
    def reports_dir(self) -> Path:
        """Monitoring reports (HTML + JSON) and their index."""
        return _resolved(self.reports or self.root / "reports")

    @property
    def retrain_request(self) -> Path:
        """The pending retrain request monitoring files for training."""
        return self.root / "monitoring" / "retrain_request.json"

    @property
    def scores_dir(self) -> Path:
        """Batch scores (with ``scores_uri``: where a run writes its file before putting it there)."""
        return self.root / "scores"

    @property
    def pipelines_dir(self) -> Path:
        """Pipeline locks and run records."""
        return self.root / "pipelines"

    @property
    def audit_log(self) -> Path:
        """The one audit log (JSON lines)."""
        return self.root / "audit" / "audit.jsonl"

    @property
    def deliveries_log(self) -> Path:
        """Webhook deliveries (JSON lines)."""
        return self.root / "notifications" / "deliveries.jsonl"

    @property
    def embedded_redis_dir(self) -> Path:
        """Working folder of the demo's embedded Redis."""
        return self.root / ".embedded-redis"


def _resolved(path: Path) -> Path:
    return Path(path).expanduser().resolve()
