"""MLPLATFORM_LOG_FORMAT=json: every log line of the service and the CLI is one JSON object, with no secret in it.

The service runs as `mlplatform serve` (a real process, uvicorn's logging configured by the command) with one line
per answered prediction (MLPLATFORM_SERVING_LOG_REQUESTS); the lines are checked against the answers the test got
back. The CLI's case is a stream consumer meeting a malformed entry (a warning).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings, process_environ
from tests.serving.conftest import free_port, make_txns, set_aliases, txn_body

MLPLATFORM = str(Path(sys.executable).with_name("mlplatform"))
SECRET = "log-format-secret-key-8431"


def _json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        parsed.append(json.loads(line))  # every line: a JSON object, nothing else
    assert all(isinstance(p, dict) and {"ts", "level", "logger", "message"} <= set(p) for p in parsed), parsed
    return parsed


def test_the_service_logs_one_json_object_per_line_with_a_line_per_prediction(serving_settings, trained_models,
                                                                               online_world):
    settings = serving_settings(log_format="json", serving_log_requests=True, serving_api_key=SECRET)
    set_aliases(settings, golden=trained_models.versions[0])
    port = free_port()
    env = {**process_environ(settings), "MLPLATFORM_SERVING_PORT": str(port), "MLPLATFORM_SERVING_HOST": "127.0.0.1"}
    proc = subprocess.Popen([MLPLATFORM, "serve", "--log-level", "info"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    answers = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, "the service did not get ready"
                time.sleep(0.2)
            txns = make_txns(online_world, 5, seed=21, when=trained_models.scoring_time)
            answers = [client.post("/v1/predict", json=txn_body(r)).json() for r in txns.itertuples()]
            assert client.post("/v1/predict", json={"customer_id": 1}).status_code == 422
            assert client.post("/v1/push", headers={"X-API-Key": SECRET + "x"}, json={"rows": [{}]}).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert SECRET not in out + err
    records = _json_lines(err)
    served = [r for r in records if r["message"] == "prediction"]
    assert [r["request_id"] for r in served] == [a["request_id"] for a in answers]
    for r, a in zip(served, answers, strict=True):
        assert (r["model"], r["version"], r["role"]) == (a["model"]["name"], a["model"]["version"], a["model"]["role"])
        assert r["outcome"] == "ok" and r["latency_ms"] > 0 and r["transaction_id"] == a["transaction_id"]
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's own lines too, in the same format


@pytest.fixture()
def stream_settings_json(tmp_path, redis_addr):
    return make_settings(tmp_path / "data", redis_addr=redis_addr, log_format="json")


def test_a_cli_command_logs_json_lines(stream_settings_json, redis_db):
    settings = stream_settings_json
    redis_db.xadd("mlplatform:transactions", {"not": "an event"})
    done = subprocess.run([MLPLATFORM, "stream", "run", "--consumer", "logs", "--idle-exit", "0.5", "--quiet"],
                          env=process_environ(settings), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = _json_lines(done.stderr)
    (warning,) = [r for r in records if r["level"] == "warning" and "malformed" in r["message"]]
    assert warning["logger"].startswith("streaming")
