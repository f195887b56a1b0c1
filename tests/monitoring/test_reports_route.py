"""The serving app exposes the monitoring reports read-only."""

from __future__ import annotations

from fastapi.testclient import TestClient

from monitoring.reports import reports_path
from serving.app import create_app
from tests.conftest import make_settings


def test_reports_index_and_files_are_served_read_only(tmp_path):
    settings = make_settings(tmp_path)
    folder = reports_path(settings)
    folder.mkdir(parents=True, exist_ok=True)
    client = TestClient(create_app(settings))  # no lifespan: the reports need no model or Redis
    index = client.get("/reports/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert client.get("/reports/../../etc/passwd").status_code == 404
    assert client.get("/reports/not-a-report.txt").status_code == 404
    assert client.post("/reports/").status_code == 405
