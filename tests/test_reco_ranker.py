"""The served recipe (shared.reco.recipe / ranker / rebuy): buy-again known answers, reasons that name
the largest contribution, no-pickle round trip, and the evaluation CLI's `--model served` ranking
exactly as the train function's recipe does."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from devtools.evaluate import _model_rankers
from devtools.simulator import SimConfig, simulate
from shared.reco import protocol as P
from shared.reco.ranker import FEATURE_GROUP, FEATURES, RoomRanker
from shared.reco.rebuy import RepeatStats, purchase_occasions
from shared.reco.recipe import env_recipe, fit_recipe
from shared.serving.train import TrainConfig, recipe_params

T0 = pd.Timestamp("2026-09-01", tz="UTC")


def cycle_world(n_users: int = 400, days: int = 120, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two consumables per viewer (c-*), each rebought every ~10 days, half a cycle apart; durables d-*
    bought once; a few popular noise items n-*."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        uid = f"u{u:04d}"
        a, b = rng.choice(20, 2, replace=False)
        phase = float(rng.uniform(0, 10))
        for c, t in ((f"c-{a:02d}", phase), (f"c-{b:02d}", phase + 5.0)):
            while t < days:
                rows.append((uid, c, T0 + pd.Timedelta(days=t), "purchase"))
                t += 10 + rng.normal(0, 0.7)
        for _ in range(2):
            rows.append(
                (uid, f"d-{rng.integers(0, 40):02d}", T0 + pd.Timedelta(days=float(rng.uniform(0, days))), "purchase")
            )
        for _ in range(3):
            rows.append(
                (uid, f"n-{rng.zipf(1.6) % 60:02d}", T0 + pd.Timedelta(days=float(rng.uniform(0, days))), "purchase")
            )
    ev = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "type"])
    ids = sorted(ev["item_id"].unique())
    items = pd.DataFrame(
        {"item_id": ids, "title": ids, "description": "", "category": [i[0] for i in ids], "price": 10.0}
    )
    return ev.sort_values("ts").reset_index(drop=True), items


@pytest.fixture(scope="module")
def cycles():
    ev, items = cycle_world()
    return ev, items, fit_recipe(ev, items, ev["ts"].max())


def test_repeat_stats_learn_rates_and_intervals(cycles):
    ev, items, m = cycles
    occ = purchase_occasions(ev, m.user_ids_, m.item_ids_)
    st = RepeatStats.fit(occ, len(m.item_ids_), m.base.category_)
    ids = m.item_ids_.tolist()
    cons = [ids.index(i) for i in ids if i.startswith("c-")]
    dur = [ids.index(i) for i in ids if i.startswith("d-")]
    assert np.all(np.abs(st.interval[cons] - 10.0) < 2.0), st.interval[cons]
    assert st.rate[cons].min() > 0.7 and st.rate[dur].max() < 0.3


def _rank_of(m: RoomRanker, user: str, item: str, now) -> int:
    got = [it["item_id"] for it in m.recommend(user, 30, now=now)["items"]]
    return got.index(item) if item in got else 99


def test_rebuy_comes_back_when_due_not_early(cycles):
    """A viewer who buys the same item every ~10 days sees it first around day 10, not on day 2 (when
    their other consumable is the one due)."""
    ev, items, m = cycles
    early, due = [], []
    for user in m.user_ids_[:80].tolist():
        mine = ev[(ev["user_id"] == user) & ev["item_id"].str.startswith("c-")]
        item, last = mine["item_id"].iloc[-1], mine["ts"].max()
        early.append(_rank_of(m, user, item, last + pd.Timedelta(days=2)))
        due.append(_rank_of(m, user, item, last + pd.Timedelta(days=10)))
    early, due = np.array(early), np.array(due)
    assert (due == 0).mean() > 0.8, due
    assert (early == 0).mean() < 0.5 and (early >= due).mean() > 0.9 and (early > due).mean() > 0.5, (early, due)
    w = m.heads["catalogue"]["weights"]
    assert w["rebuy_due"] > 0, w


def test_durable_bought_yesterday_is_not_offered(cycles):
    ev, items, m = cycles
    d = ev[ev["item_id"].str.startswith("d-")].sort_values("ts").groupby("user_id").tail(1).head(40)
    top5 = [
        it["item_id"]
        for r in d.itertuples()
        for it in m.recommend(r.user_id, 5, now=r.ts + pd.Timedelta(days=1))["items"]
        if it["item_id"] == r.item_id
    ]
    assert len(top5) <= 2, top5  # at most a stray one among 40 buyers


def test_buy_again_reason_names_the_date(cycles):
    ev, items, m = cycles
    user = m.user_ids_[0]
    mine = ev[(ev["user_id"] == user) & ev["item_id"].str.startswith("c-")]
    item, last = mine["item_id"].iloc[-1], mine["ts"].max()
    top = m.recommend(user, 1, now=last + pd.Timedelta(days=10))["items"][0]
    assert top["item_id"] == item and top["reason"]["kind"] in ("buy_again", "buy_often")
    assert top["reason"]["last_purchase"] == last.strftime("%Y-%m-%d")
    from shared.serving.recommend import explain

    text = explain(top["reason"], str)
    assert f"{last.month} 月 {last.day} 日" in text["text_zh"] or "你常买" in text["text_zh"]


@pytest.fixture(scope="module")
def room_world():
    sim = simulate(SimConfig.repeat_preset(seed=1, scale=0.3))
    ev = sim.truth.expected_clean()
    ev["ts"] = pd.to_datetime(ev["ts"], utc=True)
    ev = ev[["user_id", "item_id", "ts", "type", "stream_id", "price"]]
    items = sim.truth.catalog_frame()[["item_id", "title", "description", "category", "price"]]
    return sim, ev, items


def test_every_reason_names_the_largest_contribution(room_world):
    """The reason is the source (parts group) with the largest contribution, named by its largest
    feature — unless that sentence (or its anchor item) was already given higher in the list: then a
    reason of another positive contribution (shared.reco.ranker ``_list_reasons``). Never one from a
    part that did not raise the score, and never the same reason twice in a list."""
    from shared.reco.ranker import _reason_key

    sim, ev, items = room_world
    m = fit_recipe(ev, items, ev["ts"].max())
    users = ev.loc[ev["type"] == "purchase", "user_id"].drop_duplicates().head(25).tolist()
    streams = ev["stream_id"].dropna().unique()[-3:].tolist()
    seen_kinds = set()
    n_largest = n_items = n_repeats = 0
    for u in users:
        for s in [None] + streams:
            cand, F, info = m.candidates_and_features(u, stream_id=s)
            C = m.contributions(F, info["head"])
            pos = {str(x): k for k, x in enumerate(m.item_ids_[cand].tolist())}
            out = m.recommend(u, 8, stream_id=s)
            keys = [_reason_key(it["reason"]) for it in out["items"]]
            n_repeats += len(keys) - len(set(keys))  # only items with no other true reason left
            for j, it in enumerate(out["items"]):
                k = pos[it["item_id"]]
                parts = dict.fromkeys(it["parts"], 0.0)
                for f, g in FEATURE_GROUP.items():
                    parts[g] += C[k][FEATURES.index(f)]
                best = max(parts, key=lambda g: parts[g])  # the largest source...
                feats = [f for f in FEATURES if FEATURE_GROUP[f] == best]
                top = max(feats, key=lambda f: C[k][FEATURES.index(f)]) if parts[best] > 0 else None
                f = it["reason"]["feature"]
                if j == 0:
                    assert f == top, (it, top)  # ...named by its largest feature
                assert f is None or (C[k][FEATURES.index(f)] > 0 and parts[FEATURE_GROUP[f]] > 0), it
                n_largest += f == top
                n_items += 1
                assert all(abs(parts[g] - it["parts"][g]) < 1e-9 for g in parts)
                assert abs(m.intercept(info["head"]) + sum(it["parts"].values()) - it["score"]) < 1e-9
                seen_kinds.add(it["reason"]["kind"])
    assert {"buy_again", "popular_in_stream"} & seen_kinds and len(seen_kinds) >= 3, seen_kinds
    assert n_largest >= 0.5 * n_items  # most items still give their largest part
    assert n_repeats <= 0.1 * n_items, (n_repeats, n_items)  # the service groups these (test_reco_reasons)


def test_round_trip_without_pickle_gives_identical_answers(room_world):
    sim, ev, items = room_world
    m = fit_recipe(ev, items, ev["ts"].max())
    arrays = m.to_arrays()
    assert all(v.dtype != object for v in arrays.values())
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with np.load(io.BytesIO(buf.getvalue()), allow_pickle=False) as z:
        back = RoomRanker.from_arrays({k: z[k] for k in z.files}, m.meta)
    stream = ev["stream_id"].dropna().iloc[-1]
    for u in ev["user_id"].drop_duplicates().head(30).tolist() + [None]:
        for kw in ({}, {"stream_id": stream}, {"context_items": ["sku-000001"]}):
            if u is None and not kw:
                continue
            assert m.recommend(u, 10, **kw) == back.recommend(u, 10, **kw)


def test_cli_served_is_the_train_recipe(room_world, monkeypatch):
    """`--model served` ranks with exactly the train function's recipe (params from the same place)."""
    sim, ev, items = room_world
    monkeypatch.setenv("DAIHUO_TRAIN_PARAMS", '{"C": 0.5}')
    assert env_recipe() == recipe_params(TrainConfig()) and env_recipe()["C"] == 0.5
    sp_ = P.make_split(ev, split="global-time", in_stream=True, items=items, max_queries=150)
    [cli] = _model_rankers(["served"])
    cli.fit(sp_.train, items, sp_.reference_time)
    train_side = fit_recipe(sp_.train, items, sp_.reference_time, recipe_params(TrainConfig()))
    # one path for both (the compiled request kernel is ready after a background compile: a model's
    # first answers come from the reference path, equal up to float rounding, test_reco_kernel)
    cli.model.use_kernel = train_side.use_kernel = False
    for q in sp_.queries:
        a = cli.model.recommend(
            q.user_id, 10, stream_id=q.stream_id, allowed_items=q.allowed, room=q.room, now=q.ts, repeats=q.repeats
        )
        b = train_side.recommend(
            q.user_id, 10, stream_id=q.stream_id, allowed_items=q.allowed, room=q.room, now=q.ts, repeats=q.repeats
        )
        assert a == b


def test_narrow_filters_widen_the_pool_and_keep_the_question(room_world):
    """A category / price filter narrower than the candidate pool is filled from the popularity order,
    still scored by the catalogue head; bought items go with exclude_purchased, touched ones with
    filter_seen."""
    sim, ev, items = room_world
    m = fit_recipe(ev, items, ev["ts"].max())
    cat = items["category"].value_counts().index[-1]  # the rarest category
    n_cat = int((items["category"] == cat).sum())
    user = ev.loc[ev["type"] == "purchase", "user_id"].iloc[0]
    out = m.recommend(user, 10, category=cat)
    got = [it["item_id"] for it in out["items"]]
    assert len(got) == min(10, n_cat) and set(items.set_index("item_id").loc[got, "category"]) == {cat}
    cheap = m.recommend(user, 10, price_range=(None, float(items["price"].quantile(0.05))))["items"]
    assert cheap and all(
        float(items.set_index("item_id").loc[it["item_id"], "price"]) <= items["price"].quantile(0.05) for it in cheap
    )
    bought = set(ev.loc[(ev["user_id"] == user) & (ev["type"] == "purchase"), "item_id"])
    touched = set(
        ev.loc[(ev["user_id"] == user) & ev["type"].isin(["product_click", "add_to_cart", "purchase"]), "item_id"]
    )
    assert not bought & {it["item_id"] for it in m.recommend(user, 50, exclude_purchased=True)["items"]}
    assert not touched & {it["item_id"] for it in m.recommend(user, 50, filter_seen=True)["items"]}


def test_without_reasons_the_same_items_scores_and_parts(room_world):
    """``recommend(reasons=False)`` (the gate's rankings read only the order) answers the same items,
    scores and parts as with reasons, on the compiled and the reference path, each reason None."""
    sim, ev, items = room_world
    m = fit_recipe(ev, items, ev["ts"].max())
    stream = ev["stream_id"].dropna().iloc[-1]
    users = ev["user_id"].drop_duplicates().head(20).tolist() + [None]
    n = 0
    for use_kernel in (True, False):
        m.use_kernel = use_kernel
        for u in users:
            for kw in ({"stream_id": stream}, {"context_items": ["sku-000001"]}, {"repeats": False}):
                full, quiet = m.recommend(u, 10, **kw), m.recommend(u, 10, reasons=False, **kw)
                assert quiet["strategy"] == full["strategy"]
                assert [{**it, "reason": None} for it in full["items"]] == quiet["items"]
                assert all(it["reason"] is not None for it in full["items"])
                n += len(full["items"])
    m.use_kernel = True
    assert n > 200
