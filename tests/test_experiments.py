"""Recommendation experiments, piece by piece: the rec_id, the experiment config and its stable
assignment, recommend's answers under a config (in process, a real trained model), and the analytics
SQL's counts and intervals against a hand computation. The simulated A/B test through ingest, archive
and clean is tests/test_experiment_ab.py."""

from __future__ import annotations

import datetime as dt
import json
import math
import re

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from shared import contract, identity, layout
from shared.pipeline import experiments as px
from shared.serving import experiments as sx
from shared.serving.experiments import Experiment

# ------------------------------------------------------------------------------ rec_id


def test_rec_id_format_unique_sortable_and_a_contract_id():
    ids = [sx.rec_id("exp-1", "arm_b", now_ms=1_700_000_000_000 + i) for i in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(re.match(contract._ID, r) and len(r) <= 128 for r in ids)
    assert all(sx.parse_rec_id(r) == ("exp-1", "arm_b") for r in ids)
    assert [r.split(".")[3] for r in ids] == sorted(r.split(".")[3] for r in ids)  # time-ordered ULIDs
    assert sx.rec_id().startswith("r1.none.default.")
    for bad in ("", "r1.a.b", "r2.a.b." + "0" * 26, "r1.a.b." + "0" * 25, "r1.a.b." + "U" * 26, "r1.a.b.c." + "0" * 26):
        assert sx.parse_rec_id(bad) is None, bad
    # the ULID's first 10 characters are the milliseconds
    assert sx.ulid(0, bytes(10)) == "0" * 26
    assert sx.ulid((1 << 48) - 1, b"\xff" * 10) == "7" + "Z" * 25


def test_rec_id_matches_the_sql_pattern():
    assert px.REC_ID_SQL == sx.REC_ID_PATTERN and "'" not in px.REC_ID_SQL


# ------------------------------------------------------------------------------ config + assignment


def _exp(**kw):
    base = {
        "experiment": "e1",
        "arms": [{"name": "control", "weight": 0.3, "recipe": "popular"}, {"name": "b", "weight": 0.7}],
    }
    base.update(kw)
    return Experiment.parse(json.dumps(base))


def test_assignment_is_stable_and_splits_by_weight():
    e = _exp()
    users = [f"u-{i:06d}" for i in range(20_000)]
    arms = [e.assign(u).name for u in users]
    assert arms == [e.assign(u).name for u in users]  # a viewer always sees the same arm
    share = arms.count("control") / len(arms)
    assert abs(share - 0.3) < 0.015, share  # 0.3 +- 4.6 standard errors
    # another experiment reshuffles: its assignment is independent of this one
    other = [_exp(experiment="e2").assign(u).name for u in users]
    both = sum(a == "control" and b == "control" for a, b in zip(arms, other, strict=True)) / len(users)
    assert abs(both - 0.09) < 0.01, both
    # weights need not sum to 1 (normalised); one arm takes everyone
    solo = Experiment.parse({"experiment": "s", "arms": [{"name": "only", "weight": 5}]})
    assert {solo.assign(u).name for u in users[:500]} == {"only"}
    assert 0.0 <= sx.bucket("e", "u") < 1.0


@pytest.mark.parametrize(
    "doc, needle",
    [
        (b"{not json", "not JSON"),
        ({"experiment": "none", "arms": [{"name": "a", "weight": 1}]}, "reserved"),
        ({"experiment": "e", "arms": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]}, "unique"),
        ({"experiment": "e", "arms": [{"name": "a", "weight": 0}]}, "greater than 0"),
        ({"experiment": "e", "arms": [{"name": "a", "weight": 1, "recipe": "magic"}]}, "recipe"),
        ({"experiment": "e", "arms": [{"name": "a.b", "weight": 1}]}, "pattern"),
        ({"experiment": "e", "arms": []}, "at least 1"),
        ({"experiment": "e", "arms": [{"name": "a", "weight": 1}], "colour": "red"}, "colour"),
        ([1, 2], "dict"),
    ],
)
def test_bad_configs_are_refused_with_a_reason(doc, needle):
    with pytest.raises(ValueError) as exc:
        Experiment.parse(doc if isinstance(doc, bytes) else json.dumps(doc))
    assert needle.lower() in str(exc.value).lower()


# ------------------------------------------------------------------------------ the SQL
T0 = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)


def _rows():
    rows = []
    a, b, c = sx.rec_id("e1", "control"), sx.rec_id("e1", "b"), sx.rec_id("e1", "b")

    def ev(typ, u, item, rid, price=None, stream="s1", qty=None):
        rows.append(
            {"type": typ, "user_id": u, "item_id": item, "rec_id": rid, "stream_id": stream, "ts": T0, "price": price}
            | {"quantity": qty, "position": None}
        )

    for i in ("x", "y", "z"):
        ev("rec_impression", "u1", i, a)
    ev("product_click", "u1", "x", a)
    ev("product_click", "u1", "x", a)  # a second click on the same shown item: one click
    ev("purchase", "u1", "x", a, 10.0)
    ev("purchase", "u1", "x", a, 10.0, qty=2)  # two orders: one conversion, 3 units, GMV 30
    ev("product_click", "u1", "q", a)  # never shown in that recommendation: unmatched
    ev("purchase", "u1", "y", a, 7.0, stream="s2")  # another stream: unmatched there
    for i in ("x", "y"):
        ev("rec_impression", "u2", i, b)
    ev("product_click", "u2", "y", b)
    for i in ("x", "y"):
        ev("rec_impression", "u3", i, c)
    ev("add_to_cart", "u3", "x", c)
    ev("purchase", "u3", "x", c, 5.0)
    ev("purchase", "u3", "x", "not-a-rec-id", 5.0)  # ignored
    ev("purchase", "u4", "x", None, 5.0)  # untagged: not an experiment's
    for i in ("x", "y"):  # two answers of one item each
        ev("rec_impression", "u5", i, sx.rec_id("e1", "control"))
    ev("rec_impression", "u6", "x", sx.rec_id("e2", "solo"))
    return rows


def _compute(rows):
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.register("src", pa.Table.from_pylist(rows))
    px.compute(con, "src")
    return con.sql("SELECT * FROM a_rec_viewer").df(), con.sql("SELECT * FROM a_experiment").df()


def _wilson(k, n, z=px.Z):
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, c - h), min(1.0, c + h)


def _ratio_se(y, n):
    y, n = np.asarray(y, float), np.asarray(n, float)
    m, r = len(y), y.sum() / n.sum()
    return math.sqrt(m / (m - 1) * ((y - r * n) ** 2).sum() / n.sum() ** 2)


def test_counts_attribution_and_intervals_by_hand():
    rv, ex = _compute(_rows())
    assert set(rv.columns) == set(px.REC_VIEWER_COLS)
    assert list(ex.columns) == px.EXPERIMENT_COLS
    u1 = rv[(rv.user_id == "u1") & (rv.stream_id == "s1")].iloc[0]
    assert (u1.impressions, u1.clicks, u1.conversions, u1.orders, u1.units, u1.gmv) == (3, 1, 1, 2, 3, 30.0)
    assert u1.unmatched_actions == 1
    s2 = rv[rv.stream_id == "s2"].iloc[0]
    assert (s2.impressions, s2.unmatched_actions, s2.gmv) == (0, 1, 0.0)
    assert "u4" not in set(rv.user_id)  # untagged and malformed ids are no experiment's
    e1 = ex[ex.experiment == "e1"].set_index("arm")
    ctl, b = e1.loc["control"], e1.loc["b"]
    assert ctl.is_control and not b.is_control and set(e1.control_arm) == {"control"}
    assert (ctl.viewers, ctl.recommendations, ctl.impressions, ctl.clicks, ctl.gmv) == (2, 3, 5, 1, 30.0)
    assert (b.viewers, b.impressions, b.clicks, b.carts, b.conversions, b.gmv) == (2, 4, 1, 1, 1, 5.0)
    assert ctl.unmatched_actions == 2
    assert ctl.ctr == pytest.approx(0.2) and (ctl.ctr_lo, ctl.ctr_hi) == pytest.approx(_wilson(1, 5))
    assert (b.conversion_rate_lo, b.conversion_rate_hi) == pytest.approx(_wilson(1, 4))
    # GMV per impression: delta method clustered by viewer (u1: 30 over 3, u5: 0 over 2)
    se_c = _ratio_se([30, 0], [3, 2])
    assert ctl.gmv_per_impression == pytest.approx(6.0)
    assert (ctl.gmv_per_impression_lo, ctl.gmv_per_impression_hi) == pytest.approx((6 - px.Z * se_c, 6 + px.Z * se_c))
    se_b = _ratio_se([0, 5], [2, 2])
    d = 1.25 - 6.0
    assert b.gmv_per_impression_diff == pytest.approx(d)
    assert b.gmv_per_impression_diff_lo == pytest.approx(d - px.Z * math.hypot(se_b, se_c))
    assert b.gmv_per_impression_lift == pytest.approx(d / 6.0)
    assert b.ctr_diff == pytest.approx(0.25 - 0.2) and not b.ctr_significant
    assert ctl.ctr_diff is None or math.isnan(ctl.ctr_diff)  # the control's own row has no difference
    # one viewer: no variance, so no interval (null), never a fake zero-width one
    solo = ex[ex.experiment == "e2"].iloc[0]
    assert solo.viewers == 1 and solo.is_control and math.isnan(solo.gmv_per_impression_lo)


def test_a_clear_difference_is_significant_and_no_difference_is_not():
    rng = np.random.default_rng(0)
    rows = []
    for arm, p in (("control", 0.05), ("b", 0.10), ("c", 0.05)):
        for u in range(400):
            rid = sx.rec_id("big", arm)
            for i in range(10):
                rows.append(
                    dict(type="rec_impression", user_id=f"{arm}{u}", item_id=f"i{i}", rec_id=rid, stream_id="s")
                )
                if rng.random() < p:
                    rows.append(
                        dict(type="product_click", user_id=f"{arm}{u}", item_id=f"i{i}", rec_id=rid, stream_id="s")
                    )
    for r in rows:
        r.update(ts=T0, price=None, quantity=None, position=None)
    _, ex = _compute(rows)
    e = ex.set_index("arm")
    assert e.loc["b"].ctr_significant and e.loc["b"].ctr_diff_lo > 0
    assert not e.loc["c"].ctr_significant and e.loc["c"].ctr_diff_lo < 0 < e.loc["c"].ctr_diff_hi


def test_input_without_rec_columns_gives_empty_tables():
    con = duckdb.connect()
    con.register("src", pa.table({"type": ["like"], "user_id": ["u"], "stream_id": ["s"]}))
    px.compute(con, "src")
    assert con.execute("SELECT count(*) FROM a_experiment").fetchone() == (0,)
    assert [d[0] for d in con.sql("SELECT * FROM a_experiment").description] == px.EXPERIMENT_COLS


def test_layout_declares_the_tables():
    assert {"rec_viewer", "experiment"} <= set(layout.ANALYTICS_TABLES)
    assert "rec_viewer" in layout.VIEWER_TABLES and "experiment" not in layout.VIEWER_TABLES
    assert layout.EXPERIMENT == "models/EXPERIMENT.json"


# ------------------------------------------------------------------------------ recommend under a config
PRIVATE, PUBLIC = identity.keygen()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from devtools.simulator import SimConfig, simulate
    from shared.adapters.storage import open_store
    from shared.serving.data import write_clean_from_frames
    from shared.serving.train import run_train

    mp = pytest.MonkeyPatch()
    mp.setenv("DAIHUO_VIEWER_KEYS", json.dumps({"k": identity.b64url(PUBLIC)}))
    from shared import runtime

    runtime.reset_all()  # the verifier is built with these keys
    sim = simulate(SimConfig(seed=4, n_streams=3, n_users=400, n_items=80, mean_viewers_per_stream=200))
    store = open_store(str(tmp_path_factory.mktemp("exp-store")))
    write_clean_from_frames(store, sim.truth.expected_clean(), sim.truth.catalog_frame())
    res = run_train(store, None)
    assert res.promoted
    yield {"store": store, "sim": sim, "version": res.version}
    mp.undo()
    runtime.reset_all()


def _ask(rec, user, stream=None, **kw):
    args = {"user_id": user, **({"stream_id": stream} if stream else {}), **kw}
    ans = rec.handle("GET", args, {"Authorization": "Bearer " + identity.mint(PRIVATE, "k", user)})
    assert ans.status == 200, ans.body
    return ans


def test_answers_carry_a_rec_id_and_the_arm(served):
    from shared.serving.recommend import ModelHolder, Recommender

    store, sim = served["store"], served["sim"]
    stream = sim.world.streams[0]["stream_id"]
    holder = ModelHolder(store, refresh_s=3600)
    rec = Recommender(holder)
    plain = _ask(rec, "u-000001", stream)
    assert plain.body["experiment"] is None and plain.body["rec_id"].startswith("r1.none.default.")
    assert plain.headers["X-Rec-Id"] == plain.body["rec_id"]
    assert _ask(rec, "u-000001", stream).body["rec_id"] != plain.body["rec_id"]  # unique per answer
    # an anonymous request has an id too, and no arm
    anon = rec.handle("GET", {"stream_id": stream})
    assert anon.status == 200 and anon.body["experiment"] is None and sx.parse_rec_id(anon.body["rec_id"])

    cfg = {
        "experiment": "pop-vs-model",
        "arms": [{"name": "control", "weight": 1, "recipe": "popular"}, {"name": "ranker", "weight": 1}],
    }
    store.put(layout.EXPERIMENT, json.dumps(cfg).encode())
    holder.refresh()
    e = Experiment.parse(cfg)
    seen = set()
    for u in range(40):
        user = f"u-{u:06d}"
        b = _ask(rec, user, stream).body
        arm = e.assign(user)
        assert b["experiment"] == {
            "id": "pop-vs-model",
            "arm": arm.name,
            "recipe": arm.recipe,
            "model_version": served["version"],
            "counted": True,
        }
        assert sx.parse_rec_id(b["rec_id"]) == ("pop-vs-model", arm.name)
        assert b["user_id"] == user
        if arm.recipe == "popular":  # asked as for a stranger: the stream's bestsellers, the same for all
            assert b["strategy"] == "stream"
            seen.add(tuple(i["item_id"] for i in b["items"]))
        assert _ask(rec, user, stream).body["experiment"]["arm"] == arm.name  # stable
    assert len(seen) == 1

    # a pinned version that does not exist: its viewers get LATEST, tagged outside the experiment
    cfg["arms"][1]["version"] = "20990101T000000Z-0000000000000000"
    store.put(layout.EXPERIMENT, json.dumps(cfg).encode())
    holder.refresh()
    e = Experiment.parse(cfg)
    user = next(f"u-{u:06d}" for u in range(100) if e.assign(f"u-{u:06d}").name == "ranker")
    b = _ask(rec, user, stream).body
    assert b["experiment"]["counted"] is False and "unavailable" in b["experiment"]["status"]
    assert b["rec_id"].startswith("r1.none.default.") and b["model_version"] == served["version"]

    # the pinned version = a real one: served by it (here LATEST itself)
    cfg["arms"][1]["version"] = served["version"]
    store.put(layout.EXPERIMENT, json.dumps(cfg).encode())
    holder.refresh()
    assert _ask(rec, user, stream).body["experiment"]["counted"] is True

    # an invalid config: no experiment, the error kept; removing it: no experiment either
    store.put(layout.EXPERIMENT, b'{"experiment": "x", "arms": "many"}')
    holder.refresh()
    assert holder.experiment is None and "EXPERIMENT.json" in holder.experiment_error
    assert _ask(rec, user, stream).body["experiment"] is None
    store.put(layout.EXPERIMENT, json.dumps({**cfg, "enabled": False}).encode())
    holder.refresh()
    assert holder.experiment is not None and _ask(rec, user, stream).body["experiment"] is None
    store.delete(layout.EXPERIMENT)
    holder.refresh()
    assert holder.experiment is None and holder.experiment_error is None


def test_a_pinned_version_serves_its_arm_and_is_checked_for_erasure(served):
    """An arm pinning another version is answered by it (loaded by the refresh, next to LATEST); the
    erasure rule is applied against that version, not LATEST's."""
    from shared.serving.recommend import ModelHolder, Recommender

    store, v = served["store"], served["version"]
    old = "20200101T000000Z-00000000000000aa"  # a copy of the model under another version id
    store.put(layout.model_arrays_key(old), store.get(layout.model_arrays_key(v)))
    meta = json.loads(store.get(layout.model_meta_key(v)))
    store.put(layout.model_meta_key(old), json.dumps({**meta, "version": old}).encode())
    cfg = {
        "experiment": "pinned",
        "arms": [{"name": "control", "weight": 1}, {"name": "old", "weight": 1, "version": old}],
    }
    store.put(layout.EXPERIMENT, json.dumps(cfg).encode())
    holder = ModelHolder(store, refresh_s=3600)
    rec = Recommender(holder)
    e = Experiment.parse(cfg)
    users = [f"u-{u:06d}" for u in range(60)]
    on_old = next(u for u in users if e.assign(u).name == "old")
    on_ctl = next(u for u in users if e.assign(u).name == "control")
    b = _ask(rec, on_old).body
    assert b["model_version"] == old and b["experiment"]["model_version"] == old and b["experiment"]["counted"]
    assert _ask(rec, on_ctl).body["model_version"] == v
    assert set(holder.pinned) == {old}
    # the erasure list refuses the old version only: its arm answers as for a stranger
    rec.erasures.refuses = lambda user, version, created: version == old
    b = _ask(rec, on_old).body
    assert b["personal"] is False and b["identity"] == "erased" and b["model_version"] == old
    assert _ask(rec, on_ctl).body["personal"] is True
    store.delete(layout.EXPERIMENT)
    holder.refresh()
    assert holder.pinned == {} and _ask(rec, on_old).body["model_version"] == v


def test_api_and_page_before_any_experiment(tmp_path):
    from shared.adapters.storage import open_store
    from shared.dashboard.app import App

    app = App(lambda: open_store(str(tmp_path)), check_every_s=0)
    ans = app.handle("GET", "/api/experiments")
    assert ans.status == 200 and json.loads(ans.body) == {"experiments": []}
    page = app.handle("GET", "/experiments")
    assert page.status == 200 and "no experiment yet" in page.body.decode()
    assert app.handle("GET", "/api/experiments", {"x": "1"}).status == 400  # unknown parameter
    assert app.handle("POST", "/api/experiments").status == 405
