"""Per-feature statistics of training data, saved with each model for later skew checks."""

from __future__ import annotations

import numpy as np
import pandas as pd

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def feature_statistics(frame: pd.DataFrame, feature_names: list[str], bins: int = 10) -> dict:
    """Count, null fraction, mean, std, min/max, quantiles and a decile histogram of each feature."""
    out: dict = {"rows": int(len(frame)), "features": {}}
    for name in feature_names:
        values = pd.to_numeric(frame[name], errors="coerce").astype(float).to_numpy()
        present = values[~np.isnan(values)]
        stats: dict = {"count": int(len(present)), "null_fraction": float(1 - len(present) / max(len(values), 1))}
        if len(present):
            edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)))
            counts = np.histogram(present, bins=edges)[0] if len(edges) > 1 else np.array([len(present)])
            stats.update(
                mean=float(present.mean()), std=float(present.std()), min=float(present.min()),
                max=float(present.max()),
                quantiles={str(q): float(v) for q, v in zip(QUANTILES, np.quantile(present, QUANTILES), strict=True)},
                histogram={"edges": edges.tolist(), "counts": counts.tolist()},
            )
        out["features"][name] = stats
    return out
