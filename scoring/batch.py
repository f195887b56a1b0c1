"""Score every transaction of a window with a registered model, point-in-time correct, in bounded chunks.

The same contract as training and serving (``mlplatform.features.service``): a transaction at time t becomes an
entity row at t - 1 µs with its request fields, and gets its features through the model's FeatureService: each
chunk gets what ``get_historical_features`` gives it, from a joiner that resolves the service once and carries
each view's latest rows from chunk to chunk, so every feature row is read once per run
(``mlplatform.features.batch.ServiceFeatureChunks``). The window is cut into chunks of about
``scoring_chunk_rows`` transactions (whole hours, from an hourly count DuckDB computes over the raw files), so
memory holds one chunk at a time however long the window. Scores stream into one Parquet file (a row group per
chunk) written under a temporary name and renamed into place at the end: a failed run leaves no file behind.

With ``MLPLATFORM_SCORES_URI`` (or an ``--output`` URL) on another filesystem (``memory://``, ``s3://``...), the file
is written the same way under ``<data_dir>/scores/`` first, then put there whole (one put; a multipart upload for a
large file: the object appears complete or not at all) and deleted locally; a failed put keeps the local file and
says where it is.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform.errors import DataNotFoundError, InvalidInputError, MLPlatformError
from mlplatform.features.batch import ServiceFeatureChunks
from mlplatform.features.service import feature_signature
from mlplatform.files import atomic_path
from mlplatform.filesystems import Location, open_file, scores_location
from mlplatform.models.scoring import predict
from mlplatform.settings import Settings
from mlplatform.timeutil import utc

OUTPUT_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.int64()),  # as in raw transactions and labels: scores merge with them as they are
        ("customer_id", pa.int64()),
        ("merchant_id", pa.int64()),
        ("amount", pa.float64()),
        ("transaction_time", pa.timestamp("us", tz="UTC")),
        ("score", pa.float64()),
        ("model_name", pa.string()),
        ("model_version", pa.int64()),
        ("feature_service", pa.string()),
        ("run_id", pa.string()),
    ]
)
RAW_COLUMNS = "transaction_id, customer_id, merchant_id, amount, event_timestamp"


@dataclass(frozen=True)
class Chunk:
    """Transactions with ``start <= event_timestamp < end``: ``rows`` of them."""

    start: datetime
    end: datetime
    rows: int


@dataclass(frozen=True)
class ScoreResult:
    """What one batch-scoring run wrote."""

    run_id: str
    path: Path | str  # a URI (no credentials) when the file went to another filesystem
    rows: int
    chunks: int
    model_name: str
    model_version: int
    feature_service: str
    start: datetime
    end: datetime
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    return con


def _transactions_glob(settings: Settings) -> str:
    folder = settings.layout.raw_dir / "transactions"
    if not any(folder.glob("*.parquet")):
        raise DataNotFoundError(f"no raw transactions in {folder}: run `mlplatform data generate` first")
    return str(folder / "*.parquet")


def plan_chunks(settings: Settings, start: datetime, end: datetime, chunk_rows: int) -> list[Chunk]:
    """Whole hours of the window packed into chunks of at most ``chunk_rows`` transactions (one hour may exceed it)."""
    sql = (
        "SELECT time_bucket(INTERVAL 1 hour, event_timestamp) AS hour, count(*) AS n "
        "FROM read_parquet($glob) WHERE event_timestamp >= $start AND event_timestamp < $end GROUP BY 1 ORDER BY 1"
    )
    with _connect() as con:
        hours = con.execute(sql, {"glob": _transactions_glob(settings), "start": start, "end": end}).fetchall()
    chunks: list[Chunk] = []
    lo, n = None, 0
    for hour, count in hours:
        hour = utc(hour).to_pydatetime()
        if lo is not None and n + count > chunk_rows:
            chunks.append(Chunk(max(lo, start), hour, n))
            lo, n = None, 0
        lo = hour if lo is None else lo
        n += count
    if lo is not None:
        chunks.append(Chunk(max(lo, start), end, n))
    return chunks


def raw_time_range(settings: Settings) -> tuple[datetime, datetime, int] | None:
    """First and last transaction time in the raw data, and how many there are (None when there are none)."""
    sql = "SELECT min(event_timestamp), max(event_timestamp), count(*) FROM read_parquet($glob)"
    with _connect() as con:
        first, last, n = con.execute(sql, {"glob": _transactions_glob(settings)}).fetchone()
    return None if not n else (utc(first).to_pydatetime(), utc(last).to_pydatetime(), int(n))


def empty_window_error(settings: Settings, start: datetime, end: datetime) -> DataNotFoundError:
    """The error for a window without transactions, naming the window and the time range the data covers."""
    span = raw_time_range(settings)
    covers = (f"the raw data holds {span[2]:,} transactions from {span[0].isoformat()} to {span[1].isoformat()}"
              if span else "the raw data holds no transactions")
    return DataNotFoundError(
        f"no transactions in the window [{start.isoformat()}, {end.isoformat()}): {covers}; "
        "nothing was scored or written"
    )


def read_transactions(settings: Settings, chunk: Chunk, con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
    """The chunk's raw transactions in time order (through ``con`` when given, else a connection of its own)."""
    sql = (
        f"SELECT {RAW_COLUMNS} FROM read_parquet($glob) "
        "WHERE event_timestamp >= $start AND event_timestamp < $end ORDER BY event_timestamp, transaction_id"
    )
    params = {"glob": _transactions_glob(settings), "start": chunk.start, "end": chunk.end}
    if con is not None:
        return con.execute(sql, params).df()
    with _connect() as own:
        return own.execute(sql, params).df()


def resolve_model(settings: Settings, version: int | None):
    """The named version, or the golden one; a clear error when neither exists."""
    from mlplatform.models.registry import ModelRegistry

    registry = ModelRegistry(settings)
    if version is not None:
        return registry, registry.get(version)
    golden = registry.golden()
    if golden is None:
        raise DataNotFoundError(
            f"model {settings.model_name} has no golden version yet: promote one or pass --model VERSION"
        )
    return registry, golden


def _check_features_cover(settings: Settings, chunks: list[Chunk]) -> None:
    """Refuse to score transactions the feature tables do not reach yet (their features would be stale)."""
    from mlplatform.features.pipelines import read_build_state

    state = read_build_state(settings.layout.features_dir)
    if "until" not in state:
        raise DataNotFoundError("no feature tables yet: run `mlplatform features build` (and `apply`) first")
    built = utc(state["until"])
    last = max((c.end for c in chunks if c.rows), default=None)
    if last is not None and utc(last) > built:
        with _connect() as con:
            late = con.execute(
                "SELECT count(*) FROM read_parquet($glob) WHERE event_timestamp >= $built AND event_timestamp < $end",
                {"glob": _transactions_glob(settings), "built": built.to_pydatetime(), "end": last},
            ).fetchone()[0]
        if late:
            raise DataNotFoundError(
                f"features are built up to {built.isoformat()} but {late:,} transactions of the window are later: "
                "run `mlplatform features build --since last` (and `materialize`) first, or end the window earlier"
            )


def model_inputs(features: pa.Table, names: list[str]) -> pd.DataFrame:
    """The columns ``names`` of a feature table (the first of any repeated name), as a DataFrame in that order."""
    first: dict[str, int] = {}
    for i, name in enumerate(features.column_names):
        first.setdefault(name, i)
    missing = [n for n in names if n not in first]
    if missing:
        raise InvalidInputError(f"the feature service no longer gives {missing}")
    return pd.DataFrame({n: features.column(first[n]).to_numpy() for n in names}, copy=False)


def iter_chunks(settings: Settings, chunks: list[Chunk], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The window's transactions, at most ``chunk_rows`` at a time."""
    with _connect() as con:
        for chunk in chunks:
            if not chunk.rows:
                continue
            tx = read_transactions(settings, chunk, con)
            for lo in range(0, len(tx), chunk_rows):
                yield tx.iloc[lo : lo + chunk_rows]


def default_name(settings: Settings, start: datetime, end: datetime, version: int, run_id: str) -> str:
    """The scores file's name: model, version, window and run."""
    fmt = "%Y%m%dT%H%M%SZ"
    return f"{settings.model_name}-v{version}_{start:{fmt}}_{end:{fmt}}_{run_id}.parquet"


def default_output(settings: Settings, start: datetime, end: datetime, version: int, run_id: str) -> Path:
    """The scores file in the local scores folder (``scores_location`` says where it goes)."""
    return settings.layout.scores_dir / default_name(settings, start, end, version, run_id)


def output_target(settings: Settings, output: Path | str | None) -> tuple[Location, str | None]:
    """Where the scores file goes: the folder and name of ``output`` (a path or URL; the name must end in .parquet),
    or ``scores_location`` and None (the default name, known once the model is)."""
    if output is None:
        return scores_location(settings.layout), None
    location, name = open_file(output, "--output")
    if not name.endswith(".parquet"):
        raise InvalidInputError(f"--output {location.show(name)} must end in .parquet")
    return location, name


def put_scores(settings: Settings, written: Path, location: Location, name: str) -> str:
    """Put the complete local scores file ``written`` to ``name`` in ``location`` (another filesystem), then delete
    it; returns the URI. A failed put keeps the local file and says where (MLPlatformError)."""
    from mlplatform.redact import redact

    try:
        uri = str(location.put_file(written, name))
    except Exception as exc:  # noqa: BLE001 - any store error: say what failed and where the scores are
        raise MLPlatformError(
            f"could not put the scores to {location.show(name)} ({type(exc).__name__}: {redact(str(exc))}); "
            f"they are kept at {written}") from None
    written.unlink(missing_ok=True)
    return uri


def score_window(
    settings: Settings,
    start: datetime,
    end: datetime,
    model_version: int | None = None,
    output: Path | str | None = None,
    chunk_rows: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ScoreResult:
    """Score every transaction with ``start <= time < end`` with the golden model (or ``model_version``).

    ``output``: a path or URL (default: in ``scores_location``). A window without transactions is a
    DataNotFoundError naming the data's time range, raised before anything is loaded or written."""
    t0 = time.perf_counter()
    start, end = utc(start).to_pydatetime(), utc(end).to_pydatetime()
    if start >= end:
        raise InvalidInputError(f"--start {start.isoformat()} must be before --end {end.isoformat()}")
    chunk_rows = chunk_rows or settings.scoring_chunk_rows
    location, name = output_target(settings, output)  # a bad --output or store fails before any work
    chunks = plan_chunks(settings, start, end, chunk_rows)  # one DuckDB count over the raw files: cheap
    total = sum(c.rows for c in chunks)
    if not total:  # fail before the registry and Feast are loaded (seconds), and write nothing
        raise empty_window_error(settings, start, end)
    registry, mv = resolve_model(settings, model_version)
    _check_features_cover(settings, chunks)

    from mlplatform.stores import open_feature_store

    store = open_feature_store(settings)
    try:
        service = store.get_feature_service(mv.feature_service)
    except Exception as exc:  # FeatureServiceNotFoundException and registry errors
        raise DataNotFoundError(
            f"{mv.name} v{mv.version} needs feature service {mv.feature_service!r}, which the Feast registry "
            f"does not have ({type(exc).__name__}); run `mlplatform apply` first"
        ) from exc
    served = {name for name, _ in feature_signature(store, mv.feature_service)}
    missing = [n for n in mv.feature_names if n not in served]
    if missing:
        raise InvalidInputError(
            f"{mv.name} v{mv.version} expects features its service {mv.feature_service!r} no longer serves: "
            f"{', '.join(missing)}; score with a model trained on the current definitions"
        )
    booster = registry.load_booster(mv.version)

    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    name = name or default_name(settings, start, end, mv.version, run_id)
    # on another filesystem: written locally first (the scores folder), put there whole at the end
    path = location.local / name if location.local is not None else settings.layout.scores_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "run_id": run_id,
        "model_name": mv.name,
        "model_version": mv.version,
        "feature_service": mv.feature_service,
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "rows": total,
        "created_at": datetime.now(UTC).isoformat(),
    }
    schema = OUTPUT_SCHEMA.with_metadata({"mlplatform": json.dumps(meta)})
    done = 0
    if on_progress:
        on_progress(0, total)
    with (
        atomic_path(path) as tmp,
        pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
        ServiceFeatureChunks(store, service) as service_features,
    ):
        for tx in iter_chunks(settings, chunks, chunk_rows):
            features = service_features.features(tx)
            if features.num_rows != len(tx):
                raise RuntimeError(f"feature retrieval returned {features.num_rows} rows for {len(tx)} transactions")
            scores = np.asarray(predict(booster, model_inputs(features, mv.feature_names), mv.feature_names),
                                dtype=np.float64)
            n = len(tx)
            table = pa.table(
                {
                    "transaction_id": tx["transaction_id"].to_numpy(dtype=np.int64),
                    "customer_id": tx["customer_id"].to_numpy(dtype=np.int64),
                    "merchant_id": tx["merchant_id"].to_numpy(dtype=np.int64),
                    "amount": tx["amount"].to_numpy(dtype=np.float64),
                    "transaction_time": pa.array(
                        pd.to_datetime(tx["event_timestamp"], utc=True, cache=False).dt.as_unit("us"),
                        pa.timestamp("us", tz="UTC"),
                    ),
                    "score": scores,
                    "model_name": pa.array([mv.name] * n, pa.string()),
                    "model_version": np.full(n, mv.version, dtype=np.int64),
                    "feature_service": pa.array([mv.feature_service] * n, pa.string()),
                    "run_id": pa.array([run_id] * n, pa.string()),
                },
                schema=schema,
            )
            writer.write_table(table)
            done += n
            if on_progress:
                on_progress(done, total)
    where: Path | str = path if location.local is not None else put_scores(settings, path, location, name)
    result = ScoreResult(
        run_id, where, done, len(chunks), mv.name, mv.version, mv.feature_service, start, end, time.perf_counter() - t0
    )
    from mlplatform import audit

    details = {k: v for k, v in asdict(result).items() if k not in ("path",)}
    audit.record(settings, "batch_score", target=str(where), details=details)
    return result


def read_scores_metadata(path: Path | str) -> dict:
    """The run's metadata stored in a scores file (run id, model, feature service, window): a local path or a URL,
    read through its filesystem."""
    location, name = open_file(path, "the scores file")
    with location.open_input(name) as fh:
        meta = pq.read_schema(fh).metadata or {}
    return json.loads(meta.get(b"mlplatform", b"{}"))
