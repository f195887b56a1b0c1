"""A model version's page: one self-contained HTML file a person opens to judge and trust a version.

It shows the test-split metrics beside the oracle's (the world's true fraud probability: the best any model can
do on those rows), the evaluation plots training wrote (embedded as data URIs, so the file works anywhere), the
metrics per slice, the decision thresholds, the lineage (training set, feature service, views, raw data, seed),
the training data's statistics and the version's history from the audit log (training, promotions, rollbacks).

Written to ``<reports_dir>/models/v<N>.html`` by training at registration and by ``mlplatform models page N``;
the service renders it live at ``/reports/models/v<N>.html``. Everything is read from the registry, the raw
manifest and the audit log: nothing here imports a part (training, serving, monitoring).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from mlplatform.audit import list_records
from mlplatform.contracts.reports import INDEX_FILE, MODEL_PAGES_DIR, NO_ICON, index_page, model_page_name
from mlplatform.errors import DataNotFoundError
from mlplatform.filesystems import reports_location
from mlplatform.models.registry import STATS_FILE, ModelRegistry, ModelVersion
from mlplatform.settings import Settings

EVALUATION_DIR = "evaluation"
SUMMARY_FILE = "summary.json"
PLOTS = (("roc.png", "ROC curve"), ("pr.png", "Precision-recall curve"), ("calibration.png", "Calibration"),
         ("feature_importance.png", "Feature importance"))
METRICS = (("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC (average precision)"), ("log_loss", "log loss"),
           ("brier", "Brier score"))
SLICE_TITLES = {"merchant_category": "merchant category", "is_foreign": "foreign transaction (is_foreign)",
                "amount_bucket": "amount bucket"}
HISTORY_ACTIONS = ("train", "promote", "force_promote", "promote_refused", "rollback")
log = logging.getLogger(__name__)
_PAGE_NAME = re.compile(r"^v?(\d{1,9})(?:\.html)?$")

STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em} td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:1em} .plots figure{margin:0} .plots img{max-width:420px;border:1px solid #ddd}
.tag{display:inline-block;background:#1e7b34;color:#fff;border-radius:3px;padding:1px 6px;margin-right:4px}
.muted{color:#666} code{background:#f4f4f4;padding:1px 3px}"""


# --- reading ------------------------------------------------------------------------------------------------------
def parse_page_name(name: str) -> int:
    """The version a page name means: ``3``, ``v3`` or ``v3.html``; DataNotFoundError for anything else."""
    match = _PAGE_NAME.match(name)
    if match is None:
        raise DataNotFoundError(f"no model page {name!r}: model pages are named v<version>.html, e.g. v1.html")
    return int(match.group(1))


def find_version(settings: Settings, version: int) -> ModelVersion:
    """The registered ``version`` (read from the registry's files, without starting MLflow); DataNotFoundError."""
    versions = ModelRegistry(settings).list_versions()
    for mv in versions:
        if mv.version == version:
            return mv
    known = ", ".join(str(v.version) for v in versions) or "none"
    raise DataNotFoundError(f"model {settings.model_name} has no version {version} (registered: {known})")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _data_uri(path: Path) -> str | None:
    try:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return None


def _raw_manifest(settings: Settings) -> dict | None:
    from mlplatform.data.generator import read_manifest

    try:
        return read_manifest(settings.data_path)
    except DataNotFoundError:
        return None


def _v(version: int | None) -> str:
    return f"v{version}" if version is not None else "none"


def _history(settings: Settings, mv: ModelVersion) -> list[dict]:
    """Audit records about ``mv``: its training, promotions (and refusals) to and rollbacks from or to it."""
    out = []
    for rec in list_records(settings):
        if rec.action not in HISTORY_ACTIONS:
            continue
        d = rec.details
        about = {d.get("version"), d.get("golden_before"), d.get("golden_after")}
        if mv.version not in about:
            continue
        if rec.action == "train" and d.get("fingerprint") not in (None, mv.lineage.get("fingerprint")):
            continue  # another registry's v<N>, trained on other data, in the same data folder's audit log
        out.append({"time": rec.time, "action": rec.action, "actor": rec.actor, "channel": rec.channel or "",
                    "golden": f"{_v(d.get('golden_before'))} → {_v(d.get('golden_after'))}"
                    if rec.action != "train" else "", "reason": rec.reason or "",
                    "gate": "; ".join(str(g) for g in d.get("gate") or [])})
    return out


def page_facts(settings: Settings, version: int) -> dict[str, Any]:
    """Everything the page of ``version`` shows, read from the registry, raw manifest and audit log."""
    mv = find_version(settings, version)
    evaluation = mv.artifact_dir / EVALUATION_DIR
    return {
        "version": mv,
        "summary": _read_json(evaluation / SUMMARY_FILE) or {},
        "plots": [(title, _data_uri(evaluation / name)) for name, title in PLOTS if (evaluation / name).is_file()],
        "stats": _read_json(mv.artifact_dir / STATS_FILE),
        "manifest": _raw_manifest(settings),
        "history": _history(settings, mv),
    }


# --- rendering (pure) -----------------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() and abs(value) >= 100 else f"{value:.{digits}g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def _table(header: list[str], rows: list[list[Any]], numeric_from: int = 1, table_id: str = "") -> str:
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = cell if isinstance(cell, str) else _fmt(cell)
            cls = ' class="num"' if i >= numeric_from and not isinstance(cell, str) else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table{ident}><tr>{head}</tr>" + "".join(body) + "</table>"


def _metrics_section(summary: dict, mv: ModelVersion) -> str:
    model = summary.get("metrics") or mv.metrics
    oracle = summary.get("oracle") or {}
    rows = [[label, model.get(key), oracle.get(key),
             (oracle[key] - model[key]) if key in oracle and key in model else None] for key, label in METRICS]
    parts = ["<h2 id='metrics'>Test-split metrics, beside the oracle</h2>",
             "<p class='muted'>The oracle scores each transaction with the world's true fraud probability (written "
             "by the data generator): its figures are the best any model can reach on these rows.</p>",
             _table(["metric", "model", "oracle (ceiling)", "oracle − model"], rows, table_id="metrics-table")]
    if model.get("rows") is not None:
        parts.append(f"<p>{_fmt(model.get('rows'))} test transactions, {_fmt(model.get('positives'))} fraud "
                     f"(base rate {_pct(model.get('base_rate'))}).</p>")
    return "\n".join(parts)


def _decisions_section(decisions: dict | None) -> str:
    head = "<h2 id='decisions'>Decision thresholds</h2>"
    if not decisions:
        return head + "<p>This version was registered before decision thresholds were recorded.</p>"
    ev, review, decline = decisions["evaluation"], decisions["review"], decisions["decline"]
    rows = [["review", review["threshold"], f"top {review['budget_share']:.2%} of transactions (review budget)",
             review.get("flagged"), _pct(review.get("flagged_share")), _pct(review.get("precision")),
             _pct(review.get("recall"))]]
    if decline.get("threshold") is None:
        rows.append(["decline", "none", f"precision ≥ {decline['target_precision']:.0%}: {decline.get('reason')}",
                     "–", "–", "–", "–"])
    else:
        chosen = f"lowest score with precision ≥ {decline['target_precision']:.0%}"
        rows.append(["decline", decline["threshold"], chosen, decline.get("flagged"),
                     _pct(decline.get("flagged_share")), _pct(decline.get("precision")), _pct(decline.get("recall"))])
    return (head + f"<p>Chosen at training time on the {html.escape(str(ev['split']))} split ({_fmt(ev['rows'])} "
            f"transactions, {_fmt(ev['positives'])} fraud); a transaction gets a decision when its "
            f"<code>{html.escape(decisions['rule'])}</code>.</p>"
            + _table(["decision", "threshold", "chosen as", "flagged", "share", "precision", "recall"], rows,
                     table_id="decisions-table"))


def _plots_section(plots: list[tuple[str, str | None]]) -> str:
    if not plots:
        return "<h2 id='plots'>Plots</h2><p>No evaluation plots were saved with this version.</p>"
    figures = "".join(f"<figure><img src='{uri}' alt='{html.escape(title)}'><figcaption>{html.escape(title)}"
                      "</figcaption></figure>" for title, uri in plots if uri)
    return f"<h2 id='plots'>Plots (test split)</h2><div class='plots'>{figures}</div>"


def _slices_section(summary: dict) -> str:
    tables = summary.get("slice_tables") or ({"merchant_category": summary["slices"]} if summary.get("slices")
                                             else {})
    if not tables:
        return ""
    parts = ["<h2 id='slices'>Slices of the test split</h2>"]
    for column, table in tables.items():
        parts.append(f"<h3>By {html.escape(SLICE_TITLES.get(column, column))}</h3>")
        rows = [[str(r.get(column)), int(r["rows"]), int(r["positives"]), r.get("roc_auc"), r.get("oracle_roc_auc"),
                 r.get("pr_auc"), _pct(r.get("base_rate"))] for r in table]
        parts.append(_table([column, "rows", "fraud", "ROC AUC", "oracle ROC AUC", "PR AUC", "fraud rate"], rows,
                            table_id=f"slice-{column}"))
    return "\n".join(parts)


def _lineage_section(mv: ModelVersion, manifest: dict | None) -> str:
    lin = mv.lineage
    split = lin.get("split") or {}
    rows = [
        ["training set fingerprint", str(lin.get("fingerprint", "–"))],
        ["training set", str(lin.get("dataset_path", "–"))],
        ["as of", str(lin.get("as_of", "–"))],
        ["rows (train + validation + test)", _fmt(lin.get("rows"))],
        ["time range", " → ".join(str(t) for t in lin.get("time_range") or []) or "–"],
        ["class balance", _fmt(lin.get("class_balance"))],
        ["split", f"{split.get('strategy', '–')} (seed {split.get('seed', '–')}, validation "
                  f"{split.get('validation_fraction', '–')}, test {split.get('test_fraction', '–')})"],
        ["training seed", str(lin.get("seed", "–"))],
        ["feature service", mv.feature_service],
        ["Feast project", str(lin.get("feast_project", "–"))],
        ["trigger", str(lin.get("trigger", "–"))],
        ["tuned trials", str(lin.get("tuned_trials", 0))],
        ["XGBoost", str(lin.get("xgboost_version", "–"))],
        ["booster SHA-256", mv.booster_sha256],
        ["MLflow run", mv.run_id or "–"],
    ]
    parts = ["<h2 id='lineage'>Lineage</h2>", _table(["what", "value"], rows, numeric_from=99)]
    views = lin.get("feature_views") or {}
    if views:
        parts.append("<h3>Feature views read (definition hash at training)</h3>")
        parts.append(_table(["view", "definition hash"], [[n, str(h)] for n, h in sorted(views.items())],
                            numeric_from=99))
    parts.append("<h3>Features (model inputs, in order)</h3><p>" + ", ".join(
        f"<code>{html.escape(n)}</code>" for n in mv.feature_names) + "</p>")
    parts.append("<h3>Raw data</h3>")
    if manifest is None:
        parts.append("<p>No raw manifest in this data folder.</p>")
    else:
        spec = manifest.get("spec") or {}
        periods = manifest.get("periods") or []
        prow = [[str(p.get("name", "")), str(p.get("start", "")), str(p.get("end", "")),
                 "drifted" if p.get("drifted") else "base", p.get("transactions"), p.get("labels")]
                for p in periods if isinstance(p, dict)]
        parts.append(f"<p>Generator seed <b>{html.escape(str(spec.get('seed', '–')))}</b>, "
                     f"{_fmt(spec.get('customers'))} customers.</p>")
        if prow:
            parts.append(_table(["period", "start", "end", "kind", "transactions", "labels"], prow, numeric_from=4))
    return "\n".join(parts)


def _stats_section(stats: dict | None) -> str:
    head = "<h2 id='training-data'>Training data statistics</h2>"
    if not stats:
        return head + "<p>This version was registered without training statistics.</p>"
    rows = []
    for name, s in stats.get("features", {}).items():
        q = s.get("quantiles") or {}
        rows.append([name, s.get("count"), _pct(s.get("null_fraction")), s.get("mean"), s.get("std"), s.get("min"),
                     q.get("0.5"), q.get("0.99"), s.get("max")])
    return (head + f"<p>{_fmt(stats.get('rows'))} training rows.</p>"
            + _table(["feature", "count", "null", "mean", "std", "min", "median", "p99", "max"], rows,
                     table_id="stats-table"))


def _history_section(history: list[dict]) -> str:
    head = "<h2 id='history'>History (audit log)</h2>"
    if not history:
        return head + "<p>No training or promotion record names this version.</p>"
    rows = [[h["time"][:19].replace("T", " ") + "Z", h["action"], h["actor"], h["channel"], h["golden"], h["reason"],
             h["gate"]] for h in history]
    return head + _table(["time (UTC)", "action", "actor", "channel", "golden", "reason", "gate"], rows,
                         numeric_from=99, table_id="history-table")


def _behaviour_section(summary: dict) -> str:
    tests = summary.get("behaviour") or []
    if not tests:
        return ""
    items = "".join(f"<li><b style='color:{'#1e7b34' if b['passed'] else '#a30200'}'>"
                    f"{'PASS' if b['passed'] else 'FAIL'}</b> {html.escape(b['name'])}: {html.escape(b['detail'])}</li>"
                    for b in tests)
    return f"<h2 id='behaviour'>Behavioural tests</h2><ul>{items}</ul>"


def render_model_page(facts: dict[str, Any]) -> str:
    """The page's HTML from ``page_facts`` (pure)."""
    mv: ModelVersion = facts["version"]
    summary = facts["summary"]
    title = f"model {mv.name} v{mv.version}"
    tags = "".join(f"<span class='tag'>{html.escape(a)}</span>" for a in mv.aliases) or "<span class='muted'>no " \
        "alias</span>"
    return "\n".join([
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>{NO_ICON}<title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<p><a href='../{INDEX_FILE}'>all reports</a></p>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{tags} registered {mv.created_at:%Y-%m-%d %H:%M} UTC · feature service "
        f"<code>{html.escape(mv.feature_service)}</code> · {len(mv.feature_names)} features</p>",
        _metrics_section(summary, mv),
        _decisions_section(mv.decisions),
        _plots_section(facts["plots"]),
        _slices_section(summary),
        _lineage_section(mv, facts["manifest"]),
        _stats_section(facts["stats"]),
        _history_section(facts["history"]),
        _behaviour_section(summary),
        "</body></html>",
    ]) + "\n"


# --- writing --------------------------------------------------------------------------------------------------------
def model_page_path(settings: Settings, version: int) -> Path | str:
    """Where the page of ``version`` is written: ``<reports_dir>/models/v<N>.html`` (a URI with
    ``MLPLATFORM_REPORTS_URI``)."""
    return reports_location(settings.layout).file(f"{MODEL_PAGES_DIR}/{model_page_name(version)}")


def model_page_html(settings: Settings, version: int) -> str:
    """The page of ``version`` as it stands now (DataNotFoundError for an unknown version)."""
    return render_model_page(page_facts(settings, version))


def write_model_page(settings: Settings, version: int) -> Path | str:
    """(Re)write the page of ``version`` atomically, then the reports index so it links the page."""
    folder = reports_location(settings.layout)  # the local folder, or MLPLATFORM_REPORTS_URI's
    path = folder.write_bytes(f"{MODEL_PAGES_DIR}/{model_page_name(version)}", model_page_html(settings, version))
    folder.write_bytes(INDEX_FILE, index_page(folder))
    return path


def refresh_model_pages(settings: Settings, versions: set[int]) -> list[Path | str]:
    """Rewrite the pages already written of ``versions`` (after a promotion or rollback changed their aliases and
    history); best effort: a page that cannot be written is logged and left as it was."""
    written = []
    for version in sorted(v for v in versions if v is not None):
        if not reports_location(settings.layout).is_file(f"{MODEL_PAGES_DIR}/{model_page_name(version)}"):
            continue
        try:
            written.append(write_model_page(settings, version))
        except Exception as exc:  # noqa: BLE001 - the alias change is done; a stale page must not undo or fail it
            log.warning("could not refresh the page of model v%s: %s", version, exc)
    return written
