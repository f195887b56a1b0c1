"""`mlplatform stream run|status`: consume the transaction event stream into the customers' event logs."""

from __future__ import annotations

from typing import Annotated

import typer

from mlplatform.console import JsonOpt, console, emit_json, friendly, part_app

app = part_app()
stream_app = part_app("The transaction event stream: apply it to the customers' event logs, or score it "
                      "(docs/streaming.md).")
app.add_typer(stream_app, name="stream")


@stream_app.command("run")
@friendly
def run(
    consumer: Annotated[str | None, typer.Option(
        "--consumer", help="This consumer's name in the group (default: <host>-<pid>). A restart under the same "
        "name re-applies what it had read but not acknowledged.")] = None,
    max_events: Annotated[int | None, typer.Option(
        "--max-events", min=1, help="Stop after handling this many entries.")] = None,
    idle_exit: Annotated[float | None, typer.Option(
        "--idle-exit", min=0, help="Stop once no new entry arrived for this many seconds.")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", min=1, help="Entries per read (default: stream_batch_size).")] = None,
    claim_idle: Annotated[float, typer.Option(
        "--claim-idle", min=0, help="Take over entries another consumer read but left unacknowledged for this many "
        "seconds (it died).")] = 30.0,
    trim: Annotated[bool, typer.Option(
        "--trim/--no-trim", help="Trim entries every group acknowledged off the stream.")] = True,
    feast_rows: Annotated[bool | None, typer.Option(
        "--feast-rows/--no-feast-rows", help="Also keep Feast's customer_activity row of each touched customer "
        "current (default: stream_feast_rows).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines, only the final summary.")] = False,
) -> None:
    """Apply the event stream to the customers' event logs until SIGTERM/Ctrl-C (finishing the batch in hand).

    Run one or more beside `mlplatform serve`, each with its own --consumer name: they share the work."""
    import time

    from mlplatform.features.repo import feast_project
    from mlplatform.settings import get_settings
    from mlplatform.stream_group import default_consumer_name, group_client, stop_on_signals
    from streaming.consumer import ConsumerOptions, Progress, StreamConsumer

    settings = get_settings()
    options = ConsumerOptions(
        stream=settings.events_stream, consumer=consumer or default_consumer_name(),
        project=feast_project(settings.feature_repo), batch_size=batch_size or settings.stream_batch_size,
        block_ms=settings.stream_block_ms, claim_idle_ms=int(claim_idle * 1000), max_events=max_events,
        idle_exit_s=idle_exit, trim=trim,
        feast_rows=settings.stream_feast_rows if feast_rows is None else feast_rows,
    )
    def on_progress(p: Progress) -> None:
        lag = "unknown" if p.lag is None else f"{p.lag:,}"
        console.print(f"{time.strftime('%H:%M:%S')} {options.consumer}: {p.totals.applied:,} applied "
                      f"({p.per_second:,.0f}/s), {p.totals.dead:,} dead-lettered; group lag {lag}, "
                      f"pending {p.pending if p.pending is not None else 'unknown'}", highlight=False)

    client = group_client(settings, options.block_ms)
    if not quiet:
        console.print(f"consuming {options.stream} as {options.consumer} (group {options.group}, project "
                      f"{options.project}, batches of {options.batch_size})", highlight=False, markup=False)
    try:
        with stop_on_signals() as stop:
            totals = StreamConsumer(client, options, stop, None if quiet else on_progress).run()
    finally:
        client.close()
    console.print(f"{options.consumer}: applied {totals.applied:,} events, dead-lettered {totals.dead:,} "
                  f"({totals.recovered:,} recovered from earlier deliveries) in {totals.batches:,} batches; "
                  f"stopped: {totals.stopped_by}", highlight=False, markup=False)


@stream_app.command("status")
@friendly
def status(as_json: JsonOpt = False) -> None:
    """The stream's length, the group's lag and pending entries, its consumers, dead letters and throughput."""
    import time

    from rich.table import Table

    from mlplatform.features.repo import feast_project
    from mlplatform.settings import get_settings
    from mlplatform.stores import redis_errors
    from mlplatform.stream_group import group_client
    from streaming.status import read_status

    settings = get_settings()
    project = feast_project(settings.feature_repo)
    client = group_client(settings)
    try:
        with redis_errors(settings.redis_addr, "did not answer", settings.redis_timeout_seconds):
            st = read_status(client, settings.events_stream, project, int(time.time())).to_dict()
    finally:
        client.close()
    if as_json:  # docs/cli-json.md: StreamStatus.to_dict(), what the tables below show
        emit_json(st)
        return

    def num(v: int | None, missing: str = "unknown") -> str:
        return missing if v is None else f"{v:,}"

    table = Table("", "value", title=f"stream {st['stream']}", show_header=False)
    table.add_row("length", num(st["length"]))
    table.add_row("consumer group",
                  st["group"] if st["group_exists"] else f"{st['group']} (not created yet: no consumer ran)")
    table.add_row("entries read by the group", num(st["entries_read"]))
    table.add_row("lag (not yet delivered)", num(st["lag"]))
    table.add_row("pending (delivered, not acknowledged)", num(st["pending"]))
    table.add_row("oldest pending entry", st["oldest_pending_id"] or "-")
    table.add_row("dead letters", num(st["dead_letters"]))
    recent = st["applied_last_minute"]
    table.add_row("applied in the last minute", f"{recent:,} ({recent / 60:,.1f}/s)")
    table.add_row("applied in total", num(st["applied_total"]))
    for label, key in (("newest event time applied", "newest_applied"), ("logs complete from", "complete_from"),
                       ("backfilled up to", "backfilled_to")):
        table.add_row(label, st[key] or "-")
    console.print(table)
    if st["consumers"]:
        consumers = Table("consumer", "pending", "idle (s)", "applied", title="consumers")
        for c in st["consumers"]:
            consumers.add_row(c["name"], f"{c['pending']:,}", f"{c['idle_ms'] / 1000:,.1f}", f"{c['applied']:,}")
        console.print(consumers)
