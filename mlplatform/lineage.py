"""Lineage: from a model back to its raw data, and from a feature view forward to the models that consume it.

Three records are joined: the model registry's card (training-set fingerprint and lineage, feature service,
feature names), the Feast registry (services, views, on-demand views, sources) and the raw manifest (periods,
row counts, generator seed). Nothing is inferred from names alone.

Feast has no view versions, so a view's definition is identified by ``definition_hash``: a hash of its spec
without what changes when nothing was changed (registry timestamps, which Feast stamps on every apply and even
on every read of an on-demand view's request source, and the pickled bytes of a Python transformation, which
count by their source text instead). Equal definitions hash equal; any change to schema, sources, TTL, tags or
the transformation's code changes it. Training sets record the hash of each view they read.
"""

from __future__ import annotations

import hashlib
from typing import Any

from mlplatform.errors import DataNotFoundError
from mlplatform.settings import Settings

# Recorded next to the hashes in a training set's lineage: hashes of another scheme are not compared.
HASH_SCHEME = "spec-without-timestamps-v1"
_VOLATILE_FIELDS = frozenset({"created_timestamp", "last_updated_timestamp"})


def definition_hash(view: Any) -> str:
    """A stable content hash (16 hex digits) of a Feast view's definition: equal definitions hash equal."""
    spec = view.to_proto().spec
    _strip_volatile(spec)
    return hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()[:16]


def _strip_volatile(message: Any) -> None:
    """Clear, in place and at any depth, the timestamps Feast stamps and pickled UDF bytes that have source text."""
    from google.protobuf.message import Message

    if "body_text" in message.DESCRIPTOR.fields_by_name and message.body_text:
        message.ClearField("body")  # dill bytes vary with where and how the function was loaded; the text does not
    for fd, value in message.ListFields():
        if fd.name in _VOLATILE_FIELDS and isinstance(value, Message):
            message.ClearField(fd.name)
        elif isinstance(value, Message):
            _strip_volatile(value)
        elif hasattr(value, "values") and callable(value.values):  # a map field
            for item in value.values():
                if isinstance(item, Message):
                    _strip_volatile(item)
        elif not isinstance(value, str | bytes) and hasattr(value, "__iter__"):  # a repeated field
            for item in value:
                if isinstance(item, Message):
                    _strip_volatile(item)


def ttl_text(seconds: int | None) -> str:
    """A view's TTL for people: ``no TTL``, ``ttl 30d``, ``ttl 6h``, ``ttl 90s``."""
    if not seconds:
        return "no TTL"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"ttl {seconds // size}{unit}"
    return f"ttl {seconds}s"


def raw_inputs(table: str) -> list[str]:
    """Raw files a feature table is computed from (mirrors ``mlplatform.features.pipelines.compute_table``)."""
    from mlplatform.features.pipelines import PROFILE_TABLES, WINDOWED_TABLES

    if table in PROFILE_TABLES:
        return [f"raw/{PROFILE_TABLES[table][1]}"]
    if table in ("customer_activity", "customer_realtime"):
        return ["raw/transactions/*.parquet"]
    if table in WINDOWED_TABLES:
        return ["raw/labels/*.parquet"]
    return []


class _Catalog:
    """The Feast registry's objects, indexed by name."""

    def __init__(self, settings: Settings):
        from mlplatform.stores import open_feature_store

        if not settings.feast_registry_url and not settings.layout.registry_path.exists():
            raise DataNotFoundError(
                f"no Feast registry at {settings.layout.registry_path}: run `mlplatform apply` first"
            )
        store = open_feature_store(settings)
        self.views = {v.name: v for v in store.list_feature_views()}
        self.stream_views = {v.name: v for v in store.list_stream_feature_views()}
        self.odfvs = {v.name: v for v in store.list_on_demand_feature_views()}
        self.services = {s.name: s for s in store.list_feature_services()}

    def all_view_names(self) -> list[str]:
        return sorted({*self.views, *self.stream_views, *self.odfvs})

    def odfv_sources(self, name: str) -> list[str]:
        odfv = self.odfvs[name]
        return sorted(odfv.source_feature_view_projections)

    def describe_view(self, name: str, used: list[str] | None = None) -> dict[str, Any]:
        """A view's kind, features (those ``used``, if given), entities, TTL, source and raw inputs."""
        if name in self.odfvs:
            odfv = self.odfvs[name]
            return {
                "name": name,
                "kind": "on_demand",
                "features": used or [f.name for f in odfv.features],
                "request_sources": sorted(odfv.source_request_sources),
                "depends_on": [self.describe_view(src) for src in self.odfv_sources(name)],
                "definition_hash": definition_hash(odfv),
                "owner": odfv.owner,
                "description": odfv.description,
            }
        view = self.views.get(name) or self.stream_views.get(name)
        if view is None:
            raise DataNotFoundError(f"feature view {name!r} is not in the Feast registry")
        source = view.batch_source
        path = getattr(source, "path", None)
        table = path.rsplit("/", 1)[-1].removesuffix(".parquet") if path else None
        return {
            "name": name,
            "kind": "stream" if name in self.stream_views else "batch",
            "features": used or [f.name for f in view.features],
            "entities": list(view.entities),
            "ttl_seconds": int(view.ttl.total_seconds()) if view.ttl else None,  # None: no TTL (Feast's 0)
            "definition_hash": definition_hash(view),
            "source": {
                "name": source.name,
                "path": path,
                "push_source": getattr(getattr(view, "stream_source", None), "name", None),
            },
            "raw": raw_inputs(table) if table else [],
            "owner": view.owner,
            "description": view.description,
        }

    def service_views(self, service_name: str) -> dict[str, list[str]]:
        """view name -> features the service takes from it."""
        service = self.services[service_name]
        return {p.name: [f.name for f in p.features] for p in service.feature_view_projections}

    def upstream(self, name: str) -> set[str]:
        """The view and every view it reads (through on-demand views)."""
        out = {name}
        if name in self.odfvs:
            for src in self.odfv_sources(name):
                out |= self.upstream(src)
        return out


def _raw_summary(settings: Settings) -> dict[str, Any]:
    from mlplatform.data.generator import read_manifest

    try:
        manifest = read_manifest(settings.data_path)
    except DataNotFoundError:
        return {"manifest": None}
    return {
        "manifest": str(settings.layout.raw_dir / "manifest.json"),
        "seed": manifest["spec"].get("seed"),
        "spec": manifest["spec"],
        "periods": manifest["periods"],
        "history": manifest.get("history"),  # before the world's start: fills windows, never training rows
    }


def model_lineage(settings: Settings, version: int | str) -> dict[str, Any]:
    """The chain from a model version (or alias such as ``golden``) to its training set, features, sources, raw data."""
    from mlplatform.models.registry import ModelRegistry

    registry = ModelRegistry(settings)
    if isinstance(version, str) and not version.isdigit():
        found = registry.with_alias(version)
        if not found:
            raise DataNotFoundError(f"no model version holds the alias {version!r}")
        mv = found[0]
    else:
        mv = registry.get(int(version))
    catalog = _Catalog(settings)
    service: dict[str, Any] = {"name": mv.feature_service, "in_registry": mv.feature_service in catalog.services}
    views: list[dict[str, Any]] = []
    if service["in_registry"]:
        by_view = catalog.service_views(mv.feature_service)
        served = [f for fs in by_view.values() for f in fs]
        service["features_now"] = len(served)
        service["matches_model"] = served == list(mv.feature_names)
        service["changed_since_training"] = sorted(set(served) ^ set(mv.feature_names))
        views = [catalog.describe_view(name, used) for name, used in by_view.items()]
    at_training = mv.lineage.get("feature_views") or {}
    comparable = mv.lineage.get("feature_view_hash_scheme") == HASH_SCHEME
    for view in views:
        view["definition_at_training"] = at_training.get(view["name"])
        view["definition_changed"] = (
            view["definition_at_training"] != view["definition_hash"]
            if comparable and view["definition_at_training"] else None
        )
    return {
        "model": {
            "name": mv.name,
            "version": mv.version,
            "aliases": mv.aliases,
            "created_at": mv.created_at,
            "run_id": mv.run_id,
            "booster_sha256": mv.booster_sha256,
            "metrics": mv.metrics,
            "feature_names": mv.feature_names,
        },
        "training_set": {
            "fingerprint": mv.lineage.get("fingerprint"),
            **{k: v for k, v in mv.lineage.items() if k != "fingerprint"},
        },
        "feature_service": service,
        "feature_views": views,
        "raw": _raw_summary(settings),
    }


def feature_view_impact(settings: Settings, name: str) -> dict[str, Any]:
    """Who consumes a feature view: on-demand views, feature services and model versions (with their aliases)."""
    from mlplatform.models.registry import ModelRegistry

    catalog = _Catalog(settings)
    if name not in catalog.all_view_names():
        raise DataNotFoundError(
            f"no feature view {name!r} in the Feast registry; known: {', '.join(catalog.all_view_names())}"
        )
    odfvs = sorted(o for o in catalog.odfvs if name in catalog.upstream(o) and o != name)
    services = []
    service_features: dict[str, set[str]] = {}
    for sname in sorted(catalog.services):
        by_view = catalog.service_views(sname)
        direct = by_view.get(name, [])
        via = {v: fs for v, fs in by_view.items() if v != name and name in catalog.upstream(v)}
        if direct or via:
            services.append(
                {"name": sname, "direct_features": direct, "via_on_demand": {v: fs for v, fs in via.items()}}
            )
            service_features[sname] = set(direct) | {f for fs in via.values() for f in fs}
    models = []
    for mv in ModelRegistry(settings).list_versions():
        if mv.feature_service in service_features:
            uses = [f for f in mv.feature_names if f in service_features[mv.feature_service]]
            models.append(
                {
                    "name": mv.name,
                    "version": mv.version,
                    "aliases": mv.aliases,
                    "feature_service": mv.feature_service,
                    "uses": uses,
                }
            )
    return {
        "feature_view": catalog.describe_view(name),
        "on_demand_views": odfvs,
        "feature_services": services,
        "models": models,
        "raw": _raw_summary(settings),
    }
