"""`mlplatform score`: batch-score a window of transactions into Parquet, with a progress bar."""

from __future__ import annotations

from typing import Annotated

import typer

from mlplatform.console import console, friendly, parse_time, part_app

app = part_app()


@app.command("score")
@friendly
def score(
    start: Annotated[
        str, typer.Option("--start", help="First transaction time of the window (ISO-8601, UTC if no zone).")
    ],
    end: Annotated[str, typer.Option("--end", help="End of the window, exclusive (ISO-8601).")],
    model: Annotated[int | None, typer.Option("--model", help="Model version (default: the golden one).")] = None,
    output: Annotated[
        str | None, typer.Option("--output", help="Parquet file to write: a path or URL (file://..., s3://bucket/"
                                 "key.parquet); default in MLPLATFORM_SCORES_URI, else <data_dir>/scores/.")
    ] = None,
    chunk_rows: Annotated[
        int | None, typer.Option("--chunk-rows", min=1, help="Transactions per chunk (default: settings).")
    ] = None,
) -> None:
    """Score every transaction in [START, END) point-in-time correctly with the golden model (or --model)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from mlplatform.errors import InvalidInputError
    from mlplatform.settings import get_settings
    from scoring.batch import score_window

    t0, t1 = parse_time(start), parse_time(end)
    if t0 is None or t1 is None:
        raise InvalidInputError("--start and --end are required")
    if t0 >= t1:
        raise InvalidInputError(f"--start {t0.isoformat()} must be before --end {t1.isoformat()}")
    progress = Progress(
        TextColumn("[bold]scoring[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("transactions"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("score", total=None, start=False)

    def on_progress(done: int, total: int) -> None:
        if not progress.live.is_started:  # shown once scoring starts: a refused window prints only its error
            progress.start()
            progress.start_task(task)
        progress.update(task, completed=done, total=total)

    try:
        result = score_window(
            get_settings(), t0, t1, model_version=model, output=output, chunk_rows=chunk_rows, on_progress=on_progress
        )
    finally:
        if progress.live.is_started:
            progress.stop()
    console.print(
        f"[green]scored[/] {result.rows:,} transactions with {result.model_name} v{result.model_version} "
        f"({result.feature_service}) in {result.seconds:.1f}s ({result.rows_per_second:,.0f}/s), "
        f"{result.chunks} chunk(s); run {result.run_id}"
    )
    console.print(f"written: {result.path}", highlight=False, soft_wrap=True, markup=False)
