"""Decision thresholds of a model version, chosen at training time on its evaluation (test) split.

Each threshold is a score ``t``; a transaction whose score is ``>= t`` gets the decision. Two are recorded:

- ``review``: the score at which the review budget is reached: ``t`` is the k-th highest evaluation score,
  ``k = ceil(review_share * rows)`` (at least 1), so the top ``review_share`` of transactions are reviewed (a few
  more only when scores tie at ``t``).
- ``decline``: the lowest score ``t`` whose precision on the evaluation set, ``P(fraud | score >= t)``, reaches the
  target ``decline_precision``: the most fraud declined at that precision. ``None`` with a ``reason`` when no
  threshold reaches it (or the evaluation set has no fraud).

The card of a version stores the result of ``decision_thresholds`` under ``decisions`` (older cards lack it).
"""

from __future__ import annotations

import math

import numpy as np

RULE = "score >= threshold"


def _counts_at(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores, highest first, with how many rows and how many fraud rows score at or above each."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last_of_group = np.r_[s[1:] != s[:-1], True]  # the last row of each run of equal scores
    flagged = np.arange(1, len(s) + 1)[last_of_group]
    fraud = np.cumsum(y)[last_of_group]
    return s[last_of_group], flagged, fraud


def _figures(threshold: float, scores: np.ndarray, labels: np.ndarray) -> dict:
    """What ``score >= threshold`` flags on the evaluation set: rows, share, precision, recall."""
    mask = scores >= threshold
    flagged, fraud, positives = int(mask.sum()), int(labels[mask].sum()), int(labels.sum())
    return {
        "flagged": flagged,
        "flagged_share": flagged / len(scores),
        "precision": fraud / flagged if flagged else None,
        "recall": fraud / positives if positives else None,
    }


def review_threshold(scores: np.ndarray, labels: np.ndarray, share: float) -> dict:
    """The ``review`` decision: the score at which ``share`` of the evaluation rows are flagged."""
    k = max(1, math.ceil(share * len(scores)))
    threshold = float(np.sort(scores)[::-1][k - 1])
    return {"threshold": threshold, "budget_share": share, "budget_rows": k, **_figures(threshold, scores, labels)}


def decline_threshold(scores: np.ndarray, labels: np.ndarray, precision: float) -> dict:
    """The ``decline`` decision: the lowest score whose precision reaches ``precision`` (None + reason if none)."""
    out: dict = {"target_precision": precision}
    positives = int(labels.sum())
    if positives == 0:
        return {**out, "threshold": None, "reason": "the evaluation set has no fraud: precision is undefined"}
    distinct, flagged, fraud = _counts_at(scores, labels)
    reached = fraud / flagged >= precision
    if not reached.any():
        best = int(np.argmax(fraud / flagged))
        return {**out, "threshold": None,
                "reason": (f"no score threshold reaches precision {precision:g} on the evaluation set: the best is "
                           f"{fraud[best] / flagged[best]:.3f} at score >= {distinct[best]:.4g} "
                           f"({int(fraud[best])} fraud of {int(flagged[best])} flagged)")}
    threshold = float(distinct[np.flatnonzero(reached)[-1]])  # distinct is highest first: the last is the lowest
    return {**out, "threshold": threshold, "reason": None, **_figures(threshold, scores, labels)}


def decision_thresholds(scores, labels, review_share: float, decline_precision: float) -> dict:
    """Both decisions on the evaluation set ``scores`` (model probabilities) and ``labels`` (1 = fraud).

    Shape (stored as the model card's ``decisions``)::

        {"rule": "score >= threshold", "evaluation": {"split": "test", "rows": int, "positives": int},
         "review":  {"threshold": float, "budget_share": float, "budget_rows": int, "flagged": int,
                     "flagged_share": float, "precision": float | None, "recall": float | None},
         "decline": {"threshold": float | None, "target_precision": float, "reason": str | None,
                     "flagged": int, "flagged_share": float, "precision": float, "recall": float}}

    (``decline`` carries only ``threshold``, ``target_precision`` and ``reason`` when no threshold qualifies.)"""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(int)
    if len(s) == 0 or len(s) != len(y):
        raise ValueError(f"decision thresholds need as many scores as labels, at least one ({len(s)} vs {len(y)})")
    if not 0 < review_share <= 1 or not 0 < decline_precision <= 1:
        raise ValueError(f"review share {review_share} and decline precision {decline_precision} must lie in (0, 1]")
    return {
        "rule": RULE,
        "evaluation": {"split": "test", "rows": int(len(s)), "positives": int(y.sum())},
        "review": review_threshold(s, y, review_share),
        "decline": decline_threshold(s, y, decline_precision),
    }


# --- applying them (the service) ----------------------------------------------------------------------------------
APPROVE, REVIEW, DECLINE = "approve", "review", "decline"


def decide(score: float, decisions: dict | None) -> str | None:
    """The decision for ``score`` under a card's ``decisions``: ``decline`` at or above the decline threshold (when
    there is one), else ``review`` at or above the review threshold, else ``approve``; None without thresholds."""
    if not decisions:
        return None
    decline = (decisions.get("decline") or {}).get("threshold")
    if decline is not None and score >= decline:
        return DECLINE
    review = (decisions.get("review") or {}).get("threshold")
    return REVIEW if review is not None and score >= review else APPROVE


def reason_codes(contributions: dict[str, float], values: dict[str, float | None], top: int = 3) -> list[dict]:
    """The ``top`` inputs that pushed the score up most (largest positive contribution, log-odds; the bias is
    not an input), each with its value: what a reviewer reads first. Fewer when fewer pushed it up."""
    ranked = sorted(((c, n) for n, c in contributions.items() if n != "bias" and c > 0), key=lambda p: (-p[0], p[1]))
    return [{"feature": n, "value": values.get(n), "contribution": c} for c, n in ranked[:top]]
