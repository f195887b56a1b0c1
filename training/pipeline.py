"""One command from labeled data to a registered, evaluated challenger: dataset, split, fit, evaluate, register."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from mlplatform.models.behaviour import run_behaviour_suite
from mlplatform.models.page import write_model_page
from mlplatform.models.registry import CHALLENGER, ModelRegistry, ModelVersion
from mlplatform.settings import Settings
from training.config import load_config
from training.datasets import TrainingSet, build_training_set, load_training_set
from training.evaluate import evaluate, write_summary
from training.splits import SplitSpec, split_rows
from training.stats import feature_statistics
from training.train import TrialProgress, fit_booster, tune

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    """What `mlplatform train` produced."""

    version: ModelVersion
    metrics: dict[str, float]
    oracle_auc: float | None
    split_warnings: list[str]
    behaviour: list[dict]
    evaluation_dir: Path
    dataset_path: Path
    tuning: list[dict] = field(default_factory=list)
    page: Path | None = None  # the version's page (<reports_dir>/models/v<N>.html), None if it could not be written


def split_spec_from(settings: Settings, config: dict, **overrides) -> SplitSpec:
    """The split spec: settings' strategy and seed, the config's fractions, then explicit overrides."""
    spec = SplitSpec(strategy=settings.split_strategy, seed=settings.split_seed)
    cfg = config.get("split") or {}
    spec = replace(spec, **{k: v for k, v in cfg.items() if k in ("strategy", "validation_fraction", "test_fraction")})
    return replace(spec, **{k: v for k, v in overrides.items() if v is not None})


def train_and_register(
    settings: Settings,
    *,
    dataset: Path | None = None,
    as_of: datetime | None = None,
    config_path: Path | None = None,
    tune_trials: int = 0,
    split: SplitSpec | None = None,
    trigger: str = "manual",
    store=None,
    on_step: Callable[[str], None] | None = None,
    on_trial: Callable[[TrialProgress], None] | None = None,
) -> TrainOutcome:
    """Build (or load) the training set, split it, fit XGBoost, evaluate, and register the model as challenger.

    ``on_step`` hears each stage as it starts; ``on_trial`` each hyper-parameter trial as it finishes."""
    step = on_step or (lambda _msg: None)
    config = load_config(settings, config_path)
    spec = split or split_spec_from(settings, config)
    if dataset is not None:
        step(f"loading training set {dataset}")
        ts: TrainingSet = load_training_set(dataset)
    else:
        step("building the point-in-time training set (get_historical_features)")
        ts = build_training_set(settings, as_of=as_of, store=store)
    frame, names = ts.frame, ts.feature_names
    result = split_rows(frame, spec)
    train, validation, test = (result.frame(frame, s) for s in ("train", "validation", "test"))

    tuning: list[dict] = []
    overrides: dict = {}
    if tune_trials:
        step(f"searching hyper-parameters: {tune_trials} Optuna trials")
        overrides, tuning = tune(train, validation, names, config, tune_trials, seed=spec.seed, on_trial=on_trial)
    step(f"training XGBoost on {len(train):,} rows (early stopping on {len(validation):,})")
    fit = fit_booster(train, validation, names, config, seed=spec.seed, overrides=overrides)

    step(f"evaluating on {len(test):,} held-out rows")
    staging = Path(tempfile.mkdtemp(prefix="mlplatform-train-"))
    try:
        eval_dir = staging / "evaluation"
        summary = evaluate(fit.booster, test, names, settings.layout.oracle_dir, eval_dir,
                           (settings.decision_review_share, settings.decision_decline_precision))
        behaviour = [b.as_dict() for b in run_behaviour_suite(fit.booster, test, names)]
        summary["behaviour"] = behaviour
        summary["split"] = result.summary
        summary["split_warnings"] = result.warnings
        write_summary(summary, eval_dir)
        stats_path = staging / "training_stats.json"
        stats_path.write_text(json.dumps(feature_statistics(train, names), indent=2))
        saved_set = staging / "training_set.parquet"
        frame.assign(split=result.labels.to_numpy()).to_parquet(saved_set, index=False)

        metrics = {k: v for k, v in summary["metrics"].items()}
        if summary.get("oracle"):
            metrics["oracle_roc_auc"] = summary["oracle"]["roc_auc"]
        metrics["best_iteration"] = float(fit.best_iteration)
        metrics["train_seconds"] = fit.seconds
        lineage = {
            **{k: v for k, v in ts.lineage.items() if k not in ("feature_names", "feature_types")},
            "dataset_path": str(ts.path),
            "split": {"strategy": spec.strategy, "seed": spec.seed, "validation_fraction": spec.validation_fraction,
                      "test_fraction": spec.test_fraction, **result.summary},
            "split_warnings": result.warnings,
            "seed": spec.seed,
            "trigger": trigger,
            "tuned_trials": tune_trials,  # Optuna trials searched before this fit (0: the config as given)
            "xgboost_version": _xgb_version(),
        }
        params = {"xgboost": fit.params, "num_boost_round": config["num_boost_round"],
                  "early_stopping_rounds": config["early_stopping_rounds"], "tuned": overrides,
                  "tune_trials": tune_trials}
        step("registering the model")
        registry = ModelRegistry(settings)
        extra = {f"evaluation/{p.name}": p for p in sorted(eval_dir.iterdir())}
        version = registry.register(fit.booster, feature_names=names, feature_types=ts.feature_types,
                                    feature_service=ts.lineage["feature_service"], metrics=metrics, params=params,
                                    lineage=lineage, training_stats_path=stats_path, training_set_path=saved_set,
                                    extra_files=extra, decisions=summary.get("decisions"))
        registry.set_alias(CHALLENGER, version.version)
        version = registry.get(version.version)
        _record_train(settings, version, trigger)
        step("writing the model page")
        page = _write_page(settings, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TrainOutcome(version, summary["metrics"], summary.get("oracle", {}).get("roc_auc"), result.warnings,
                        behaviour, version.artifact_dir / "evaluation", ts.path, tuning, page)


def _write_page(settings: Settings, version: ModelVersion) -> Path | None:
    """The version's page under the reports folder (best effort: the version is registered either way)."""
    try:
        return write_model_page(settings, version.version)
    except Exception as exc:  # noqa: BLE001 - `mlplatform models page N` writes it again
        log.warning("could not write the page of model v%s: %s", version.version, exc)
        return None


def _record_train(settings: Settings, version: ModelVersion, trigger: str) -> None:
    """Record the new version in the platform audit log (best effort)."""
    try:
        from mlplatform.audit import record

        record(settings, "train", f"model {version.name} v{version.version}",
               details={"version": version.version, "roc_auc": version.metrics.get("roc_auc"),
                        "fingerprint": version.lineage.get("fingerprint")}, reason=trigger)
    except Exception:  # noqa: BLE001 - the registry already holds the version and its lineage
        pass


def _xgb_version() -> str:
    import xgboost

    return xgboost.__version__
