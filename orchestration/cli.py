"""`mlplatform pipeline run NAME` and `mlplatform pipeline status`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mlplatform.console import JsonOpt, console, emit_json, err_console, escape, friendly, part_app

app = part_app()
pipeline_app = part_app("Scheduled chains of steps (pipelines.yaml): run them, see their runs.")
app.add_typer(pipeline_app, name="pipeline")


@pipeline_app.command("run")
@friendly
def run(
    name: Annotated[str, typer.Argument(help="Pipeline name in pipelines.yaml, e.g. daily.")],
    from_start: Annotated[
        bool, typer.Option("--from-start", help="Do not resume a failed run: run every step.")
    ] = False,
) -> None:
    """Run a pipeline (resuming a failed last run from its failed step); exit 1 if a step fails."""
    from mlplatform.settings import get_settings
    from orchestration.runner import run_pipeline

    def on_event(kind: str, info: dict) -> None:
        if kind == "start" and info["resumed_from"]:
            console.print(f"resuming failed run {info['resumed_from']} from step {info['first'] + 1}")
        elif kind == "step":
            console.print(f"[bold]({info['index'] + 1}/{info['total']})[/] {escape(info['name'])} ...")
        elif kind == "retry":
            err_console.print(
                f"  [yellow]transient failure[/] (attempt {info['attempt']}): {escape(str(info['error']))}; "
                f"retrying in {info['delay']:g}s",
                highlight=False,
                soft_wrap=True,
            )
        elif kind == "step_done":
            colour = {"succeeded": "green", "skipped": "yellow", "failed": "red"}.get(info["status"], "white")
            extra = (
                info.get("error")
                if info["status"] != "succeeded"
                else ", ".join(f"{k}={v}" for k, v in (info.get("summary") or {}).items())
            )
            console.print(
                f"  [{colour}]{info['status']}[/] in {info.get('seconds', 0):.1f}s"
                + (f": {escape(str(extra))}" if extra else ""),
                highlight=False,
                soft_wrap=True,
                markup=True,
            )

    result = run_pipeline(get_settings(), name, from_start=from_start, on_event=on_event)
    rec = result.record
    if result.ok:
        console.print(f"[green]pipeline {name} succeeded[/] in {rec['seconds']:.1f}s (run {rec['run_id']})")
        return
    err_console.print(
        f"[bold red]pipeline {name} failed[/] at step {rec['failed_step']} (run {rec['run_id']}); "
        f"fix the cause and run it again to resume from that step",
        highlight=False,
    )
    raise typer.Exit(1)


def status_document(runs: list[dict[str, Any]], name: str | None, limit: int) -> dict[str, Any]:
    """``pipeline status --json`` (docs/cli-json.md), and what its tables show: the run records as the runner wrote
    them under ``<data_dir>/pipelines/runs/``, newest first, each step's Python traceback left out (it stays in the
    record's file)."""
    def without_traceback(run: dict[str, Any]) -> dict[str, Any]:
        steps = [{k: v for k, v in s.items() if k != "traceback"} for s in run.get("steps", [])]
        return {**run, "steps": steps}

    return {"pipeline": name, "limit": limit, "runs": [without_traceback(r) for r in runs]}


@pipeline_app.command("status")
@friendly
def status(
    name: Annotated[str | None, typer.Argument(help="Only this pipeline.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many runs to list.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Recent runs (outcome, duration, failed step) and the steps of the latest one."""
    from rich.table import Table

    from mlplatform.settings import get_settings
    from orchestration.runner import list_runs

    doc = status_document(list_runs(get_settings(), name, limit=limit), name, limit)
    if as_json:
        emit_json(doc)
        return
    runs = doc["runs"]
    if not runs:
        console.print("no pipeline runs yet: `mlplatform pipeline run daily`")
        return
    table = Table(
        "run",
        "pipeline",
        "status",
        "started",
        "seconds",
        "failed step",
        "resumed from",
        title="pipeline runs (newest first)",
    )
    for r in runs:
        colour = {"succeeded": "green", "failed": "red"}.get(r["status"], "yellow")
        table.add_row(
            r["run_id"],
            r["pipeline"],
            f"[{colour}]{r['status']}[/]",
            r["started_at"][:19],
            f"{r.get('seconds', 0) or 0:.1f}",
            escape(r.get("failed_step") or ""),
            r.get("resumed_from") or "",
        )
    console.print(table)
    latest = runs[0]
    steps = Table(
        "step", "call", "status", "attempts", "seconds", "summary / error", title=f"steps of {latest['run_id']}"
    )
    for s in latest["steps"]:
        detail = s.get("error") or ", ".join(f"{k}={v}" for k, v in (s.get("summary") or {}).items())
        if s["status"] == "reused":
            detail = f"done in {s.get('from_run')}"
        steps.add_row(
            s["name"],
            s["call"],
            s["status"],
            str(s.get("attempts", "")),
            f"{s['seconds']:.1f}" if "seconds" in s else "",
            escape((detail or "")[:120]),
        )
    console.print(steps)
