"""`mlplatform monitor skew|consistency|quality|check` (and `replay` for the demo): thin commands over monitoring."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from mlplatform.console import (
    JsonOpt,
    console,
    emit_json,
    err_console,
    friendly,
    parse_interval,
    parse_time,
    part_app,
)
from mlplatform.errors import InvalidInputError

app = part_app()
monitor_app = part_app("Skew, consistency and live quality of served models; thresholds and retraining.")
app.add_typer(monitor_app, name="monitor")

SinceOpt = Annotated[str | None, typer.Option(
    help="Start of the window of logged requests (ISO-8601); default: monitoring_window_days before --until.")]
UntilOpt = Annotated[str | None, typer.Option(help="End of the window (ISO-8601, exclusive); default: now.")]


def _window(since: str | None, until: str | None):
    return parse_time(since), parse_time(until)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _left_out(unjudged) -> None:
    """Say which logged rows and files were left out, by reason (nothing when every row could be judged)."""
    if not unjudged:
        return
    console.print(f"[yellow]left out:[/] {unjudged.describe()}", highlight=False, soft_wrap=True)
    for row in unjudged.table():
        if "file" in row:
            console.print(f"  {row['file']}: {row['reason']}", highlight=False, soft_wrap=True)


def report_document(result) -> dict[str, Any]:
    """``monitor skew|consistency|quality|check --json`` (docs/cli-json.md): the JSON summary of the report this run
    wrote, as written (the same figures the tables show: both come from ``result``), and ``report``, where its
    files are."""
    files = result.files
    summary = files.read_summary() if files is not None else result.to_dict()
    return {**summary, "report": files.to_dict() if files is not None else None}


def _where(files) -> None:
    if files is not None:
        console.print(f"report: {files.html_path or files.json_path}  (summary: {files.json_name}; "
                      f"index: {files.index})", highlight=False, soft_wrap=True)


@monitor_app.command("skew")
@friendly
def skew(since: SinceOpt = None, until: UntilOpt = None, as_json: JsonOpt = False) -> None:
    """Training set of the golden model vs served features (Evidently data drift per feature, with tests)."""
    from mlplatform.settings import get_settings
    from monitoring.skew import run_skew

    result = run_skew(get_settings(), *_window(since, until))
    if as_json:
        emit_json(report_document(result))
        return
    judged = result.judged
    table = Table("feature", "kind", "method", "drift score", "drifted" if judged else "over threshold",
                  title=f"train/serve skew: {result.model_name} v{result.model_version}, "
                        f"{result.current_rows:,} served rows ({result.window.describe()})"
                        + ("" if judged else " - NOT JUDGED: too few served rows"))
    yes = "[bold red]yes[/]" if judged else "yes (not judged)"
    for f in result.features:
        table.add_row(f.feature, f.kind, f.method, _fmt(f.score), yes if f.drifted else "no")
    console.print(table)
    verdict = "drifted" if judged else "over the drift threshold, NOT JUDGED"
    console.print(f"{len(result.drifted)}/{len(result.features)} {verdict}; sampled {result.reference_sampled:,} "
                  f"training / {result.current_sampled:,} served rows; {result.seconds:.1f}s", highlight=False)
    if not judged:
        console.print(f"[bold yellow]too few served rows to judge:[/] {result.caveat()}", highlight=False,
                      soft_wrap=True)
    _left_out(result.unjudged)
    _where(result.files)


@monitor_app.command("consistency")
@friendly
def consistency(since: SinceOpt = None, until: UntilOpt = None, as_json: JsonOpt = False) -> None:
    """Served features vs their point-in-time recomputation from the offline store (mismatch rate per feature)."""
    from mlplatform.settings import get_settings
    from monitoring.consistency import run_consistency

    result = run_consistency(get_settings(), *_window(since, until))
    if as_json:
        emit_json(report_document(result))
        return
    table = Table("feature", "compared", "mismatches", "rate",
                  title=f"online/offline consistency ({result.window.describe()})")
    for f in result.features:
        style = "bold red" if f.mismatches else ""
        table.add_row(f.feature, f"{f.compared:,}", f"{f.mismatches:,}", f"{f.rate:.2%}", style=style)
    console.print(table)
    for f in result.worst()[:3]:
        for e in f.examples[:2]:
            console.print(f"  e.g. {f.feature}: request {e['request_id']} served {e['served']} offline {e['offline']}",
                          highlight=False)
    replayed = f"; {result.replayed:,} replayed, judged at their original time" if result.replayed else ""
    console.print(f"{result.compared:,} of {result.requests:,} requests compared; {result.skips()}{replayed}; "
                  f"{result.seconds:.1f}s", highlight=False, soft_wrap=True)
    if result.feature_age is not None:
        console.print(f"freshness: {result.feature_age.describe()}", highlight=False, soft_wrap=True)
    _left_out(result.unjudged)
    _where(result.files)


@monitor_app.command("quality")
@friendly
def quality(since: SinceOpt = None, until: UntilOpt = None,
            as_of: Annotated[str | None, typer.Option(help="Count labels arrived by then (default now).")] = None,
            as_json: JsonOpt = False) -> None:
    """Live ROC AUC, PR AUC and calibration from served predictions and arrived labels; serving figures."""
    from mlplatform.settings import get_settings
    from monitoring.quality import run_quality

    settings = get_settings()
    result = run_quality(settings, *_window(since, until), as_of=parse_time(as_of))
    if as_json:
        emit_json(report_document(result))
        return
    if result.by_version:
        table = Table("model", "labeled", "fraud", "ROC AUC", "(train)", "PR AUC", "(train)", "Brier", "ECE",
                      title=f"live quality ({result.window.describe()}, labels by {result.as_of:%Y-%m-%d %H:%M}Z)")
        for r in result.by_version:
            tr = r.get("training", {})
            table.add_row(f"{r['model_name']} v{r['model_version']}", f"{r['rows']:,}", str(r["positives"]),
                          _fmt(r["roc_auc"]), _fmt(tr.get("roc_auc")), _fmt(r["pr_auc"]), _fmt(tr.get("pr_auc")),
                          _fmt(r["brier"], ".4f"), _fmt(r["ece"], ".4f"))
        console.print(table)
    if not result.judged:
        console.print(f"[bold yellow]live quality not judged[/] ({result.window.describe()}): "
                      f"{result.explanation()}", highlight=False, soft_wrap=True)
    serving = Table("model", "served", "fallbacks", "latency ms min/mean/max", "registered", "promoted",
                    "first served", title="serving")
    for r in result.serving:
        serving.add_row(f"{r['model_name']} v{r['model_version']}", f"{r['served']:,}", str(r["fallbacks"]),
                        f"{r['latency_ms_min']:.1f} / {r['latency_ms_mean']:.1f} / {r['latency_ms_max']:.1f}",
                        str(r.get("registered_at") or "")[:19], str(r.get("promoted_at") or "")[:19],
                        r["first_served_at"][:19])
    console.print(serving)
    _left_out(result.unjudged)
    _where(result.files)


@monitor_app.command("check")
@friendly
def check(
    since: SinceOpt = None,
    until: UntilOpt = None,
    retrain: Annotated[bool, typer.Option(
        "--retrain", help="On a breach, request retraining: `mlplatform train --if-needed` (it retrains only once "
        "enough labels arrived since the golden's training set), then `models promote` (its gate decides).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run skew, consistency and quality against the thresholds; exit 10 naming each breach, 3 if no part had
    enough data to judge, 0 if at least one judged and none breached."""
    from mlplatform.settings import get_settings
    from monitoring.check import NOTHING_TO_CHECK, run_check

    result = run_check(get_settings(), *_window(since, until), retrain=retrain)
    if as_json:  # the same exit code: 10 on a breach, 3 when nothing was judged
        emit_json(report_document(result))
        raise typer.Exit(result.exit_code)
    table = Table("check", "status", "judged", "summary", title="monitoring check")
    for p in result.parts:
        colour = {"breach": "bold red", "ok": "green", "error": "yellow"}.get(p.status, "")
        table.add_row(p.name, f"[{colour}]{p.status}[/]" if colour else p.status, "yes" if p.judged else "no",
                      p.headline)
    console.print(table)
    for p in result.not_judged:
        if p.error is None:
            console.print(f"[yellow]{p.name} not judged:[/] {p.why_not}", highlight=False, soft_wrap=True)
    _left_out(result.unjudged)
    for b in result.breaches:
        err_console.print(f"[bold red]breach:[/] {b}", highlight=False, soft_wrap=True)
    for p in result.errors:
        err_console.print(f"[yellow]{p.name} could not run:[/] {p.error}", highlight=False, soft_wrap=True)
    if result.status == NOTHING_TO_CHECK:
        err_console.print(f"[yellow]{NOTHING_TO_CHECK}:[/] no part had enough data to judge (exit "
                          f"{int(result.exit_code)})", highlight=False, soft_wrap=True)
    if result.retrain:
        r = result.retrain
        outcome = (f"new version v{r['new_version']} {'promoted' if r['promoted'] else 'refused by the promotion gate'}"
                   if "new_version" in r else f"no new version ({r.get('train', {}).get('reason', 'not trained')})")
        console.print(f"retraining requested ({r['request']}): {outcome}", highlight=False)
    _where(result.files)
    raise typer.Exit(result.exit_code)


@monitor_app.command("replay")
@friendly
def replay(
    url: Annotated[str | None, typer.Option(help="Service base URL (default: serving_host:serving_port).")] = None,
    period: Annotated[str | None, typer.Option(help="Generated period to replay (default: the latest).")] = None,
    limit: Annotated[int, typer.Option(help="Score at most this many transactions (uniform sample; 0 = all).")] = 5000,
    live: Annotated[bool, typer.Option(
        "--live/--end-state", help="--live: play the period in event-time order through POST /v1/events (needs "
        "`mlplatform stream run` and the admin key) and score each sampled transaction at its own time. "
        "--end-state (the default): score the sample against the online store as it stands now, a load "
        "replay whose windows are those at the end of the data, not at each transaction.")] = False,
    speed: Annotated[float, typer.Option(help="--live: how many times faster than real time the clock runs "
                                              "(3600: an hour of the period per second).")] = 3600.0,
    materialize_every: Annotated[str | None, typer.Option(
        help="--live: write the stored views' rows (merchant_risk, the profiles; customer_activity too when the "
        "service does not read the event logs) like a batch `materialize` every this long (e.g. 1h, 1D) instead "
        "of each as its time comes: what a service behind hourly materialization sees.")] = None,
) -> None:
    """Send a generated period's transactions to the running service, moved forward by whole days to end now."""
    from mlplatform.settings import get_settings
    from monitoring.replay import live_replay
    from monitoring.replay import replay as run_replay

    settings = get_settings()
    if live:
        res = live_replay(settings, url, period, limit, speed, materialize_every=parse_interval(materialize_every))
        console.print(f"live replay of {res.period} (+{res.shift_days} days, {res.speed:g}x): {res.events:,} events, "
                      f"{res.scored:,} scored at their own time, {res.failed:,} failed; {res.history:,} earlier "
                      f"transactions and {res.stored_rows:,} stored feature rows moved forward; {res.seconds:.1f}s "
                      f"({res.waited:.1f}s waiting for the consumers)")
    elif materialize_every is not None:
        raise InvalidInputError("--materialize-every is an option of the live replay: add --live")
    else:
        result = run_replay(settings, url, period, limit)
        console.print(f"replayed {result.sent:,} transactions of {result.period} (+{result.shift_days} days) against "
                      f"the online store's end state, {result.failed:,} failed, in {result.seconds:.1f}s")
    time.sleep(settings.feature_log_flush_seconds + 0.5)  # let the service's feature-log writer flush them
