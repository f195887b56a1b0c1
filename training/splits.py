"""Split strategies, chosen by name: ``time`` (default, no future rows in training), ``random`` (seeded) and
``custom`` (a user-supplied assignment). Every split is checked: degenerate ones warn loudly, impossible ones are
refused with a message saying what to change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlplatform.errors import InvalidInputError

SPLITS = ("train", "validation", "test")
MIN_POSITIVES = 20
MIN_VALIDATION_ROWS = 200


@dataclass(frozen=True)
class SplitSpec:
    """How to split: strategy name, fractions of validation and test rows, seed, and (custom) an assignment."""

    strategy: str = "time"
    validation_fraction: float = 0.15
    test_fraction: float = 0.2
    seed: int = 7
    assignment_path: Path | None = None  # custom: Parquet/CSV with transaction_id, split


@dataclass
class SplitResult:
    """Which split each row belongs to, a summary per split, and the warnings raised."""

    labels: pd.Series  # "train" / "validation" / "test", aligned with the frame
    summary: dict[str, dict]
    warnings: list[str] = field(default_factory=list)

    def frame(self, data: pd.DataFrame, name: str) -> pd.DataFrame:
        """The rows of ``data`` in split ``name``."""
        return data[self.labels.to_numpy() == name]


def _check_fractions(spec: SplitSpec) -> None:
    v, t = spec.validation_fraction, spec.test_fraction
    if not (0 < v < 1 and 0 < t < 1 and v + t < 1):
        raise InvalidInputError(
            f"split fractions must be > 0 and leave rows for training: validation={v}, test={t} (their sum must be < 1)"
        )


def time_split(data: pd.DataFrame, spec: SplitSpec, time_col: str = "event_timestamp") -> pd.Series:
    """Oldest rows train, then validation, newest test; cut on time so no timestamp spans two splits."""
    _check_fractions(spec)
    ts = data[time_col].astype("int64").to_numpy()
    order = np.sort(ts)
    n = len(ts)
    if n == 0:
        raise InvalidInputError("cannot split an empty training set")
    cut_val = order[min(n - 1, int(round(n * (1 - spec.validation_fraction - spec.test_fraction))))]
    cut_test = order[min(n - 1, int(round(n * (1 - spec.test_fraction))))]
    labels = np.where(ts < cut_val, "train", np.where(ts < cut_test, "validation", "test"))
    return pd.Series(labels, index=data.index, name="split")


def random_split(data: pd.DataFrame, spec: SplitSpec, time_col: str = "event_timestamp") -> pd.Series:
    """A seeded random assignment in the given fractions (the same seed and rows give the same split)."""
    _check_fractions(spec)
    n = len(data)
    if n == 0:
        raise InvalidInputError("cannot split an empty training set")
    # Order rows by transaction id first so the split depends on the rows, not on how the frame was sorted.
    key = data["transaction_id"].to_numpy() if "transaction_id" in data.columns else np.arange(n)
    order = np.argsort(key, kind="stable")
    perm = np.random.default_rng(spec.seed).permutation(n)
    n_test = int(round(n * spec.test_fraction))
    n_val = int(round(n * spec.validation_fraction))
    labels = np.full(n, "train", dtype=object)
    labels[order[perm[:n_test]]] = "test"
    labels[order[perm[n_test:n_test + n_val]]] = "validation"
    return pd.Series(labels.astype(str), index=data.index, name="split")


def custom_split(data: pd.DataFrame, spec: SplitSpec, time_col: str = "event_timestamp") -> pd.Series:
    """The user's assignment: a file of (transaction_id, split) rows covering every transaction."""
    path = spec.assignment_path
    if path is None:
        raise InvalidInputError("--split custom needs --split-file PATH (Parquet or CSV with transaction_id, split)")
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"split file {path} does not exist")
    try:
        table = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as exc:
        raise InvalidInputError(f"split file {path} cannot be read: {type(exc).__name__}: {exc}") from exc
    if not {"transaction_id", "split"} <= set(table.columns):
        raise InvalidInputError(f"split file {path} needs columns transaction_id and split (has {list(table.columns)})")
    bad = sorted(set(table["split"].astype(str)) - set(SPLITS))
    if bad:
        raise InvalidInputError(f"split file {path}: unknown split names {bad} (use {', '.join(SPLITS)})")
    if table["transaction_id"].duplicated().any():
        raise InvalidInputError(f"split file {path} assigns some transactions twice")
    mapping = dict(zip(table["transaction_id"], table["split"].astype(str), strict=True))
    labels = data["transaction_id"].map(mapping)
    if labels.isna().any():
        missing = data.loc[labels.isna(), "transaction_id"].head(5).tolist()
        raise InvalidInputError(f"split file {path} does not assign {int(labels.isna().sum())} transactions "
                                f"of the training set (e.g. {missing})")
    return labels.astype(str).rename("split")


STRATEGIES: dict[str, Callable[[pd.DataFrame, SplitSpec, str], pd.Series]] = {
    "time": time_split,
    "random": random_split,
    "custom": custom_split,
}


def summarize(data: pd.DataFrame, labels: pd.Series, label_col: str, time_col: str) -> dict[str, dict]:
    """Rows, positives and time range of each split."""
    out: dict[str, dict] = {}
    for name in SPLITS:
        part = data[labels.to_numpy() == name]
        pos = int(part[label_col].sum())
        out[name] = {
            "rows": int(len(part)),
            "positives": pos,
            "negatives": int(len(part) - pos),
            "start": part[time_col].min().isoformat() if len(part) else None,
            "end": part[time_col].max().isoformat() if len(part) else None,
        }
    return out


def check_split(summary: dict[str, dict], strategy: str) -> list[str]:
    """Warnings for degenerate splits; InvalidInputError for impossible ones."""
    for name in SPLITS:
        if summary[name]["rows"] == 0:
            raise InvalidInputError(f"the {name} split is empty; give it a larger fraction or more data "
                                    f"(rows per split: { {k: v['rows'] for k, v in summary.items()} })")
    train = summary["train"]
    if train["positives"] == 0 or train["negatives"] == 0:
        only = "negatives" if train["positives"] == 0 else "positives"
        raise InvalidInputError(f"the training split holds only {only} ({train['rows']} rows): a classifier "
                                "cannot learn from one class; use a later --as-of, more data or another split")
    warnings: list[str] = []
    for name in SPLITS:
        s = summary[name]
        if s["positives"] == 0 or s["negatives"] == 0:
            warnings.append(f"the {name} split has a single class ({s['rows']} rows, {s['positives']} positives): "
                            "AUC is undefined there")
        elif s["positives"] < MIN_POSITIVES:
            warnings.append(f"the {name} split has only {s['positives']} positives (< {MIN_POSITIVES}): "
                            "its metrics are noise")
    if summary["validation"]["rows"] < MIN_VALIDATION_ROWS:
        warnings.append(f"the validation split is tiny ({summary['validation']['rows']} rows < "
                        f"{MIN_VALIDATION_ROWS}): early stopping will be erratic")
    ends = {k: pd.Timestamp(v["end"]) for k, v in summary.items()}
    starts = {k: pd.Timestamp(v["start"]) for k, v in summary.items()}
    for later in ("validation", "test"):
        if ends["train"] >= starts[later]:
            warnings.append(f"time ranges overlap: training rows reach {ends['train'].isoformat()}, after the "
                            f"{later} split starts ({starts[later].isoformat()}); the model sees the future "
                            f"({strategy} split) and its {later} metrics are optimistic")
    return warnings


def split_rows(data: pd.DataFrame, spec: SplitSpec, label_col: str = "is_fraud",
               time_col: str = "event_timestamp") -> SplitResult:
    """Assign each row to train/validation/test by ``spec.strategy`` and check the result."""
    try:
        strategy = STRATEGIES[spec.strategy]
    except KeyError:
        raise InvalidInputError(f"unknown split strategy {spec.strategy!r}; choose one of {', '.join(STRATEGIES)}"
                                ) from None
    labels = strategy(data, spec, time_col)
    summary = summarize(data, labels, label_col, time_col)
    return SplitResult(labels, summary, check_split(summary, spec.strategy))
