"""A simulated A/B test of recommendations, end to end through the real code paths.

A simulated world is cleaned (simulator -> raw/ -> clean) and a real model is trained on it. Then two
serving experiments run on the in-process recommend service (``shared.serving.recommend``, the config in
``models/EXPERIMENT.json``): **ranker vs popular** (the trained model against the stream's bestsellers)
and an **A/A** split (the same model in both arms). The simulated viewers react to what they were shown
(``devtools.rec_sim``: impressions, then clicks and purchases driven by their true tastes); their events
go through the ingest function (HTTP, signed) -> Pub/Sub emulator -> archive -> raw/ -> clean, whose
``experiment`` table must show the ranker winning (CTR, conversion and GMV per impression, intervals
above zero), the A/A arms not differing, and counts equal to what was sent.

Run: ``pytest tests/test_experiment_ab.py -s`` prints the table (needs the Pub/Sub emulator; ~2 min).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict

import pandas as pd
import pytest
import requests

from devtools import emulators
from devtools.rec_sim import RecTraffic, summarise_truth
from devtools.simulator import _post_batch
from shared import identity, layout, runtime
from shared.pipeline.archive import ArchiveConfig, run_archive
from shared.pipeline.clean import read_analytics, run_clean
from shared.serving import experiments as sx
from tests.data_fixtures import build_pipeline_store, clean_config
from tests.logdir import LOGS

SECRETS = {"douyin": "ab-secret-douyin", "kuaishou": "ab-secret-kuaishou"}
PRIVATE, PUBLIC = identity.keygen()
N_REQUESTS = 3000
K = 8


def _send(url: str, events: list[dict]) -> int:
    by_plat: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        by_plat[e["platform"]].append(e)
    accepted = 0
    with requests.Session() as s:
        for plat, rows in by_plat.items():
            for i in range(0, len(rows), 500):
                for r in _post_batch(s, url, plat, SECRETS[plat], rows[i : i + 500], "ndjson", 30.0, 5, 10.0):
                    assert r.get("status") == 200, r
                    assert r.get("rejected") == 0, r
                    accepted += r["accepted"]
    return accepted


def _traffic(rec, sim, seed: int):
    traffic = RecTraffic(sim, seed=seed)
    reqs = traffic.requests(N_REQUESTS)
    answers = []
    for user, stream in reqs:
        ans = rec.handle(
            "GET",
            {"user_id": user, "stream_id": stream, "k": K},
            {"Authorization": "Bearer " + identity.mint(PRIVATE, "k", user)},
        )
        assert ans.status == 200, ans.body
        answers.append(ans.body)
    events, truth = traffic.react(reqs, answers)
    return answers, events, truth


@pytest.fixture(scope="module")
def ab(tmp_path_factory, pubsub_emulator):
    from shared.adapters.bus import Bus
    from shared.serving.recommend import ModelHolder, Recommender
    from shared.serving.train import run_train

    mp = pytest.MonkeyPatch()
    mp.setenv("DAIHUO_VIEWER_KEYS", json.dumps({"k": identity.b64url(PUBLIC)}))
    runtime.reset_all()
    root = tmp_path_factory.mktemp("ab-store")
    start = (pd.Timestamp.now("UTC").floor("h") - pd.Timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    built = build_pipeline_store(
        root,
        seed=3,
        n_streams=6,
        n_users=2400,
        n_items=150,
        faults=None,
        runs=1,
        mean_viewers_per_stream=300,
        start=start,
    )
    store, sim = built.store, built.sim
    res = run_train(store, None)
    assert res.promoted

    holder = ModelHolder(store, refresh_s=3600)
    rec = Recommender(holder)
    configs = {
        "ranker-vs-popular": {
            "experiment": "ranker-vs-popular",
            "arms": [
                {"name": "control", "weight": 0.5, "recipe": "popular"},
                {"name": "ranker", "weight": 0.5, "recipe": "model", "version": res.version},
            ],
        },
        "aa": {"experiment": "aa", "arms": [{"name": "control", "weight": 0.5}, {"name": "twin", "weight": 0.5}]},
    }
    sent: dict[str, list[dict]] = {}
    truth: dict[str, list[dict]] = {}
    answers: dict[str, list[dict]] = {}
    for seed, (name, cfg) in enumerate(configs.items(), start=1):
        store.put(layout.EXPERIMENT, json.dumps(cfg).encode(), content_type="application/json")
        holder.refresh()
        answers[name], sent[name], truth[name] = _traffic(rec, sim, seed)

    run = uuid.uuid4().hex[:8]
    env = {
        **pubsub_emulator.env,
        "DAIHUO_STORE": str(root),
        "DAIHUO_SECRET_DOUYIN": SECRETS["douyin"],
        "DAIHUO_SECRET_KUAISHOU": SECRETS["kuaishou"],
        "DAIHUO_EVENTS_TOPIC": f"viewer-events-{run}",
    }
    bus = Bus()
    bus.ensure_topic(f"viewer-events-{run}")
    bus.ensure_subscription(f"archive-{run}", f"viewer-events-{run}", ack_deadline_s=60)
    fn = emulators.start_function("ingest", env=env, log_dir=LOGS)
    try:
        n_sent = sum(len(v) for v in sent.values())
        assert _send(f"http://{fn.host}/", [e for v in sent.values() for e in v]) == n_sent
    finally:
        fn.stop()
    cfg = ArchiveConfig(subscription=f"archive-{run}", pull_timeout_s=2.0)
    archived = 0
    for _ in range(20):
        archived += run_archive(bus, store, cfg)["events"]
        if archived >= n_sent:
            break
    assert archived >= n_sent, (archived, n_sent)
    bus.close()
    summary = run_clean(store, None, clean_config())
    table = read_analytics(store, "experiment").to_pandas()
    yield {
        "store": store,
        "table": table,
        "sent": sent,
        "truth": truth,
        "answers": answers,
        "summary": summary,
        "version": res.version,
    }
    mp.undo()
    runtime.reset_all()


def _arms(ab, name):
    t = ab["table"]
    return t[t["experiment"] == name].set_index("arm")


def test_every_event_and_answer_is_attributed_to_its_arm(ab):
    for name, events in ab["sent"].items():
        arms = _arms(ab, name)
        by_arm: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for e in events:
            a = sx.parse_rec_id(e["rec_id"])[1]
            by_arm[a][e["type"]] += 1
            if e["type"] == "purchase":
                by_arm[a]["gmv"] += e["price"] * e["quantity"]
        assert set(arms.index) == set(by_arm), name
        for a, c in by_arm.items():
            row = arms.loc[a]
            assert row.impressions == c["rec_impression"], (name, a)
            assert row.clicks == c["product_click"] and row.orders == c["purchase"], (name, a)
            assert row.gmv == pytest.approx(c["gmv"]), (name, a)
            assert row.unmatched_actions == 0
        # answers per arm = the recommendations counted; the split follows the weights (0.5)
        n_answers = pd.Series([sx.parse_rec_id(x["rec_id"])[1] for x in ab["answers"][name]]).value_counts()
        for a in arms.index:
            assert arms.loc[a].recommendations == n_answers[a]
        m = arms["viewers"].sum()
        share = arms.loc["control"].viewers / m
        assert abs(share - 0.5) < 4 * (0.25 / m) ** 0.5, (name, share, m)


def test_the_better_recipe_wins_with_intervals_above_zero(ab):
    arms = _arms(ab, "ranker-vs-popular")
    ranker, control = arms.loc["ranker"], arms.loc["control"]
    print("\n" + arms[["viewers", "impressions", "clicks", "orders", "gmv", "ctr", "ctr_lo", "ctr_hi"]].to_string())
    for m in ("ctr", "conversion_rate", "gmv_per_impression"):
        print(
            f"{m}: control {control[m]:.4f} ranker {ranker[m]:.4f} diff {ranker[m + '_diff']:+.4f} "
            f"[{ranker[m + '_diff_lo']:+.4f}, {ranker[m + '_diff_hi']:+.4f}] lift {ranker[m + '_lift']:+.1%}"
        )
        assert ranker[m + "_significant"] and ranker[m + "_diff_lo"] > 0, m
    # the truth agrees: the ranker's lists were better for these viewers
    t = summarise_truth(ab["truth"]["ranker-vs-popular"])
    assert t["ranker"]["ctr"] > t["control"]["ctr"]


def test_an_aa_split_shows_no_significant_difference(ab):
    arms = _arms(ab, "aa")
    twin = arms.loc["twin"]
    assert arms.loc["control"].is_control and not twin.is_control
    for m in ("ctr", "conversion_rate", "gmv_per_impression"):
        print(f"A/A {m}: diff {twin[m + '_diff']:+.4f} [{twin[m + '_diff_lo']:+.4f}, {twin[m + '_diff_hi']:+.4f}]")
        assert not twin[m + "_significant"], m
        assert twin[m + "_diff_lo"] < 0 < twin[m + "_diff_hi"], m


def test_measured_rates_agree_with_the_truth(ab):
    """The simulator knows each shown list's true click / purchase probabilities: the measured rates
    lie within 3.5 standard errors of them (clicks are independent given the lists)."""
    for name in ab["sent"]:
        arms = _arms(ab, name)
        truth = summarise_truth(ab["truth"][name])
        for a, row in arms.iterrows():
            for m, tm in (("ctr", "ctr"), ("conversion_rate", "conversion")):
                p, n = truth[a][tm], row.impressions
                se = (p * (1 - p) / n) ** 0.5
                assert abs(row[m] - p) < 3.5 * se, (name, a, m, row[m], p)
                assert row[m + "_lo"] < row[m] < row[m + "_hi"]


def test_the_api_and_the_page_show_the_experiments(ab):
    from shared.dashboard.app import App

    app = App(lambda: ab["store"], check_every_s=0)
    ans = app.handle("GET", "/api/experiments")
    assert ans.status == 200
    body = json.loads(ans.body)
    names = [e["experiment"] for e in body["experiments"]]
    assert sorted(names) == ["aa", "ranker-vs-popular"]
    e = next(x for x in body["experiments"] if x["experiment"] == "ranker-vs-popular")
    assert e["control_arm"] == "control" and [a["arm"] for a in e["arms"]] == ["control", "ranker"]
    assert e["arms"][1]["ctr_significant"] is True and e["arms"][0]["ctr_significant"] is None
    page = app.handle("GET", "/experiments")
    assert page.status == 200
    html = page.body.decode()
    assert "ranker-vs-popular" in html and "ranker − control [95% CI]" in html and "<svg" in html
    # the viewer-level table is never served
    assert "rec_viewer" not in ans.body.decode() and "u-0" not in ans.body.decode()


def _validator(document: str, schema: str):
    import jsonschema

    from shared import openapi

    doc = json.loads((openapi.OUT_DIR / f"{document}.json").read_text())
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{schema}", "components": doc["components"]})


def test_answers_match_the_openapi_documents(ab):
    """With data (the contract test's fixture has no experiment): /api/experiments against
    ``Experiments`` and recommend answers inside an arm against ``Recommendations``."""
    from shared.dashboard.app import App

    ans = App(lambda: ab["store"], check_every_s=0).handle("GET", "/api/experiments")
    errors = [e.message for e in _validator("analytics", "Experiments").iter_errors(json.loads(ans.payload))]
    assert not errors, errors[:3]
    v = _validator("recommend", "Recommendations")
    for name, answers in ab["answers"].items():
        for a in answers[:200]:
            errors = [e.message for e in v.iter_errors(json.loads(json.dumps(a)))]
            assert not errors, (name, errors[:3])
