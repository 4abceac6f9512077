"""The model store: immutable versions under ``models/<version>/`` and the ``models/LATEST.json``
pointer, moved only with a generation precondition.

Layout::

    models/<version>/arrays.npz   np.savez of the model's arrays (prefix "model.") and the serving
                                  extras (prefix "serving."): numeric and "<U" arrays only, so it loads
                                  with np.load(..., allow_pickle=False)
    models/<version>/meta.json    parameters, data window, input objects, metrics, decision, created_at,
                                  code version, the model's own meta (written LAST: it commits the version;
                                  afterwards only its decision changes: a re-gate, ``decision.promoted_at``)
    models/LATEST.json            {"version", "promoted_at", "previous", "metrics"}

Versioning: a version id is ``<window end>-<hash>`` of the input objects (keys + generations), the
training spec and the code version (``version_id``), so the same input gives the same version and a
redelivered trigger finds it written; ``Registry.try_promotion`` moves LATEST as a recorded
decision says, unless LATEST moved since the decision (then ``train`` gates again against the version
serving now).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared import layout
from shared.adapters.storage import ABSENT, NotFound, ObjectStore, PreconditionFailed, get_json_with_generation
from shared.reco import HybridRecommender
from shared.reco.ranker import RoomRanker
from shared.settings import settings

#: model classes a version may hold (``meta["model"]["class"]``); arrays + JSON only
MODEL_CLASSES: dict[str, type[HybridRecommender] | type[RoomRanker]] = {
    "HybridRecommender": HybridRecommender,
    "RoomRanker": RoomRanker,
}

MODELS = layout.MODELS
LATEST = layout.LATEST
arrays_key = layout.model_arrays_key
meta_key = layout.model_meta_key


_CODE_VERSION: str | None = None


def code_version() -> str:
    """``$DAIHUO_CODE_VERSION`` (e.g. a git sha set at deploy) or a hash of the model + serving code."""
    global _CODE_VERSION
    if settings().code_version:
        return str(settings().code_version)
    if _CODE_VERSION is None:
        root = Path(__file__).resolve().parent.parent
        h = hashlib.sha256()
        for p in sorted(list((root / "reco").glob("*.py")) + list((root / "serving").glob("*.py"))):
            h.update(p.name.encode())
            h.update(p.read_bytes())
        _CODE_VERSION = "src-" + h.hexdigest()[:12]
    return _CODE_VERSION


def version_id(inputs: list[dict[str, Any]], window_end: Any, spec: dict[str, Any]) -> str:
    """``<window end as %Y%m%dT%H%M%SZ>-<16 hex>``: a hash of the input objects (key + generation), the
    training ``spec`` and the code version. Same input, spec and code -> same version."""
    full = {"inputs": [[i["key"], str(i["generation"])] for i in inputs], **spec, "code": code_version()}
    digest = hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:16]
    stamp = pd.Timestamp(window_end).strftime("%Y%m%dT%H%M%SZ") if window_end else "empty"
    return f"{stamp}-{digest}"


def now_iso() -> str:
    """Now, UTC, ISO 8601 to the second (``created_at``, ``promoted_at``)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Served:
    """A loaded model plus the serving extras (titles, showcases) and its meta."""

    version: str
    model: RoomRanker | HybridRecommender
    meta: dict
    titles: np.ndarray  # "<U" per item index of the model
    showcase: dict[str, np.ndarray]  # stream_id -> item indices (int64)
    generation: str | None = None  # of LATEST.json when it was loaded

    def title(self, idx: int) -> str:
        return str(self.titles[idx]) if self.titles.size else ""


def encode_arrays(model: RoomRanker | HybridRecommender, extras: dict[str, np.ndarray]) -> bytes:
    arrays = {f"model.{k}": v for k, v in model.to_arrays().items()}
    arrays.update({f"serving.{k}": v for k, v in extras.items()})
    for k, v in arrays.items():
        if v.dtype == object:
            raise TypeError(f"array {k} has dtype object (would need pickle)")
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy stubs type **kwds as the allow_pickle flag
    return buf.getvalue()


def decode_arrays(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        model = {k[6:]: z[k] for k in z.files if k.startswith("model.")}
        extras = {k[8:]: z[k] for k in z.files if k.startswith("serving.")}
    return model, extras


def showcase_extras(item_ids: np.ndarray, showcases: dict[str, list[str]]) -> dict[str, np.ndarray]:
    index = {s: i for i, s in enumerate(item_ids.tolist())}
    streams = sorted(showcases)
    rows = [np.array(sorted({index[i] for i in showcases[s] if i in index}), dtype=np.int64) for s in streams]
    indptr = np.concatenate([[0], np.cumsum([r.size for r in rows])]).astype(np.int64)
    return {
        "showcase.stream_ids": np.array(streams, dtype=str) if streams else np.empty(0, dtype="<U1"),
        "showcase.indptr": indptr,
        "showcase.items": np.concatenate(rows) if rows else np.empty(0, dtype=np.int64),
    }


def build_served(version: str, model_arrays, extras, meta, generation=None) -> Served:
    cls = MODEL_CLASSES.get((meta.get("model") or {}).get("class", "HybridRecommender"))
    if cls is None:
        raise ValueError(f"unknown model class {(meta.get('model') or {}).get('class')!r}")
    model = cls.from_arrays(model_arrays, meta["model"])
    titles = extras.get("item_title", np.empty(0, dtype="<U1"))
    sids = extras.get("showcase.stream_ids", np.empty(0, dtype="<U1")).tolist()
    indptr = extras.get("showcase.indptr", np.zeros(1, dtype=np.int64))
    items = extras.get("showcase.items", np.empty(0, dtype=np.int64))
    showcase = {s: items[indptr[j] : indptr[j + 1]] for j, s in enumerate(sids)}
    return Served(version, model, meta, titles, showcase, generation)


class Registry:
    def __init__(self, store: ObjectStore):
        self.store = store

    # -- versions (immutable) ---------------------------------------------------------------
    def exists(self, version: str) -> bool:
        return self.store.exists(meta_key(version))

    def write_version(self, version: str, arrays_blob: bytes, meta: dict) -> bool:
        """Write arrays then meta (the commit marker), each only if absent. Returns False if the
        version was already committed (a redelivery or a concurrent twin): nothing is overwritten."""
        if self.exists(version):
            return False
        try:
            self.store.put(
                arrays_key(version), arrays_blob, content_type="application/octet-stream", if_generation_match=ABSENT
            )
        except PreconditionFailed:
            pass  # a crashed earlier attempt (same input -> same content) or a concurrent twin
        try:
            self.store.put(
                meta_key(version),
                json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str).encode(),
                content_type="application/json",
                if_generation_match=ABSENT,
            )
        except PreconditionFailed:
            return False
        return True

    def read_meta(self, version: str) -> dict:
        return json.loads(self.store.get(meta_key(version)))

    def load(self, version: str, generation: str | None = None) -> Served:
        meta = self.read_meta(version)
        model_arrays, extras = decode_arrays(self.store.get(arrays_key(version)))
        return build_served(version, model_arrays, extras, meta, generation)

    # -- the pointer ------------------------------------------------------------------------
    def latest(self) -> tuple[dict | None, str | None]:
        """(pointer, generation) or (None, None) before any promotion."""
        try:
            return get_json_with_generation(self.store, LATEST)
        except NotFound:
            return None, None

    def latest_generation(self) -> str | None:
        return self.store.generation(LATEST)

    def try_promotion(self, version: str, meta: dict[str, Any]) -> tuple[str, str]:
        """Carry out the decision recorded in a version's ``meta``: move LATEST to ``version`` if the
        decision says so and LATEST has not moved since it was taken (also after a crash between the
        version write and the move). Returns ``(status, reason)``, status one of ``promoted`` (LATEST
        moved now), ``serving`` (LATEST already names it: a redelivery or a twin), ``declined`` (the
        decision says keep) and ``moved`` (LATEST moved since the decision, or concurrently between
        the read and the compare-and-swap: the decision is stale, ``train`` re-runs the gate)."""
        d = meta["decision"]
        reason = d["reason"]
        pointer, gen = self.latest()
        if pointer and pointer.get("version") == version:
            return "serving", reason
        if not d["promote"]:
            return "declined", reason
        if gen != d.get("latest_generation"):
            return "moved", (
                f"not promoted: LATEST moved to {pointer and pointer.get('version')} since the decision "
                f"(was {d.get('compared_to')}); {reason}"
            )
        try:
            self.promote(
                {
                    "version": version,
                    "promoted_at": now_iso(),
                    "previous": d.get("compared_to"),
                    "metrics": meta["metrics"].get("gate", {}),
                },
                gen,
            )
        except PreconditionFailed as exc:  # someone moved it between read and swap
            return "moved", f"not promoted: LATEST moved concurrently ({type(exc).__name__}); {reason}"
        return "promoted", reason

    def complete_promotion(self, version: str, meta: dict[str, Any]) -> tuple[bool, str]:
        """``try_promotion`` as ``(promoted, reason)`` (no re-gate: ``train`` does that)."""
        status, reason = self.try_promotion(version, meta)
        return status in ("promoted", "serving"), reason

    def read_meta_with_generation(self, version: str) -> tuple[dict, str]:
        return get_json_with_generation(self.store, meta_key(version))

    def rewrite_meta(self, version: str, meta: dict, generation: str) -> str:
        """Replace ``meta.json`` iff it is still at ``generation`` (PreconditionFailed else). Only the
        decision part changes after the commit (a re-gate, the promotion mark); the arrays never do."""
        return self.store.put(
            meta_key(version),
            json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str).encode(),
            content_type="application/json",
            if_generation_match=generation,
        )

    def promote(self, pointer: dict[str, Any], expected: str | None) -> str:
        """Move LATEST iff it is still at ``expected`` (None: iff absent); PreconditionFailed else."""
        data = json.dumps(pointer, ensure_ascii=False, sort_keys=True).encode()
        return self.store.put_if_unchanged(LATEST, data, expected, content_type="application/json")
