"""What a person sees, checked in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

The service runs under uvicorn on a loopback port over a world with a trained, promoted model, a model page and
an Evidently skew report. Each page must load without a console error or a failed request, show what it is for
(the skew report's drift table lists the model's features; the model page's plots decode) and is screenshotted.
Set ``MLPLATFORM_TEST_SCREENSHOTS=docs/img`` to refresh the README's screenshots.

Where Chromium or Playwright is missing the test is skipped, except under ``CI=true``, where it fails: `make setup`
installs both.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import make_settings

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS_ENV = "MLPLATFORM_TEST_SCREENSHOTS"
pytestmark = pytest.mark.slow


def _browser_or_skip() -> None:
    missing = []
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (Debian's chromium package)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package")
    if not missing:
        return
    why = f"no {' and no '.join(missing)}: `make browser` installs Chromium, `make setup` Playwright"
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI=true and {why}; the browser test must run in CI")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reports_world(world_dir, tmp_path_factory):
    """A copy of the small world with a trained and promoted model (its page written) and a skew report."""
    from mlplatform.contracts.feature_log import write_feature_log
    from mlplatform.features.definitions import apply_definitions
    from mlplatform.models.promotion import promote_model
    from mlplatform.models.registry import ModelRegistry
    from monitoring.skew import run_skew
    from tests.monitoring.conftest import log_rows
    from training.pipeline import train_and_register

    _browser_or_skip()
    root = tmp_path_factory.mktemp("browser") / "world"
    shutil.copytree(world_dir, root, ignore=shutil.ignore_patterns(
        "registry.db*", "audit", "models", "feature_logs", "reports", "pipelines", "monitoring", ".embedded-redis"))
    settings = make_settings(root)
    apply_definitions(settings)
    outcome = train_and_register(settings)
    promote_model(settings, outcome.version.version, reason="browser test")
    mv = ModelRegistry(settings).get(outcome.version.version)
    # the test split, as if the service had served it: the skew report compares it with the training rows
    saved = pd.read_parquet(ModelRegistry(settings).training_set_path(mv.version))
    served = saved[saved["split"] == "test"].reset_index(drop=True)
    scores = pd.read_parquet(mv.artifact_dir / "evaluation" / "predictions.parquet").set_index("transaction_id")
    ts = pd.to_datetime(served["event_timestamp"], utc=True)
    write_feature_log(settings.layout.feature_logs_dir,
                      log_rows(served, mv.feature_names, mv.version,
                               scores.loc[served["transaction_id"], "score"].to_numpy(), ts))
    skew = run_skew(settings)
    assert skew.files.html_path is not None
    return settings, mv, skew.files.html_path


@pytest.fixture(scope="module")
def service_url(reports_world):
    """The real app under uvicorn on a loopback port (no lifespan: reports and /docs need no model or Redis)."""
    import uvicorn

    from serving.app import create_app

    settings = reports_world[0]
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


@pytest.fixture(scope="module")
def browser(reports_world):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


class Visit:
    """One page opened in a fresh tab, with every console error, page error and failed request it caused."""

    def __init__(self, browser, url: str, wait_for: str | None = None):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))
        self.page.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}")
                     if r.status >= 400 else None)
        self.response = self.page.goto(url, wait_until="networkidle")
        if wait_for:
            self.page.wait_for_selector(wait_for, timeout=30_000)

    def screenshot(self, tmp_path: Path, name: str, full_page: bool = False) -> Path:
        path = tmp_path / name
        self.page.screenshot(path=str(path), full_page=full_page)
        target = os.environ.get(SCREENSHOTS_ENV)
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(target) / name)
        return path


def test_reports_index_links_the_skew_report_and_the_model_page(browser, service_url, reports_world, tmp_path):
    _, mv, skew_html = reports_world
    visit = Visit(browser, f"{service_url}/reports/")
    assert visit.response.status == 200 and visit.problems == []
    links = visit.page.eval_on_selector_all("a", "els => els.map(e => e.getAttribute('href'))")
    assert skew_html.name in links and f"models/v{mv.version}.html" in links
    visit.page.click(f"a[href='models/v{mv.version}.html']")
    visit.page.wait_for_load_state("networkidle")
    assert visit.page.url.endswith(f"/reports/models/v{mv.version}.html")
    assert visit.page.title() == f"model fraud v{mv.version}"
    visit.page.go_back()
    visit.screenshot(tmp_path, "reports-index.png")
    assert visit.problems == []


def test_skew_report_drift_table_lists_the_features(browser, service_url, reports_world, tmp_path):
    _, mv, skew_html = reports_world
    visit = Visit(browser, f"{service_url}/reports/{skew_html.name}", wait_for="table")
    assert visit.response.status == 200
    assert "Data Drift Summary" in visit.page.inner_text("body")
    assert visit.page.locator("svg").count() > 0  # the distribution plots were drawn
    visit.screenshot(tmp_path, "skew-report.png")
    cells: set[str] = set()
    for _ in range(len(mv.feature_names)):  # Evidently shows the table a page of rows at a time
        cells |= {c.strip() for c in visit.page.locator("td").all_inner_texts()}
        following = visit.page.locator("button[aria-label='Next Page']")
        if following.count() == 0 or following.first.is_disabled():
            break
        following.first.click()
    missing = [f for f in mv.feature_names if f not in cells]
    assert not missing, f"missing from the drift table: {missing}"
    assert visit.problems == []


def test_model_page_shows_its_plots_and_tables(browser, service_url, reports_world, tmp_path):
    _, mv, _ = reports_world
    visit = Visit(browser, f"{service_url}/reports/models/v{mv.version}.html")
    assert visit.response.status == 200
    images = visit.page.eval_on_selector_all("img", "els => els.map(i => [i.alt, i.complete, i.naturalWidth])")
    assert [alt for alt, _, _ in images] == ["ROC curve", "Precision-recall curve", "Calibration",
                                            "Feature importance"]
    assert all(done and width > 100 for _, done, width in images), images
    for table in ("metrics-table", "decisions-table", "slice-merchant_category", "stats-table", "history-table"):
        assert visit.page.locator(f"#{table} tr").count() > 1, table
    history = visit.page.inner_text("#history-table")
    assert "train" in history and "promote" in history
    visit.screenshot(tmp_path, "model-page.png", full_page=True)
    assert visit.problems == []


def test_api_docs_render_the_operations(browser, service_url, tmp_path):
    """/docs (Swagger UI) with its assets served by the service itself: it renders with no network at all."""
    visit = Visit(browser, f"{service_url}/docs", wait_for=".opblock")
    assert visit.response.status == 200
    operations = visit.page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/predict" in operations and "/v1/features" in operations and "/reports/models/{name}" in operations
    visit.screenshot(tmp_path, "api-docs.png")
    assert visit.problems == []
