"""`monitor skew|consistency|quality|check --json` (docs/cli-json.md): one document on stdout, the report's summary
with the figures the tables show, and the exit codes of the tables (0 judged and fine, 10 breach, 3 nothing judged).

Oracles: the rows each feature log holds (written here), the golden model's features, the labels recomputed with
plain pandas from the raw label files, and the report file the document names, read back from disk.
"""

from __future__ import annotations

import json

import pandas as pd

from mlplatform.errors import ExitCode
from tests.monitoring.conftest import DRIFT_WORLD, log_served, monitor_settings


def _doc(res) -> dict:
    """The one JSON document on a command's stdout (json.loads fails on anything else there)."""
    assert res.stdout.count("\n") == 1, res.stdout
    return json.loads(res.stdout)


def _both(cli, settings, args: list[str]):
    table, doc = cli(settings, args), cli(settings, [*args, "--json"])
    assert table.exit_code == doc.exit_code, (table.output, doc.output)
    return table, _doc(doc), doc.exit_code


def _report_matches(settings, doc: dict, kind: str) -> None:
    """The document is the report summary written under the data folder (paths relative to it)."""
    path = settings.data_path / doc["report"]["json"]
    assert doc["report"]["json"].startswith("reports/") and path.is_file()
    on_disk = json.loads(path.read_text())
    for part in on_disk.get("parts", []):  # the check names each part's report by its absolute path
        if part["report"]:
            assert part["report"].startswith(f"{settings.data_path}/reports/")
            part["report"] = part["report"][len(f"{settings.data_path}/"):]
    assert doc["kind"] == kind and {k: v for k, v in doc.items() if k != "report"} == on_disk


def _line(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if f" {name} " in line)


def test_skew_consistency_quality_and_check(drift_world, tmp_path, cli):
    n = len(drift_world.same)
    settings = log_served(drift_world, drift_world.same, tmp_path / "same", monitoring_min_rows=n)
    (settings.data_path / "raw").symlink_to(drift_world.settings.layout.raw_dir)  # the labels live with the raw data

    table, doc, code = _both(cli, settings, ["monitor", "skew"])
    assert code == 0
    _report_matches(settings, doc, "skew")
    assert doc["current_rows"] == n and doc["judged"] is True and doc["status"] == "ok"
    assert (doc["model_name"], doc["model_version"]) == ("fraud", drift_world.version)
    assert sorted(f["feature"] for f in doc["features"]) == sorted(drift_world.names)
    for f in doc["features"]:  # the table shows the same scores
        assert (format(f["score"], ".3f") if f["score"] is not None else "n/a") in _line(table.output, f["feature"])
    assert f"{n:,} served rows" in table.output

    table, doc, code = _both(cli, settings, ["monitor", "consistency"])
    assert code == 0
    _report_matches(settings, doc, "consistency")
    assert doc["requests"] == n
    assert doc["compared"] + doc["skipped_backdated"] + sum(doc["skipped"].values()) == n
    assert f"{doc['compared']:,} of {n:,} requests compared" in table.output
    for f in doc["features"]:
        assert f"{f['rate']:.2%}" in _line(table.output, f["feature"])

    as_of = pd.Timestamp(DRIFT_WORLD.drift_end)
    table, doc, code = _both(cli, settings, ["monitor", "quality", "--as-of", as_of.isoformat()])
    assert code == 0
    _report_matches(settings, doc, "quality")
    files = sorted((drift_world.settings.layout.raw_dir / "labels").glob("*.parquet"))
    labels = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    arrived = labels[pd.to_datetime(labels["label_timestamp"], utc=True) <= as_of]
    labeled = int(drift_world.same["transaction_id"].astype(str).isin(arrived["transaction_id"].astype(str)).sum())
    assert (doc["served"], doc["labeled"], doc["labels_arrived"]) == (n, labeled, len(arrived))
    assert doc["as_of"] == as_of.isoformat()
    (version,) = doc["by_version"]
    assert version["rows"] == labeled and f"{labeled:,}" in _line(table.output, f"v{drift_world.version}")

    table, doc, code = _both(cli, settings, ["monitor", "check"])
    _report_matches(settings, doc, "check")
    assert code == doc["exit_code"] == ExitCode.OK and doc["status"] == "ok" and doc["breaches"] == []
    assert [p["name"] for p in doc["parts"]] == ["skew", "consistency", "quality"]
    for p in doc["parts"]:
        assert p["status"] in _line(table.output, p["name"])
        assert p["report"] is None or not p["report"].startswith("/")  # relative to the data folder


def test_check_exit_codes_are_the_same_with_json(drift_world, tmp_path, cli):
    n = len(drift_world.drifted)
    drifted = log_served(drift_world, drift_world.drifted, tmp_path / "drifted", monitoring_min_rows=n)
    table, doc, code = _both(cli, drifted, ["monitor", "check"])
    assert code == doc["exit_code"] == ExitCode.BREACH and doc["status"] == "breach"
    assert doc["breaches"] and all(b.startswith(("skew:", "consistency:", "quality:")) for b in doc["breaches"])
    stderr = " ".join(table.stderr.split())
    assert all(" ".join(f"breach: {b}".split()) in stderr for b in doc["breaches"])  # each one the table named

    short = monitor_settings(drifted.data_path, drift_world.settings, monitoring_min_rows=n + 1)
    table, doc, code = _both(cli, short, ["monitor", "check"])
    assert code == doc["exit_code"] == ExitCode.NOT_FOUND and doc["status"] == "nothing to check"
    assert doc["judged"] == [] and doc["breaches"] == [] and "nothing to check" in table.output
