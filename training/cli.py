"""Training commands: `dataset build`, `train`, `models list|page|promote|rollback` (thin wrappers)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mlplatform.console import (
    JsonOpt,
    console,
    emit_json,
    err_console,
    escape,
    friendly,
    get_settings,
    parse_time,
    part_app,
)
from mlplatform.errors import ExitCode

app = part_app()
dataset_app = part_app("Point-in-time training sets.")
models_app = part_app("The model registry: versions, golden, promotion, rollback.")
app.add_typer(dataset_app, name="dataset")
app.add_typer(models_app, name="models")


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        err_console.print(f"[bold yellow]WARNING:[/] {escape(w)}", highlight=False)


def _trial_line(t) -> str:
    """One finished tuning trial: ``trial 3/30  validation ROC AUC 0.8123  best 0.8200 (trial 2)  1.4s``."""
    mark = " [green]new best[/]" if t.best_trial == t.number else ""
    return (f"  trial {t.number:>{len(str(t.trials))}}/{t.trials}  validation ROC AUC {t.value:.4f}  "
            f"best {t.best_value:.4f} (trial {t.best_trial})  {t.seconds:.1f}s{mark}")


def _tuned(trials: int | None) -> str:
    """How many Optuna trials chose a version's hyper-parameters ("-" when none)."""
    return f"{int(trials)} trials" if trials else "-"


def _tuned_trials(v) -> int | None:
    """The number of Optuna trials behind a version's hyper-parameters, or None when it was not tuned."""
    trials = v.lineage.get("tuned_trials", v.params.get("tune_trials")) or 0
    return int(trials) if trials else None


def models_document(model_name: str, versions: list) -> dict:
    """``models list --json`` (docs/cli-json.md), and what its table shows: every registered version, oldest first,
    with its aliases, metrics and training set; which version holds each alias."""
    holders = {alias: v.version for v in versions for alias in v.aliases}
    return {
        "model_name": model_name,
        "golden": holders.get("golden"),
        "challenger": holders.get("challenger"),
        "previous_golden": holders.get("previous_golden"),
        "versions": [{
            "version": v.version, "aliases": list(v.aliases), "golden": v.is_golden,
            "feature_service": v.feature_service, "metrics": dict(v.metrics), "tuned_trials": _tuned_trials(v),
            "as_of": v.lineage.get("as_of"), "rows": v.lineage.get("rows"), "fingerprint": v.lineage.get("fingerprint"),
            "created_at": v.created_at, "run_id": v.run_id,
        } for v in versions],
    }


@dataset_app.command("build")
@friendly
def dataset_build(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Use only labels known at this time "
                                              "(ISO-8601; default: end of the feature tables).")] = None,
) -> None:
    """Build the training set from labels known at --as-of, with features from the model's FeatureService."""
    from training.datasets import build_training_set

    with console.status("building the training set (get_historical_features) ..."):
        ts = build_training_set(get_settings(), as_of=parse_time(as_of))
    lin = ts.lineage
    bal = lin["class_balance"]
    table = Table("", "", title=f"training set {ts.path}")
    for key, value in [
        ("as of", lin["as_of"]), ("feature service", lin["feature_service"]),
        ("feature views", ", ".join(f"{k}@{v}" for k, v in lin["feature_views"].items())),
        ("rows", f"{lin['rows']:,} (of {lin['labels_total']:,} labels, {lin['labels_known']:,} known then)"),
        ("fraud", f"{bal['positives']:,} ({bal['positive_rate']:.2%})"),
        ("time range", " .. ".join(lin["time_range"])), ("fingerprint", lin["fingerprint"]),
    ]:
        table.add_row(key, str(value))
    console.print(table)

@app.command("train")
@friendly
def train_cmd(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Build the training set as of this time.")] = None,
    dataset: Annotated[Path | None, typer.Option(help="Train on this saved training set instead.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML of hyper-parameters (merged over defaults).")] = None,
    tune: Annotated[int, typer.Option("--tune", help="Optuna trials of hyper-parameter search (0: none).")] = 0,
    split: Annotated[str | None, typer.Option(help="Split strategy: time (default), random or custom.")] = None,
    split_file: Annotated[Path | None, typer.Option(help="custom split: file of transaction_id, split.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the random split and of training.")] = None,
    if_needed: Annotated[bool, typer.Option("--if-needed", help="Retrain only if enough new labels arrived, or "
                                            "monitoring asked and at least retrain_min_new_labels_on_request new "
                                            "labels arrived; say why.")] = False,
) -> None:
    """Train XGBoost on a point-in-time training set, evaluate it and register it as the challenger."""
    from mlplatform.contracts.retrain_request import mark_retrain_request_done
    from training.config import load_config
    from training.pipeline import split_spec_from, train_and_register
    from training.retrain import check_retrain

    settings = get_settings()
    trigger = "manual"
    if if_needed:
        decision = check_retrain(settings, parse_time(as_of))
        if not decision.retrain:
            console.print(f"[green]no retrain needed:[/] {escape(decision.reason)}")
            return
        console.print(f"[bold]retraining:[/] {escape(decision.reason)}")
        trigger = f"if-needed: {decision.reason}"
    spec = split_spec_from(settings, load_config(settings, config), strategy=split, seed=seed,
                           assignment_path=split_file)
    with console.status("training ...") as status:
        def on_step(msg: str) -> None:
            if tune and msg.startswith("searching"):
                console.print(f"{escape(msg)} (validation ROC AUC of each trial as it finishes):", highlight=False)
            status.update(escape(msg) + " ...")

        def on_trial(t) -> None:
            console.print(_trial_line(t), highlight=False)
            status.update(f"searching hyper-parameters: {t.number}/{t.trials} trials done, best {t.best_value:.4f} ...")

        outcome = train_and_register(settings, dataset=dataset, as_of=parse_time(as_of), config_path=config,
                                     tune_trials=tune, split=spec, trigger=trigger, on_step=on_step,
                                     on_trial=on_trial)
    if if_needed:
        mark_retrain_request_done(settings)
    _warn(outcome.split_warnings)
    m = outcome.metrics
    table = Table("metric", "model", "oracle", title=f"{outcome.version.name} v{outcome.version.version} "
                  f"(challenger) on {int(m['rows']):,} held-out rows")
    oracle = json.loads((outcome.evaluation_dir / "summary.json").read_text()).get("oracle", {})
    for key in ("roc_auc", "pr_auc", "log_loss", "brier"):
        table.add_row(key, _fmt(m[key]), _fmt(oracle.get(key)))
    console.print(table)
    if outcome.oracle_auc is not None:
        console.print(f"ROC AUC {m['roc_auc']:.4f} vs oracle {outcome.oracle_auc:.4f} "
                      f"(gap {outcome.oracle_auc - m['roc_auc']:.4f})")
    for b in outcome.behaviour:
        mark = "[green]PASS[/]" if b["passed"] else "[red]FAIL[/]"
        console.print(f"{mark} {escape(b['name'])}: {escape(b['detail'])}")
    console.print(f"evaluation: {outcome.evaluation_dir}/summary.md (+ ROC, PR, calibration, importance PNGs)",
                  markup=False, soft_wrap=True)
    for line in _decision_lines(outcome.version.decisions):
        console.print(line, markup=False, highlight=False)
    if outcome.page is not None:
        console.print(f"model page: {outcome.page}", markup=False, soft_wrap=True)
    console.print(f"next: `mlplatform models promote {outcome.version.version}`")


def _decision_lines(decisions: dict | None) -> list[str]:
    """The decision thresholds of a version for people (none for versions registered before they existed)."""
    if not decisions:
        return []
    review, decline = decisions["review"], decisions["decline"]
    out = [f"decision review:  score >= {review['threshold']:.6g} (top {review['budget_share']:.2%} of the test split)"]
    if decline["threshold"] is None:
        out.append(f"decision decline: none ({decline['reason']})")
    else:
        out.append(f"decision decline: score >= {decline['threshold']:.6g} (precision {decline['precision']:.1%} "
                   f">= {decline['target_precision']:.0%}, recall {decline['recall']:.1%})")
    return out


@models_app.command("page")
@friendly
def models_page(version: Annotated[int, typer.Argument(help="Version whose page to (re)write.")]) -> None:
    """(Re)write VERSION's HTML page: metrics beside the oracle, plots, slices, decisions, lineage, history."""
    from mlplatform.models.page import write_model_page

    path = write_model_page(get_settings(), version)
    console.print(f"model page: {path}", markup=False, soft_wrap=True)


@models_app.command("list")
@friendly
def models_list(as_json: JsonOpt = False) -> None:
    """Versions with their metrics; which is golden and which is challenger."""
    from mlplatform.models.registry import ModelRegistry

    registry = ModelRegistry(get_settings())
    doc = models_document(registry.name, registry.list_versions())
    if as_json:
        emit_json(doc)
        return
    if not doc["versions"]:
        console.print("no models registered yet: run `mlplatform train`")
        return
    table = Table("version", "aliases", "ROC AUC", "PR AUC", "log loss", "oracle AUC", "tuned", "as of", "rows",
                  "created", title="registered models")
    for v in doc["versions"]:
        m = v["metrics"]
        table.add_row(str(v["version"]), ", ".join(v["aliases"]), _fmt(m.get("roc_auc")), _fmt(m.get("pr_auc")),
                      _fmt(m.get("log_loss")), _fmt(m.get("oracle_roc_auc")), _tuned(v["tuned_trials"]),
                      str(v["as_of"] or "-")[:16], f"{v['rows'] or 0:,}", f"{v['created_at']:%Y-%m-%d %H:%M}",
                      style="bold green" if v["golden"] else None)
    console.print(table)

@models_app.command("promote")
@friendly
def models_promote(
    version: Annotated[int, typer.Argument(help="Version to make golden.")],
    force: Annotated[bool, typer.Option("--force", help="Promote even if the gate refuses (audited).")] = False,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "",
) -> None:
    """Make VERSION golden if it beats the golden by the margin and passes its behavioural tests."""
    from mlplatform.models.promotion import promote_model

    with console.status(f"running the promotion gate for v{version} ..."):
        result = promote_model(get_settings(), version, force=force, reason=reason)
    for b in result.behaviour:
        mark = "[green]PASS[/]" if b["passed"] else "[red]FAIL[/]"
        console.print(f"{mark} {escape(b['name'])}: {escape(b['detail'])}")
    for r in result.reasons:
        console.print(f"- {r}", highlight=False, markup=False)
    if result.action == "refused":
        err_console.print(f"[bold red]refused:[/] v{version} stays out; golden is still "
                          f"{'v' + str(result.golden_before) if result.golden_before else 'none'} "
                          "(--force overrides, with an audit record)")
        raise typer.Exit(ExitCode.FAILURE)
    verb = {"forced": "[yellow]FORCED[/]", "unchanged": "unchanged:"}.get(result.action, "[green]promoted[/]")
    console.print(f"{verb} golden v{result.golden_before or '-'} -> v{result.golden_after}")

@models_app.command("rollback")
@friendly
def models_rollback(reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "") -> None:
    """Restore the previous golden model."""
    from mlplatform.models.promotion import rollback

    result = rollback(get_settings(), reason=reason)
    console.print(f"[green]rolled back:[/] golden v{result.golden_before} -> v{result.golden_after}")
