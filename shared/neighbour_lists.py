"""Precomputed item-item neighbour lists: what the Beam job (``pipelines/beam/itemknn.py``) writes and
what train reads when ``DAIHUO_TRAIN_NEIGHBOURS=precomputed`` (docs/scale.md, "Training's heavy step
on Beam"). numpy and the layout only (no pandas / scipy): the Beam environment imports it too.

Objects (keys in ``shared.layout``)::

    neighbours/<id>/arrays.npz   item_ids (<U, sorted: the index space), indptr (int64, one row per item),
                                 indices (int32 into item_ids, sorted per row), scores (float64);
                                 numeric and "<U" arrays only: np.load(..., allow_pickle=False)
    neighbours/<id>/meta.json    the definition, the window, the clean objects read (key + generation),
                                 the manifest it saw, counts, the arrays' size and SHA-256, created_at;
                                 written after the arrays and create-only: it commits the lists
    neighbours/LATEST.json       {"id", "meta", "window_end_us", "created_at"}: the newest lists, moved
                                 by compare-and-swap, never back to lists of an older window end

A row holds the item's top-N neighbours by (score desc, item id asc) AND every further neighbour tied
with the N-th score ("ties extended"), so that :func:`select` can pick the top-n (n <= N) under ANY
item order — the in-process kernel breaks ties by the model's item position, which is not the sorted
id order.

The rule train applies (:func:`mismatch`): the lists are used only if they were computed from exactly
the clean objects train read (the same keys with the same generations), over the same window (end and
start), with the same definition (cosine, binary, ``min_cooc``, action weights, time decay, no
sampling) and at least the N the model keeps; anything else is a reason to fit in process.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from typing import Any

import numpy as np

from shared import layout
from shared.adapters.storage import NotFound, ObjectStore, PreconditionFailed, get_json_with_generation

FORMAT = "daihuo.neighbours/1"
ARRAYS = ("item_ids", "indptr", "indices", "scores")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def iso_us(us: int) -> str:
    """ISO 8601 UTC of epoch microseconds, as ``pd.Timestamp.isoformat`` spells it (``+00:00``;
    microseconds only when not 0)."""
    from datetime import UTC, datetime, timedelta

    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))
    return t.isoformat()


def lists_id(inputs: list[dict], definition: dict, window: dict) -> str:
    """``<window end %Y%m%dT%H%M%SZ>-<16 hex>`` of the inputs (keys + generations), the definition and
    the window: the same clean objects and parameters give the same id (a re-run rewrites nothing new)."""
    full = {"inputs": [[i["key"], str(i["generation"])] for i in inputs], "definition": definition, "window": window}
    digest = hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:16]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(int(window["end_us"]) // 10**6))
    return f"{stamp}-{digest}"


# ------------------------------------------------------------------------------------ arrays
def encode(item_ids: np.ndarray, indptr: np.ndarray, indices: np.ndarray, scores: np.ndarray) -> bytes:
    """The arrays as an .npz whose bytes depend on the arrays only (fixed zip timestamps: a re-run
    writes the same object)."""
    arrays = {
        "item_ids": np.asarray(item_ids, dtype=str) if len(item_ids) else np.empty(0, dtype="<U1"),
        "indptr": np.asarray(indptr, dtype=np.int64),
        "indices": np.asarray(indices, dtype=np.int32),
        "scores": np.asarray(scores, dtype=np.float64),
    }
    _check(arrays)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, a, allow_pickle=False)
    return buf.getvalue()


def decode(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        missing = [k for k in ARRAYS if k not in z.files]
        if missing:
            raise ValueError(f"neighbour lists without {missing}")
        arrays = {k: z[k] for k in ARRAYS}
    _check(arrays)
    return arrays


def _check(a: dict[str, np.ndarray]) -> None:
    n = a["item_ids"].shape[0]
    if a["item_ids"].dtype.kind != "U" or a["indptr"].shape != (n + 1,):
        raise ValueError("neighbour lists: item_ids must be str and indptr one longer")
    if a["indices"].shape != a["scores"].shape or int(a["indptr"][-1]) != a["indices"].shape[0]:
        raise ValueError("neighbour lists: indptr, indices and scores disagree")
    if a["indices"].size and (a["indices"].min() < 0 or a["indices"].max() >= n):
        raise ValueError("neighbour lists: an index outside item_ids")


# ------------------------------------------------------------------------------------ store
def write(store: ObjectStore, lid: str, blob: bytes, meta: dict[str, Any]) -> dict[str, Any]:
    """The arrays, then ``meta.json`` (create-only: it commits the lists; a twin's record wins).
    Returns the meta stored."""
    akey = layout.neighbours_arrays_key(lid)
    store.put(akey, blob, content_type="application/octet-stream")
    meta = {**meta, "id": lid, "arrays": {"key": akey, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}}
    try:
        store.put_if_unchanged(
            layout.neighbours_meta_key(lid),
            json.dumps(meta, sort_keys=True).encode(),
            None,
            content_type="application/json",
        )
    except PreconditionFailed:
        meta = json.loads(store.get(layout.neighbours_meta_key(lid)))
    return meta


def publish(store: ObjectStore, meta: dict[str, Any], *, attempts: int = 20) -> bool:
    """Point ``neighbours/LATEST.json`` at these lists (compare-and-swap), unless it names lists of a
    newer window end. Returns whether it points at them."""
    pointer = {
        "id": meta["id"],
        "meta": layout.neighbours_meta_key(meta["id"]),
        "window_end_us": int(meta["window"]["end_us"]),
        "created_at": meta["created_at"],
    }
    for _ in range(attempts):
        try:
            cur, gen = get_json_with_generation(store, layout.NEIGHBOURS_LATEST)
        except NotFound:
            cur, gen = None, None
        if cur is not None and cur.get("id") == meta["id"]:
            return True
        if cur is not None and int(cur.get("window_end_us", 0)) > pointer["window_end_us"]:
            return False
        try:
            store.put_if_unchanged(
                layout.NEIGHBOURS_LATEST, json.dumps(pointer).encode(), gen, content_type="application/json"
            )
            return True
        except PreconditionFailed:
            continue
    return False


def latest(store: ObjectStore) -> tuple[dict[str, Any] | None, str]:
    """The newest lists' meta, or None and why not."""
    try:
        pointer = json.loads(store.get(layout.NEIGHBOURS_LATEST))
    except NotFound:
        return (
            None,
            f"no precomputed neighbour lists ({layout.NEIGHBOURS_LATEST} is absent: run pipelines.beam.itemknn)",
        )
    try:
        meta = json.loads(store.get(layout.neighbours_meta_key(pointer["id"])))
    except NotFound:
        return None, f"{layout.NEIGHBOURS_LATEST} names lists {pointer['id']} whose meta.json is absent"
    if meta.get("format") != FORMAT:
        return None, f"lists {pointer['id']} have format {meta.get('format')!r}, not {FORMAT!r}"
    return meta, ""


def load(store: ObjectStore, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """The lists' arrays, checked against the size and SHA-256 their meta recorded."""
    blob = store.get(meta["arrays"]["key"])
    if len(blob) != meta["arrays"]["bytes"] or hashlib.sha256(blob).hexdigest() != meta["arrays"]["sha256"]:
        raise ValueError(f"neighbour lists {meta['id']}: arrays.npz is not the object its meta.json recorded")
    return decode(blob)


# ------------------------------------------------------------------------------------ the rule
def mismatch(
    meta: dict[str, Any],
    *,
    inputs: list[dict],
    window_end_us: int,
    window_start_ns: int,
    window_days: float,
    half_life_days: float | None,
    action_weights: dict[str, float],
    neighbours: int,
    min_cooc: float,
) -> str | None:
    """Why these lists are NOT the neighbours train would fit on its data (None: they are)."""
    d = meta["definition"]
    if d.get("similarity") != "cosine" or d.get("binary") is not True:
        return f"lists {meta['id']} are not binary cosine ({d.get('similarity')}, binary={d.get('binary')})"
    if d.get("max_user_items") is not None:
        return f"lists {meta['id']} sampled heavy users (max_user_items={d['max_user_items']}): not the exact fit"
    if float(d.get("min_cooc", -1)) != float(min_cooc):
        return f"lists {meta['id']} have min_cooc={d.get('min_cooc')}, the model {min_cooc}"
    if int(d.get("neighbours", 0)) < int(neighbours):
        return f"lists {meta['id']} keep {d.get('neighbours')} neighbours per item, the model needs {neighbours}"
    hl = d.get("half_life_days")
    if (hl is None) != (half_life_days is None) or (hl is not None and float(hl) != float(half_life_days or 0)):
        return f"lists {meta['id']} decay with half_life_days={hl}, the model with {half_life_days}"
    if {k: float(v) for k, v in d.get("action_weights", {}).items()} != {
        k: float(v) for k, v in action_weights.items()
    }:
        return f"lists {meta['id']} were computed with other action weights"
    want = sorted((str(i["key"]), str(i["generation"])) for i in inputs)
    got = sorted((str(i["key"]), str(i["generation"])) for i in meta["inputs"])
    if want != got:
        new = len(set(want) - set(got))
        gone = len(set(got) - set(want))
        return (
            f"stale: lists {meta['id']} were computed from other clean objects than train read "
            f"({new} read now not in them, {gone} in them not read now: a clean run, retention or an erasure since)"
        )
    w = meta["window"]
    if int(w["end_us"]) != int(window_end_us) or int(w["start_ns"]) != int(window_start_ns):
        return f"lists {meta['id']} cover the window {w['start']}..{w['end']}, train another"
    if float(w["days"]) != float(window_days):
        return f"lists {meta['id']} have a {w['days']}-day window, train {window_days}"
    return None


def select(arrays: dict[str, np.ndarray], item_ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The lists in the model's item index (``item_ids``, every list item among them): per row the
    ``n`` largest scores, ties to the lower model position (the in-process kernel's rule), listed by
    position; float32 scores. Returns CSR ``(indptr, indices, data)`` over ``len(item_ids)`` rows."""
    item_ids = np.asarray(item_ids, dtype=str)
    m = item_ids.shape[0]
    order = np.argsort(item_ids, kind="stable")
    lid = arrays["item_ids"]
    at = np.searchsorted(item_ids[order], lid)
    ok = at < m
    ok[ok] = item_ids[order][at[ok]] == lid[ok]
    if not ok.all():
        raise ValueError(f"{int((~ok).sum())} items of the neighbour lists are not in the model's item index")
    pos = order[at].astype(np.int64)  # list position -> model position
    counts = np.diff(arrays["indptr"])
    rows = np.repeat(pos, counts)
    cols = pos[arrays["indices"].astype(np.int64)]
    s = arrays["scores"]
    o = np.lexsort((cols, -s, rows))  # by row, then score desc, then model position asc
    rows, cols, s = rows[o], cols[o], s[o]
    start = np.searchsorted(rows, rows, side="left")
    keep = (np.arange(rows.size) - start) < n
    rows, cols, s = rows[keep], cols[keep], s[keep]
    o = np.lexsort((cols, rows))
    rows, cols, s = rows[o], cols[o], s[o]
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=m), out=indptr[1:])
    return indptr, cols.astype(np.int32), s.astype(np.float32)
