"""The model pool: models loaded from the registry, warmed before they take traffic, swapped atomically.

Requests read ``pool.state`` once and keep that snapshot, so a swap never touches an in-flight request: the old
boosters stay alive until the last request holding them finishes.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlplatform.redact import redact, settings_secrets

log = logging.getLogger(__name__)
REASON_CHARS = 160  # of the reason an answer gives for a failure (the log has the whole text)
_PATH_LIKE = re.compile(r"""[^\s'"`()\[\]{}<>,;]*[/\\][^\s'"`()\[\]{}<>,;]*""")  # a word holding a / or \


def public_reason(exc: BaseException) -> str:
    """What an unauthenticated answer may say about ``exc``: its type name and a short reason without a file path:
    for an OSError its strerror (its file name left out), else the first line of its message with every word that
    holds a ``/`` or ``\\`` (paths, URLs) replaced by ``<path>``, cut to ``REASON_CHARS``. The whole text belongs
    in the log (``log_text``)."""
    name = type(exc).__name__
    if isinstance(exc, OSError):
        text = exc.strerror or ""
    else:
        lines = str(exc).strip().splitlines()
        text = lines[0] if lines else ""
    text = _PATH_LIKE.sub(lambda m: "<path>" + m.group(0)[len(m.group(0).rstrip(".:!?")):], redact(text)).strip()
    if len(text) > REASON_CHARS:
        text = text[: REASON_CHARS - 1] + "…"
    return f"{name}: {text}" if text else name


def log_text(exc: BaseException, settings: Any = None) -> str:
    """``exc``'s type name and whole message for the log, secrets redacted (those of ``settings`` too, if given)."""
    return redact(f"{type(exc).__name__}: {exc}", settings_secrets(settings) if settings is not None else ())


@dataclass(eq=False)
class LoadedModel:
    """A registered version with its booster in memory, warmed and ready."""

    info: Any  # mlplatform.models.registry.ModelVersion
    booster: Any  # xgboost.Booster
    row_seconds: float | None = None  # the slowest single-row prediction of the warm-up, in CPU s (None: not warmed)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def version(self) -> int:
        return self.info.version

    @property
    def feature_names(self) -> list[str]:
        return self.info.feature_names

    @property
    def feature_service(self) -> str:
        return self.info.feature_service

    @property
    def decisions(self) -> dict | None:
        """The version's decision thresholds (its card's ``decisions``); None for versions without them."""
        return getattr(self.info, "decisions", None)

    def vector(self, values: dict[str, Any]) -> np.ndarray:
        """The model's input row from feature values (None becomes NaN, XGBoost's missing)."""
        return np.array([np.nan if (v := values.get(n)) is None else float(v) for n in self.feature_names],
                        dtype=np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Scores (probabilities) for the rows of ``X``."""
        # columns are in the registered signature's order (checked at load), so XGBoost need not re-check names
        return np.asarray(self.booster.inplace_predict(X, validate_features=False), dtype=np.float64).reshape(-1)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature SHAP contributions (last column: bias), in log-odds, for the rows of ``X``."""
        import xgboost as xgb

        return self.booster.predict(xgb.DMatrix(X, missing=np.nan), pred_contribs=True, validate_features=False)

    def path_contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions by XGBoost's path attribution (Saabas, ``approx_contribs``; last column: bias):
        what the reason codes rank, about 10x cheaper than exact SHAP (~0.2 vs ~2.5 ms a row at 200 trees)."""
        import xgboost as xgb

        return self.booster.predict(xgb.DMatrix(X, missing=np.nan), pred_contribs=True, approx_contribs=True,
                                    validate_features=False)

    def warm(self, n: int) -> None:
        """A few dummy predictions (single rows, a batch, contributions) so the first request pays nothing; the
        slowest single row's CPU time (but the first's) is kept (``row_seconds``)."""
        width = len(self.feature_names)
        rng = np.random.default_rng(0)
        took = []
        for _ in range(n):
            row = rng.normal(size=(1, width))
            started = time.thread_time()
            self.predict(row)
            took.append(time.thread_time() - started)
        batch = rng.normal(size=(64, width))
        batch[::3] = np.nan
        out = self.predict(batch)
        if out.shape != (64,) or not np.all(np.isfinite(out)):
            raise ValueError(f"warm-up of {self.name} v{self.version} gave unusable scores")
        self.contributions(batch[:2])
        self.row_seconds = max(took[1:] or took)  # the first call pays one-time set-up


@dataclass(frozen=True)
class PoolState:
    """One consistent set of served models; replaced as a whole on every change."""

    golden: LoadedModel | None = None
    previous_golden: LoadedModel | None = None
    challengers: list[LoadedModel] = field(default_factory=list)
    shadows: list[LoadedModel] = field(default_factory=list)
    golden_error: str | None = None
    errors: dict[int, str] = field(default_factory=dict)
    generation: int = 0

    def key(self) -> tuple:
        """What identifies this set of models (used to tell whether anything changed)."""
        def v(m: LoadedModel | None) -> int | None:
            return None if m is None else m.version
        return (v(self.golden), v(self.previous_golden), tuple(m.version for m in self.challengers),
                tuple(m.version for m in self.shadows), self.golden_error)

    @property
    def can_answer(self) -> bool:
        """A warm model can answer: the golden, or the previous golden in its place."""
        return self.golden is not None or self.previous_golden is not None

    def loaded(self) -> list[tuple[str, LoadedModel]]:
        """(role, model) for every model in the pool."""
        out = [("golden", self.golden), ("previous_golden", self.previous_golden)]
        out += [("challenger", m) for m in self.challengers] + [("shadow", m) for m in self.shadows]
        return [(r, m) for r, m in out if m is not None]


class ModelPool:
    """Keeps the registry's golden, previous golden, challengers and shadows loaded and warm.

    ``check_model(info)`` raises if a version cannot serve (checked before loading); ``on_swap(old, new)`` is told
    of every swap, after it happened.
    """

    def __init__(
        self,
        registry,
        warmup_predictions: int = 16,
        check_model: Callable[[Any], None] | None = None,
        on_swap: Callable[[PoolState, PoolState], None] | None = None,
    ) -> None:
        self.registry = registry
        self.warmup_predictions = warmup_predictions
        self.check_model = check_model
        self.on_swap = on_swap
        self.state = PoolState()
        self._loaded: dict[tuple[int, str], LoadedModel] = {}
        self._lock = threading.Lock()

    def load(self, info) -> LoadedModel:
        """Load (or reuse) and warm one version; raises if it cannot serve."""
        key = (info.version, getattr(info, "booster_sha256", ""))
        cached = self._loaded.get(key)
        if cached is not None:
            return cached
        if self.check_model is not None:
            self.check_model(info)
        booster = self.registry.load_booster(info.version)
        if booster.feature_names and list(booster.feature_names) != list(info.feature_names):
            raise ValueError(f"{info.name} v{info.version}: the booster's feature names {booster.feature_names} "
                             f"differ from its registered signature {info.feature_names}")
        booster.set_param({"nthread": 1})  # one row per call: threads only add overhead
        model = LoadedModel(info, booster)
        model.warm(self.warmup_predictions)
        self._loaded[key] = model
        return model

    def refresh(self) -> bool:
        """Re-read the registry's aliases, load and warm what is new, then swap atomically. True if changed."""
        from mlplatform.models.registry import CHALLENGER, SHADOW

        with self._lock:
            errors: dict[int, str] = {}

            def try_load(info) -> LoadedModel | None:
                if info is None:
                    return None
                try:
                    return self.load(info)
                except Exception as exc:  # a broken model must never take the service down
                    errors[info.version] = public_reason(exc)  # /v1/models and /readyz show it: no path
                    log.error("model %s v%s cannot serve: %s", info.name, info.version,
                              log_text(exc, getattr(self.registry, "settings", None)))
                    return None

            golden_info = self.registry.golden()
            previous_info = self.registry.previous_golden()
            golden = try_load(golden_info)
            previous = try_load(previous_info)
            challengers = [m for m in map(try_load, self.registry.with_alias(CHALLENGER)) if m is not None]
            shadows = [m for m in map(try_load, self.registry.with_alias(SHADOW)) if m is not None]
            golden_error = None
            if golden_info is None:
                golden_error = "no golden model in the registry"
            elif golden is None:
                golden_error = f"{golden_info.name} v{golden_info.version}: {errors[golden_info.version]}"
            old = self.state
            new = PoolState(golden, previous, challengers, shadows, golden_error, errors, old.generation + 1)
            if new.key() == old.key():
                return False
            self.state = new  # the swap: one reference assignment
            keep = {(m.version, getattr(m.info, "booster_sha256", "")) for _, m in new.loaded()}
            self._loaded = {k: m for k, m in self._loaded.items() if k in keep}
        if self.on_swap is not None:
            self.on_swap(old, new)
        return True
