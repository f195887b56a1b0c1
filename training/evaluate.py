"""Evaluation on the held-out split: metrics, metrics per merchant category, the oracle's AUC, and plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

LABEL = "is_fraud"
SLICE_COLUMN = "merchant_category"
SLICE_COLUMNS = ("merchant_category", "is_foreign", "amount_bucket")
AMOUNT_EDGES = (0.0, 10.0, 50.0, 200.0, 1000.0)  # amount buckets: [0, 10), [10, 50), ..., [1000, inf)
PLOTS = ("roc.png", "pr.png", "calibration.png", "feature_importance.png")
PREDICTIONS_FILE = "predictions.parquet"


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision), log loss, Brier score, rows, positives (AUCs NaN for one class)."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    both = 0 < y.sum() < len(y)
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else float("nan"),
        "brier": float(brier_score_loss(y, p)) if len(y) else float("nan"),
        "rows": float(len(y)),
        "positives": float(y.sum()),
        "base_rate": float(y.mean()) if len(y) else float("nan"),
    }


def slice_metrics(frame: pd.DataFrame, p: np.ndarray, by: str = SLICE_COLUMN) -> list[dict]:
    """``binary_metrics`` per value of column ``by`` (e.g. merchant category), largest slice first."""
    if by not in frame.columns:
        return []
    out = []
    values = frame[by].fillna("<unknown>").to_numpy()
    y = frame[LABEL].to_numpy()
    for value in pd.unique(values):
        mask = values == value
        out.append({by: str(value), **binary_metrics(y[mask], p[mask])})
    return sorted(out, key=lambda r: -r["rows"])


def amount_bucket(amount: pd.Series) -> pd.Series:
    """Each amount's bucket as text (``10-50``, ``1000+``; ``<unknown>`` when missing)."""
    edges = list(AMOUNT_EDGES) + [np.inf]
    names = [f"{lo:g}-{hi:g}" if np.isfinite(hi) else f"{lo:g}+" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    buckets = pd.cut(pd.to_numeric(amount, errors="coerce"), bins=edges, right=False, labels=names)
    return buckets.astype(object).where(buckets.notna(), "<unknown>")


def evaluation_rows(test: pd.DataFrame, p: np.ndarray, oracle_p: np.ndarray | None) -> pd.DataFrame:
    """The evaluation set as scored: id, label, model score, the oracle's probability and the slice columns."""
    out = pd.DataFrame({"transaction_id": test["transaction_id"].to_numpy(),
                        LABEL: test[LABEL].to_numpy().astype(int), "score": np.asarray(p, dtype=float)})
    out["oracle_probability"] = np.asarray(oracle_p, dtype=float) if oracle_p is not None else np.nan
    for column in ("merchant_category", "is_foreign", "amount"):
        if column in test.columns:
            out[column] = test[column].to_numpy()
    if "amount" in out.columns:
        out["amount_bucket"] = amount_bucket(out["amount"]).to_numpy()
    return out


def slice_tables(rows: pd.DataFrame) -> dict[str, list[dict]]:
    """``binary_metrics`` of the model (and the oracle's ROC AUC) per value of each slice column ``rows`` has."""
    out = {}
    for column in SLICE_COLUMNS:
        if column not in rows.columns:
            continue
        table = slice_metrics(rows, rows["score"].to_numpy(), by=column)
        if column == "amount_bucket":  # in amount order, not by size
            table.sort(key=lambda r: float(r[column].split("-")[0].rstrip("+")) if r[column][0].isdigit() else 1e300)
        if rows["oracle_probability"].notna().all():
            oracle = {r[column]: r["roc_auc"] for r in slice_metrics(rows, rows["oracle_probability"].to_numpy(),
                                                                    by=column)}
            for r in table:
                r["oracle_roc_auc"] = oracle.get(r[column], float("nan"))
        out[column] = table
    return out


def oracle_probabilities(oracle_dir: Path, transaction_ids: pd.Series) -> np.ndarray | None:
    """The world's true fraud probability for these transactions (None when the data has no oracle)."""
    files = [f for f in sorted(oracle_dir.glob("*.parquet")) if f.stem not in ("customers", "merchants")]
    if not files:
        return None
    oracle = pd.concat([pd.read_parquet(f, columns=["transaction_id", "fraud_probability"]) for f in files])
    probs = transaction_ids.map(oracle.set_index("transaction_id")["fraud_probability"])
    return None if probs.isna().any() else probs.to_numpy(dtype=float)


def write_plots(out_dir: Path, y: np.ndarray, p: np.ndarray, oracle_p: np.ndarray | None,
                importance: dict[str, float]) -> list[str]:
    """ROC, precision-recall, calibration and feature-importance PNGs; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    curves = [("model", p)] + ([("oracle (true probability)", oracle_p)] if oracle_p is not None else [])
    both = 0 < y.sum() < len(y)

    fig, ax = plt.subplots(figsize=(5, 5))
    if both:
        for label, q in curves:
            fpr, tpr, _ = roc_curve(y, q)
            ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test split)")
    ax.legend(loc="lower right")
    fig.savefig(out_dir / "roc.png", dpi=90, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    if both:
        for label, q in curves:
            prec, rec, _ = precision_recall_curve(y, q)
            ax.plot(rec, prec, label=label)
    ax.axhline(y.mean() if len(y) else 0, color="k", ls=":", lw=1, label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test split)")
    ax.legend(loc="upper right")
    fig.savefig(out_dir / "pr.png", dpi=90, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    if len(y) and both:
        frac, mean_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
        ax.plot(mean_pred, frac, "o-", label="model")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfectly calibrated")
    ax.set(xlabel="mean predicted probability", ylabel="observed fraud rate", title="Calibration (test split)",
           xscale="log", yscale="log")
    ax.legend(loc="upper left")
    fig.savefig(out_dir / "calibration.png", dpi=90, bbox_inches="tight")
    plt.close(fig)

    items = sorted(importance.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.3 * max(len(items), 4) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(xlabel="total gain", title="Feature importance")
    fig.savefig(out_dir / "feature_importance.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return list(PLOTS)


def importance_by_gain(booster, feature_names: list[str]) -> dict[str, float]:
    """Total gain of each feature (0 for features no tree uses)."""
    gain = booster.get_score(importance_type="total_gain")
    return {n: float(gain.get(n, 0.0)) for n in feature_names}


def summary_markdown(summary: dict) -> str:
    """A short, human-readable evaluation summary."""
    m = summary["metrics"]
    lines = [
        f"# Evaluation: {summary.get('model', 'candidate')}",
        "",
        f"Test split: {int(m['rows']):,} transactions, {int(m['positives']):,} fraud ({m['base_rate']:.2%}).",
        "",
        "| metric | model | oracle (best achievable) |",
        "|---|---|---|",
        f"| ROC AUC | {m['roc_auc']:.4f} | {summary['oracle'].get('roc_auc', float('nan')):.4f} |",
        f"| PR AUC | {m['pr_auc']:.4f} | {summary['oracle'].get('pr_auc', float('nan')):.4f} |",
        f"| log loss | {m['log_loss']:.4f} | {summary['oracle'].get('log_loss', float('nan')):.4f} |",
        f"| Brier | {m['brier']:.5f} | {summary['oracle'].get('brier', float('nan')):.5f} |",
        "",
        "## Per merchant category",
        "",
        "| category | rows | fraud | ROC AUC | PR AUC |",
        "|---|---|---|---|---|",
    ]
    for s in summary["slices"]:
        lines.append(f"| {s[SLICE_COLUMN]} | {int(s['rows']):,} | {int(s['positives']):,} | {s['roc_auc']:.3f} | "
                     f"{s['pr_auc']:.3f} |")
    decisions = summary.get("decisions")
    if decisions:
        review, decline = decisions["review"], decisions["decline"]
        lines += ["", "## Decision thresholds (score >= threshold)", "",
                  f"- review: {review['threshold']:.6g} (top {review['budget_share']:.2%} of the test split: "
                  f"{review['flagged']:,} flagged, precision {_pct(review['precision'])})",
                  f"- decline: {decline['reason']}" if decline["threshold"] is None else
                  f"- decline: {decline['threshold']:.6g} (precision {_pct(decline['precision'])} >= "
                  f"{decline['target_precision']:.0%}, recall {_pct(decline['recall'])})"]
    lines += ["", "## Behavioural tests", ""]
    for b in summary.get("behaviour", []):
        lines.append(f"- {'PASS' if b['passed'] else 'FAIL'} {b['name']}: {b['detail']}")
    lines += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in summary.get("plots", []))]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def evaluate(booster, test: pd.DataFrame, feature_names: list[str], oracle_dir: Path | None,
             out_dir: Path | None, decision_targets: tuple[float, float] | None = None) -> dict:
    """Metrics, slices, oracle comparison and (with ``out_dir``) plots and the scored rows (predictions.parquet:
    ``evaluation_rows``) for ``test``; ``write_summary`` adds summary.json/summary.md. With ``decision_targets``
    (review share, decline precision), ``decisions`` holds the thresholds chosen on ``test``
    (``mlplatform.models.decisions``)."""
    from mlplatform.models.decisions import decision_thresholds
    from mlplatform.models.scoring import predict

    p = predict(booster, test, feature_names)
    y = test[LABEL].to_numpy().astype(int)
    oracle_p = oracle_probabilities(oracle_dir, test["transaction_id"]) if oracle_dir is not None else None
    rows = evaluation_rows(test, p, oracle_p)
    summary = {
        "metrics": binary_metrics(y, p),
        "oracle": binary_metrics(y, oracle_p) if oracle_p is not None else {},
        "slices": slice_metrics(test, p),
        "slice_tables": slice_tables(rows),
        "feature_importance": importance_by_gain(booster, feature_names),
    }
    if decision_targets is not None and len(y):
        summary["decisions"] = decision_thresholds(p, y, *decision_targets)
    if oracle_p is not None:
        summary["auc_gap_to_oracle"] = summary["oracle"]["roc_auc"] - summary["metrics"]["roc_auc"]
    if out_dir is not None:
        summary["plots"] = write_plots(out_dir, y, p, oracle_p, summary["feature_importance"])
        rows.to_parquet(out_dir / PREDICTIONS_FILE, index=False)
        summary["predictions"] = PREDICTIONS_FILE
    return summary


def write_summary(summary: dict, out_dir: Path) -> None:
    """summary.json and summary.md beside the plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    (out_dir / "summary.md").write_text(summary_markdown(summary))
