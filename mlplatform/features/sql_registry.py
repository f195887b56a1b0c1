"""``feast apply`` against Feast's SQL registry (PostgreSQL), all or nothing and one at a time.

Feast's ``SqlRegistry`` writes every object in a transaction of its own (its ``commit()`` does nothing), so two
``apply`` runs at once interleave their writes and leave a registry holding some objects of each, and a run killed
half-way leaves half of it. Here an apply first takes a PostgreSQL advisory lock (a second apply waits until the
first has committed, then diffs against what it wrote; the lock also covers Feast creating the registry's tables
in a fresh database), and runs as one transaction: every read and write of the registry goes through that
transaction's connection (Feast's per-object transactions become savepoints). Readers see the registry before the
apply or after it, never in between; a killed apply is rolled back by PostgreSQL. Redis (the online store's
infrastructure update) is outside the transaction.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

APPLY_LOCK_KEY = zlib.crc32(b"mlplatform:feast-apply")  # one advisory lock per database, shared by every apply


class _OneConnection:
    """Stands in for Feast's SQLAlchemy engines: every ``begin()``/``connect()`` is a savepoint on one connection."""

    def __init__(self, conn: Any, engine: Any):
        self._conn = conn
        self._engine = engine

    @contextlib.contextmanager
    def begin(self) -> Iterator[Any]:
        with self._conn.begin_nested():
            yield self._conn

    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        with self._conn.begin_nested():
            yield self._conn

    def __getattr__(self, name: str) -> Any:  # dialect, url, ...: the engine's
        return getattr(self._engine, name)


@contextlib.contextmanager
def one_transaction(registry: Any) -> Iterator[None]:
    """Inside the block every registry read and write of ``registry`` (a Feast ``SqlRegistry``) is part of one
    transaction, committed when the block ends and rolled back if it raises (no lock: see ``apply_lock``)."""
    engine = registry.write_engine
    read_engine = registry.read_engine
    with engine.connect() as conn, conn.begin():
        shared = _OneConnection(conn, engine)
        registry.write_engine = registry.read_engine = shared
        try:
            registry.refresh()  # what the apply diffs against: the registry as the previous apply committed it
            yield
        finally:
            registry.write_engine, registry.read_engine = engine, read_engine


@contextlib.contextmanager
def apply_lock(url: str, engine_options: dict) -> Iterator[None]:
    """Hold the database's apply lock (a session advisory lock; PostgreSQL releases it if the process dies)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, **engine_options)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": APPLY_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": APPLY_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


def apply_total_atomic(config: Any, repo: Path) -> None:
    """Feast's ``apply_total`` for ``config``'s SQL registry, run as one serialized transaction (module docstring)."""
    import os

    from feast.repo_operations import _get_repo_contents, _get_store_and_registry, apply_total_with_repo_instance

    os.chdir(repo)  # what Feast's apply_total does: the definitions read paths relative to the repo
    contents = _get_repo_contents(repo, config.project, config)
    registry_config = config.registry
    with apply_lock(registry_config.path, dict(registry_config.sqlalchemy_config_kwargs)):
        for project in contents.projects:
            config.project = project.name
            store, registry = _get_store_and_registry(config)  # creates the tables in a fresh database
            with one_transaction(registry):
                apply_total_with_repo_instance(store, project.name, registry, contents, skip_source_validation=False)
