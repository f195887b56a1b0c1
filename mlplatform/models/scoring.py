"""Turn feature rows into a model's input matrix and scores: by feature name, in the signature's order."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlplatform.errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    import xgboost


def feature_matrix(frame: pd.DataFrame, feature_names: list[str]) -> np.ndarray:
    """float32 matrix of ``frame``'s columns named in ``feature_names`` (that order); missing values are NaN."""
    missing = [n for n in feature_names if n not in frame.columns]
    if missing:
        raise InvalidInputError(f"input lacks features {missing} the model needs")
    out = np.empty((len(frame), len(feature_names)), dtype=np.float32)
    for j, name in enumerate(feature_names):
        col = frame[name]
        try:
            out[:, j] = pd.to_numeric(col, errors="raise").astype("float64").to_numpy(na_value=np.nan)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"feature {name!r} is not numeric ({col.dtype}): {exc}") from exc
    return out


def predict(booster: xgboost.Booster, frame: pd.DataFrame, feature_names: list[str]) -> np.ndarray:
    """Fraud probability for each row of ``frame``."""
    return booster.inplace_predict(feature_matrix(frame, feature_names), validate_features=False)
