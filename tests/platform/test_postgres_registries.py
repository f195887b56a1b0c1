"""The cluster profile's registries on a real PostgreSQL: Feast's SQL registry and MLflow's backend store.

Each test gets a database of its own (the ``pg_url`` fixture, tests/platform/conftest.py). Marked ``integration``
and ``cluster``: ``make test`` runs them, ``make test-fast`` does not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_settings, process_environ

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

REGISTRY_TABLES = {  # Feast's SQL registry: table -> (proto column, proto class name)
    "entities": ("entity_proto", "Entity"),
    "data_sources": ("data_source_proto", "DataSource"),
    "feature_views": ("feature_view_proto", "FeatureView"),
    "on_demand_feature_views": ("feature_view_proto", "OnDemandFeatureView"),
    "feature_services": ("feature_service_proto", "FeatureService"),
}

def _stamped_repo(src: Path, dst: Path, stamp: str) -> Path:
    """A copy of the feature repo whose every description starts with ``[stamp]`` (one version of the repo)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    for path in dst.glob("*.py"):
        path.write_text(path.read_text().replace("description=", f'description="[{stamp}] " + '))
    return dst


def _stamp(description: str) -> str:
    """The version a description was stamped with; "x" for an unstamped one, "-" for none."""
    return description[1] if description.startswith("[") else "x" if description else "-"


def _registry_stamps(url: str) -> dict[str, list[tuple[str, str]]]:
    """table -> (name, stamp) of each object in Feast's registry tables (Feast's implicit ``__dummy`` entity left
    out), read in one snapshot (REPEATABLE READ) and decoded from the stored protos: the registry as a reader at one
    instant sees it."""
    import sqlalchemy as sa
    from feast.protos.feast.core import (
        DataSource_pb2,
        Entity_pb2,
        FeatureService_pb2,
        FeatureView_pb2,
        OnDemandFeatureView_pb2,
    )

    classes = {"Entity": Entity_pb2.Entity, "DataSource": DataSource_pb2.DataSource,
               "FeatureView": FeatureView_pb2.FeatureView, "FeatureService": FeatureService_pb2.FeatureService,
               "OnDemandFeatureView": OnDemandFeatureView_pb2.OnDemandFeatureView}
    engine = sa.create_engine(url, isolation_level="REPEATABLE READ")
    out: dict[str, list[tuple[str, str]]] = {}
    try:
        with engine.connect() as conn, conn.begin():
            for table, (column, cls) in REGISTRY_TABLES.items():
                rows = conn.execute(sa.text(f"SELECT {column} FROM {table} WHERE project_id = 'fraud'")).all()
                protos = [classes[cls].FromString(row[0]) for row in rows]
                named = [(p.name, p.description) if cls == "DataSource" else (p.spec.name, p.spec.description)
                         for p in protos]
                out[table] = sorted((name, _stamp(d)) for name, d in named if not name.startswith("__dummy"))
    finally:
        engine.dispose()
    return out


_APPLY = """
import sys, time
from mlplatform.features.definitions import apply_definitions
from mlplatform.settings import Settings
settings = Settings()
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
print(sorted(apply_definitions(settings, validate=False)))
"""


def test_two_applies_at_once_leave_one_whole_version(world, pg_url, tmp_path):
    """Two processes apply two versions of the repo at the same instant; readers polling meanwhile and the registry
    at the end hold every object of one version, never objects of both."""
    settings = make_settings(world, feast_registry_url=pg_url)
    src = settings.feature_repo
    repos = {s: _stamped_repo(src, tmp_path / f"repo_{s}", s) for s in "AB"}
    start = time.time() + 8  # both processes import Feast first, then apply at this instant
    procs = [
        subprocess.Popen([sys.executable, "-c", _APPLY, str(start)], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env={**process_environ(settings), "MLPLATFORM_FEATURE_REPO": str(repo)})
        for repo in repos.values()
    ]
    seen: list[dict[str, list[str]]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                seen.append(_registry_stamps(pg_url))
            except Exception:  # the tables do not exist until the first apply creates them
                time.sleep(0.01)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        stop.set()
        reader.join()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]

    # the oracle: each version's objects as the definition files declare them (parsed, not read back)
    declared = _declared(settings)
    versions = {s: {t: [(name, s if stamp != "-" else "-") for name, stamp in objs] for t, objs in declared.items()}
                for s in repos}
    assert versions["A"] != versions["B"] and all(sum(map(len, v.values())) >= 10 for v in versions.values())
    final = _registry_stamps(pg_url)
    assert final in versions.values(), final  # one whole version, not a mix
    partial = [s for s in seen if any(s[t] for t in s) and s not in versions.values()]
    assert not partial, f"{len(partial)} of {len(seen)} reads saw a mix or a part, e.g. {partial[0]}"
    assert sum(s in versions.values() for s in seen) >= 1, f"the reader never saw a whole version ({len(seen)} reads)"


def _declared(settings) -> dict[str, list[tuple[str, str]]]:
    """table -> (name, "-" if it has no description else "x") of each object the definitions in
    ``settings.feature_repo`` declare (Feast's implicit ``__dummy`` entity left out)."""
    from mlplatform.features.repo import parse_definitions

    c = parse_definitions(settings)
    return {"entities": sorted((e.name, _stamp(e.description)) for e in c.entities if not e.name.startswith("__")),
            "data_sources": sorted((d.name, _stamp(d.description)) for d in c.data_sources),
            "feature_views": sorted((v.name, _stamp(v.description)) for v in c.feature_views),
            "on_demand_feature_views": sorted((v.name, _stamp(v.description)) for v in c.on_demand_feature_views),
            "feature_services": sorted((f.name, _stamp(f.description)) for f in c.feature_services)}


def test_training_registers_into_mlflow_on_postgres_and_the_service_loads_it(applied_world, pg_url, tmp_path):
    """Train into MLflow on PostgreSQL (artifacts on the filesystem); the model version is in PostgreSQL's tables
    (read with plain SQL), no SQLite file appears, and the service loads and serves that version."""
    import sqlalchemy as sa
    from fastapi.testclient import TestClient

    from mlplatform.models.registry import GOLDEN, ModelRegistry
    from serving.app import create_app
    from training.datasets import build_training_set
    from training.pipeline import train_and_register

    settings = make_settings(applied_world.data_path, models_dir=tmp_path / "models", models_backend_url=pg_url,
                             monitoring_reports_dir=tmp_path / "reports")
    assert pg_url not in repr(settings) and "models_backend_url" not in repr(settings)
    dataset = build_training_set(settings, out_dir=tmp_path / "dataset")
    train_and_register(settings, dataset=dataset.path)

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version, source FROM model_versions WHERE name = :n"),
                                {"n": settings.model_name}).all()
            sha = conn.execute(sa.text("SELECT value FROM model_version_tags WHERE name = :n AND key = "
                                       "'booster_sha256'"), {"n": settings.model_name}).scalar_one()
    finally:
        engine.dispose()
    assert [int(v) for v, _ in rows] == [1], rows
    source = rows[0][1]
    assert source.startswith((tmp_path / "models" / "artifacts").as_uri()), source  # artifacts on the filesystem
    assert not (tmp_path / "models" / "mlflow.db").exists()  # nothing went to a SQLite file

    registry = ModelRegistry(settings)
    registry.set_alias(GOLDEN, 1)
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            aliases = conn.execute(
                sa.text("SELECT alias FROM registered_model_aliases WHERE name = :n AND version = 1"),
                {"n": settings.model_name}).scalars().all()
    finally:
        engine.dispose()
    assert GOLDEN in aliases, aliases
    listed = ModelRegistry(settings).list_versions()  # a fresh registry object: the SQLAlchemy fast path
    assert [(m.version, m.booster_sha256, m.aliases) for m in listed] == [(1, sha, sorted(aliases))]

    with TestClient(create_app(settings)) as client:
        models = client.get("/v1/models").json()["models"]
    golden = [m for m in models if m["role"] == "golden"]
    assert [m["version"] for m in golden] == [1], models


_KILLED_APPLY = """
import sys, time
from pathlib import Path
import feast.infra.registry.sql as sql
from mlplatform.features.definitions import apply_definitions
from mlplatform.settings import Settings

write = sql.SqlRegistry._apply_object
def write_then_hang(self, table, project, id_field_name, obj, *args, **kwargs):
    out = write(self, table, project, id_field_name, obj, *args, **kwargs)
    if str(getattr(obj, "description", "")).startswith("[B]"):  # the kill point: one object of B written
        Path(sys.argv[1]).write_text(obj.name)
        time.sleep(120)
    return out
sql.SqlRegistry._apply_object = write_then_hang
apply_definitions(Settings(), validate=False)
"""


def test_an_apply_killed_half_way_leaves_the_previous_version(world, pg_url, tmp_path):
    """Version A applied; an apply of B killed (SIGKILL) after its first object write: the registry still holds A
    whole, and the next apply is not blocked by the dead one's lock."""
    from mlplatform.features.definitions import apply_definitions

    base = make_settings(world, feast_registry_url=pg_url)
    repos = {s: _stamped_repo(base.feature_repo, tmp_path / f"repo_{s}", s) for s in "AB"}
    declared = _declared(base)
    versions = {s: {t: [(name, s if stamp != "-" else "-") for name, stamp in objs] for t, objs in declared.items()}
                for s in repos}
    apply_definitions(base.model_copy(update={"feature_repo": repos["A"]}), validate=False)
    assert _registry_stamps(pg_url) == versions["A"]

    flag = tmp_path / "written"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_APPLY, str(flag)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**process_environ(base), "MLPLATFORM_FEATURE_REPO": str(repos["B"])})
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the apply never wrote"
            time.sleep(0.05)
        assert _registry_stamps(pg_url) == versions["A"]  # B's first write is not visible while it runs
    finally:
        proc.kill()
        proc.communicate()
    assert _registry_stamps(pg_url) == versions["A"]  # nor after the kill: rolled back

    started = time.monotonic()
    apply_definitions(base.model_copy(update={"feature_repo": repos["B"]}), validate=False)
    assert _registry_stamps(pg_url) == versions["B"]
    assert time.monotonic() - started < 60  # the dead apply's lock went with its connection
