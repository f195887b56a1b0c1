"""The core's records, for people: `mlplatform audit` (the audit log) and `mlplatform lineage`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from mlplatform.console import JsonOpt, console, emit_json, friendly, parse_time, part_app

app = part_app()


@app.command("audit")
@friendly
def audit(
    action: Annotated[
        str | None,
        typer.Option(help="Only these actions: a family ('promote' = promote, force_promote, promote_refused, "
                     "rollback), '=NAME' for that action alone, or a shell pattern ('*promote*')."),
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor, who acted (shell pattern).")] = None,
    channel: Annotated[
        str | None, typer.Option(help="Only this channel, how it came in: cli, api, pipeline, monitoring (pattern).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only records at/after this time (ISO-8601 or relative: today, now-6h).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most the latest N records.")] = 50,
    as_json: JsonOpt = False,
    as_jsonl: Annotated[bool, typer.Option(
        "--jsonl", help="One JSON object per record, one per line (JSON Lines), instead of a table.")] = False,
) -> None:
    """List the audit log: who changed what, when, why and through which channel.

    Families: `--action promote` finds promote, force_promote, promote_refused and rollback.

    Channels: cli, api (the service's admin endpoints), pipeline (pipeline runs), monitoring (monitor check).
    """
    from rich.table import Table

    from mlplatform.audit import audit_path, list_records
    from mlplatform.errors import InvalidInputError
    from mlplatform.settings import get_settings

    if as_json and as_jsonl:
        raise InvalidInputError("--json (one document) and --jsonl (one line per record): choose one")
    settings = get_settings()
    since_time = parse_time(since)
    records = list_records(settings, action=action, actor=actor, since=since_time, limit=limit, channel=channel)
    doc = audit_document(records, audit_path(settings), action=action, actor=actor, channel=channel,
                         since=since_time, limit=limit)
    if as_json:
        emit_json(doc)
        return
    if as_jsonl:
        for rec in doc["records"]:
            typer.echo(json.dumps(rec, default=str))
        return
    if not records:
        console.print(f"no audit records match (log: {audit_path(settings)})", highlight=False)
        return
    table = Table("time", "actor", "channel", "action", "target", "reason", "details",
                  title=f"audit log ({doc['count']} shown)")
    for rec in doc["records"]:
        details = ", ".join(f"{k}={_short(v)}" for k, v in rec["details"].items() if k != "channel")
        table.add_row(rec["time"][:19], rec["actor"], rec["channel"] or "", rec["action"], rec["target"],
                      rec["reason"] or "", details[:160])
    console.print(table)


def audit_document(records: list, log: Any, **filters: Any) -> dict[str, Any]:
    """``audit --json`` (docs/cli-json.md), and what its table shows: the matching records oldest first, as stored
    in the log (``time``, ``actor``, ``channel``, ``action``, ``target``, ``reason``, ``details``), the filters
    given and the log's location."""
    from dataclasses import asdict

    return {"log": log, "filters": filters, "count": len(records), "records": [asdict(r) for r in records]}


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


@app.command("lineage")
@friendly
def lineage(
    model_version: Annotated[str | None, typer.Argument(help="Model version (or alias such as golden).")] = None,
    feature_view: Annotated[
        str | None, typer.Option("--feature-view", help="Show who consumes this view instead.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """A model's chain back to raw data (training set, service, views, sources, seed), or a view's consumers."""
    from rich.tree import Tree

    from mlplatform.errors import InvalidInputError
    from mlplatform.lineage import feature_view_impact, model_lineage
    from mlplatform.settings import get_settings

    if (model_version is None) == (feature_view is None):
        raise InvalidInputError("give a MODEL_VERSION or --feature-view NAME (one of them)")
    settings = get_settings()
    info = model_lineage(settings, model_version) if model_version else feature_view_impact(settings, feature_view)
    if as_json:  # docs/cli-json.md: what the tree below shows, times as ISO-8601 UTC
        emit_json(info)
        return
    if model_version:
        m, ts, svc = info["model"], info["training_set"], info["feature_service"]
        tree = Tree(
            f"[bold]model {m['name']} v{m['version']}[/] {m['aliases'] or ''} created {str(m['created_at'])[:19]}"
        )
        t = tree.add(f"training set fingerprint [cyan]{ts.get('fingerprint')}[/]")
        for k, v in ts.items():
            if k != "fingerprint":
                t.add(f"{k}: {_short(v)}")
        s = tree.add(
            f"feature service [cyan]{svc['name']}[/]"
            + ("" if svc["in_registry"] else " [red](not in the Feast registry any more)[/]")
            + (
                ""
                if svc.get("matches_model", True)
                else f" [yellow](changed since training: {', '.join(svc['changed_since_training'])})[/]"
            )
        )
        for view in info["feature_views"]:
            _add_view(s, view)
        _add_raw(tree, info["raw"])
    else:
        view = info["feature_view"]
        tree = Tree(f"[bold]feature view {view['name']}[/] ({view['kind']})")
        _add_view(tree.add("reads from"), view)
        odfv = tree.add(f"on-demand views reading it: {', '.join(info['on_demand_views']) or 'none'}")
        del odfv
        services = tree.add(f"feature services consuming it: {len(info['feature_services'])}")
        for s in info["feature_services"]:
            node = services.add(f"[cyan]{s['name']}[/]")
            if s["direct_features"]:
                node.add(f"directly: {', '.join(s['direct_features'])}")
            for v, fs in s["via_on_demand"].items():
                node.add(f"via {v}: {', '.join(fs)}")
        models = tree.add(f"model versions affected by a change: {len(info['models'])}")
        for m in info["models"]:
            models.add(
                f"{m['name']} v{m['version']} {m['aliases'] or ''} via {m['feature_service']} "
                f"uses {len(m['uses'])}: {', '.join(m['uses'])}"
            )
    console.print(tree)


def _add_view(parent, view: dict) -> None:
    from rich.markup import escape

    from mlplatform.lineage import ttl_text

    node = parent.add(f"[green]{escape(view['name'])}[/] ({view['kind']}): {escape(', '.join(view['features']))}")
    node.add(_definition_text(view))
    if view["kind"] == "on_demand":
        node.add(escape(f"request fields from: {', '.join(view['request_sources'])}"))
        for dep in view["depends_on"]:
            _add_view(node, dep)
        return
    src = view["source"]
    node.add(escape(
        f"source {src['name']}: {src['path']}" + (f" (push: {src['push_source']})" if src.get("push_source") else "")
    ))
    node.add(escape(
        f"raw: {', '.join(view['raw']) or '—'}; entities {', '.join(view['entities'])}; {ttl_text(view['ttl_seconds'])}"
    ))


def _definition_text(view: dict) -> str:
    """The view's definition hash, and whether it changed since the model's training set was built."""
    text = f"definition [cyan]{view.get('definition_hash')}[/]"
    if view.get("definition_changed") is True:
        return text + f" [yellow](changed since training: was {view.get('definition_at_training')})[/]"
    if view.get("definition_changed") is False:
        return text + " (as at training)"
    return text


def _add_raw(parent, raw: dict) -> None:
    if not raw.get("manifest"):
        parent.add("raw data: no manifest found")
        return
    node = parent.add(f"raw data {raw['manifest']} (generator seed [cyan]{raw['seed']}[/])")
    history = raw.get("history")
    if history:
        node.add(f"{history['name']}: {history['transactions']:,} transactions, {history['labels']:,} labels "
                 "(history before the world's start: fills the windows, never training rows)")
    for p in raw["periods"]:
        node.add(
            f"{p['name']}: {p['transactions']:,} transactions, {p['labels']:,} labels"
            + (" (drifted)" if p.get("drifted") else "")
        )
