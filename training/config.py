"""The training configuration: XGBoost hyper-parameters, early stopping, monotone constraints, split, search."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from mlplatform.errors import InvalidInputError
from mlplatform.settings import Settings

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.yaml")


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(settings: Settings, path: Path | None = None) -> dict:
    """The default configuration with the user's YAML (``path`` or ``settings.training_config``) merged over it."""
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    user = path or settings.training_config
    if user is not None:
        user = Path(user)
        if not user.is_file():
            raise InvalidInputError(f"training config {user} does not exist")
        try:
            override = yaml.safe_load(user.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"training config {user} is not valid YAML: {exc}") from exc
        if not isinstance(override, dict):
            raise InvalidInputError(f"training config {user} must be a mapping (params:, num_boost_round:, ...)")
        unknown = sorted(set(override) - set(config))
        if unknown:
            raise InvalidInputError(f"training config {user}: unknown keys {unknown} (known: {sorted(config)})")
        config = _merge(config, override)
    for key in ("num_boost_round", "early_stopping_rounds"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise InvalidInputError(f"training config: {key} must be a positive integer (got {config[key]!r})")
    return config
