"""Erase viewers from everything Daihuo keeps and serves (docs/privacy.md).

    python -m shared.pipeline.erase --store gs://bucket --user u-88172 [--user ...] [--user - (stdin)]
    python -m shared.pipeline.erase --store gs://bucket --pending      # finish / re-apply open requests
    python -m shared.pipeline.erase --store gs://bucket --all          # re-apply every request (in-flight rows)

1. **Request**: each viewer's hash goes into ``state/erasure.json`` (``shared.erasure``); from then on
   recommend refuses them personal results (within ``DAIHUO_ERASURE_REFRESH_S``).
2. **Learn**: raw/, quarantine/ and clean/ are read; every row of an erased viewer received up to the
   request (``received_at <= requested_at``) gives their event ids (a rerun finds the viewer by hash).
3. **Rewrite**: every object under raw/, clean/, quarantine/, state/dedupe/, catalog/, analytics/,
   reports/ that holds such a row -- the viewer's id as ``user_id``, one of their event ids, or the id
   as a token of any string (a comment quoting it) -- is written again without those rows as
   ``<name>~e<hash>.<ext>`` (a name derived from the old key and the erased set: a rerun after a crash
   writes the same name), the manifest maps old -> new keys (compare-and-swap), **then** the old object
   is deleted. Objects are never modified in place.
4. **Model**: train runs on the rewritten data (``shared.serving.train.run_train``); its version is
   served (LATEST moves to it even if the gate would keep the old one: a model holding erased viewers
   must not serve), then every other model version holding an erased viewer is deleted.
5. The entries get ``data_erased_at`` (after 3) and ``clean_model`` (after 4).

Idempotent: a rerun finds nothing left to rewrite. Any object the job cannot rewrite (unknown format)
that mentions an erased viewer is listed in ``unhandled`` and the exit code is 1.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared import erasure, layout
from shared.log import get_logger
from shared.runtime import faults
from shared.settings import settings

log = get_logger("erase")

PREFIXES = layout.PERSONAL_PREFIXES
_TOKEN = re.compile(rb"[A-Za-z0-9._:@-]+")
_SUFFIX = re.compile(r"~e[0-9a-f]{12}$")


def _split_ext(key: str) -> tuple[str, str]:
    base = key.rsplit("/", 1)[-1]
    for ext in (".ndjson.gz", ".ndjson", ".parquet", ".json.gz", ".json"):
        if base.endswith(ext):
            return key[: -len(ext)], ext
    return key, ""


def new_key(key: str, tag: str) -> str:
    stem, ext = _split_ext(key)
    return _SUFFIX.sub("", stem) + f"~e{tag}" + ext


class Targets:
    """The viewers being erased: hash -> cut-off (unix s), the plaintext ids learnt, their event ids."""

    def __init__(self, entries: dict[str, dict], ids: Iterable[str] = ()):
        self.cutoff = {h: (erasure.parse_iso(e.get("requested_at")) or time.time()) for h, e in entries.items()}
        self.ids: dict[str, str] = {}  # plaintext id -> hash
        self.eids: set[str] = set()
        self._hash: dict[str, str | None] = {}
        for u in ids:
            h = erasure.user_hash(u)
            if h in self.cutoff:
                self.ids[u] = h

    def target(self, user_id: Any) -> str | None:
        """The hash if ``user_id`` is an erased viewer (memoised per distinct id)."""
        if not isinstance(user_id, str):
            return None
        if user_id in self._hash:
            return self._hash[user_id]
        h = erasure.user_hash(user_id)
        h = h if h in self.cutoff else None
        self._hash[user_id] = h
        if h:
            self.ids[user_id] = h
        return h

    def before_cutoff(self, h: str, received_at: Any) -> bool:
        t = erasure.parse_iso(received_at) if not isinstance(received_at, (int, float)) else float(received_at)
        return t is None or t <= self.cutoff[h]

    @property
    def needles(self) -> set[bytes]:
        return {x.encode() for x in self.ids} | {x.encode() for x in self.eids}

    def tag(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.cutoff)).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------ row readers
def _lines(data: bytes) -> list[bytes]:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return [ln for ln in data.split(b"\n") if ln.strip()]


def _record(line: bytes) -> dict | None:
    """The event a raw / quarantine line holds (a quarantine row's ``raw``, parsed when it is a line)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    if "raw" in obj and ("reason" in obj or "reasons" in obj):  # a quarantine row
        raw = obj.get("raw")
        if isinstance(raw, str):
            try:
                raw = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raw = None
        if isinstance(raw, dict):
            return {**raw, "received_at": raw.get("received_at") or obj.get("received_at")}
        return {"received_at": obj.get("received_at"), "event_id": obj.get("event_id")}
    return obj


def _learn_lines(t: Targets, lines: list[bytes]) -> None:
    for ln in lines:
        rec = _record(ln)
        if rec is None:
            continue
        h = t.target(rec.get("user_id"))
        if h and t.before_cutoff(h, rec.get("received_at")) and isinstance(rec.get("event_id"), str):
            t.eids.add(rec["event_id"])


def _learn_table(t: Targets, table: pa.Table) -> None:
    if "user_id" not in table.column_names or "event_id" not in table.column_names:
        return
    users = table["user_id"]
    users = users.cast(pa.string()) if pa.types.is_dictionary(users.type) else users
    for u in pc.unique(users).to_pylist():
        h = t.target(u)
        if not h:
            continue
        mask = pc.equal(users, u)
        if "received_at" in table.column_names:
            rec = (
                pc.cast(table["received_at"], pa.timestamp("us", tz="UTC"))
                if pa.types.is_timestamp(table["received_at"].type)
                else None
            )
            if rec is not None:
                cut = pa.scalar(int(t.cutoff[h] * 1e6), pa.timestamp("us", tz="UTC"))
                mask = pc.and_(mask, pc.fill_null(pc.less_equal(rec, cut), True))
        eids = table["event_id"].filter(mask)
        eids = eids.cast(pa.string()) if pa.types.is_dictionary(eids.type) else eids
        t.eids.update(x for x in eids.to_pylist() if x)


# ------------------------------------------------------------------------------ rewriters
def _mentions(t: Targets, data: bytes) -> bool:
    needles = t.needles
    return bool(needles) and any(tok in needles for tok in _TOKEN.findall(data))


def _rewrite_lines(t: Targets, lines: list[bytes]) -> tuple[list[bytes], int]:
    needles, keep, dropped = t.needles, [], 0
    for ln in lines:
        rec = _record(ln)
        h = t.target(rec.get("user_id")) if rec else None
        if (
            h
            and not t.before_cutoff(h, rec.get("received_at"))
            and not (isinstance(rec.get("event_id"), str) and rec["event_id"] in t.eids)
        ):
            keep.append(ln)  # the same viewer, back after their erasure: new data, kept
            continue
        if h or any(tok in needles for tok in _TOKEN.findall(ln)):
            dropped += 1
            continue
        keep.append(ln)
    return keep, dropped


def _plain(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col


def _rewrite_table(t: Targets, table: pa.Table) -> tuple[pa.Table, int]:
    n = table.num_rows
    drop = pa.array(np.zeros(n, dtype=bool))
    ids = list(t.ids)
    pattern = (
        ("(^|[^A-Za-z0-9._:@-])(" + "|".join(re.escape(x) for x in ids) + ")($|[^A-Za-z0-9._:@-])") if ids else None
    )
    for name in table.column_names:
        col = table[name]
        typ = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            continue
        col = _plain(col)
        if name == "user_id" and ids:
            for u in ids:
                m = pc.fill_null(pc.equal(col, u), False)
                if "received_at" in table.column_names and pa.types.is_timestamp(table["received_at"].type):
                    cut = pa.scalar(int(t.cutoff[t.ids[u]] * 1e6), pa.timestamp("us", tz="UTC"))
                    rec = pc.cast(table["received_at"], pa.timestamp("us", tz="UTC"))
                    m = pc.and_(m, pc.fill_null(pc.less_equal(rec, cut), True))
                drop = pc.or_(drop, m)
            continue
        if t.eids and name in ("event_id",):
            drop = pc.or_(drop, pc.fill_null(pc.is_in(col, value_set=pa.array(sorted(t.eids))), False))
        if pattern:
            drop = pc.or_(drop, pc.fill_null(pc.match_substring_regex(col, pattern), False))
    dropped = int(pc.sum(pc.cast(drop, pa.int64())).as_py() or 0)
    if not dropped:
        return table, 0
    out = table.filter(pc.invert(drop))
    # rebuild dictionaries: a filtered dictionary column still holds every old value (the erased id)
    cols = []
    for f, col in zip(out.schema, out.columns):
        if pa.types.is_dictionary(f.type):
            col = pc.dictionary_encode(_plain(col)).cast(f.type) if len(col) else pa.chunked_array([], f.type)
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=out.schema), dropped


def _to_parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


# ------------------------------------------------------------------------------ models
def _model_holds(t: Targets, store, version: str) -> bool:
    from shared.adapters.storage import NotFound
    from shared.serving.registry import arrays_key, meta_key

    try:
        meta = store.get(meta_key(version))
    except NotFound:
        meta = b""
    if _mentions(t, meta):
        return True
    try:
        blob = store.get(arrays_key(version))
    except NotFound:
        return False
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        for name in z.files:
            a = z[name]
            if a.dtype.kind not in ("U", "S"):
                continue
            for v in np.unique(a.ravel()).tolist():
                v = v.decode() if isinstance(v, bytes) else v
                if t.target(v) or v in t.eids or (t.ids and _mentions(t, v.encode())):
                    return True
    return False


def _versions(store) -> list[str]:
    return sorted({k.split("/")[1] for k in store.list(layout.MODELS) if k.count("/") >= 2})


def _clean_models(t: Targets, store, train: bool, summary: dict) -> str | None:
    """Train on the rewritten data, serve that version, delete every other version holding a target.
    Returns the served version if it holds none of them."""
    from shared.serving.registry import Registry, arrays_key, meta_key

    reg = Registry(store)
    if train:
        from shared.serving.train import run_train

        res = run_train(store, None)
        summary["model"] = {"version": res.version, "promoted_by_gate": res.promoted, "reason": res.reason}
        pointer, gen = reg.latest()
        if res.version and (pointer or {}).get("version") != res.version:
            reg.promote(
                {
                    "version": res.version,
                    "promoted_at": erasure.now_iso(),
                    "previous": (pointer or {}).get("version"),
                    "reason": "erasure: the previous model held erased viewers",
                },
                gen,
            )
            summary["model"]["promoted_for_erasure"] = True
    pointer, _ = reg.latest()
    served = (pointer or {}).get("version")
    deleted = []
    for v in _versions(store):
        if v == served or not _model_holds(t, store, v):
            continue
        store.delete(meta_key(v))  # the commit marker first: a half-deleted version is "not written"
        store.delete(arrays_key(v))
        deleted.append(v)
    summary["models_deleted"] = deleted
    if served and _model_holds(t, store, served):
        summary["served_model_holds_erased"] = served
        return None
    return served


# ------------------------------------------------------------------------------ the job
def run_erase(
    store,
    *,
    users: Iterable[str] = (),
    mode: str = "pending",
    train: bool = True,
    now: float | None = None,
) -> dict[str, Any]:
    """Register ``users`` (if any), then erase every open entry (``mode="pending"``: no ``clean_model``
    yet) or every entry (``mode="all"``). See the module docstring."""
    from shared.adapters.storage import update_json

    users = [u for u in users if u]
    if users:
        erasure.request(store, users, now=now)
    doc, _ = erasure.load(store)
    entries = {h: e for h, e in (doc.get("entries") or {}).items() if mode == "all" or not e.get("clean_model")}
    summary: dict[str, Any] = {
        "users": len(entries),
        "rewritten": {},
        "deleted": [],
        "rows_removed": 0,
        "unhandled": [],
        "models_deleted": [],
    }
    if not entries:
        return {**summary, "status": "nothing to erase"}
    t = Targets(entries, users)
    # 2. learn: rows of the targets in raw/, quarantine/, clean/ -> their event ids
    keys = [k for p in PREFIXES for k in store.list(p)]
    for k in keys:
        if k.endswith((".ndjson.gz", ".ndjson")) and k.startswith((layout.RAW, layout.QUARANTINE)):
            _learn_lines(t, _lines(store.get(k)))
        elif k.endswith(".parquet") and k.startswith(layout.CLEAN):
            _learn_table(t, pq.read_table(io.BytesIO(store.get(k))))
    summary["event_ids"] = len(t.eids)
    # 3. rewrite every object that holds one of them
    tag = t.tag()
    plan: dict[str, str | None] = {}  # old key -> new key (None: nothing left, deleted)
    for k in keys:
        data = store.get(k)
        if k.endswith((".ndjson.gz", ".ndjson")):
            lines = _lines(data)
            keep, dropped = _rewrite_lines(t, lines)
            if not dropped:
                continue
            body = b"\n".join(keep) + b"\n" if keep else b""
            out = gzip.compress(body, mtime=0) if k.endswith(".gz") else body
        elif k.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(data))
            table, dropped = _rewrite_table(t, table)
            if not dropped:
                continue
            out = _to_parquet(table)
            keep = table.num_rows
        else:
            if k.endswith(".gz"):
                data = gzip.decompress(data)
            if _mentions(t, data):
                summary["unhandled"].append(k)
            continue
        nk = new_key(k, tag) if keep else None
        if nk:
            store.put(
                nk,
                out,
                content_type="application/vnd.apache.parquet" if nk.endswith(".parquet") else "application/gzip",
            )
        plan[k] = nk
        summary["rows_removed"] += dropped
    faults.point("erase:write", store, "after writing the rewritten copies, before the manifest moved")

    def remap(m):
        def one(k):
            return plan.get(k, k) if isinstance(k, str) else k

        if not m:
            return m
        m["done"] = [one(k) for k in m.get("done", []) if one(k) is not None]
        m["clean_files"] = [dict(f, key=one(f["key"])) for f in m.get("clean_files", []) if one(f["key"]) is not None]
        m["dedupe"] = [one(k) for k in m.get("dedupe", []) if one(k) is not None]
        m["catalog"] = [one(k) for k in m.get("catalog", []) if one(k) is not None]
        m["analytics"] = {n: one(k) for n, k in (m.get("analytics") or {}).items()}
        return m

    if plan and store.exists(layout.MANIFEST):
        layout.update_manifest(store, remap)
    faults.point("erase:manifest", store, "after the manifest moved, before the old objects were deleted")
    for k in plan:
        store.delete(k)
    summary["rewritten"] = {k: v for k, v in plan.items() if v}
    summary["deleted"] = [k for k, v in plan.items() if v is None]
    stamp = erasure.now_iso(now if now is not None else None)

    def mark(field_, value):
        def fn(d):
            for h in entries:
                if h in d["entries"]:
                    d["entries"][h][field_] = value
            return d

        update_json(store, erasure.ERASURE_KEY, fn, default=erasure.empty())

    if not summary["unhandled"]:
        mark("data_erased_at", stamp)
    # 4. models
    served = _clean_models(t, store, train, summary)
    if served and not summary["unhandled"]:
        mark("clean_model", served)
        summary["clean_model"] = served
    summary["status"] = "erased" if served and not summary["unhandled"] else "incomplete"
    log.info(
        "erasure run",
        extra={
            "users": len(entries),
            "rows_removed": summary["rows_removed"],
            "objects": len(plan),
            "status": summary["status"],
        },
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    from shared.adapters.storage import open_store

    ap = argparse.ArgumentParser(prog="python -m shared.pipeline.erase", description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default=settings().store)
    ap.add_argument("--user", action="append", default=[], help="a user id to erase ('-': one per line on stdin)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--pending", action="store_true", help="only finish open requests (the default)")
    g.add_argument("--all", action="store_true", help="re-apply every request (rows that arrived late)")
    ap.add_argument("--no-train", action="store_true", help="do not retrain (models holding erased viewers stay)")
    a = ap.parse_args(argv)
    users = []
    for u in a.user:
        users += [x.strip() for x in sys.stdin.read().splitlines() if x.strip()] if u == "-" else [u.strip()]
    out = run_erase(open_store(a.store), users=users, mode="all" if a.all else "pending", train=not a.no_train)
    print(orjson.dumps(out).decode())  # the last line of stdout (the logs are JSON lines too)
    return 0 if out["status"] in ("erased", "nothing to erase") else 1


if __name__ == "__main__":
    sys.exit(main())
