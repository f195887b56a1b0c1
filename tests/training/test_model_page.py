"""A model version's page: written at registration, (re)written by `models page`, served at /reports/models/.

Every figure checked here is recomputed from the saved training set, the oracle files and the audit log."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import roc_auc_score

from mlplatform.models.registry import ModelRegistry
from tests.conftest import make_settings


class Tables(HTMLParser):
    """Every ``<table id=...>`` of a page as rows of cell texts, and every ``<img>``'s attributes."""

    def __init__(self, page: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[dict[str, str]] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id") or f"table-{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(attrs)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


@pytest.fixture(scope="module")
def own_world(world_dir, empty_registry_db, tmp_path_factory):
    """A private copy of the small world (this module promotes: the shared world's audit log stays untouched),
    applied, with one model trained on it."""
    from mlplatform.features.definitions import apply_definitions
    from training.pipeline import train_and_register

    root = tmp_path_factory.mktemp("model-page") / "world"
    shutil.copytree(world_dir, root, ignore=shutil.ignore_patterns(
        "registry.db*", "audit", "models", "feature_logs", "reports", "pipelines", "monitoring", ".embedded-redis"))
    settings = make_settings(root)
    apply_definitions(settings)
    settings.layout.models_path.mkdir(parents=True)
    shutil.copyfile(empty_registry_db, settings.layout.models_path / "mlflow.db")
    return settings, train_and_register(settings)


@pytest.fixture(scope="module")
def page(own_world):
    """The page training wrote for the trained version, parsed, with the test split it describes."""
    settings, outcome = own_world
    registry = ModelRegistry(settings)
    saved = pd.read_parquet(registry.training_set_path(outcome.version.version))
    test = saved[saved["split"] == "test"].reset_index(drop=True)
    text = outcome.page.read_text()
    return settings, outcome, text, Tables(text), test


def test_training_writes_the_page_and_the_index_links_it(page):
    settings, outcome, text, _, _ = page
    v = outcome.version.version
    assert outcome.page == settings.layout.reports_dir / "models" / f"v{v}.html"
    index = (settings.layout.reports_dir / "index.html").read_text()
    assert f'href="models/v{v}.html"' in index
    assert f"<title>model fraud v{v}</title>" in text and "href='../index.html'" in text


def test_metrics_sit_beside_the_oracle_recomputed(page):
    settings, outcome, _, tables, test = page
    oracle = pd.concat(pd.read_parquet(f) for f in sorted(settings.layout.oracle_dir.glob("2026*.parquet")))
    oracle_p = test["transaction_id"].map(oracle.set_index("transaction_id")["fraud_probability"])
    registry = ModelRegistry(settings)
    mv = registry.get(outcome.version.version)
    x = test[mv.feature_names].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
    scores = registry.load_booster(mv.version).inplace_predict(x)
    rows = {r[0]: r for r in tables.tables["metrics-table"][1:]}
    model_auc, oracle_auc = roc_auc_score(test["is_fraud"], scores), roc_auc_score(test["is_fraud"], oracle_p)
    assert _number(rows["ROC AUC"][1]) == pytest.approx(model_auc, abs=6e-5)  # shown with 4 significant digits
    assert _number(rows["ROC AUC"][2]) == pytest.approx(oracle_auc, abs=6e-5)
    assert oracle_auc > model_auc  # the oracle is the ceiling on these rows


def test_slices_count_the_test_split(page):
    _, _, _, tables, test = page
    foreign = {r[0]: r for r in tables.tables["slice-is_foreign"][1:]}
    for value, group in test.groupby("is_foreign"):
        row = foreign[str(value)]
        assert (_number(row[1]), _number(row[2])) == (len(group), group["is_fraud"].sum())
    categories = {r[0]: r for r in tables.tables["slice-merchant_category"][1:]}
    assert set(categories) == set(test["merchant_category"].astype(str))
    buckets = {r[0]: _number(r[1]) for r in tables.tables["slice-amount_bucket"][1:]}
    edges = [0, 10, 50, 200, 1000, np.inf]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        name = f"{lo:g}-{hi:g}" if np.isfinite(hi) else f"{lo:g}+"
        n = int(((test["amount"] >= lo) & (test["amount"] < hi)).sum())
        assert buckets.get(name, 0) == n, name
    assert sum(buckets.values()) == len(test)


def test_decisions_plots_stats_and_lineage_are_shown(page):
    settings, outcome, text, tables, _ = page
    mv = outcome.version
    decisions = {r[0]: r for r in tables.tables["decisions-table"][1:]}
    assert _number(decisions["review"][1]) == pytest.approx(mv.decisions["review"]["threshold"], rel=1e-3)
    decline = mv.decisions["decline"]
    if decline["threshold"] is None:
        assert decisions["decline"][1] == "none" and decline["reason"] in decisions["decline"][2]
    else:
        assert _number(decisions["decline"][1]) == pytest.approx(decline["threshold"], rel=1e-3)
    assert len(tables.images) == 4
    for img in tables.images:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    stats = {r[0]: r for r in tables.tables["stats-table"][1:]}
    assert list(stats) == mv.feature_names
    manifest = json.loads((settings.layout.raw_dir / "manifest.json").read_text())
    assert f"Generator seed <b>{manifest['spec']['seed']}</b>" in text
    assert mv.lineage["fingerprint"] in text and mv.feature_service in text


def test_history_follows_promotion_and_the_service_and_cli_show_the_page(page, cli):
    from mlplatform.models.promotion import promote_model
    from serving.app import create_app

    settings, outcome, _, tables, _ = page
    v = outcome.version.version

    def audited() -> list[tuple[str, str]]:
        """(time, action) of the audit log's lines about v (read as plain JSON lines)."""
        lines = [json.loads(line) for line in (settings.data_path / "audit" / "audit.jsonl").read_text().splitlines()]
        return [(r["time"][:19].replace("T", " ") + "Z", r["action"]) for r in lines
                if r["action"] in ("train", "promote", "force_promote", "promote_refused", "rollback")
                and v in (r["details"].get("version"), r["details"].get("golden_after"))
                and r["details"].get("fingerprint") in (None, outcome.version.lineage["fingerprint"])]

    def shown(table) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in table.tables["history-table"][1:]]

    assert shown(tables) == audited() and audited()[-1][1] == "train"
    promote_model(settings, v, force=True, reason="page test")
    refreshed = Tables(outcome.page.read_text())  # promotion rewrote the page already there
    assert shown(refreshed) == audited() and audited()[-1][1] in ("promote", "force_promote")
    assert "page test" in refreshed.tables["history-table"][-1]

    outcome.page.unlink()
    result = cli(settings, ["models", "page", str(v)])
    assert result.exit_code == 0, result.output
    assert outcome.page.is_file()

    client = TestClient(create_app(settings))  # no lifespan: pages need no Redis
    served = client.get(f"/reports/models/v{v}.html")
    assert served.status_code == 200 and "text/html" in served.headers["content-type"]
    assert f"<title>model fraud v{v}</title>" in served.text
    assert f'href="models/v{v}.html"' in client.get("/reports/").text
    missing = client.get("/reports/models/v999.html")
    assert missing.status_code == 404 and "no version 999" in missing.text
    assert client.get("/reports/models/passwd").status_code == 404
    assert client.get("/reports/models/..%2F..%2Fetc%2Fpasswd").status_code == 404
    bad = cli(settings, ["models", "page", "999"])
    assert bad.exit_code != 0 and "no version 999" in bad.output
    assert re.search(r"model page: .*v\d+\.html", result.output.replace("\n", ""))
