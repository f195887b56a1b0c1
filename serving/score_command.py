"""`mlplatform stream score`: score the transaction event stream with the service's models, publishing each score
to the scores stream (serving.queue_scorer). The root CLI adds it to the `stream` group."""

from __future__ import annotations

from typing import Annotated

import typer

from mlplatform.console import console, friendly


@friendly
def score(
    consumer: Annotated[str | None, typer.Option(
        "--consumer", help="This scorer's name in its group (default: <host>-<pid>). A restart under the same name "
        "first scores what it had read but not acknowledged.")] = None,
    max_events: Annotated[int | None, typer.Option(
        "--max-events", min=1, help="Stop after handling this many entries.")] = None,
    idle_exit: Annotated[float | None, typer.Option(
        "--idle-exit", min=0, help="Stop once no new entry arrived for this many seconds.")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", min=1, help="Entries read, scored and published at a time: the bound on what one scorer "
        "holds in flight (default: stream_batch_size).")] = None,
    claim_idle: Annotated[float, typer.Option(
        "--claim-idle", min=0, help="Take over entries another scorer read but left unacknowledged for this many "
        "seconds (it died).")] = 30.0,
    trim: Annotated[bool, typer.Option(
        "--trim/--no-trim", help="Trim entries every group acknowledged off the events stream.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines, only the final summary.")] = False,
) -> None:
    """Score the event stream with the service's models, publishing each score once, until SIGTERM/Ctrl-C.

    Each event is scored as POST /v1/predict would score it at the event's time; the answer goes to the scores
    stream (MLPLATFORM_SCORES_STREAM). Its own consumer group (mlplatform-scorer): run several, each with its own
    --consumer name, to share the work."""
    import time

    from mlplatform.settings import get_settings
    from mlplatform.stores import require_redis
    from mlplatform.stream_group import default_consumer_name, group_client, stop_on_signals
    from serving.queue_scorer import SCORER_GROUP, ScorerOptions, ScorerProgress, run_scorer

    settings = get_settings()
    require_redis(settings)
    options = ScorerOptions(
        stream=settings.events_stream, consumer=consumer or default_consumer_name(),
        scores_stream=settings.scores_stream, group=SCORER_GROUP,
        batch_size=batch_size or settings.stream_batch_size, block_ms=settings.stream_block_ms,
        claim_idle_ms=int(claim_idle * 1000), max_events=max_events, idle_exit_s=idle_exit, trim=trim,
    )
    def on_progress(p: ScorerProgress) -> None:
        lag = "unknown" if p.lag is None else f"{p.lag:,}"
        console.print(f"{time.strftime('%H:%M:%S')} {options.consumer}: {p.totals.scored:,} scored "
                      f"({p.per_second:,.0f}/s), {p.totals.duplicates:,} already published, {p.totals.dead:,} "
                      f"dead-lettered; group lag {lag}, pending "
                      f"{p.pending if p.pending is not None else 'unknown'}", highlight=False, markup=False)

    client = group_client(settings, options.block_ms)
    if not quiet:
        console.print(f"scoring {options.stream} as {options.consumer} (group {options.group}) into "
                      f"{options.scores_stream}, batches of {options.batch_size}", highlight=False, markup=False)
    try:
        with stop_on_signals() as stop:
            totals = run_scorer(settings, client, options, stop, None if quiet else on_progress)
    finally:
        client.close()
    console.print(f"{options.consumer}: scored {totals.scored:,} events, {totals.duplicates:,} already published, "
                  f"dead-lettered {totals.dead:,} ({totals.recovered:,} recovered from earlier deliveries) in "
                  f"{totals.batches:,} batches; stopped: {totals.stopped_by}", highlight=False, markup=False)
