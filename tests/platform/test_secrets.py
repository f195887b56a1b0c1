"""Secrets never leave: a planted Redis password, webhook credentials and a webhook token are searched for in every
response (503 bodies, /readyz, /v1/models...), log line (caplog) and CLI output (`mlplatform env` excepted: printing
the real value is its purpose), and in the files the platform writes (audit log, run records, deliveries).

The oracle is the planted strings themselves: they must appear nowhere, while the text around them still names
the store (host and port), so a leak would be seen."""

from __future__ import annotations

import logging
import socket
import textwrap

import httpx
import pytest

from mlplatform.notifications import Delivery, notify, wait_for
from mlplatform.redact import redact, redact_redis_address, redact_url, settings_secrets
from serving.app import create_app
from tests.conftest import make_settings
from tests.serving.conftest import LiveServer, set_aliases, trained_models  # noqa: F401 (a fixture)
from tests.serving.test_redis_pause import own_redis

PASSWORD = "planted-Redis-pw-7f3a9c"
HOOK_USER, HOOK_PASS, HOOK_TOKEN = "planted-hookuser-5e1", "planted-hook-pw-91bd", "plantedTOKENb7c2d4e6f8a0"
DB_PASS = "planted-pg-pw-44aa"
PLANTED = (PASSWORD, HOOK_USER, HOOK_PASS, HOOK_TOKEN, DB_PASS)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hook(port: int) -> str:
    return f"http://{HOOK_USER}:{HOOK_PASS}@127.0.0.1:{port}/services/T0001/B0002/{HOOK_TOKEN}?sig={HOOK_TOKEN}"


def leaks(*texts: str) -> list[str]:
    """The planted secrets found in ``texts``."""
    return sorted({s for s in PLANTED for t in texts if s in t})


# --- the helper itself --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "kept"),
    [
        (_hook(8443), ["http://", "127.0.0.1:8443"]),
        (f"postgresql://mlflow:{DB_PASS}@db.internal:5432/registry", ["postgresql://mlflow:***@db.internal:5432/registry"]),
        (f"postgresql+psycopg2://app:{DB_PASS}@10.0.0.5/feast?sslmode=require&password={DB_PASS}",
         ["postgresql+psycopg2://app:***@10.0.0.5/feast", "sslmode=require", "password=***"]),
        (f"redis://:{PASSWORD}@cache:6380/2", ["redis://***@cache:6380/2"]),
        (f"rediss://default:{PASSWORD}@cache:6380", ["rediss://default:***@cache:6380"]),
        (f"https://{HOOK_TOKEN}@hooks.example.com/x", ["https://***@hooks.example.com/"]),
    ],
)
def test_redact_url_keeps_the_address_and_drops_every_credential(url, kept):
    out = redact_url(url)
    assert not leaks(out), out
    assert all(k in out for k in kept), out


def test_redact_free_text_redis_addresses_and_settings_secrets(tmp_path):
    addr = f"127.0.0.1:6391,password={PASSWORD},db=3,socket_timeout=0.5"
    assert redact_redis_address(addr) == "127.0.0.1:6391,password=***,db=3"
    assert redact_redis_address(f"redis://:{PASSWORD}@h:1/0") == "redis://***@h:1/0"
    text = (f"the online store (Redis at {addr}) did not answer; webhook {_hook(1)} failed. "
            f"dsn host=db user=app password={DB_PASS} port=5432; token: {HOOK_TOKEN}; {{'password': '{PASSWORD}'}}")
    out = redact(text)
    assert not leaks(out), out
    assert "127.0.0.1:6391" in out and "host=db user=app" in out and "port=5432" in out
    settings = make_settings(tmp_path, redis_addr=addr, webhooks=[_hook(2)], serving_api_key="planted-key-123")
    secrets = settings_secrets(settings)
    assert {PASSWORD, HOOK_PASS, HOOK_USER, "planted-key-123"} <= set(secrets)
    free = f"bare mentions: {PASSWORD} {HOOK_TOKEN} planted-key-123 {HOOK_USER}"
    assert redact(free, secrets) == "bare mentions: *** *** *** ***"
    already = "the online store (Redis at h:1,password=***) did not answer [token=***]"
    assert redact(already) == already  # idempotent, and the text around a mask stays whole


def test_failed_webhooks_never_show_their_credentials_or_token(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    port = _dead_port()
    settings = make_settings(tmp_path, webhooks=[_hook(port)], webhook_retries=1, webhook_timeout_seconds=0.5)
    deliveries: list[Delivery] = wait_for(notify(settings, "test", "hello", {"k": "v"}), timeout=10)
    assert len(deliveries) == 1 and not deliveries[0].ok
    d = deliveries[0]
    assert f"127.0.0.1:{port}" in d.url and d.error
    written = settings.layout.deliveries_log.read_text()
    assert not leaks(d.url, d.error, written, caplog.text), (d, caplog.text)


# --- the service, the CLI and the files, with a password-protected Redis -----------------------------------------
def test_no_response_log_line_cli_output_or_file_carries_a_secret(world, trained_models, cli, caplog, tmp_path):  # noqa: F811
    from mlplatform.features.definitions import apply_definitions
    from orchestration.runner import run_pipeline

    caplog.set_level(logging.DEBUG)
    hook_port = _dead_port()
    config = tmp_path / "pipelines.yaml"
    config.write_text(textwrap.dedent("""
        defaults: {retries: 0}
        pipelines:
          online:
            steps:
              - {name: materialize, call: features.materialize}
    """))
    outputs: list[str] = []
    responses: list[httpx.Response] = []
    with own_redis(tmp_path, "--requirepass", PASSWORD) as (proc, port):
        settings = make_settings(
            world, redis_addr=f"127.0.0.1:{port},password={PASSWORD}", models_dir=trained_models.models_dir,
            webhooks=[_hook(hook_port)], webhook_retries=0, webhook_timeout_seconds=0.3, serving_api_key="k",
            serving_redis_timeout_seconds=0.3, redis_timeout_seconds=0.5, serving_cache_size=0,
            serving_latency_budget_ms=0.0, pipelines_config=config,
        )
        apply_definitions(settings, validate=False)
        set_aliases(settings, golden=trained_models.versions[0])

        def run(args: list[str], code: int) -> None:
            res = cli(settings, args)
            outputs.append(res.output)
            assert res.exit_code == code, (args, res.output)

        run(["materialize", "--full"], 0)
        run(["features", "online", "--customer-id", "1"], 0)
        run(["features", "push", "--customer-id", "1", "--amount", "5", "--merchant-id", "10001"], 0)
        body = {"customer_id": 1, "merchant_id": 10001, "amount": 20.0,
                "transaction_ts": int(trained_models.scoring_time.timestamp())}
        row = {"customer_id": 9, "last_amount": 1.0, "last_merchant_id": 2, "event_timestamp": 1_791_000_000}
        push = {"rows": [row]}
        with LiveServer(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
            responses.append(c.post("/v1/predict", json=body))
            assert responses[-1].status_code == 200, responses[-1].text
            proc.kill()  # Redis gone: every answer that needs it is a 503 naming the store
            proc.wait(10)
            responses += [
                c.post("/v1/predict", json=body),
                c.post("/v1/predict/batch", json={"transactions": [body, body]}),
                c.post("/v1/push", json=push, headers={"X-API-Key": "k"}),
                c.get("/readyz"),
                c.get("/v1/models"),
                c.get("/healthz"),
                c.get("/metrics"),
                c.post("/v1/push", json=push, headers={"X-API-Key": "wrong"}),
                c.post("/v1/push", json={"rows": [{"customer_id": 9}]}, headers={"X-API-Key": "k"}),
            ]
            run(["predict", "--customer-id", "1", "--merchant-id", "10001", "--amount", "5", "--url", srv.url], 5)
        run(["materialize"], 5)
        run(["features", "online", "--customer-id", "1"], 5)
        run(["features", "push", "--customer-id", "1", "--amount", "5", "--merchant-id", "10001"], 5)
        run(["serve"], 5)
        run(["pipeline", "run", "online"], 1)
        failed = run_pipeline(settings, "online")
        wait_for(failed.notifications, timeout=10)  # the failure's webhook: posted (to nothing), logged

    assert [r.status_code for r in responses[1:5]] == [503, 503, 503, 503]
    redis_503 = responses[1].json()["detail"]
    assert f"127.0.0.1:{port},password=***)" in redis_503  # the store is named, its password masked
    assert not failed.ok and "Redis" in failed.record["steps"][0]["error"]
    files = [p.read_text(errors="replace") for p in settings.data_path.rglob("*")
             if p.is_file() and p.suffix in {".json", ".jsonl", ".log", ".txt"}]
    texts = {
        "responses": [r.text + str(dict(r.headers)) for r in responses],
        "cli": outputs,
        "log": [caplog.text],
        "files": files,
    }
    found = {where: leaks(*t) for where, t in texts.items() if leaks(*t)}
    assert not found, f"planted secrets leaked: {found}"
