"""`mlplatform stream run|status`: consume the transaction event stream into the customers' event logs."""

from __future__ import annotations

import json
import os
import socket
from typing import Annotated

import typer

from mlplatform.console import console, friendly, part_app

app = part_app()
stream_app = part_app("The transaction event stream: apply it to the customers' event logs (docs/streaming.md).")
app.add_typer(stream_app, name="stream")


def _client(settings, block_ms: int = 0):
    """A bounded client (``redis_timeout_seconds``); a blocking read may wait ``block_ms`` longer for entries."""
    from mlplatform.settings import RedisAddress
    from mlplatform.stores import bounded_redis

    addr = RedisAddress.parse(settings.redis_addr)
    timeout = settings.redis_timeout_seconds
    return bounded_redis(addr.host, addr.port, timeout, socket_timeout=timeout + block_ms / 1000.0,
                         socket_connect_timeout=timeout, password=addr.password, db=addr.db)


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


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
    import signal
    import threading
    import time

    from mlplatform.features.repo import feast_project
    from mlplatform.settings import get_settings
    from streaming.consumer import ConsumerOptions, Progress, StreamConsumer

    settings = get_settings()
    options = ConsumerOptions(
        stream=settings.events_stream, consumer=consumer or _default_consumer(),
        project=feast_project(settings.feature_repo), batch_size=batch_size or settings.stream_batch_size,
        block_ms=settings.stream_block_ms, claim_idle_ms=int(claim_idle * 1000), max_events=max_events,
        idle_exit_s=idle_exit, trim=trim,
        feast_rows=settings.stream_feast_rows if feast_rows is None else feast_rows,
    )
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        if stop.is_set():  # a second signal: stop now, without finishing the batch
            raise KeyboardInterrupt
        stop.set()

    def on_progress(p: Progress) -> None:
        lag = "unknown" if p.lag is None else f"{p.lag:,}"
        console.print(f"{time.strftime('%H:%M:%S')} {options.consumer}: {p.totals.applied:,} applied "
                      f"({p.per_second:,.0f}/s), {p.totals.dead:,} dead-lettered; group lag {lag}, "
                      f"pending {p.pending if p.pending is not None else 'unknown'}", highlight=False)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread (an embedding caller): it stops us through its own means
            pass
    client = _client(settings, options.block_ms)
    if not quiet:
        console.print(f"consuming {options.stream} as {options.consumer} (group {options.group}, project "
                      f"{options.project}, batches of {options.batch_size})", highlight=False, markup=False)
    try:
        totals = StreamConsumer(client, options, stop, None if quiet else on_progress).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        client.close()
    console.print(f"{options.consumer}: applied {totals.applied:,} events, dead-lettered {totals.dead:,} "
                  f"({totals.recovered:,} recovered from earlier deliveries) in {totals.batches:,} batches; "
                  f"stopped: {totals.stopped_by}", highlight=False, markup=False)


@stream_app.command("status")
@friendly
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of tables.")] = False,
) -> None:
    """The stream's length, the group's lag and pending entries, its consumers, dead letters and throughput."""
    import time

    from rich.table import Table

    from mlplatform.features.repo import feast_project
    from mlplatform.settings import get_settings
    from mlplatform.stores import redis_errors
    from streaming.status import read_status

    settings = get_settings()
    project = feast_project(settings.feature_repo)
    client = _client(settings)
    try:
        with redis_errors(settings.redis_addr, "did not answer", settings.redis_timeout_seconds):
            st = read_status(client, settings.events_stream, project, int(time.time()))
    finally:
        client.close()
    if as_json:
        typer.echo(json.dumps(st.to_dict()))
        return

    def num(v: int | None, missing: str = "unknown") -> str:
        return missing if v is None else f"{v:,}"

    table = Table("", "value", title=f"stream {st.stream}", show_header=False)
    table.add_row("length", num(st.length))
    table.add_row("consumer group", st.group if st.group_exists else f"{st.group} (not created yet: no consumer ran)")
    table.add_row("entries read by the group", num(st.entries_read))
    table.add_row("lag (not yet delivered)", num(st.lag))
    table.add_row("pending (delivered, not acknowledged)", num(st.pending))
    table.add_row("oldest pending entry", st.oldest_pending_id or "-")
    table.add_row("dead letters", num(st.dead_letters))
    table.add_row("applied in the last minute", f"{st.applied_last_minute:,} ({st.applied_last_minute / 60:,.1f}/s)")
    table.add_row("applied in total", num(st.applied_total))
    for label, when in (("newest event time applied", st.newest_applied), ("logs complete from", st.complete_from),
                        ("backfilled up to", st.backfilled_to)):
        table.add_row(label, when.isoformat() if when else "-")
    console.print(table)
    if st.consumers:
        consumers = Table("consumer", "pending", "idle (s)", "applied", title="consumers")
        for c in st.consumers:
            consumers.add_row(c.name, f"{c.pending:,}", f"{c.idle_ms / 1000:,.1f}", f"{c.applied:,}")
        console.print(consumers)
