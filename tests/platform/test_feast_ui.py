"""`feast ui` on this repo: Feast's own UI server starts over our registry and serves our definitions.

Oracle: the definitions in feature_repo/, read from the registry with Feast's Python API (``list_*``), not from the
UI's answers.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import process_environ
from tests.serving.conftest import free_port

FEAST = str(Path(sys.executable).with_name("feast"))


@pytest.mark.slow
def test_feast_ui_serves_our_registry(applied_world, store):
    port = free_port()
    env = {**process_environ(applied_world), **applied_world.feast_env()}  # as after `eval "$(mlplatform env)"`
    proc = subprocess.Popen([FEAST, "-c", str(applied_world.feature_repo), "ui", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(base + "/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "feast ui did not answer within 90 s"
            time.sleep(0.5)
        project = store.project
        listed = httpx.get(base + "/projects-list.json", timeout=10).json()["projects"]
        assert [p["id"] for p in listed] == [project]
        views = httpx.get(base + "/api/v1/feature_views", params={"project": project}, timeout=10).json()
        served = {v["spec"]["name"] for v in views["featureViews"]}
        expected = {v.name for v in store.list_feature_views()} | {v.name for v in store.list_on_demand_feature_views()}
        assert expected <= served and "customer_activity" in served
        services = httpx.get(base + "/api/v1/feature_services", params={"project": project}, timeout=10).json()
        (service,) = [s for s in services["featureServices"] if s["spec"]["name"] == "fraud_model_v1"]
        columns = {c["name"] for f in service["spec"]["features"] for c in f["featureColumns"]}
        ours = store.get_feature_service("fraud_model_v1")
        assert columns == {f.name for p in ours.feature_view_projections for f in p.features}
    finally:
        proc.terminate()
        proc.wait(30)
