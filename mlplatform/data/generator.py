"""Seeded generator of the synthetic fraud world: customers, merchants, transactions, late labels, oracle.

Raw data is laid out in immutable parts, one per period, so new data arrives as new files::

    raw/customers.parquet  raw/merchants.parquet
    raw/transactions/<YYYYmmdd>-<YYYYmmdd>.parquet   one row per card transaction (the first part: the history
                                                     before the world's start, see HISTORY_DAYS)
    raw/labels/<YYYYmmdd>-<YYYYmmdd>.parquet         labels that *arrived* in that period (late: days after)
    oracle/<YYYYmmdd>-<YYYYmmdd>.parquet             true fraud probability per transaction (never a feature)
    raw/manifest.json                                what was generated, with which seed

The base period never depends on whether a drifted period follows, so the same seed always gives the same
bytes for it.

When the world is: ``--start`` if given (the same ``--start`` and seed always give byte-identical files).
Without it, a data folder that already holds a world keeps that world's start (its ``raw/manifest.json``), so
the base period generated today and ``--drift`` generated tomorrow still describe one world; a new folder gets
a world that ends at the start of today (UTC)::

    start = start of today - (days + drift_days)
    base period     [start, start + days)                        ends drift_days before today
    drifted period  [start + days, start + days + drift_days)    ends at the start of today (with --drift)

so on any day the newest data is at most drift_days old (hours old after ``--drift``) and requests stamped now
read rows inside every view's TTL, instead of rows from a fixed calendar that go stale a month later.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform.data import world
from mlplatform.errors import ConflictError, InvalidInputError
from mlplatform.files import write_atomic
from mlplatform.timeutil import now_utc, start_of_day

SECONDS_PER_DAY = 86_400
# A world does not begin empty: its customers were shopping, and their frauds being reported, before its start.
# The history (``WorldSpec.history_days`` before the start, default HISTORY_DAYS) fills every window before the
# first day: 7 days of transactions for the customers' windows, 30 days of arrived labels (+ their usual delay) for
# the merchants'. So features are as full on day 0 as on day 28: no warm-up rows, no false skew between two
# undrifted samples. The history is data (raw transactions and labels, features built from them), never training
# rows: training sets start at the world's start (``history_end``).
HISTORY_DAYS = 37
# Daily activity follows people: fewer transactions at night (UTC), more in the day and evening.
HOUR_WEIGHTS = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 4, 4, 4.5, 4.5, 4, 4, 4, 4.5, 5, 5, 4.5, 3.5, 2.5, 1.5]
)
HOUR_WEIGHTS = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()


@dataclass(frozen=True)
class WorldSpec:
    """What to generate: the same spec (and seed) always gives byte-identical files.

    ``start`` None means "the default": the data folder's existing start, else :func:`default_start`."""

    customers: int = 2000
    days: int = 28
    seed: int = 7
    start: datetime | None = None
    drift_days: int = 14
    history_days: int = HISTORY_DAYS

    def validate(self) -> None:
        """Refuse sizes the generator cannot honour, naming the option."""
        if self.customers < 10:
            raise InvalidInputError(f"--customers must be at least 10 (got {self.customers})")
        if self.days < 1:
            raise InvalidInputError(f"--days must be at least 1 (got {self.days})")
        if self.drift_days < 1:
            raise InvalidInputError(f"--drift-days must be at least 1 (got {self.drift_days})")
        if self.history_days < 1:
            raise InvalidInputError(f"--history-days must be at least 1 (got {self.history_days})")

    @property
    def merchants(self) -> int:
        return max(40, self.customers // 10)

    @property
    def begin(self) -> datetime:
        """The start of the base period (the default one if ``start`` is None)."""
        return self.start if self.start is not None else default_start(self.days, self.drift_days)

    @property
    def base_end(self) -> datetime:
        return self.begin + timedelta(days=self.days)

    @property
    def drift_end(self) -> datetime:
        return self.base_end + timedelta(days=self.drift_days)


def default_start(days: int, drift_days: int, now: datetime | None = None) -> datetime:
    """The start of a new world: the start of today (UTC) minus ``days + drift_days``, so it ends today."""
    return start_of_day(now or now_utc()) - timedelta(days=days + drift_days)


def resolve_start(spec: WorldSpec, data_dir: Path, now: datetime | None = None) -> WorldSpec:
    """``spec`` with a concrete start: its own, else the start of the world already in ``data_dir``, else the
    default (a world ending at the start of today)."""
    if spec.start is not None:
        start = spec.start if spec.start.tzinfo else spec.start.replace(tzinfo=UTC)  # naive = UTC
        return replace(spec, start=start.astimezone(UTC))
    existing = _manifest_or_none(data_dir)
    if existing is not None and existing.get("spec", {}).get("start"):
        return replace(spec, start=datetime.fromisoformat(existing["spec"]["start"]).astimezone(UTC))
    return replace(spec, start=default_start(spec.days, spec.drift_days, now))


@dataclass(frozen=True)
class Period:
    """One period of raw data: [start, end), with its part name."""

    start: datetime
    end: datetime
    index: int
    drifted: bool

    @property
    def name(self) -> str:
        return f"{self.start:%Y%m%d}-{self.end:%Y%m%d}"


def periods(spec: WorldSpec) -> list[Period]:
    """The base period and the drifted period after it."""
    return [
        Period(spec.begin, spec.base_end, 0, False),
        Period(spec.base_end, spec.drift_end, 1, True),
    ]


def history_period(spec: WorldSpec) -> Period:
    """The history before the world's start: ``history_days`` of the base period's kind of activity."""
    return Period(spec.begin - timedelta(days=spec.history_days), spec.begin, -1, False)


def make_customers(spec: WorldSpec) -> pd.DataFrame:
    """Customers with a home country, a typical amount and an activity rate (the last two are latent)."""
    rng = np.random.default_rng([spec.seed, 1])
    n = spec.customers
    signup_days = rng.integers(30, 720, size=n)
    return pd.DataFrame(
        {
            "customer_id": np.arange(1, n + 1, dtype=np.int64),
            "home_country": rng.choice(world.COUNTRIES, size=n, p=world.COUNTRY_WEIGHTS),
            "typical_amount": np.round(np.exp(rng.normal(3.3, 0.6, size=n)), 2),
            "txn_per_day": np.round(rng.gamma(2.0, 1.5, size=n) + 0.2, 3),
            "event_timestamp": _ts(history_period(spec).start) - pd.to_timedelta(signup_days, unit="D"),
        }
    )


def make_merchants(spec: WorldSpec) -> pd.DataFrame:
    """Merchants with category, country and a latent risk drawn around their category's risk."""
    rng = np.random.default_rng([spec.seed, 2])
    n = spec.merchants
    cat_idx = rng.choice(len(world.CATEGORIES), size=n, p=world.CATEGORY_WEIGHTS)
    risk = np.clip(world.CATEGORY_RISK[cat_idx] + rng.normal(0, 0.04, size=n), 0.0, 1.0)
    onboard_days = rng.integers(60, 1000, size=n)
    return pd.DataFrame(
        {
            "merchant_id": np.arange(1, n + 1, dtype=np.int64) + 10_000,
            "category": world.CATEGORIES[cat_idx],
            "country": rng.choice(world.COUNTRIES, size=n, p=world.COUNTRY_WEIGHTS),
            "risk": np.round(risk, 4),
            "event_timestamp": _ts(history_period(spec).start) - pd.to_timedelta(onboard_days, unit="D"),
        }
    )


def _ts(dt: datetime) -> pd.Timestamp:
    return pd.Timestamp(dt).tz_convert("UTC")


def _period_transactions(
    spec: WorldSpec, period: Period, customers: pd.DataFrame, merchants: pd.DataFrame
) -> pd.DataFrame:
    """Normal activity plus compromised-card episodes (bursts at risky, often foreign, merchants)."""
    rng = np.random.default_rng([spec.seed, 100 + period.index])
    days = (period.end - period.start).days
    start_s = int(period.start.timestamp())
    n_cust = len(customers)
    m_country = merchants["country"].to_numpy()
    m_risk = merchants["risk"].to_numpy()
    home = customers["home_country"].to_numpy()
    typical = customers["typical_amount"].to_numpy()
    amount_scale = world.DRIFT_AMOUNT_SCALE if period.drifted else 1.0
    foreign_share = world.DRIFT_FOREIGN_SHARE if period.drifted else world.BASE_FOREIGN_SHARE

    # --- normal activity -----------------------------------------------------------------------------
    counts = rng.poisson(customers["txn_per_day"].to_numpy() * days)
    cust_idx = np.repeat(np.arange(n_cust), counts)
    n = len(cust_idx)
    day = rng.integers(0, days, size=n)
    hour = rng.choice(24, size=n, p=HOUR_WEIGHTS)
    secs = start_s + day * SECONDS_PER_DAY + hour * 3600 + rng.integers(0, 3600, size=n)
    # Each customer mostly shops at a handful of favourite domestic merchants.
    domestic = [np.flatnonzero(m_country == c) for c in world.COUNTRIES]
    foreign = [np.flatnonzero(m_country != c) for c in world.COUNTRIES]
    country_idx = _country_index(home)
    fav_slot = rng.integers(0, 5, size=n)
    is_foreign = rng.random(n) < foreign_share
    merch = np.empty(n, dtype=np.int64)
    for ci in range(len(world.COUNTRIES)):
        rows = country_idx[cust_idx] == ci
        pool_dom = domestic[ci] if len(domestic[ci]) else np.arange(len(merchants))
        # favourite k of customer c = a fixed, customer-specific pick from the domestic pool
        fav = pool_dom[(cust_idx[rows] * 7919 + fav_slot[rows] * 104729) % len(pool_dom)]
        pick_foreign = is_foreign[rows]
        pool_for = foreign[ci]
        merch[rows] = np.where(pick_foreign, pool_for[rng.integers(0, len(pool_for), size=rows.sum())], fav)
    amount = typical[cust_idx] * np.exp(rng.normal(0.0, 0.45, size=n)) * amount_scale

    # --- compromised-card episodes: a burst of 3-8 transactions within ~40 minutes ---------------------
    n_ep = rng.poisson(0.003 * days * n_cust)
    ep_cust = rng.integers(0, n_cust, size=n_ep)
    ep_len = rng.integers(3, 9, size=n_ep)
    ep_start = start_s + rng.integers(0, days * SECONDS_PER_DAY - 3600, size=n_ep)
    e_cust = np.repeat(ep_cust, ep_len)
    e_secs = np.repeat(ep_start, ep_len) + rng.integers(0, 2400, size=ep_len.sum())
    risky = np.argsort(-m_risk)[: max(5, len(merchants) // 5)]
    e_merch = np.where(
        rng.random(len(e_cust)) < 0.6,
        risky[rng.integers(0, len(risky), size=len(e_cust))],
        rng.integers(0, len(merchants), size=len(e_cust)),
    )
    e_amount = typical[e_cust] * np.exp(rng.normal(1.0, 0.6, size=len(e_cust))) * amount_scale

    frame = pd.DataFrame(
        {
            "cust_idx": np.concatenate([cust_idx, e_cust]),
            "secs": np.concatenate([secs, e_secs]),
            "merch_idx": np.concatenate([merch, e_merch]),
            "amount": np.round(np.maximum(np.concatenate([amount, e_amount]), 0.5), 2),
        }
    )
    # One transaction per customer per second keeps "the transactions before this one" unambiguous.
    frame = frame.drop_duplicates(["cust_idx", "secs"]).sort_values(["secs", "cust_idx"], kind="stable")
    return frame.reset_index(drop=True)


def _country_index(countries: np.ndarray) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(world.COUNTRIES)}
    return np.array([lookup[c] for c in countries], dtype=np.int64)


def _apply_fraud_rule(frame: pd.DataFrame, customers: pd.DataFrame, merchants: pd.DataFrame) -> np.ndarray:
    """True fraud probability of each row of ``frame`` (all periods so far, time-ordered)."""
    cust = frame["cust_idx"].to_numpy()
    secs = frame["secs"].to_numpy()
    order = np.lexsort((secs, cust))
    key = cust[order].astype(np.int64) * (1 << 40) + secs[order]
    pos = np.arange(len(key))
    first_in_hour = np.searchsorted(key, key - 3600, side="right")
    n_prev = np.empty(len(key), dtype=np.int64)
    n_prev[order] = pos - first_in_hour
    merch = frame["merch_idx"].to_numpy()
    home = customers["home_country"].to_numpy()[cust]
    m_country = merchants["country"].to_numpy()[merch]
    hour = (secs % SECONDS_PER_DAY) // 3600
    return world.fraud_probability(
        n_prev,
        frame["amount"].to_numpy(),
        customers["typical_amount"].to_numpy()[cust],
        home != m_country,
        hour,
        merchants["risk"].to_numpy()[merch],
    )


@dataclass
class GeneratedPeriod:
    period: Period
    transactions: pd.DataFrame
    labels: pd.DataFrame
    oracle: pd.DataFrame


def simulate(spec: WorldSpec, upto: int) -> tuple[pd.DataFrame, pd.DataFrame, list[GeneratedPeriod]]:
    """Simulate the history and periods 0..upto; returns customers, merchants and each one's tables (the history
    first)."""
    spec.validate()
    if spec.start is None:  # fix "today" once, so every table agrees even across midnight
        spec = replace(spec, start=spec.begin)
    customers = make_customers(spec)
    merchants = make_merchants(spec)
    parts = [history_period(spec), *periods(spec)[: upto + 1]]
    frames = [_period_transactions(spec, p, customers, merchants) for p in parts]
    all_rows = pd.concat(frames, ignore_index=True)
    prob = _apply_fraud_rule(all_rows, customers, merchants)
    out: list[GeneratedPeriod] = []
    offset = 0
    labels_all = []
    for p, frame in zip(parts, frames, strict=True):
        rng = np.random.default_rng([spec.seed, 200 + p.index])
        n = len(frame)
        p_fraud = prob[offset : offset + n]
        is_fraud = rng.random(n) < p_fraud
        # Labels arrive late: chargebacks for fraud after 1 + Exp(4) days, confirmations after 3 + Exp(2) days.
        delay_days = np.where(is_fraud, 1.0 + rng.exponential(4.0, n), 3.0 + rng.exponential(2.0, n))
        tx_id = np.arange(offset + 1, offset + n + 1, dtype=np.int64)
        ts = pd.to_datetime(frame["secs"].to_numpy(), unit="s", utc=True).as_unit("us")
        tx = pd.DataFrame(
            {
                "transaction_id": tx_id,
                "customer_id": customers["customer_id"].to_numpy()[frame["cust_idx"].to_numpy()],
                "merchant_id": merchants["merchant_id"].to_numpy()[frame["merch_idx"].to_numpy()],
                "amount": frame["amount"].to_numpy(),
                "event_timestamp": ts,
            }
        )
        label_ts = (ts + pd.to_timedelta(np.round(delay_days * SECONDS_PER_DAY), unit="s")).as_unit("us")
        labels_all.append(
            pd.DataFrame(
                {
                    "transaction_id": tx_id,
                    "customer_id": tx["customer_id"],
                    "merchant_id": tx["merchant_id"],
                    "transaction_timestamp": ts,
                    "is_fraud": is_fraud.astype(np.int8),
                    "label_timestamp": label_ts,
                }
            )
        )
        oracle = pd.DataFrame({"transaction_id": tx_id, "fraud_probability": p_fraud})
        out.append(GeneratedPeriod(p, tx, pd.DataFrame(), oracle))
        offset += n
    labels = pd.concat(labels_all, ignore_index=True)
    for gp in out:
        # A period's label file holds the labels that arrived during it, whatever transaction they belong to.
        arrived = (labels["label_timestamp"] >= _ts(gp.period.start)) & (labels["label_timestamp"] < _ts(gp.period.end))
        gp.labels = labels[arrived].sort_values(["label_timestamp", "transaction_id"]).reset_index(drop=True)
    return customers, merchants, out


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(df, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_immutable(path: Path, payload: bytes) -> str:
    """Write ``payload`` once. Same bytes again: a no-op. Different bytes: refused (raw data is immutable)."""
    if path.exists():
        if path.read_bytes() == payload:
            return "unchanged"
        raise ConflictError(
            f"{path} already exists with different content; raw data is immutable. Generate into another data "
            "folder (set MLPLATFORM_DATA_DIR, e.g. MLPLATFORM_DATA_DIR=data2 mlplatform data generate ...), "
            "or delete this one deliberately."
        )
    write_atomic(path, payload)
    return "written"


def generate(spec: WorldSpec, data_dir: Path, drift: bool = False, now: datetime | None = None) -> dict[str, str]:
    """Write the base period (or, with ``drift``, also the drifted period after it). Returns file -> status.

    A spec without a start takes the folder's existing one, else a start that makes the world end today
    (``now`` stands in for the clock in tests)."""
    spec = resolve_start(spec, data_dir, now)
    spec.validate()
    _check_same_world(spec, data_dir)
    upto = 1 if drift else 0
    customers, merchants, parts = simulate(spec, upto)
    raw = data_dir / "raw"
    written: dict[str, str] = {}
    public_customers = customers[["customer_id", "home_country", "event_timestamp"]]
    public_merchants = merchants[["merchant_id", "category", "country", "event_timestamp"]]
    written["raw/customers.parquet"] = write_immutable(raw / "customers.parquet", _parquet_bytes(public_customers))
    written["raw/merchants.parquet"] = write_immutable(raw / "merchants.parquet", _parquet_bytes(public_merchants))
    for gp in parts:
        name = gp.period.name + ".parquet"
        written[f"raw/transactions/{name}"] = write_immutable(
            raw / "transactions" / name, _parquet_bytes(gp.transactions)
        )
        written[f"raw/labels/{name}"] = write_immutable(raw / "labels" / name, _parquet_bytes(gp.labels))
        written[f"oracle/{name}"] = write_immutable(data_dir / "oracle" / name, _parquet_bytes(gp.oracle))
    # The latent world (typical amounts, merchant risk) is oracle material too: handy for tests, never a feature.
    written["oracle/customers.parquet"] = write_immutable(
        data_dir / "oracle" / "customers.parquet", _parquet_bytes(customers)
    )
    written["oracle/merchants.parquet"] = write_immutable(
        data_dir / "oracle" / "merchants.parquet", _parquet_bytes(merchants)
    )
    new_periods = [
        {
            "name": gp.period.name,
            "start": gp.period.start.isoformat(),
            "end": gp.period.end.isoformat(),
            "drifted": gp.period.drifted,
            "transactions": len(gp.transactions),
            "labels": len(gp.labels),
        }
        for gp in parts
        if gp.period.index >= 0
    ]
    history = parts[0]
    # Periods generated earlier and not this time (the drifted one, when the base is generated again) stay listed.
    earlier = (_manifest_or_none(data_dir) or {}).get("periods", [])
    by_name = {p["name"]: p for p in earlier} | {p["name"]: p for p in new_periods}
    manifest = {
        "spec": {**asdict(spec), "start": spec.begin.isoformat()},
        "history": {"name": history.period.name, "start": history.period.start.isoformat(),
                    "end": history.period.end.isoformat(), "transactions": len(history.transactions),
                    "labels": len(history.labels)},
        "periods": sorted(by_name.values(), key=lambda p: p["start"]),
    }
    write_atomic(raw / "manifest.json", json.dumps(manifest, indent=2))
    return written


SPEC_OPTIONS = {"customers": "--customers", "days": "--days", "seed": "--seed", "start": "--start",
                "drift_days": "--drift-days", "history_days": "--history-days"}


def _check_same_world(spec: WorldSpec, data_dir: Path) -> None:
    """Refuse to add a different world's files to a folder that already holds one (raw data is immutable)."""
    existing = (_manifest_or_none(data_dir) or {}).get("spec")
    if not existing:
        return
    wanted = {**asdict(spec), "start": spec.begin.isoformat()}
    differs = [f"{flag} {wanted[key]} (the folder has {existing.get(key)})" for key, flag in SPEC_OPTIONS.items()
               if key in existing and _normal(existing[key]) != _normal(wanted[key])]
    if differs:
        raise ConflictError(
            f"{data_dir / 'raw'} already holds another world; raw data is immutable and this one differs in: "
            + "; ".join(differs)
            + ". Generate into another data folder (set MLPLATFORM_DATA_DIR, e.g. MLPLATFORM_DATA_DIR=data2), "
            "or delete this one deliberately."
        )


def _normal(value):
    """Spec values as comparable: times as UTC datetimes, the rest as they are."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).astimezone(UTC)
        except ValueError:
            return value
    return value


def _manifest_or_none(data_dir: Path) -> dict | None:
    """The folder's raw manifest, None if there is none; a clear conflict if it cannot be read."""
    path = data_dir / "raw" / "manifest.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConflictError(
            f"{path} cannot be read ({type(exc).__name__}), so what this folder holds is unknown; generate into "
            "another data folder (set MLPLATFORM_DATA_DIR) or delete this one deliberately"
        ) from exc


def read_manifest(data_dir: Path) -> dict:
    """The raw manifest written by ``generate``."""
    path = data_dir / "raw" / "manifest.json"
    if not path.exists():
        from mlplatform.errors import DataNotFoundError

        raise DataNotFoundError(f"No raw data in {data_dir}: run `mlplatform data generate` first.")
    return json.loads(path.read_text())


def history_end(data_dir: Path) -> datetime | None:
    """Where a generated world's history ends (its start): training rows begin there. None for raw data without a
    manifest or with no history (generated before there was one)."""
    manifest = _manifest_or_none(data_dir)
    history = (manifest or {}).get("history")
    return datetime.fromisoformat(history["end"]).astimezone(UTC) if history else None
