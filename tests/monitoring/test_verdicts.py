"""Monitoring says what it judged: `monitor check` exits 0 only when a part judged and none breached, 3 when no part
had enough data to judge, 10 on a breach; skew on a handful of rows and quality without labels say why they did not
judge.

Oracles: the number of rows each log holds is fixed by construction (the samples written here), the minimums are
the settings the test chooses on either side of that number, and label counts and delays are recomputed here with
plain pandas from the raw label files.
"""

from __future__ import annotations

import html
import json

import pandas as pd

import monitoring.steps  # noqa: F401 - registers monitor.check, the daily pipeline's step
from mlplatform.errors import ExitCode
from mlplatform.steps import run_step
from monitoring.quality import run_quality
from tests.monitoring.conftest import DRIFT_WORLD, log_served, monitor_settings


def _latest(settings, kind: str) -> dict:
    return json.loads(sorted(settings.layout.reports_dir.glob(f"{kind}-*.json"))[-1].read_text())


def _raw_labels(dw) -> pd.DataFrame:
    """Every raw label file, read independently of the monitoring code."""
    files = sorted((dw.settings.layout.raw_dir / "labels").glob("*.parquet"))
    labels = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    for col in ("label_timestamp", "transaction_timestamp"):
        labels[col] = pd.to_datetime(labels[col], utc=True)
    return labels


def test_check_exit_codes_follow_what_was_judged(drift_world, tmp_path, cli):
    """The same logs on either side of monitoring_min_rows: judged (0 or 10) vs nothing judged (3)."""
    n = len(drift_world.same)
    assert n == len(drift_world.drifted)
    same = tmp_path / "same"
    judged = log_served(drift_world, drift_world.same, same, monitoring_min_rows=n)
    ok = cli(judged, ["monitor", "check"])
    assert ok.exit_code == ExitCode.OK, ok.output
    report = _latest(judged, "check")
    assert report["status"] == "ok" and report["judged"] == ["skew"]
    parts = {p["name"]: p for p in report["parts"]}
    assert parts["skew"]["judged"] and parts["skew"]["why_not"] is None
    assert not parts["quality"]["judged"] and "none of the" in parts["quality"]["why_not"]
    assert "not judged: consistency" in report["headline"]

    too_few = monitor_settings(same, drift_world.settings, monitoring_min_rows=n + 1)
    nothing = cli(too_few, ["monitor", "check"])
    assert nothing.exit_code == ExitCode.NOT_FOUND, nothing.output
    assert "nothing to check" in nothing.output and "skew not judged" in nothing.output
    report = _latest(too_few, "check")
    assert report["status"] == "nothing to check" and report["judged"] == [] and report["breaches"] == []
    parts = {p["name"]: p for p in report["parts"]}
    assert {name: p["judged"] for name, p in parts.items()} == {"skew": False, "consistency": False, "quality": False}
    assert parts["skew"]["status"] == "too few rows"
    assert f"only {n:,} served rows" in parts["skew"]["why_not"] and f"{n + 1:,}" in parts["skew"]["why_not"]
    assert f"of {n:,} requests comparable" in parts["consistency"]["why_not"]
    assert parts["quality"]["status"] == "too few labels"

    drifted = tmp_path / "drifted"
    breach = cli(log_served(drift_world, drift_world.drifted, drifted, monitoring_min_rows=n), ["monitor", "check"])
    assert breach.exit_code == ExitCode.BREACH, breach.output
    # the very same drifted rows, one row short of the minimum: the drift is not a verdict, nothing breaches
    short = monitor_settings(drifted, drift_world.settings, monitoring_min_rows=n + 1)
    unjudged = cli(short, ["monitor", "check"])
    assert unjudged.exit_code == ExitCode.NOT_FOUND, unjudged.output
    assert "breach:" not in unjudged.output
    assert _latest(short, "check")["breaches"] == []


def test_skew_on_a_few_rows_says_it_cannot_judge(drift_world, tmp_path, cli):
    """The newcomer's case: 7 drifted rows. The figures are shown, marked not judged, everywhere."""
    few = drift_world.drifted.sample(7, random_state=3).sort_values("event_timestamp")
    settings = log_served(drift_world, few, tmp_path / "few")
    out = cli(settings, ["monitor", "skew"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "NOT JUDGED" in text and "too few served rows to judge" in text
    assert "only 7 served rows" in text and f"at least {settings.monitoring_min_rows:,} needed" in text

    summary = _latest(settings, "skew")
    assert summary["status"] == "too few rows" and summary["judged"] is False
    assert summary["current_rows"] == 7 and summary["min_rows"] == settings.monitoring_min_rows
    assert "NOT JUDGED" in summary["caveat"] and summary["headline"].startswith("not judged")
    assert len(summary["features"]) == len(drift_world.names)  # the figures are still there, for information
    page = (settings.layout.reports_dir / summary["html"]).read_text()
    assert html.escape(summary["caveat"]) in page

    check = cli(settings, ["monitor", "check"])
    assert check.exit_code == ExitCode.NOT_FOUND, check.output
    assert "nothing to check" in check.output

    # the daily pipeline's step: nothing to check is an outcome, not a failure, and it says what was not judged
    step = run_step("monitor.check", settings)
    assert step["status"] == "nothing to check" and step["breaches"] == 0 and step["judged"] == []
    assert set(step["not_judged"]) == {"skew", "consistency", "quality"} and "retrain_request" not in step
    assert "only 7 served rows" in step["not_judged"]["skew"]


def test_quality_without_labels_explains_why(drift_world, tmp_path, cli):
    served = drift_world.drifted.sample(50, random_state=4).sort_values("event_timestamp")
    settings = log_served(drift_world, served, tmp_path / "quality")
    (settings.data_path / "raw").symlink_to(drift_world.settings.layout.raw_dir)  # labels live with the raw data
    labels = _raw_labels(drift_world)

    before = pd.Timestamp(DRIFT_WORLD.start) - pd.Timedelta(days=DRIFT_WORLD.history_days)  # before any label
    assert (labels["label_timestamp"] <= before).sum() == 0
    out = cli(settings, ["monitor", "quality", "--as-of", before.isoformat()])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "live quality not judged" in text
    assert "none of the 50 served rows has a label" in text and "0 labels had arrived" in text
    assert f"at least {settings.monitoring_min_labeled_rows:,} labeled served rows" in text
    assert "No labels have arrived at all yet" in text

    # some labels, not enough: the counts and the label delay, recomputed here from the raw files
    as_of = pd.Timestamp(DRIFT_WORLD.drift_end)
    strict = monitor_settings(settings.data_path, drift_world.settings, monitoring_min_labeled_rows=10_000)
    result = run_quality(strict, as_of=as_of.to_pydatetime())
    arrived = labels[labels["label_timestamp"] <= as_of]
    ids = set(served["transaction_id"].astype(str))
    labeled = int(arrived["transaction_id"].astype(str).isin(ids).sum())
    assert 0 < labeled < 50
    assert (result.labels_arrived, result.labeled, result.served) == (len(arrived), labeled, 50)
    delay = (arrived["label_timestamp"] - arrived["transaction_timestamp"]) / pd.Timedelta(days=1)
    why = result.explanation()
    assert not result.judged and why
    assert f"only {labeled:,} of 50 served rows have a label" in why
    assert f"{len(arrived):,} labels had arrived" in why
    assert f"the newest at {arrived['label_timestamp'].max():%Y-%m-%d %H:%M}Z" in why
    assert "at least 10,000 labeled served rows" in why
    assert f"a median {delay.median():.1f} days (90% within {delay.quantile(0.9):.1f} days)" in why
    body = json.loads(result.files.json_path.read_text())
    assert body["status"] == "too few labels" and body["judged"] is False and body["explanation"] == why
    assert html.escape(why) in result.files.html_path.read_text()
