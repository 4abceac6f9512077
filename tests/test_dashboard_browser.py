"""The dashboard in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by Python
Playwright) opens the pages served by the analytics function under functions-framework over the
pipeline output of a simulated evening. Every chart must render (no console errors, the expected
number of marks), Chinese product titles must be on the page, and the phone layout must not
scroll sideways. Screenshots go to var/test-logs/dashboard-*.png (var/test-logs/gw<n>/ under xdist); with
DAIHUO_UPDATE_SCREENSHOTS=1 they replace docs/img/dashboard-*.png (shown in the README), so a plain test run
leaves the tree clean.

Chromium missing is a failure with instructions, not a skip: CI installs it (.ci/run).
"""

from __future__ import annotations

import os
import re
import shutil

import pytest

from devtools import emulators
from tests.data_fixtures import MODEL_COUNTS, MODEL_METAS, MODEL_SCORES, build_pipeline_store
from tests.logdir import LOGS

ROOT = emulators.REPO_ROOT
IMG = ROOT / "docs" / "img" if os.environ.get("DAIHUO_UPDATE_SCREENSHOTS") == "1" else LOGS
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
_CJK = re.compile(r"[\u4e00-\u9fff]")
OPERATOR = "browser-operator-token-0123456789"
SECURITY_HEADERS = {"content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options"}


def chromium_path() -> str:
    for p in (
        os.environ.get("DAIHUO_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        shutil.which("google-chrome"),
    ):
        if p and os.path.exists(p):
            return p
    pytest.fail(
        "Chromium is not installed: the dashboard browser test needs it. Install it with "
        "`apt-get install -y chromium fonts-noto-cjk` (CI's .ci/run does), or point DAIHUO_CHROMIUM "
        "at a Chrome/Chromium binary.",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    built = build_pipeline_store(
        tmp_path_factory.mktemp("dash-store"), seed=5, n_streams=3, models=True, host_events=True, charts=True
    )  # charts: the overview's are pre-rendered by the clean runs, as in the cloud (tests/test_prerender.py)
    LOGS.mkdir(parents=True, exist_ok=True)
    fn = emulators.start_function(
        "analytics", env={"DAIHUO_STORE": built.url, "DAIHUO_OPERATOR_TOKENS": OPERATOR}, log_dir=LOGS, timeout=60
    )
    yield built, f"http://{fn.host}"
    fn.stop()


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Python Playwright is missing (pip install -r requirements.txt)", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def open_page(browser, url: str, width: int = 1280, height: int = 900, login: bool = True):
    """A fresh browser context; with ``login`` the operator signs in first (GET /login?token= sets the
    HttpOnly cookie, as docs/dashboard.md tells an operator of the local stack to do)."""
    ctx = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1, locale="zh-CN")
    page = ctx.new_page()
    problems: list[str] = []  # a CSP violation is a console error, so the policy is checked against the pages
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    if login:
        base = url.split("/", 3)
        resp = page.goto(f"{base[0]}//{base[2]}/login?token={OPERATOR}", wait_until="load")
        assert resp is not None and resp.status == 200 and resp.url.endswith("/"), resp and resp.status
    resp = page.goto(url, wait_until="load")
    assert resp is not None and resp.status == 200, (url, resp and resp.status)
    headers = resp.all_headers()
    assert SECURITY_HEADERS <= set(headers), headers
    assert (
        "frame-ancestors 'none'" in headers["content-security-policy"]
        and headers["x-content-type-options"] == "nosniff"
    )
    page.evaluate("document.fonts.ready")
    return ctx, page, problems


def marks(page, chart: str, mark: str = "rect") -> int:
    """Number of drawn marks of one chart (Vega's SVG: one <path> per bar in g.mark-rect.role-mark)."""
    return page.locator(f'figure[data-chart="{chart}"] g.mark-{mark}.role-mark > path').count()


def test_stream_page_renders_every_chart(served, browser):
    built, base = served
    from shared.pipeline.clean import read_analytics

    items = read_analytics(built.store, "stream_item").to_pandas()
    sid = "s-00000"
    mine = items[items["stream_id"] == sid]
    ctx, page, problems = open_page(browser, f"{base}/streams/{sid}")
    try:
        for chart in ("viewers", "funnel", "gmv_orders", "engagement", "products_gmv", "products_ctr"):
            fig = page.locator(f'figure[data-chart="{chart}"] svg')
            assert fig.count() == 1, chart
            box = fig.bounding_box()
            assert box and box["width"] > 200 and box["height"] > 60, (chart, box)
        assert marks(page, "funnel") == 4
        assert marks(page, "products_gmv") == min(20, len(mine))
        assert marks(page, "products_ctr") == min(20, int(mine["ctr"].notna().sum()))
        assert page.locator('figure[data-chart="viewers"] g.mark-line.role-mark > path').count() == 1
        assert page.locator('figure[data-chart="engagement"] g.mark-line.role-mark > path').count() == 4
        assert marks(page, "gmv_orders") > 10  # one bar per time bucket, in both panels
        # Chinese: the funnel's step names and the products' titles, in the SVG text and in the table
        titles = {i["item_id"]: i["title"] for i in built.sim.catalog}
        top = mine.sort_values(["gmv", "item_id"], ascending=[False, True]).iloc[0]
        body = page.inner_text("body")
        assert titles[top["item_id"]] in body
        assert _CJK.search(" ".join(page.locator('figure[data-chart="products_gmv"] svg text').all_text_contents()))
        assert "曝光" in " ".join(page.locator('figure[data-chart="funnel"] svg text').all_text_contents())
        # the CJK glyphs come from a real CJK font (not tofu): a CJK string is as wide as its characters
        w = page.evaluate("""() => { const c = document.createElement('canvas').getContext('2d');
            c.font = '16px "Noto Sans CJK SC", "WenQuanYi Zen Hei", sans-serif'; return c.measureText('直播带货').width; }""")
        assert w > 40, f"CJK text measured {w}px: no CJK font? apt-get install fonts-noto-cjk"
        assert not problems, problems
        IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMG / "dashboard-stream.png"), full_page=True)
    finally:
        ctx.close()


def test_overview_quality_models_pages(served, browser):
    built, base = served
    n_streams = built.sim.truth.streams.shape[0]
    ctx, page, problems = open_page(browser, f"{base}/")
    try:
        assert marks(page, "rank_gmv") == n_streams and marks(page, "rank_gpm") == n_streams
        assert page.locator("#charts-note").count() == 0  # the pre-rendered charts, not drawn on request
        assert page.locator("table#streams tbody tr").count() == n_streams
        page.screenshot(path=str(IMG / "dashboard-overview.png"), full_page=True)
        page.click("table#streams tbody tr:first-child a")
        page.wait_for_selector('figure[data-chart="funnel"] svg')
        assert marks(page, "funnel") == 4
        page.goto(f"{base}/quality")
        n_runs = len(built.summaries)
        assert page.locator("table#runs tbody tr").count() == n_runs
        reasons = sum(len(s["dropped_by_reason"]) for s in built.summaries)
        assert marks(page, "dropped") == reasons  # one stacked segment per (run, reason)
        # the ingest rejects beside clean's drops (this store's raw/ was written directly: clean's only)
        assert page.locator('table#rejects tr[data-stage="clean"]').count() == len(
            {k for s in built.summaries for k in s["dropped_by_reason"]}
        )
        assert marks(page, "rejects") == page.locator("table#rejects tbody tr").count()
        page.screenshot(path=str(IMG / "dashboard-quality.png"), full_page=True)
        page.goto(f"{base}/models")
        n = len(MODEL_METAS)
        assert page.locator("table#models tbody tr").count() == n
        # one chart per family: scores on a 0-1 axis, the ratio to the best baseline, counts apart
        assert marks(page, "models-ranking") == n * len(MODEL_SCORES)
        assert marks(page, "models-count") == n * len(MODEL_COUNTS)
        assert marks(page, "models-ratio", "symbol") == n
        counts = page.inner_text('figure[data-chart="models-count"]')
        assert ".0000" not in counts and ".5" not in counts  # whole-number ticks
        ranking = page.inner_text('figure[data-chart="models-ranking"]')
        assert "1,000" not in ranking and "8,000" not in ranking  # no holdout size on the score axis
        assert "LATEST" in page.inner_text("table#models")
        statuses = [page.locator("table#models tbody tr").nth(i).get_attribute("data-status") for i in range(n)]
        assert statuses == ["replaced", "rejected", "serving"]
        assert "below baseline" in page.inner_text('table#models tr[data-status="rejected"]')
        assert page.locator("table.baselines").count() == n
        assert "own_then_stream" in page.inner_text(f'table.baselines[data-version="{MODEL_METAS[-1]["version"]}"]')
        page.screenshot(path=str(IMG / "dashboard-models.png"), full_page=True)
        assert not problems, problems
    finally:
        ctx.close()


def test_phone_layout(served, browser):
    _, base = served
    ctx, page, problems = open_page(browser, f"{base}/streams/s-00001", width=390, height=844)
    try:
        assert page.evaluate("document.querySelector('meta[name=viewport]') !== null")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"page scrolls sideways on a phone by {overflow}px"
        for chart in ("funnel", "products_gmv"):
            box = page.locator(f'figure[data-chart="{chart}"] svg').bounding_box()
            assert box and box["width"] <= 390, (chart, box)
        assert not problems, problems
        page.screenshot(path=str(IMG / "dashboard-phone.png"), full_page=False)
    finally:
        ctx.close()


def test_unauthenticated_browser_is_refused(served, browser):
    """No operator cookie: every page is a 401 (with the security headers), no chart, no number."""
    _, base = served
    ctx = browser.new_context()
    page = ctx.new_page()
    try:
        for path in (
            "/",
            "/streams/s-00000",
            "/quality",
            "/models",
            "/api/streams",
            "/live",
            "/live/s-00000",
            "/api/live/s-00000",
            "/assets/live.js",
        ):
            resp = page.goto(base + path, wait_until="load")
            assert resp is not None and resp.status == 401, (path, resp and resp.status)
            assert SECURITY_HEADERS <= set(resp.all_headers())
            assert page.locator("svg").count() == 0 and "GMV" not in page.content()
        resp = page.goto(f"{base}/login?token=not-the-operator-token", wait_until="load")
        assert resp.status == 401 and not ctx.cookies()
    finally:
        ctx.close()
