"""The overview's charts pre-rendered by the clean run (shared/dashboard/prerender.py): the commit names them,
a cold instance serves them without loading a chart engine, and the page renders them itself, with a note,
when they are missing, unreadable, from another stream table or another renderer version. Real stores
(LocalStore), real clean runs, real rendering (vl-convert); the cold path in a fresh interpreter."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import orjson
import pytest

from shared import layout
from shared.dashboard import prerender
from shared.dashboard.app import App
from shared.pipeline.clean import run_clean
from tests.data_fixtures import build_pipeline_store, clean_config, raw_objects

ROOT = layout.__file__.rsplit("/shared/", 1)[0]
WORLD = {"seed": 5, "n_streams": 3, "n_users": 150, "n_items": 40}
_SVG = re.compile(r'<figure class="chart" data-chart="(rank_g[mp][vm])">(.*?)</figure>', re.S)


@pytest.fixture(scope="module")
def with_charts(tmp_path_factory):
    return build_pipeline_store(tmp_path_factory.mktemp("pre"), charts=True, **WORLD)


@pytest.fixture(scope="module")
def without_charts(tmp_path_factory):
    return build_pipeline_store(tmp_path_factory.mktemp("nopre"), charts=False, **WORLD)


def page(store, **args) -> str:
    r = App(lambda: store, check_every_s=0).handle("GET", "/", {k: str(v) for k, v in args.items()})
    assert r.status == 200
    return r.body.decode()


def figures(html: str) -> dict[str, str]:
    return dict(_SVG.findall(html))


def note(html: str) -> str | None:
    m = re.search(r'<p class="muted" id="charts-note">(.*?)</p>', html, re.S)
    return m.group(1) if m else None


def test_the_commit_names_the_charts_drawn_from_its_stream_table(with_charts):
    manifest, _ = layout.load_manifest(with_charts.store)
    last = with_charts.summaries[-1]["run_id"]
    assert manifest["charts"] == layout.charts_key(last) == f"analytics/charts/{last}.json"
    doc = orjson.loads(with_charts.store.get(manifest["charts"]))
    assert doc["kind"] == prerender.KIND and doc["stream"] == manifest.analytics["stream"]
    assert set(doc["charts"]) == set(prerender.OVERVIEW)
    for name, c in doc["charts"].items():
        assert c["svg"].startswith("<svg") and f'data-chart="{name}"' in c["svg"] and len(c["input"]) == 20


def test_a_cold_instance_serves_them_without_a_chart_engine(with_charts):
    """A fresh interpreter answers the overview with the stored SVGs; altair and vl-convert stay unimported."""
    code = f"""
import json, sys
from shared.adapters.storage import open_store
from shared.dashboard.app import App
r = App(lambda: open_store({with_charts.url!r})).handle("GET", "/", {{}})
print(json.dumps({{"status": r.status, "engines": sorted(m for m in ("altair", "vl_convert") if m in sys.modules),
                  "html": r.body.decode()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["status"] == 200 and got["engines"] == []
    manifest, _ = layout.load_manifest(with_charts.store)
    doc = orjson.loads(with_charts.store.get(manifest["charts"]))
    assert figures(got["html"]) == {n: c["svg"] for n, c in doc["charts"].items()}
    assert note(got["html"]) is None


def test_without_them_the_page_draws_the_same_charts_and_says_so(with_charts, without_charts):
    pre, now = page(with_charts.store), page(without_charts.store)
    # what the clean run's hook would have stored for this store's own stream table, byte for byte (not the
    # other store's charts: the two stores' runs are named by their clean time, and a minute boundary
    # between the two builds, as on a loaded machine, names their tables differently)
    import pyarrow.parquet as pq

    from shared.dashboard.data import _frame

    manifest, _ = layout.load_manifest(without_charts.store)
    key = manifest.analytics["stream"]
    doc = prerender.build_overview(_frame(pq.read_table(io.BytesIO(without_charts.store.get(key)))), key)
    assert figures(now) == {n: c["svg"] for n, c in doc["charts"].items()} and len(figures(now)) == 2
    assert set(figures(pre)) == set(figures(now))
    assert note(pre) is None
    assert "pre-rendered no charts" in note(now)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda doc: b"{not json", "could not be read"),
        (lambda doc: orjson.dumps({**doc, "render": "0"}), "another version"),
        (lambda doc: orjson.dumps({**doc, "stream": "analytics/stream/r-other.parquet"}), "another stream table"),
        (lambda doc: orjson.dumps({**doc, "kind": "x"}), "not an overview"),
        (
            lambda doc: orjson.dumps(
                {**doc, "charts": {n: {**c, "input": "0" * 20} for n, c in doc["charts"].items()}}
            ),
            "drawn from other rows",
        ),
        (None, "could not be read"),  # deleted
    ],
)
def test_unusable_charts_are_drawn_on_request(tmp_path, damage, reason):
    built = build_pipeline_store(tmp_path / "s", charts=True, runs=1, **WORLD)
    good = page(built.store)
    key = layout.load_manifest(built.store)[0]["charts"]
    if damage is None:
        built.store.delete(key)
    else:
        built.store.put(key, damage(orjson.loads(built.store.get(key))), content_type="application/json")
    html = page(built.store)
    assert figures(html) == figures(good) and reason in note(html)


def test_a_filtered_view_is_drawn_on_request_without_a_note(with_charts):
    api = App(lambda: with_charts.store).handle("GET", "/api/streams", {})
    platforms = sorted({s["platform"] for s in orjson.loads(api.body)["streams"]})
    html = page(with_charts.store, platform=platforms[0])
    assert len(figures(html)) == 2 and note(html) is None
    # the same rows as the default view (a no-op sort): the stored charts fit and are used
    assert figures(page(with_charts.store, sort="gmv")) == figures(page(with_charts.store))


def test_a_failing_renderer_does_not_stop_the_run_and_stale_charts_are_dropped(tmp_path):
    from devtools.simulator import simulate
    from shared.adapters.storage import open_store

    store = open_store(str(tmp_path / "s"))
    first, second = raw_objects(simulate(**WORLD), n_parts=2)
    store.put(*first, content_type="application/gzip")
    assert run_clean(store, None, clean_config(), charts=prerender.write_overview)["status"] == "committed"
    assert layout.load_manifest(store)[0].get("charts")

    def broken(store, run_id, analytics):
        raise RuntimeError("no V8 here")

    # the next run's renderer fails: it commits all the same and names no charts (the old ones were of the
    # old tables), so the page draws them on request
    store.put(*second, content_type="application/gzip")
    summary = run_clean(store, None, clean_config(), charts=broken)
    manifest = layout.load_manifest(store)[0]
    assert summary["status"] == "committed" and "charts" not in manifest and "charts" not in manifest.to_dict()
    assert "pre-rendered no charts" in note(page(store))


def test_a_commit_without_them_gets_them_on_the_next_tick(without_charts, tmp_path):
    """The Beam / Dataflow engines commit without the hook: ``ensure_overview`` (the clean function's tick)
    renders the committed stream table's charts and names them; a second call changes nothing."""
    import shutil

    from shared.adapters.storage import open_store

    shutil.copytree(without_charts.url, tmp_path / "s")
    store = open_store(str(tmp_path / "s"))
    assert "pre-rendered no charts" in note(page(store))
    key = prerender.ensure_overview(store)
    manifest, gen = layout.load_manifest(store)
    assert key == manifest["charts"] == layout.charts_key(manifest.runs[-1].run_id)
    html = page(store)
    assert note(html) is None and figures(html) == figures(page(without_charts.store))
    assert prerender.ensure_overview(store) == key and layout.load_manifest(store)[1] == gen
