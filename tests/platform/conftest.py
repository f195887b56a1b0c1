"""Fixtures of the platform tests: a PostgreSQL database of the test's own (the cluster profile's registries).

``pg_url``: a fresh database (``mlplatform_test_<random>``, dropped at the end) on 127.0.0.1:5432 (or
``MLPLATFORM_TEST_POSTGRES_URL``). Nothing answering there: skipped locally with the reason, a failure with CI=true
(.ci/run starts one).
"""

from __future__ import annotations

import os
import uuid

import pytest

SERVER_URL = os.environ.get("MLPLATFORM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _server():
    import sqlalchemy as sa

    return sa.create_engine(SERVER_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


@pytest.fixture()
def pg_url(monkeypatch):
    """A fresh database on the PostgreSQL server; its URL (dropped after the test). The Feast environment that
    ``make_settings`` exports for it is taken back after the test (later settings would read it)."""
    import sqlalchemy as sa

    monkeypatch.setenv("MLPLATFORM_FEAST_REGISTRY_URL", "")

    engine = _server()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        why = f"no PostgreSQL answers at {engine.url.render_as_string(hide_password=True)} ({type(exc.orig).__name__})"
        engine.dispose()
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"CI=true and {why}: CI must run the PostgreSQL tests (.ci/run starts one)")
        pytest.skip(f"{why}; start one or set MLPLATFORM_TEST_POSTGRES_URL")
    name = f"mlplatform_test_{uuid.uuid4().hex[:12]}"
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield engine.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()
