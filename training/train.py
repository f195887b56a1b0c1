"""Fit XGBoost (hist) with early stopping on the validation split, and search hyper-parameters with Optuna."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlplatform.errors import InvalidInputError
from mlplatform.models.scoring import feature_matrix

if TYPE_CHECKING:  # pragma: no cover
    import xgboost

LABEL = "is_fraud"


@dataclass
class FitResult:
    """A fitted booster with the parameters it used and where early stopping stopped."""

    booster: xgboost.Booster
    params: dict
    best_iteration: int
    best_score: float
    seconds: float


def xgb_params(config: dict, feature_names: list[str], seed: int, overrides: dict | None = None) -> dict:
    """XGBoost parameters from the config: its ``params`` plus monotone constraints by feature name and the seed."""
    params = dict(config["params"])
    params.update(overrides or {})
    monotone = config.get("monotone") or {}
    unknown = sorted(set(monotone) - set(feature_names))
    if unknown:
        raise InvalidInputError(f"training config: monotone constraints name features the service lacks: {unknown}")
    if monotone:
        params["monotone_constraints"] = "(" + ",".join(str(int(monotone.get(n, 0))) for n in feature_names) + ")"
    params["seed"] = seed
    params.setdefault("nthread", 2)
    return params


def _dmatrix(frame: pd.DataFrame, feature_names: list[str]):
    import xgboost as xgb

    return xgb.DMatrix(feature_matrix(frame, feature_names), label=frame[LABEL].to_numpy(dtype=np.float32),
                       feature_names=feature_names, missing=np.nan)


def fit_booster(train: pd.DataFrame, validation: pd.DataFrame, feature_names: list[str], config: dict,
                seed: int = 7, overrides: dict | None = None) -> FitResult:
    """Train on ``train``, stop early on ``validation`` (its last eval metric), keep the best iteration only."""
    import time

    import xgboost as xgb

    params = xgb_params(config, feature_names, seed, overrides)
    dtrain, dval = _dmatrix(train, feature_names), _dmatrix(validation, feature_names)
    t0 = time.perf_counter()
    try:
        booster = xgb.train(params, dtrain, num_boost_round=int(config["num_boost_round"]),
                            evals=[(dval, "validation")], early_stopping_rounds=int(config["early_stopping_rounds"]),
                            verbose_eval=False)
    except xgb.core.XGBoostError as exc:
        raise InvalidInputError(f"XGBoost refused the configuration: {str(exc).splitlines()[0]}") from exc
    seconds = time.perf_counter() - t0
    best = int(booster.best_iteration)
    best_score = float(booster.best_score)
    booster = booster[: best + 1]  # keep only the trees up to the best validation score
    return FitResult(booster, params, best, best_score, seconds)


@dataclass(frozen=True)
class TrialProgress:
    """One finished tuning trial, for progress reports: trial ``number`` (1-based) of ``trials``, its validation
    ROC AUC, and the best so far (``best_trial`` is 1-based too)."""

    number: int
    trials: int
    value: float
    best_value: float
    best_trial: int
    params: dict
    seconds: float


def tune(train: pd.DataFrame, validation: pd.DataFrame, feature_names: list[str], config: dict, trials: int,
         seed: int = 7, on_trial: Callable[[TrialProgress], None] | None = None) -> tuple[dict, list[dict]]:
    """Optuna (TPE, seeded) search of ``config['tune']`` ranges, maximizing validation ROC AUC; best overrides.

    ``on_trial`` is called as each trial finishes (trial n of N, its value, the best so far)."""
    import time

    import optuna
    from sklearn.metrics import roc_auc_score

    if trials < 1:
        raise InvalidInputError(f"--tune needs at least 1 trial (got {trials})")
    space = config.get("tune") or {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    y_val = validation[LABEL].to_numpy()
    x_val = feature_matrix(validation, feature_names)
    history: list[dict] = []

    started = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        overrides = {}
        for name, (lo, hi) in space.items():
            if isinstance(lo, int) and isinstance(hi, int):
                overrides[name] = trial.suggest_int(name, lo, hi)
            else:
                overrides[name] = trial.suggest_float(name, float(lo), float(hi), log=name in ("eta", "lambda"))
        fit = fit_booster(train, validation, feature_names, config, seed, overrides)
        auc = float(roc_auc_score(y_val, fit.booster.inplace_predict(x_val)))
        history.append({"trial": trial.number, "validation_roc_auc": auc, "best_iteration": fit.best_iteration,
                        **overrides})
        return auc

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal started
        if on_trial is None or trial.value is None:
            return
        best = study.best_trial
        on_trial(TrialProgress(trial.number + 1, trials, float(trial.value), float(best.value), best.number + 1,
                               dict(trial.params), time.perf_counter() - started))
        started = time.perf_counter()

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials, callbacks=[report])
    return dict(study.best_params), history
