"""/openapi.json is a valid OpenAPI document (checked by openapi-spec-validator, not by FastAPI that wrote it),
/docs loads, and the error shape it documents is the one the service answers with."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.conftest import make_settings


@pytest.fixture()
def client(tmp_path):
    """The app without its lifespan: schema and docs need no Redis, store or model."""
    with_settings = make_settings(tmp_path, serving_api_key="k")
    return TestClient(create_app(with_settings), raise_server_exceptions=False)


def test_openapi_json_is_a_valid_openapi_document(client):
    from openapi_spec_validator import validate

    r = client.get("/openapi.json")
    assert r.status_code == 200, r.text
    spec = r.json()
    validate(spec)  # raises OpenAPIValidationError naming the first problem
    assert spec["openapi"].startswith("3.")
    operations = {(m.upper(), p) for p, item in spec["paths"].items() for m in item}
    for expected in (("POST", "/v1/predict"), ("POST", "/v1/predict/batch"), ("GET", "/v1/models"),
                     ("POST", "/v1/models/{version}/promote"), ("POST", "/v1/push"), ("GET", "/healthz"),
                     ("GET", "/readyz"), ("GET", "/metrics")):
        assert expected in operations


def test_the_schema_states_the_bounds_and_the_error_shape(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    txn = schemas["Transaction"]["properties"]
    # Feast INT64 keys: below 2^63 (as exclusiveMaximum, which a JSON float states exactly, unlike 2^63 - 1)
    assert txn["customer_id"]["exclusiveMaximum"] == 2**63 and txn["merchant_id"]["exclusiveMaximum"] == 2**63
    assert txn["request_fields"]["maxProperties"] == 32
    predict = spec["paths"]["/v1/predict"]["post"]["responses"]
    assert predict["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert set(schemas["ErrorResponse"]["required"]) == {"error", "detail", "fields"}
    assert "HTTPValidationError" not in schemas  # FastAPI's default 422 body is not what the service answers


def test_docs_page_loads(client):
    r = client.get("/docs")
    assert r.status_code == 200
    assert "swagger-ui" in r.text and "/openapi.json" in r.text


def test_errors_before_any_route_share_the_shape(client):
    """404 (no such route), 405 (wrong method) and 401 (no key) answer in the one shape, like 422 does."""
    for r, status, error in ((client.get("/v1/nope"), 404, "NotFound"),
                             (client.get("/v1/predict"), 405, "MethodNotAllowed")):
        assert r.status_code == status, r.text
        assert r.json() == {"error": error, "detail": r.json()["detail"], "fields": []}
    r = client.post("/v1/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "InvalidInputError"
    assert r.json()["fields"][0]["field"] == "body" and "not valid JSON" in r.json()["fields"][0]["problem"]
