"""The registry file is replaced atomically: a reader racing a stream of writes never sees a torn registry.

Feast's own file store truncates ``registry.db`` and then writes it; a reader in between parses an empty registry
(``/v1/push`` then answered 404 "not a push source" during a materialize). The oracle is the registry as applied:
every read during the writes must hold all its feature views."""

from __future__ import annotations

import threading
from pathlib import Path

from feast.infra.registry.file import FileRegistryStore
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

from mlplatform.features.registry_store import AtomicFileRegistryStore
from mlplatform.stores import open_feature_store
from tests.conftest import make_settings


def test_reads_racing_writes_always_see_a_whole_registry(world, redis_addr):
    from mlplatform.features.definitions import apply_definitions

    settings = make_settings(world, redis_addr=redis_addr)
    apply_definitions(settings)
    store = open_feature_store(settings)
    registry_store = store.registry._registry_store
    assert isinstance(registry_store, AtomicFileRegistryStore)  # feature_store.yaml selects it
    path = registry_store._filepath
    applied = RegistryProto.FromString(path.read_bytes())
    views = len(applied.feature_views)
    assert views >= 4, views

    reads, torn, versions = _race(registry_store, path, applied)
    assert torn == 0, f"{torn} of {reads} reads saw a torn registry"
    assert reads >= 50 and len(versions) >= 10, (reads, len(versions))  # the reads did interleave with the writes
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # nothing left behind

    # the control: the same race against Feast's own file store does tear (so the check above could fail)
    feast_store = FileRegistryStore.__new__(FileRegistryStore)
    feast_store._filepath = path
    reads, torn, _ = _race(feast_store, path, applied)
    assert torn > 0, f"Feast's in-place writes tore none of {reads} reads"


def _race(registry_store, path: Path, proto: RegistryProto, writes: int = 300) -> tuple[int, int, set[str]]:
    """Write ``proto`` ``writes`` times in a thread while reading the file: (reads, torn reads, versions seen)."""
    done = threading.Event()

    def write() -> None:
        for _ in range(writes):
            registry_store.update_registry_proto(proto)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    reads, torn, versions = 0, 0, set()
    while not done.is_set():
        try:
            seen = RegistryProto.FromString(path.read_bytes())
        except Exception:  # a torn file may fail to parse, or parse short
            torn += 1
        else:
            torn += len(seen.feature_views) != len(proto.feature_views)
            versions.add(seen.version_id)
        reads += 1
    writer.join()
    return reads, torn, versions
