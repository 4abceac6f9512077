"""The analytics function's JSON API: values equal the analytics tables (and, for GMV and orders,
figures computed independently from the simulator's truth), paging, sorting, filters, errors,
caching (ETag / 304 / reload when the manifest moves). Mostly in-process through
``shared.dashboard.app.App``; one module-scoped functions-framework server checks the HTTP adapter."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import requests

from devtools import emulators
from devtools.simulator import simulate
from shared.adapters.storage import open_store
from shared.dashboard.app import App
from shared.pipeline.analytics import STREAM_COLS
from shared.pipeline.clean import read_analytics, run_clean
from tests.data_fixtures import (
    MODEL_COUNTS,
    MODEL_METAS,
    MODEL_RATIOS,
    MODEL_SCORES,
    build_pipeline_store,
    clean_config,
    raw_objects,
)
from tests.logdir import LOGS


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_pipeline_store(tmp_path_factory.mktemp("api-store"), seed=5, n_streams=4, models=True)


@pytest.fixture(scope="module")
def app(built):
    return App(lambda: built.store, check_every_s=0)


@pytest.fixture(scope="module")
def tables(built):
    return {n: read_analytics(built.store, n).to_pandas() for n in ("stream", "stream_hour", "stream_item")}


def get(app, path, **args):
    return app.handle("GET", path, {k: str(v) for k, v in args.items()})


def same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b)) or pd.isna(b)
    if isinstance(b, pd.Timestamp):
        return pd.Timestamp(a) == b
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-9)
    return a == b


# ----------------------------------------------------------------------------- values
def test_streams_list_equals_table(app, tables):
    r = get(app, "/api/streams", limit=500)
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
    body = r.json
    st = tables["stream"].set_index("stream_id")
    assert body["total"] == len(st) and len(body["streams"]) == len(st)
    assert [s["gmv"] for s in body["streams"]] == sorted(st["gmv"], reverse=True)  # default: GMV descending
    for s in body["streams"]:
        row = st.loc[s["stream_id"]]
        for k, v in s.items():
            if k != "stream_id":
                assert same(v, row[k]), (s["stream_id"], k, v, row[k])


def test_gmv_and_orders_match_simulator_truth(app, built):
    exp = built.sim.truth.expected_clean()
    buys = exp[exp["type"] == "purchase"].copy()
    buys["amount"] = buys["price"] * buys["quantity"].fillna(1)
    for sid, g in buys.groupby("stream_id"):
        s = get(app, f"/api/streams/{sid}").json["stream"]
        assert s["orders"] == len(g)
        assert s["gmv"] == pytest.approx(g["amount"].sum(), rel=1e-9)
        f = {x["step"]: x["count"] for x in get(app, f"/api/streams/{sid}/funnel").json["steps"]}
        ev = exp[exp["stream_id"] == sid]
        assert f == {
            "impressions": int((ev.type == "product_impression").sum()),
            "clicks": int((ev.type == "product_click").sum()),
            "add_to_carts": int((ev.type == "add_to_cart").sum()),
            "orders": len(g),
        }
        # per product GMV, from the truth as well
        prods = get(app, f"/api/streams/{sid}/products", limit=500).json["products"]
        want = g.groupby("item_id")["amount"].sum()
        got = {p["item_id"]: p["gmv"] for p in prods if p["gmv"]}
        assert got.keys() == set(want.index)
        for item, v in want.items():
            assert got[item] == pytest.approx(v, rel=1e-9)


def test_stream_kpis_equal_table(app, tables):
    for _, row in tables["stream"].iterrows():
        s = get(app, f"/api/streams/{row['stream_id']}").json["stream"]
        assert set(STREAM_COLS) <= set(s)
        for k in STREAM_COLS:
            assert same(s[k], row[k]), (k, s[k], row[k])


def test_funnel_shape(app, tables):
    sid = tables["stream"]["stream_id"].iloc[0]
    steps = get(app, f"/api/streams/{sid}/funnel").json["steps"]
    assert [s["step"] for s in steps] == ["impressions", "clicks", "add_to_carts", "orders"]
    assert steps[1]["rate_from_previous"] == pytest.approx(steps[1]["count"] / steps[0]["count"])
    assert steps[3]["rate_from_first"] == pytest.approx(steps[3]["count"] / steps[0]["count"])


def test_timeseries_hour_equals_table_and_minute_sums_to_totals(app, tables):
    sid = tables["stream"]["stream_id"].iloc[1]
    h = get(app, f"/api/streams/{sid}/timeseries", grain="hour").json
    want = tables["stream_hour"][tables["stream_hour"]["stream_id"] == sid].sort_values("hour")
    assert h["grain"] == "hour" and len(h["points"]) == len(want)
    for p, (_, row) in zip(h["points"], want.iterrows()):
        assert pd.Timestamp(p["t"]) == row["hour"]
        for k in ("unique_viewers", "peak_concurrent", "avg_concurrent", "orders", "gmv", "likes", "ctr"):
            assert same(p[k], row[k]), (k, p[k], row[k])
    st = tables["stream"].set_index("stream_id").loc[sid]
    for bucket in (1, 5):
        m = get(app, f"/api/streams/{sid}/timeseries", bucket=bucket).json
        assert m["grain"] == "minute" and m["bucket_s"] == bucket * 60
        pts = pd.DataFrame(m["points"])
        ts = pd.to_datetime(pts["t"])
        assert ts.is_monotonic_increasing and (ts.diff().dropna() == pd.Timedelta(minutes=bucket)).all()
        assert pts["orders"].sum() == st["orders"] and pts["gmv"].sum() == pytest.approx(st["gmv"])
        assert pts["likes"].sum() == st["likes"] and pts["impressions"].sum() == st["impressions"]
        assert pts["watch_s"].sum() == pytest.approx(st["total_watch_s"], rel=1e-9)  # the same sessions
        assert pts["viewers"].max() <= st["unique_viewers"]


def test_products_sort_and_paging(app, tables, built):
    sid = tables["stream"]["stream_id"].iloc[0]
    items = tables["stream_item"][tables["stream_item"]["stream_id"] == sid]
    full = get(app, f"/api/streams/{sid}/products", limit=500).json
    assert full["total"] == len(items) and full["sort"] == "gmv"
    gmv = [p["gmv"] for p in full["products"]]
    assert gmv == sorted(gmv, reverse=True)
    titles = {c["item_id"]: c["title"] for c in built.sim.catalog}
    for p in full["products"]:
        row = items[items["item_id"] == p["item_id"]].iloc[0]
        assert p["title"] == titles[p["item_id"]]
        for k in ("impressions", "clicks", "add_to_carts", "orders", "units", "gmv", "ctr"):
            assert same(p[k], row[k]), (k, p[k], row[k])
    by_ctr = get(app, f"/api/streams/{sid}/products", sort="ctr", limit=500).json["products"]
    ctr = [p["ctr"] for p in by_ctr if p["ctr"] is not None]
    assert ctr == sorted(ctr, reverse=True)
    pages = [
        get(app, f"/api/streams/{sid}/products", limit=4, offset=o).json["products"] for o in range(0, len(items), 4)
    ]
    assert [p["item_id"] for pg in pages for p in pg] == [p["item_id"] for p in full["products"]]
    assert get(app, f"/api/streams/{sid}/products").json["limit"] == 20


def test_streams_paging_sorting_filters(app, tables):
    st = tables["stream"]
    full = get(app, "/api/streams", sort="gpm", order="asc", limit=500).json["streams"]
    assert [s["stream_id"] for s in full] == list(st.sort_values(["gpm", "stream_id"])["stream_id"])
    paged = [
        s
        for o in range(0, len(st), 3)
        for s in get(app, "/api/streams", sort="gpm", order="asc", limit=3, offset=o).json["streams"]
    ]
    assert paged == full
    assert get(app, "/api/streams", offset=len(st)).json["streams"] == []
    for plat in st["platform"].unique():
        got = get(app, "/api/streams", platform=plat).json
        assert {s["stream_id"] for s in got["streams"]} == set(st[st.platform == plat].stream_id)
        assert got["total"] == int((st.platform == plat).sum())
    assert get(app, "/api/streams", platform="douyin,kuaishou").json["total"] == len(st)
    # date range on the stream's start: the evening's date keeps all, the next day none
    day = st["start"].min().strftime("%Y-%m-%d")
    assert get(app, "/api/streams", **{"from": day, "to": day}).json["total"] == int(
        (st["start"].dt.strftime("%Y-%m-%d") == day).sum()
    )
    nxt = (st["start"].max() + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    assert get(app, "/api/streams", **{"from": nxt}).json["total"] == 0
    cut = st["start"].sort_values().iloc[1]
    got = get(app, "/api/streams", **{"from": cut.isoformat()}).json
    assert got["total"] == int((st["start"] >= cut).sum())
    assert get(app, "/api/streams", to=cut.isoformat()).json["total"] == int((st["start"] < cut).sum())


def test_quality_and_models(app, built):
    q = get(app, "/api/quality").json
    assert [r["run_id"] for r in q["runs"]] == [s["run_id"] for s in built.summaries]
    for r, s in zip(q["runs"], built.summaries):
        for k in ("rows_in", "rows_out", "dropped", "duplicates", "late", "ts_corrected", "dropped_by_reason"):
            assert r[k] == s[k], k
    assert set(q["reasons"]) == {k for s in built.summaries for k in s["dropped_by_reason"]}
    assert q["clean_by_reason"] == {
        k: sum(s["dropped_by_reason"].get(k, 0) for s in built.summaries) for k in q["reasons"]
    }
    assert q["ingest"] == {"days": 7, "rows": 0, "objects": 0, "by_reason": {}, "by_day": {}}  # raw/ written directly
    m = get(app, "/api/models").json
    assert m["latest"] == MODEL_METAS[-1]["version"]
    assert [x["version"] for x in m["models"]] == [x["version"] for x in MODEL_METAS]
    assert m["models"][0]["metrics"] == MODEL_METAS[0]["metrics"]
    # one family per axis: scores (ranking + ratio) apart from the holdout sizes (counts)
    assert m["families"] == {"ranking": MODEL_SCORES, "ratio": MODEL_RATIOS, "count": MODEL_COUNTS}
    assert m["metrics"] == sorted(MODEL_SCORES + MODEL_RATIOS) and m["counts"] == MODEL_COUNTS
    # the promotion decision per version: the first served and was replaced, the second was rejected
    assert [x["status"] for x in m["models"]] == ["replaced", "rejected", "serving"]
    assert m["models"][1]["reason"].startswith("below baseline") and m["models"][1]["compared_to"] == "20261127T2300-a1"
    # the baselines each was compared against, the gate's block first
    b = m["models"][2]["baselines"]
    assert [x["block"] for x in b] == ["room/purchase/all", "catalogue/purchase/all"] and b[0]["primary"]
    assert b[0]["best_baseline"] == "own_then_stream" and set(b[0]["baselines"]) == {
        "popular",
        "itemknn",
        "own_then_stream",
    }
    assert b[0]["candidate"] == 0.452 and b[0]["current"] == 0.4 and b[0]["n_queries"] == 8877
    assert b[0]["ratio"] == pytest.approx(0.452 / 0.21)


def test_metric_families_and_model_statuses():
    from shared.dashboard.queries import metric_family, model_statuses

    fam = {k: metric_family(k, v) for k, v in MODEL_METAS[0]["metrics"].items()}
    assert fam["room_all_ndcg@10"] == "ranking" and fam["room_all_queries"] == "count"
    assert fam["ratio_vs_best_baseline"] == "ratio" and fam["k"] is None and fam["gate"] is None
    assert fam["primary"] is None  # a block name, not a number
    assert metric_family("precision@10", 0.07) == "ranking" and metric_family("n_users", 300) == "count"
    assert metric_family("flag", True) is None and metric_family("holdout", 7845) == "count"
    # a promote decision that lost the race (LATEST moved since): not promoted
    a = {"version": "a", "decision": {"promote": True, "compared_to": None}}
    b = {"version": "b", "decision": {"promote": True, "compared_to": None}}
    c = {"version": "c"}
    assert model_statuses([a, b, c], "a") == {"a": "serving", "b": "not promoted", "c": "unknown"}


def test_ingest_rejects_beside_clean_drops(tmp_path):
    """Rows the webhook refused (the real Ingestor: quarantine/ingest/) are counted per reason on
    /api/quality and on the quality page, beside clean's drops."""
    import orjson

    from shared.ingest import IngestConfig, Ingestor
    from shared.signing import signed_headers
    from tests import factories

    built = build_pipeline_store(tmp_path / "store", seed=5, n_streams=2, n_users=120, n_items=40, runs=1)
    store = built.store
    env = {"DAIHUO_SECRET_DOUYIN": "test-secret-douyin-0123"}
    ing = Ingestor(None, store, IngestConfig(), environ=env)  # every event refused: nothing to publish
    bad = [
        factories.event("purchase", platform="douyin", quantity=-1),
        factories.event("purchase", platform="douyin", quantity=0),
        factories.event("stream_enter", platform="douyin", user_id=12345),
        {"type": "superchat", "platform": "douyin"},
    ]
    for body in (orjson.dumps(bad), b"[{not json"):
        ans = ing.handle("POST", signed_headers("douyin", env["DAIHUO_SECRET_DOUYIN"], body), body)
        assert ans.status in (200, 400), ans.body
    a = App(lambda: store, check_every_s=0)
    q = get(a, "/api/quality").json
    ing_q = q["ingest"]
    assert ing_q["rows"] == 5 and ing_q["objects"] == 2, ing_q
    assert (
        ing_q["by_reason"]["quantity"] == 2 and ing_q["by_reason"]["user_id"] == 1 and ing_q["by_reason"]["body"] == 1
    )
    assert sum(ing_q["by_reason"].values()) == 5 and len(ing_q["by_day"]) == 1
    html = get(a, "/quality").payload.decode()
    assert 'data-chart="rejects"' in html and 'data-stage="ingest"' in html and 'data-stage="clean"' in html
    # an unreadable object is reported, not fatal
    day = next(iter(ing_q["by_day"]))  # today (UTC): the days counted end today
    store.put(f"quarantine/ingest/date={day}/0000000000001-x.ndjson.gz", b"not gzip")
    store.put("quarantine/ingest/date=2020-01-01/0000000000001-y.ndjson.gz", b"not gzip")  # beyond the 7 days
    store.put("state/clean-manifest.json", store.get("state/clean-manifest.json"))  # a new generation: reload
    q2 = get(a, "/api/quality").json["ingest"]
    assert q2["rows"] == 5 and "unreadable" in q2["error"]


def test_empty_store_and_broken_model_meta(tmp_path):
    store = open_store(str(tmp_path))
    a = App(lambda: store, check_every_s=0)
    assert get(a, "/api/streams").json == {
        "total": 0,
        "limit": 50,
        "offset": 0,
        "sort": "gmv",
        "order": "desc",
        "streams": [],
    }
    assert get(a, "/api/quality").json["runs"] == []
    assert get(a, "/api/models").json == {
        "latest": None,
        "models": [],
        "metrics": [],
        "counts": [],
        "families": {"ranking": [], "ratio": [], "count": []},
    }
    for page in ("/", "/quality", "/models"):
        r = get(a, page)
        assert r.status == 200 and "text/html; charset=utf-8" in r.headers["Content-Type"]
    assert get(a, "/api/streams/s-1").status == 404
    store.put("models/v1/meta.json", b"{not json")
    store.put("models/LATEST.json", b"[]")
    m = get(a, "/api/models").json
    assert m["latest"] is None and m["models"][0]["version"] == "v1" and "error" in m["models"][0]
    assert get(a, "/models").status == 200


# ----------------------------------------------------------------------------- errors
def test_unknown_stream_404(app):
    for path in (
        "/api/streams/nope",
        "/api/streams/nope/timeseries",
        "/api/streams/nope/funnel",
        "/api/streams/nope/products",
    ):
        r = get(app, path)
        assert r.status == 404 and r.json == {
            "error": "unknown_stream",
            "message": "unknown stream 'nope'",
            "stream_id": "nope",
        }
    assert get(app, "/api/nothing").status == 404 and get(app, "/api/nothing").json["error"] == "not_found"
    r = get(app, "/streams/nope")
    assert r.status == 404 and r.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    "path,args,param",
    [
        ("/api/streams", {"limit": "x"}, "limit"),
        ("/api/streams", {"limit": "0"}, "limit"),
        ("/api/streams", {"limit": "100000"}, "limit"),
        ("/api/streams", {"offset": "-1"}, "offset"),
        ("/api/streams", {"sort": "price"}, "sort"),
        ("/api/streams", {"order": "up"}, "order"),
        ("/api/streams", {"from": "27/11/2026"}, "from"),
        ("/api/streams", {"to": "soon"}, "to"),
        ("/api/streams", {"from": "2026-11-28", "to": "2026-11-26"}, "to"),
        ("/api/streams", {"colour": "red"}, "colour"),
        ("/api/streams/s-00000/timeseries", {"grain": "day"}, "grain"),
        ("/api/streams/s-00000/timeseries", {"bucket": "0"}, "bucket"),
        ("/api/streams/s-00000/timeseries", {"grain": "hour", "bucket": "5"}, "bucket"),
        ("/api/streams/s-00000/products", {"sort": "title"}, "sort"),
        ("/api/streams/s-00000/products", {"limit": "many"}, "limit"),
    ],
)
def test_bad_parameters_400(app, path, args, param):
    r = app.handle("GET", path, args)
    assert r.status == 400, r.body
    assert r.json["error"] == "bad_parameter" and r.json["parameter"] == param and r.json["message"]


def test_non_get_405(app):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = app.handle(method, "/api/streams")
        assert r.status == 405 and r.headers["Allow"] == "GET, HEAD" and r.json["error"] == "method_not_allowed"


# ----------------------------------------------------------------------------- caching
def test_etag_304_and_cache_control(app):
    r = get(app, "/api/streams")
    etag = r.headers["ETag"]
    assert r.headers["Cache-Control"] == "private, max-age=300" and etag.startswith('"')
    assert get(app, "/api/quality").headers["ETag"] == etag  # one data version for the whole function
    for inm in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        r2 = app.handle("GET", "/api/streams", {}, {"If-None-Match": inm})
        assert r2.status == 304 and r2.body == b"" and r2.headers["ETag"] == etag
    assert app.handle("GET", "/api/streams", {}, {"If-None-Match": '"stale"'}).status == 200
    assert app.handle("GET", "/", {}, {"If-None-Match": etag}).status == 304
    assert get(app, "/api/streams/nope").headers["Cache-Control"] == "no-store"


def test_reload_only_when_manifest_moves(tmp_path):
    store = open_store(str(tmp_path))
    sim = simulate(seed=9, n_streams=2, n_users=120, n_items=30, faults=None)
    objs = raw_objects(sim, n_parts=4)
    for k, d in objs[:2]:
        store.put(k, d)
    run_clean(store, None, clean_config())
    a = App(lambda: store, check_every_s=3600)
    first = get(a, "/api/streams").json
    etag = get(a, "/api/streams").headers["ETag"]
    assert a.source.loads == 1
    for k, d in objs[2:]:
        store.put(k, d)
    run_clean(store, None, clean_config())
    assert get(a, "/api/streams").json == first and a.source.loads == 1  # not checked again yet
    a.source.check_every_s = 0
    for _ in range(3):
        r = get(a, "/api/streams")
    assert a.source.loads == 2  # reloaded once, then unchanged
    assert r.headers["ETag"] != etag and r.json != first
    assert a.handle("GET", "/api/streams", {}, {"If-None-Match": etag}).status == 200
    exp = sim.truth.expected_clean()
    assert sum(s["orders"] for s in r.json["streams"]) == int((exp.type == "purchase").sum())


# ----------------------------------------------------------------------------- over HTTP
@pytest.fixture(scope="module")
def served(built):
    LOGS.mkdir(parents=True, exist_ok=True)
    fn = emulators.start_function(
        "analytics",
        env={"DAIHUO_STORE": built.url, "DAIHUO_OPERATOR_TOKENS": OPERATOR_TOKENS},
        log_dir=LOGS,
        timeout=60,
    )
    yield f"http://{fn.host}"
    fn.stop()


OPERATOR = "op-token-" + "a" * 24
OPERATOR_TOKENS = f"op-old-{'b' * 24},{OPERATOR}"  # two tokens: rotation
AUTH = {"Authorization": f"Bearer {OPERATOR}"}


def test_http_adapter(served, tables):
    r = requests.get(f"{served}/api/streams", params={"limit": 2, "sort": "orders"}, headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert len(r.json()["streams"]) == 2 and r.headers["Cache-Control"] == "private, max-age=300"
    r304 = requests.get(f"{served}/api/streams", headers={"If-None-Match": r.headers["ETag"], **AUTH}, timeout=30)
    assert r304.status_code == 304 and not r304.content
    assert requests.post(f"{served}/api/streams", headers=AUTH, timeout=30).status_code == 405
    r = requests.get(f"{served}/api/streams/missing/funnel", headers=AUTH, timeout=30)
    assert r.status_code == 404 and r.json()["error"] == "unknown_stream"
    r = requests.get(f"{served}/api/streams", params={"limit": "lots"}, headers=AUTH, timeout=30)
    assert r.status_code == 400 and r.json()["parameter"] == "limit"
    sid = tables["stream"]["stream_id"].iloc[0]
    r = requests.get(f"{served}/api/streams/{sid}/products", headers=AUTH, timeout=30)
    assert r.json()["products"][0]["title"] and "\\u" not in r.text  # UTF-8, not escaped
    r = requests.get(f"{served}/streams/{sid}", headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.content.decode("utf-8").count("<svg") >= 6
    h = requests.head(f"{served}/api/streams", headers=AUTH, timeout=30)
    assert h.status_code == 200 and not h.content
    r = requests.get(
        f"{served}/api/streams", params={"platform": "x" * 5000}, headers=AUTH, timeout=30
    )  # bounded before parsing
    assert r.status_code == 414 and r.json()["error"] == "uri_too_long"


SECURITY = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options")


@pytest.mark.parametrize("path", ["/", "/api/streams", "/quality", "/models", "/api/quality", "/streams/x"])
def test_unauthenticated_requests_are_refused(served, path):
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0000000000"},
        {"Authorization": OPERATOR},
        {"Cookie": "daihuo_operator=nope"},
        {"Authorization": "Bearer " + OPERATOR[:-1]},
    ):
        r = requests.get(served + path, headers=headers, timeout=30)
        assert r.status_code == 401, (path, headers, r.status_code)
        assert r.headers["WWW-Authenticate"].startswith("Bearer") and r.headers["Cache-Control"] == "no-store"
        assert all(h in r.headers for h in SECURITY)
        assert "gmv" not in r.text.lower()
    assert requests.get(served + "/healthz", timeout=30).status_code == 200  # liveness needs no identity


def test_operator_token_header_cookie_and_login(served):
    for tok in OPERATOR_TOKENS.split(","):  # both configured tokens work (rotation)
        assert (
            requests.get(served + "/api/streams", headers={"Authorization": f"Bearer {tok}"}, timeout=30).status_code
            == 200
        )
    r = requests.get(served + "/login", params={"token": OPERATOR}, allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    s = requests.Session()
    s.cookies.set("daihuo_operator", OPERATOR)
    r = s.get(served + "/", timeout=60)
    assert r.status_code == 200 and "<svg" in r.text
    assert r.headers["Content-Security-Policy"].endswith("frame-ancestors 'none'")
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Referrer-Policy"] == "no-referrer"
    assert (
        requests.get(
            served + "/login", params={"token": "guess-guess-guess"}, allow_redirects=False, timeout=30
        ).status_code
        == 401
    )


def test_no_token_configured_refuses_everything_and_iam_mode_trusts_cloud_run(built, tmp_path):
    from shared.dashboard.auth import OperatorAuth

    closed = OperatorAuth({})
    assert closed.check("/", {}, {"Authorization": "Bearer anything-at-all-123"}, {}).status == 401
    assert (
        OperatorAuth({"DAIHUO_OPERATOR_TOKENS": "short"}).check("/", {}, {"Authorization": "Bearer short"}, {}).status
        == 401
    )
    assert OperatorAuth({"DAIHUO_OPERATOR_AUTH": "iam"}).check("/", {}, {}, {}) is None
    assert (
        OperatorAuth({"DAIHUO_OPERATOR_AUTH": "bogus", "DAIHUO_OPERATOR_TOKENS": OPERATOR})
        .check("/", {}, AUTH, {})
        .status
        == 401
    )


def test_quality_page_when_clean_dropped_nothing(tmp_path):
    """A clean feed (or one whose bad rows ingest already refused): no empty chart, a sentence instead."""
    built = build_pipeline_store(tmp_path / "store", seed=5, n_streams=2, n_users=80, n_items=30, runs=1, faults=None)
    a = App(lambda: built.store, check_every_s=0)
    assert get(a, "/api/quality").json["clean_by_reason"] == {}
    html = get(a, "/quality").payload.decode()
    assert 'id="no-clean-drops"' in html and 'data-chart="dropped"' not in html and "table" in html
