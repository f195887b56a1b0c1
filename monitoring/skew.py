"""Train/serve skew: the golden model's training set (from its registered lineage) against the features serving
logged in a window, per feature, with Evidently's data-drift preset and its tests.

Method, fixed so results do not change with sample size: numeric features use the normed Wasserstein distance,
binary (0/1) features the Jensen-Shannon distance; a feature is drifted when its distance reaches
``monitoring_drift_threshold``. Evidently is slow on wide, long data, so each side is first sampled uniformly
(fixed seed) down to ``monitoring_sample_rows`` rows; the report says how many rows each side had and kept.

With fewer than ``monitoring_min_rows`` served rows the distances are noise: they are still computed and shown,
but the result is marked not judged (``judged``, ``caveat``) in the terminal, the JSON summary and, as a banner,
the HTML page, and ``monitor check`` does not count them.

Logged rows the skew cannot judge (``monitoring.logs.UnjudgedRows``) are left out and counted by reason in the
JSON summary (``unjudged``), the headline and a banner on the page.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from mlplatform.errors import DataNotFoundError, InvalidInputError
from mlplatform.settings import Settings
from monitoring.logs import LogWindow, UnjudgedRows, resolve_window, served_rows
from monitoring.reports import ReportFiles, with_banner, write_report

SAMPLE_SEED = 0
NUMERIC_METHOD = "wasserstein"
BINARY_METHOD = "jensenshannon"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift between training and serving."""

    feature: str
    kind: str  # "numerical" | "binary"
    method: str
    score: float | None
    threshold: float
    drifted: bool
    note: str = ""


@dataclass
class SkewResult:
    """The skew report's figures (the JSON summary a machine reads)."""

    model_name: str
    model_version: int
    window: LogWindow
    reference_rows: int
    current_rows: int
    reference_sampled: int
    current_sampled: int
    features: list[FeatureDrift]
    seconds: float = 0.0
    files: ReportFiles | None = field(default=None, repr=False)
    min_rows: int = 0  # monitoring_min_rows when it ran: with fewer served rows the figures are not judged
    unjudged: UnjudgedRows = field(default_factory=UnjudgedRows)  # logged rows left out, by reason

    @property
    def judged(self) -> bool:
        """Whether there were enough served rows (``min_rows``) for the drift figures to mean anything."""
        return self.current_rows >= self.min_rows

    def caveat(self) -> str:
        """Empty when judged; else the sentence that says the figures are not a judgement, and why."""
        if self.judged:
            return ""
        return (f"NOT JUDGED: only {self.current_rows:,} served rows in the window, too few to judge drift (at least "
                f"{self.min_rows:,} needed, monitoring_min_rows); the distances are shown for information only, "
                "not as a verdict")

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def drifted_share(self) -> float:
        return len(self.drifted) / len(self.features) if self.features else 0.0

    def headline(self) -> str:
        left_out = f"; {self.unjudged.short()}" if self.unjudged else ""
        return self._verdict() + left_out

    def _verdict(self) -> str:
        names = ", ".join(self.drifted) or "none"
        if not self.judged:
            return (f"not judged: {self.current_rows:,} served rows < {self.min_rows:,} needed; for information: "
                    f"{len(self.drifted)}/{len(self.features)} features of {self.model_name} v{self.model_version} "
                    f"over the drift threshold ({names}) vs {self.reference_rows:,} training rows")
        return (f"{self.model_name} v{self.model_version}: {len(self.drifted)}/{len(self.features)} features drifted "
                f"({names}); {self.current_rows:,} served rows vs {self.reference_rows:,} training rows")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name, "model_version": self.model_version, "window": self.window.to_dict(),
            "reference_rows": self.reference_rows, "current_rows": self.current_rows,
            "reference_sampled": self.reference_sampled, "current_sampled": self.current_sampled,
            "drifted_share": self.drifted_share, "drifted": self.drifted, "judged": self.judged,
            "min_rows": self.min_rows, "caveat": self.caveat() or None,
            "features": [asdict(f) for f in self.features], "seconds": self.seconds, "headline": self.headline(),
            "unjudged": self.unjudged.to_dict(),
        }


def feature_kinds(reference: pd.DataFrame, features: list[str]) -> dict[str, str]:
    """``binary`` for features whose training values are all 0/1, else ``numerical``."""
    kinds = {}
    for name in features:
        values = pd.to_numeric(reference[name], errors="coerce").dropna()
        kinds[name] = "binary" if len(values) and values.isin([0.0, 1.0]).all() else "numerical"
    return kinds


def sample_rows(frame: pd.DataFrame, n: int, seed: int = SAMPLE_SEED) -> pd.DataFrame:
    """At most ``n`` rows of ``frame``, drawn uniformly without replacement (all rows if it has fewer)."""
    if len(frame) <= n:
        return frame
    return frame.sample(n=n, random_state=seed)


def numeric_frame(frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """``features`` of ``frame`` as float64 columns (nulls as NaN)."""
    return pd.DataFrame({f: pd.to_numeric(frame[f], errors="coerce").astype("float64") for f in features},
                        index=frame.index)


def drift_snapshot(reference: pd.DataFrame, current: pd.DataFrame, kinds: dict[str, str], threshold: float):
    """Run Evidently's DataDriftPreset (with tests) over the given columns; returns its Snapshot."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numerical = [f for f, k in kinds.items() if k == "numerical"]
    binary = [f for f, k in kinds.items() if k == "binary"]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=binary)
    preset = DataDriftPreset(columns=list(kinds), num_method=NUMERIC_METHOD, cat_method=BINARY_METHOD,
                             num_threshold=threshold, cat_threshold=threshold)
    report = Report([preset], include_tests=True)
    return report.run(Dataset.from_pandas(current[list(kinds)], data_definition=definition),
                      Dataset.from_pandas(reference[list(kinds)], data_definition=definition))


def parse_snapshot(snapshot_dict: dict[str, Any], kinds: dict[str, str], threshold: float) -> list[FeatureDrift]:
    """Per-feature drift scores and test outcomes out of an Evidently snapshot's ``dict()``."""
    metric_of: dict[str, tuple[str, float | None, str]] = {}
    for m in snapshot_dict.get("metrics", []):
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith("ValueDrift"):
            value = m.get("value")
            metric_of[m["id"]] = (cfg["column"], None if value is None else float(value), cfg.get("method", ""))
    failed: dict[str, bool] = {}
    for t in snapshot_dict.get("tests", []):
        bound = t.get("bound_test") or {}
        fingerprint = bound.get("metric_fingerprint") or t.get("metric_config", {}).get("metric_id")
        if fingerprint in metric_of:
            status = getattr(t.get("status"), "value", t.get("status"))
            failed[metric_of[fingerprint][0]] = str(status).upper().endswith("FAIL")
    out = []
    for column, score, method in metric_of.values():
        drifted = failed.get(column)
        if drifted is None:  # no test came back: decide from the score, as the test would
            drifted = score is not None and score >= threshold
        out.append(FeatureDrift(column, kinds[column], method, score, threshold, bool(drifted)))
    order = list(kinds)
    return sorted(out, key=lambda f: order.index(f.feature))


def compare(reference: pd.DataFrame, current: pd.DataFrame, features: list[str], threshold: float,
            sample: int) -> tuple[list[FeatureDrift], Any, int, int]:
    """Drift of each feature between two frames: (drifts, Evidently snapshot or None, rows kept of each side)."""
    ref = numeric_frame(sample_rows(reference, sample), features)
    cur = numeric_frame(sample_rows(current, sample), features)
    kinds = feature_kinds(ref, features)
    empty: list[FeatureDrift] = []
    for name in features:
        if ref[name].notna().sum() == 0 or cur[name].notna().sum() == 0:
            side = "training set" if ref[name].notna().sum() == 0 else "served rows"
            # a feature served as all-null (or never trained on) is a pipeline break, not a distribution change
            empty.append(FeatureDrift(name, kinds[name], "all values missing", None, threshold, True,
                                      f"no values in the {side}"))
            kinds.pop(name)
    drifts: list[FeatureDrift] = []
    snapshot = None
    if kinds:
        snapshot = drift_snapshot(ref, cur, kinds, threshold)
        drifts = parse_snapshot(snapshot.dict(), kinds, threshold)
    order = {f: i for i, f in enumerate(features)}
    return sorted(drifts + empty, key=lambda d: order[d.feature]), snapshot, len(ref), len(cur)


def golden_training_set(settings: Settings):
    """The golden model version and the training rows it was fitted on (the ``train`` split when recorded)."""
    from mlplatform.models.registry import ModelRegistry

    registry = ModelRegistry(settings)
    golden = registry.golden()
    if golden is None:
        raise DataNotFoundError(
            f"model {settings.model_name} has no golden version in {settings.layout.models_path}: "
            "train and promote one first (`mlplatform train`)"
        )
    path = registry.training_set_path(golden.version)
    frame = pd.read_parquet(path)
    if "split" in frame.columns and (frame["split"] == "train").any():
        frame = frame[frame["split"] == "train"]
    missing = [f for f in golden.feature_names if f not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"the training set of {golden.name} v{golden.version} ({path}) lacks model features {missing}"
        )
    return golden, frame


def run_skew(settings: Settings, since: datetime | None = None, until: datetime | None = None,
             write: bool = True) -> SkewResult:
    """Compare the golden's training set with the served rows of the window; write HTML + JSON reports."""
    t0 = time.perf_counter()
    window = resolve_window(settings, since, until)
    golden, reference = golden_training_set(settings)
    features = list(golden.feature_names)
    read = served_rows(settings, window, columns=["model_name", "model_version", *features])
    served = read.frame
    absent = [f for f in features if f not in served.columns]
    if absent:
        raise InvalidInputError(
            f"the feature logs of {window.describe()} lack golden model features {absent}: they were served by a "
            "model with another signature; choose a window after the golden went live"
        )
    drifts, snapshot, n_ref, n_cur = compare(reference, served, features, settings.monitoring_drift_threshold,
                                             settings.monitoring_sample_rows)
    result = SkewResult(golden.name, golden.version, window, len(reference), len(served), n_ref, n_cur, drifts,
                        seconds=time.perf_counter() - t0, min_rows=settings.monitoring_min_rows,
                        unjudged=read.unjudged)
    if write:
        page = snapshot.get_html_str(as_iframe=False) if snapshot is not None else None
        if page is not None and not result.judged:
            page = with_banner(page, result.caveat())
        if page is not None and result.unjudged:
            page = with_banner(page, f"Left out of this report: {result.unjudged.describe()}.")
        status = ("breach" if result.drifted_share > settings.monitoring_max_drifted_share else "ok") \
            if result.judged else "too few rows"
        result.files = write_report(settings, "skew", {**result.to_dict(), "status": status}, page,
                                    when=datetime.now(UTC))
    return result

