"""Feast's file registry, written atomically.

Feast's ``FileRegistryStore`` rewrites ``registry.db`` in place (open for writing, which truncates, then write).
A long-running reader (the service refreshes its cached registry every ``registry_ttl_seconds``) that reads the
file between the truncation and the write sees an empty or partial registry: ``/v1/push`` answered 404 "not a push
source" while a ``materialize`` recorded its intervals. This store writes the new registry beside the old one and
renames it into place, so a reader sees the old registry or the new one, never a torn one.
``feature_repo/feature_store.yaml`` selects it with ``registry_store_type``.
"""

from __future__ import annotations

import uuid

from feast.infra.registry.file import FileRegistryStore
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.utils import _utc_now

from mlplatform.files import write_atomic


class AtomicFileRegistryStore(FileRegistryStore):
    """A ``FileRegistryStore`` whose writes replace the file atomically (temp file, fsync, rename)."""

    def _write_registry(self, registry_proto: RegistryProto) -> None:
        registry_proto.version_id = str(uuid.uuid4())  # what Feast's own store stamps on every write
        registry_proto.last_updated.FromDatetime(_utc_now())
        write_atomic(self._filepath, registry_proto.SerializeToString())
