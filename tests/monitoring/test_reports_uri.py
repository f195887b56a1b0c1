"""Monitoring on another filesystem (MLPLATFORM_FEATURE_LOGS_URI, MLPLATFORM_REPORTS_URI): the skew report reads the
served rows from a ``memory://`` or ``file://`` folder, writes its HTML + JSON + index.html there, equal to what the
local default writes from the same rows; the service's /reports/ and /metrics read them back from there; an unknown
scheme or a missing s3fs is a clear error (exit code 2) that never shows the URI's credentials.

Oracles: the feature-log files are written locally and copied to the URI with plain fsspec (not the platform's
writer); what monitoring wrote there is read back with plain fsspec and compared with the local default's files.
"""

from __future__ import annotations

import json
import shutil
import uuid

import fsspec
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mlplatform.contracts.feature_log import write_feature_log
from mlplatform.errors import ExitCode, InvalidInputError
from mlplatform.filesystems import open_location, reports_location
from monitoring.reports import write_report
from monitoring.skew import run_skew
from serving.routes.reports import reports_router
from tests.conftest import make_settings
from tests.monitoring.conftest import log_rows, monitor_settings, score

SECRET = "s3-secret-key-77341"
SAME = ("created_at", "html", "seconds")  # differ by construction: when the report was made, its page's name, time


def _folder(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/")


def _summary(fs, root: str) -> dict:
    (path,) = fs.glob(f"{root}/skew-*.json")
    return json.loads(fs.cat_file(path))


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_skew_reads_logs_from_the_uri_and_writes_the_same_report_there(drift_world, tmp_path, scheme):
    dw = drift_world
    frame = dw.drifted
    ts = pd.to_datetime(frame["event_timestamp"], utc=True) + pd.Timedelta(microseconds=1)
    rows = log_rows(frame, dw.names, dw.version, score(dw.booster, frame, dw.names), ts)
    local = monitor_settings(tmp_path / "local", dw.settings)
    write_feature_log(local.layout.feature_logs_dir, rows)
    base = f"memory://skew-{uuid.uuid4().hex[:8]}" if scheme == "memory" else (tmp_path / "shared").as_uri()
    logs_url, reports_url = f"{base}/feature_logs", f"{base}/reports"
    logs_fs, logs_root = _folder(logs_url)
    for path in local.layout.feature_logs_dir.glob("date=*/part-*.parquet"):  # the same files, copied by fsspec
        logs_fs.makedirs(f"{logs_root}/{path.parent.name}", exist_ok=True)
        logs_fs.put_file(str(path), f"{logs_root}/{path.parent.name}/{path.name}")
    remote = monitor_settings(tmp_path / "remote", dw.settings, feature_logs_uri=logs_url, reports_uri=reports_url)
    assert not remote.layout.feature_logs_dir.exists()  # nothing to read locally: the rows come from the URI

    since, until = pd.Timestamp.now("UTC") - pd.Timedelta(days=1), pd.Timestamp.now("UTC") + pd.Timedelta(hours=1)
    ours, theirs = run_skew(local, since, until), run_skew(remote, since, until)
    assert theirs.current_rows == ours.current_rows == len(frame)
    assert theirs.drifted == ours.drifted and theirs.drifted  # the drifted period is judged drifted

    fs, root = _folder(reports_url)
    there = _summary(fs, root)
    here = json.loads(next(local.layout.reports_dir.glob("skew-*.json")).read_text())
    assert {k: v for k, v in there.items() if k not in SAME} == {k: v for k, v in here.items() if k not in SAME}
    assert fs.isfile(f"{root}/{there['html']}") and fs.size(f"{root}/{there['html']}") > 10_000
    assert there["html"] in fs.cat_file(f"{root}/index.html").decode()
    assert not (tmp_path / "remote" / "reports").exists()  # nothing written to the local default
    if scheme == "file":
        assert not [p for p in (tmp_path / "shared").rglob("*") if p.name.endswith(".tmp")]

    # the service shows them from there
    app = FastAPI()
    app.include_router(reports_router(remote))
    client = TestClient(app)
    index = client.get("/reports/")
    assert index.status_code == 200 and there["html"] in index.text
    page = client.get(f"/reports/{there['html']}")
    assert page.status_code == 200 and page.content == fs.cat_file(f"{root}/{there['html']}")
    assert "text/html" in page.headers["content-type"]
    summary = client.get(f"/reports/{theirs.files.json_name}")
    assert summary.status_code == 200 and summary.json() == there
    assert client.get("/reports/skew-20990101T000000000000Z.json").status_code == 404
    assert client.get("/reports/notes.txt").status_code == 404


def test_reports_index_and_check_verdict_read_back_from_memory(tmp_path):
    from mlplatform.contracts.check_metrics import CheckReportCollector
    from mlplatform.contracts.reports import list_reports

    url = f"memory://reports-{uuid.uuid4().hex[:8]}/r"
    settings = make_settings(tmp_path, reports_uri=url)
    when = pd.Timestamp("2026-11-01T00:00:00Z").to_pydatetime()
    write_report(settings, "skew", {"status": "ok", "headline": "first"}, "<html><head></head>a</html>", when=when)
    files = write_report(settings, "check", {"status": "breach", "headline": "second", "breaches": ["x", "y"]},
                         None, when=when + pd.Timedelta(hours=1))
    fs, root = _folder(url)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
    assert names == sorted(["index.html", files.json_name, "skew-20261101T000000000000Z.json",
                            "skew-20261101T000000000000Z.html"])
    assert [r["headline"] for r in list_reports(reports_location(settings.layout))] == ["second", "first"]
    verdict = CheckReportCollector(reports_location(settings.layout)).verdict()
    assert verdict is not None and verdict.status == "breach" and verdict.breaches == 2
    assert files.read_summary()["headline"] == "second" and str(files.json_path).startswith("memory://")
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize(("uri", "says"), [
    (f"s3://AKIAEXAMPLE:{SECRET}@bucket/logs", "pip install s3fs"),
    ("nosuchfs://bucket/logs", "unknown scheme nosuchfs://"),
])
def test_an_unusable_uri_is_a_clear_error_without_its_credentials(tmp_path, settings_env, monkeypatch, uri, says):
    from typer.testing import CliRunner

    from cli import build_app
    from mlplatform.settings import get_settings

    with pytest.raises(InvalidInputError, match="MLPLATFORM_FEATURE_LOGS_URI") as caught:
        open_location(uri, None, "MLPLATFORM_FEATURE_LOGS_URI")
    assert says in str(caught.value) and SECRET not in str(caught.value)
    settings_env(make_settings(tmp_path))
    monkeypatch.setenv("MLPLATFORM_FEATURE_LOGS_URI", uri)
    get_settings.cache_clear()
    out = CliRunner().invoke(build_app(), ["monitor", "skew", "--since", "2026-10-01", "--until", "2026-10-02"])
    assert out.exit_code == ExitCode.INVALID_INPUT, out.output
    assert says in out.output and "MLPLATFORM_FEATURE_LOGS_URI" in out.output
    assert SECRET not in out.output and "Traceback" not in out.output


def test_reports_go_to_one_place(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="MLPLATFORM_REPORTS_URI or MLPLATFORM_MONITORING_REPORTS_DIR"):
        make_settings(tmp_path, reports_uri="memory://r", monitoring_reports_dir=tmp_path / "reports")
    assert make_settings(tmp_path, reports_uri="  ").reports_uri is None  # blank: unset, the local default
    shutil.rmtree(tmp_path / "reports", ignore_errors=True)
