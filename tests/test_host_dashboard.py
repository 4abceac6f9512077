"""The host and audience views of the analytics function: JSON equals the tables (which
tests/test_host_kpis.py checks against the simulator's truth), parameters are checked, unknown hosts
are 404; the pages over HTTP (functions-framework) and in headless Chromium: the host page lists the
host's streams side by side with their chart and the cohort table, the stream page has the retention
chart, the audience tiles and the slot sales table."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import requests

from devtools import emulators
from shared.dashboard.app import App
from shared.pipeline.clean import read_analytics
from tests.data_fixtures import build_pipeline_store
from tests.logdir import LOGS
from tests.test_dashboard_browser import CHROMIUM_ARGS, OPERATOR, chromium_path, marks, open_page

WORLD = dict(seed=3, n_streams=8, n_users=900, n_items=100, days=4, n_hosts=2, host_events=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_pipeline_store(tmp_path_factory.mktemp("host-dash"), mean_viewers_per_stream=90, **WORLD)


@pytest.fixture(scope="module")
def app(built):
    return App(lambda: built.store, check_every_s=0)


@pytest.fixture(scope="module")
def tables(built):
    names = ("stream", "stream_slot", "stream_retention", "stream_audience", "host", "host_cohort")
    return {n: read_analytics(built.store, n).to_pandas() for n in names}


def get(app, path, **args):
    return app.handle("GET", path, {k: str(v) for k, v in args.items()})


def same(a, b) -> bool:
    if b is None or (isinstance(b, float) and math.isnan(b)) or (not isinstance(b, str) and pd.isna(b)):
        return a is None
    if isinstance(b, pd.Timestamp):
        return pd.Timestamp(a) == b
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-9)
    return a == b


def test_hosts_list_and_detail_equal_tables(app, tables):
    ans = get(app, "/api/hosts")
    assert ans.status == 200
    hosts = ans.json["hosts"]
    tab = tables["host"].set_index("host_id")
    assert [h["host_id"] for h in hosts] == list(
        tables["host"].sort_values(["gmv", "host_id"], ascending=[False, True])["host_id"]
    )
    for h in hosts:
        for k, v in h.items():
            if k != "host_id":
                assert same(v, tab.loc[h["host_id"], k]), (h["host_id"], k)
    hid = hosts[0]["host_id"]
    d = get(app, f"/api/hosts/{hid}").json
    mine = tables["stream"][tables["stream"]["host_id"] == hid]
    assert sorted(s["stream_id"] for s in d["streams"]) == sorted(mine["stream_id"])
    t = [pd.Timestamp(s["started_at"] or s["start"]) for s in d["streams"]]
    assert t == sorted(t) and len(t) >= 2  # oldest first, side by side
    aud = tables["stream_audience"].set_index("stream_id")
    for s in d["streams"]:
        for k in ("new_host_viewers", "returning_host_viewers", "median_watch_s", "followers_gained", "retention_5m"):
            assert same(s[k], aud.loc[s["stream_id"], k]), k
        assert same(s["gmv"], mine.set_index("stream_id").loc[s["stream_id"], "gmv"])
    assert sum(s["returning_host_viewers"] for s in d["streams"]) > 0
    assert d["host"]["streams"] == len(mine)


def test_cohorts_endpoint(app, tables):
    hid = tables["host"]["host_id"].iloc[0]
    for grain in ("week", "day"):
        d = get(app, f"/api/hosts/{hid}/cohorts", grain=grain).json
        t = tables["host_cohort"]
        t = t[(t["host_id"] == hid) & (t["grain"] == grain)]
        assert sum(len(c["periods"]) for c in d["cohorts"]) == len(t)
        assert sum(c["cohort_size"] for c in d["cohorts"]) == int(t[t["period"] == 0]["viewers"].sum())
        assert all(c["periods"][0]["period"] == 0 and c["periods"][0]["share"] == 1.0 for c in d["cohorts"])
    assert get(app, f"/api/hosts/{hid}/cohorts").json["grain"] == "week"


def test_stream_audience_and_slots_equal_tables(app, tables):
    sid = tables["stream_slot"].groupby("stream_id").size().idxmax()
    a = get(app, f"/api/streams/{sid}/audience").json
    ret = tables["stream_retention"]
    ret = ret[ret["stream_id"] == sid].sort_values("minute")
    assert [p["share"] for p in a["retention"]] == pytest.approx(ret["share"].tolist())
    row = tables["stream_audience"].set_index("stream_id").loc[sid]
    for k, v in a["audience"].items():
        assert same(v, row[k]), k
    s = get(app, f"/api/streams/{sid}/slots").json
    mine = tables["stream_slot"][tables["stream_slot"]["stream_id"] == sid].sort_values("start")
    assert [x["slot_id"] for x in s["slots"]] == mine["slot_id"].tolist() and s["total"] == len(mine)
    assert sum(x["gmv"] for x in s["slots"]) == pytest.approx(mine["gmv"].sum())
    assert all(x["title"] for x in s["slots"])  # catalog titles
    by_gmv = get(app, f"/api/streams/{sid}/slots", sort="gmv", limit=3).json["slots"]
    assert [x["gmv"] for x in by_gmv] == sorted(mine["gmv"], reverse=True)[:3]


@pytest.mark.parametrize(
    "path,args,param",
    [
        ("/api/hosts", {"sort": "nope"}, "sort"),
        ("/api/hosts", {"limit": "0"}, "limit"),
        ("/api/hosts", {"x": "1"}, "x"),
        ("/api/streams/s-00000/slots", {"sort": "title"}, "sort"),
        ("/api/streams/s-00000/audience", {"grain": "day"}, "grain"),
    ],
)
def test_bad_parameters_400(app, path, args, param):
    ans = get(app, path, **args)
    assert ans.status == 400 and ans.json["parameter"] == param


def test_bad_grain_and_unknown_host(app, tables):
    hid = tables["host"]["host_id"].iloc[0]
    ans = get(app, f"/api/hosts/{hid}/cohorts", grain="month")
    assert ans.status == 400 and ans.json["parameter"] == "grain"
    for path in ("/api/hosts/nobody", "/api/hosts/nobody/cohorts"):
        ans = get(app, path)
        assert ans.status == 404 and ans.json == {
            "error": "unknown_host",
            "host_id": "nobody",
            "message": "unknown host 'nobody'",
        }
    assert get(app, "/hosts/nobody").status == 404
    assert get(app, "/api/streams/nope/audience").status == 404


def test_answers_match_the_openapi_document(app, tables):
    """Each host / audience answer validates against its schema in schema/openapi/analytics.json
    (the contract test's fixture has no hosts, so their 200 answers are checked here)."""
    import json

    import jsonschema

    from shared import openapi

    doc = json.loads((openapi.OUT_DIR / "analytics.json").read_text())
    hid = tables["host"]["host_id"].iloc[0]
    sid = tables["stream_slot"]["stream_id"].iloc[0]
    for path, args, schema in [
        ("/api/hosts", {}, "HostList"),
        (f"/api/hosts/{hid}", {}, "HostDetail"),
        (f"/api/hosts/{hid}/cohorts", {"grain": "day"}, "Cohorts"),
        (f"/api/streams/{sid}/audience", {}, "Audience"),
        (f"/api/streams/{sid}/slots", {}, "Slots"),
        ("/api/hosts/nobody", {}, "Error"),
    ]:
        ans = get(app, path, **args)
        body = json.loads(ans.payload)  # as sent
        v = jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{schema}", "components": doc["components"]})
        errors = [e.message for e in v.iter_errors(body)]
        assert not errors, (path, errors[:3])
    for p in ("/api/hosts", "/api/hosts/{host_id}", "/api/hosts/{host_id}/cohorts", "/hosts/{host_id}"):
        assert p in doc["paths"]


@pytest.fixture(scope="module")
def served(built):
    LOGS.mkdir(parents=True, exist_ok=True)
    fn = emulators.start_function(
        "analytics", env={"DAIHUO_STORE": built.url, "DAIHUO_OPERATOR_TOKENS": OPERATOR}, log_dir=LOGS, timeout=60
    )
    yield f"http://{fn.host}"
    fn.stop()


def test_pages_over_http(served, tables):
    auth = {"Authorization": f"Bearer {OPERATOR}"}
    r = requests.get(f"{served}/hosts", headers=auth, timeout=60)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    for hid in tables["host"]["host_id"]:
        assert f'href="/hosts/{hid}"' in r.text
    hid = tables["host"]["host_id"].iloc[0]
    r = requests.get(f"{served}/hosts/{hid}", headers=auth, timeout=60)
    assert r.status_code == 200 and 'data-chart="host_streams"' in r.text and 'id="cohorts"' in r.text
    mine = tables["stream"][tables["stream"]["host_id"] == hid]
    for sid in mine["stream_id"]:
        assert f'href="/streams/{sid}"' in r.text
    sid = mine["stream_id"].iloc[0]
    r = requests.get(f"{served}/streams/{sid}", headers=auth, timeout=60)
    assert r.status_code == 200
    assert 'data-chart="retention"' in r.text and 'id="slots"' in r.text and 'id="kpi-returning"' in r.text
    assert f'href="/hosts/{hid}"' in r.text
    r = requests.get(f"{served}/api/hosts", headers=auth, timeout=60)
    assert r.status_code == 200 and r.headers["ETag"] and r.json()["total"] == len(tables["host"])
    assert requests.get(f"{served}/api/hosts", timeout=60).status_code == 401


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def test_host_and_stream_pages_in_the_browser(served, browser, tables):
    hid = tables["host"].sort_values("streams").iloc[-1]["host_id"]
    mine = tables["stream"][tables["stream"]["host_id"] == hid]
    ctx, page, problems = open_page(browser, f"{served}/hosts/{hid}")
    try:
        assert page.locator("#host-streams tbody tr").count() == len(mine)
        assert marks(page, "host_streams") >= len(mine) * 2  # new + returning per stream, and GMV bars
        assert page.locator("#cohorts tbody tr").count() >= 1
        page.screenshot(path=str(LOGS / "dashboard-host.png"), full_page=True)
        assert not problems, problems
    finally:
        ctx.close()
    sid = tables["stream_slot"].groupby("stream_id").size().idxmax()
    n_slots = int((tables["stream_slot"]["stream_id"] == sid).sum())
    ctx, page, problems = open_page(browser, f"{served}/streams/{sid}")
    try:
        assert page.locator('figure[data-chart="retention"] g.mark-line.role-mark > path').count() == 1
        assert page.locator("#slots tbody tr").count() == n_slots
        assert "涨粉" in page.inner_text("#kpi-followers")
        assert not problems, problems
    finally:
        ctx.close()
    ctx, page, problems = open_page(browser, f"{served}/hosts/{hid}", width=390, height=800)
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= 392
        assert not problems, problems
    finally:
        ctx.close()
