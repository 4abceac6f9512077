"""OpenAPI 3.1 documents of the HTTP functions, one per function (each is its own service/URL).

``python -m shared.openapi`` writes ``schema/openapi/<function>.json``; a test checks the committed
files equal what this module generates and runs schemathesis against each function served by
functions-framework. The ingest request schema is the event contract itself (``schema/events.v1.json``),
so the contract, the validator and the API description cannot drift apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shared.contract import json_schema
from shared.dashboard import queries
from shared.pipeline.analytics import STREAM_COLS
from shared.pipeline.outputs import COHORT_GRAINS
from shared.serving import experiments

OUT_DIR = Path(__file__).resolve().parent.parent / "schema" / "openapi"
EXP_NAME = experiments.NAME
REC_ID = {"type": "string", "pattern": experiments.REC_ID_PATTERN, "maxLength": 128}

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _error(description: str, headers: dict | None = None) -> dict:
    out = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        out["headers"] = headers
    return out


def ingest() -> dict:
    events = json_schema()
    defs = events.pop("$defs")
    record = {k: v for k, v in events.items() if k not in ("$schema", "$id", "title", "description")}
    # schemas referenced as #/$defs/X in the contract live under components/schemas in OpenAPI
    text = json.dumps({"defs": defs, "record": record}).replace("#/$defs/", "#/components/schemas/")
    moved = json.loads(text)
    sig_headers = [
        {
            "name": "X-Daihuo-Platform",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "pattern": "^[a-z0-9_]{1,32}$"},
            "description": "the sending platform",
        },
        {
            "name": "X-Daihuo-Timestamp",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
            "description": "unix seconds at signing; must be within 300 s",
        },
        {
            "name": "X-Daihuo-Signature",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "pattern": "^v1=[0-9a-f]{64}$"},
            "description": "v1=<hex HMAC-SHA256(secret, timestamp + '.' + body)>",
        },
    ]
    result_item = {
        "type": "object",
        "required": ["index", "status"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "event_id": {"type": ["string", "null"]},
            "status": {"enum": ["accepted", "rejected"]},
            "reasons": {"type": "array", "items": {"type": "string"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Daihuo ingest webhook",
            "version": "1.0.0",
            "description": "Receives signed viewer-action webhooks and publishes them to Pub/Sub. "
            "Limits: body 1 MiB, 1000 events, 16 KiB per event.",
        },
        "paths": {
            "/": {
                "post": {
                    "operationId": "ingest",
                    "parameters": sig_headers,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Record"},
                                        {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Record"},
                                            "maxItems": 1000,
                                        },
                                    ]
                                }
                            },
                            "application/x-ndjson": {
                                "schema": {"type": "string"},
                                "description": "one Record per line",
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "processed; rejected events are quarantined with their reasons",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestResult"}}},
                        },
                        "400": _error("the body is not JSON, a JSON array or NDJSON"),
                        "401": _error("missing/invalid signature, unknown platform, or timestamp outside the window"),
                        "413": _error("body, event count or one event over the limits"),
                        "503": _error(
                            "Pub/Sub or storage unavailable; nothing accepted",
                            {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}},
                        ),
                    },
                },
                "get": {"operationId": "ingestWrongMethod", "responses": {"405": _error("only POST is allowed")}},
            }
        },
        "components": {
            "schemas": {
                "Error": ERROR,
                "Record": moved["record"],
                **moved["defs"],
                "IngestResult": {
                    "type": "object",
                    "required": ["accepted", "rejected", "results"],
                    "properties": {
                        "accepted": {"type": "integer", "minimum": 0},
                        "rejected": {"type": "integer", "minimum": 0},
                        "messages": {"type": "integer", "minimum": 0},
                        "received_at": {"type": "string"},
                        "results": {"type": "array", "items": result_item},
                    },
                },
            }
        },
    }


# ------------------------------------------------------------------------------------- recommend
# Custom string formats are annotations only (validators ignore unknown formats); the contract test
# registers a schemathesis strategy for each, so generated requests name users/streams/items that exist.
F_USER, F_STREAM, F_ITEM, F_ITEMS = "daihuo-user-id", "daihuo-stream-id", "daihuo-item-id", "daihuo-item-id-list"
ID_MAX = 128
REASON_TEXT = {"text_zh": {"type": "string", "minLength": 1}, "text_en": {"type": "string", "minLength": 1}}
NUM = {"type": "number"}
NUM_OR_NULL = {"type": ["number", "null"]}
STR_OR_NULL = {"type": ["string", "null"]}
JSON_ERROR_405 = {
    "description": "any other method",
    "headers": {"Allow": {"required": True, "schema": {"type": "string"}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MethodNotAllowed"}}},
}


def _reason(kind: str, required: list[str], props: dict, doc: str | None = None) -> dict:
    out = {
        "type": "object",
        "required": ["kind", *required, "text_zh", "text_en"],
        "properties": {
            "kind": {"const": kind},
            **props,
            **REASON_TEXT,
            "same_as": {"type": "string", "description": "the first item of the answer with this reason (grouped)"},
        },
    }
    if doc:
        out["description"] = doc
    return out


def recommend() -> dict:
    live_reason = {
        "source": {"const": "live"},
        "feature": {"type": "null"},
        "model_reason": {"$ref": "#/components/schemas/Reason", "description": "the model's own reason"},
    }
    source = {"type": "string", "minLength": 1, "description": "the history/context item the score comes from"}
    via = {"enum": ["cf", "content", "context"], "description": "which score part the reason comes from"}
    reco_params = {
        "user_id": (
            {"type": "string", "maxLength": ID_MAX, "format": F_USER, "examples": ["u-000001"]},
            "a known user gets `personal` recommendations only with a viewer token for this user "
            "(`Authorization: Bearer`, docs/serving.md); otherwise (or an unknown one) it falls back",
        ),
        "stream_id": (
            {"type": "string", "maxLength": ID_MAX, "format": F_STREAM, "examples": ["s-00000"]},
            "the stream the viewer watches (its showcase and bestsellers; required with showcase_only=true)",
        ),
        "k": ({"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "how many items"),
        "max_per_category": (
            {"type": "integer", "minimum": 0, "maximum": 100},
            "at most this many items of one category (0: no cap; default `DAIHUO_RECOMMEND_MAX_PER_CATEGORY`)",
        ),
        "showcase_only": (
            {"type": "boolean", "default": True},
            "with a stream_id: only items on the room's current showcase (default "
            "`DAIHUO_RECOMMEND_SHOWCASE_ONLY`, on; none known: not restricted, `note` says so; "
            "`true` without stream_id: 400)",
        ),
        "exclude_purchased": (
            {"type": "boolean", "default": False},
            "leave out what the user bought (default: buy-again items are served)",
        ),
        "filter_seen": ({"type": "boolean", "default": False}, "leave out everything the user touched before"),
        "category": ({"type": "string", "examples": ["美妆/护肤"]}, "exact catalog category"),
        "min_price": ({"type": "number", "minimum": 0}, "price >= min_price"),
        "max_price": ({"type": "number", "minimum": 0}, "price <= max_price (not below min_price)"),
    }
    get_params = [
        {"name": n, "in": "query", "required": False, "schema": sch, "description": d}
        for n, (sch, d) in reco_params.items()
    ]
    get_params.insert(
        2,
        {
            "name": "context",
            "in": "query",
            "required": False,
            "description": "session items, comma-separated, at most 50",
            "schema": {"type": "string", "format": F_ITEMS, "examples": ["sku-000001,sku-000002"]},
        },
    )
    body = {
        "type": "object",
        "additionalProperties": False,
        "description": "the GET parameters as a JSON object; at least one of user_id, stream_id, context",
        "properties": {
            **{n: sch for n, (sch, _) in reco_params.items()},
            "context": {
                "type": "array",
                "maxItems": 50,
                "items": {"type": "string", "minLength": 1, "format": F_ITEM},
                "description": "session items (a comma-separated string is accepted too)",
            },
        },
    }
    answers = {
        "200": {
            "description": "recommendations from the served model",
            "headers": {
                "X-Model-Version": {"required": True, "schema": {"type": "string", "minLength": 1}},
                "X-Rec-Id": {"required": True, "schema": REC_ID, "description": "the answer's rec_id"},
            },
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Recommendations"}}},
        },
        "400": {
            "description": "a bad, unknown or missing parameter (named in `param`; `body` for a POST body "
            "that is not a JSON object, not JSON, or nested deeper than 4 levels)",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BadParam"}}},
        },
        "503": {
            "description": "no model has been published yet (or none could be loaded)",
            "headers": {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"}}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NoModel"}}},
        },
    }
    wrong = {"responses": {"405": JSON_ERROR_405}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Daihuo recommend",
            "version": "1.0.0",
            "description": "Explained recommendations from the served model (docs/serving.md §2). GET with "
            "query parameters or POST with the same names in a JSON object. At least one of "
            "user_id, stream_id, context; unknown parameters are refused.",
        },
        "paths": {
            "/": {
                "get": {"operationId": "recommendGet", "parameters": get_params, "responses": answers},
                "post": {
                    "operationId": "recommendPost",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
                    "responses": {
                        **answers,
                        "413": {
                            "description": "POST body over DAIHUO_RECOMMEND_MAX_BODY_BYTES (16 KiB), refused before parsing",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BadParam"}}},
                        },
                    },
                },
                "put": {"operationId": "recommendPut", **wrong},
                "delete": {"operationId": "recommendDelete", **wrong},
                "patch": {"operationId": "recommendPatch", **wrong},
            }
        },
        "components": {
            "schemas": {
                "ExperimentArm": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["id", "arm", "recipe", "model_version", "counted"],
                    "properties": {
                        "id": {"type": "string", "pattern": EXP_NAME},
                        "arm": {"type": "string", "pattern": EXP_NAME},
                        "recipe": {
                            "enum": ["model", "popular"],
                            "description": "model: the model's answer; popular: the model asked as for a stranger "
                            "(the stream's / global bestsellers)",
                        },
                        "model_version": {"type": "string", "minLength": 1, "description": "the version that answered"},
                        "counted": {
                            "type": "boolean",
                            "description": "false when the arm's pinned version could not be loaded: LATEST "
                            "answered and the rec_id is r1.none.default.… (not counted for any arm)",
                        },
                        "status": {"type": "string", "description": "why the arm could not serve"},
                    },
                },
                "Recommendations": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": [
                        "rec_id",
                        "experiment",
                        "user_id",
                        "stream_id",
                        "k",
                        "items",
                        "strategy",
                        "fallback",
                        "model_version",
                        "live",
                        "timing_ms",
                    ],
                    "properties": {
                        "rec_id": {
                            **REC_ID,
                            "description": "this answer's id: r1.<experiment>.<arm>.<ULID> (r1.none.default.… outside "
                            "an experiment); the viewer app sends it back on rec_impression (one per item shown, with "
                            "its position) and on the product_click / add_to_cart / purchase it led to "
                            "(docs/experiments.md)",
                        },
                        "experiment": {
                            "oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/ExperimentArm"}],
                            "description": "the viewer's arm of the serving experiment (models/EXPERIMENT.json); "
                            "null outside one (no config, disabled, or no user_id)",
                        },
                        "user_id": {"type": ["string", "null"]},
                        "stream_id": {"type": ["string", "null"]},
                        "k": {"type": "integer", "minimum": 1, "maximum": 100},
                        "items": {"type": "array", "maxItems": 100, "items": {"$ref": "#/components/schemas/Item"}},
                        "strategy": {
                            "enum": ["personal", "context", "stream", "global"],
                            "description": "personal: known user; context: scored from the session items; "
                            "stream: the stream's bestsellers; global: global bestsellers",
                        },
                        "fallback": {"type": ["string", "null"], "description": "null for personal, else why"},
                        "model_version": {"type": "string", "minLength": 1},
                        "live": {"$ref": "#/components/schemas/Live"},
                        "timing_ms": {
                            "type": "object",
                            "required": ["live", "model", "total"],
                            "properties": {
                                "live": {"type": "number", "minimum": 0, "description": "the live reads"},
                                "model": {"type": "number", "minimum": 0},
                                "total": {"type": "number", "minimum": 0},
                            },
                        },
                        "note": {"type": "string", "description": "e.g. no showcase known for the stream"},
                        "personal": {
                            "type": "boolean",
                            "description": "true only for a verified viewer token whose sub is user_id",
                        },
                        "identity": {"type": "string", "description": "verified, or why the answer is not personal"},
                    },
                },
                "Item": {
                    "type": "object",
                    "required": ["item_id", "title", "score", "parts", "reason"],
                    "properties": {
                        "item_id": {"type": "string", "minLength": 1},
                        "title": {"type": "string"},
                        "score": NUM,
                        "parts": {
                            "type": "object",
                            "additionalProperties": False,
                            "description": "per-source contributions to the score (RoomRanker groups)",
                            "required": [
                                "buy_again",
                                "history",
                                "cf",
                                "content",
                                "context",
                                "room",
                                "popular",
                                "taste",
                            ],
                            "properties": dict.fromkeys(
                                ("buy_again", "history", "cf", "content", "context", "room", "popular", "taste"), NUM
                            ),
                        },
                        "reason": {"$ref": "#/components/schemas/Reason"},
                    },
                },
                "Reason": {
                    "description": "why the item is recommended, with a sentence in Chinese and in English",
                    "oneOf": [
                        _reason(
                            "because_you",
                            ["item", "via", "item_title"],
                            {
                                "item": source,
                                "via": via,
                                "item_title": {"type": "string"},
                                "action": {
                                    "type": ["string", "null"],
                                    "description": "the user's strongest action on the item (purchase, ...)",
                                },
                            },
                        ),
                        *(
                            _reason(
                                kind,
                                ["item", "via", "item_title"],
                                {
                                    "item": source,
                                    "via": via,
                                    "item_title": {"type": "string"},
                                    "anchor": {
                                        "enum": ["history", "context"],
                                        "description": "the item is in the viewer's history / the session context",
                                    },
                                    "action": {
                                        "type": ["string", "null"],
                                        "description": "history anchor: the viewer's strongest action on it",
                                    },
                                },
                                doc,
                            )
                            for kind, doc in (
                                ("bought_together", "a CF neighbour of the anchor that viewers bought with it"),
                                (
                                    "viewed_together",
                                    "a CF neighbour viewers looked at with the anchor, never bought with it",
                                ),
                                ("similar_to", "a content (text) neighbour of the anchor"),
                                ("related_to", "a CF neighbour with no viewer touching both (linked by the model)"),
                            )
                        ),
                        _reason(
                            "buy_again",
                            ["times", "last_purchase"],
                            {"times": {"type": "integer", "minimum": 1}, "last_purchase": {"type": "string"}},
                        ),
                        _reason(
                            "buy_often",
                            ["times", "last_purchase"],
                            {"times": {"type": "integer", "minimum": 3}, "last_purchase": {"type": "string"}},
                        ),
                        _reason(
                            "in_history",
                            ["item", "action"],
                            {"item": source, "action": {"type": "string"}, "last_touch": {"type": "string"}},
                        ),
                        _reason("taste", [], {"category": {"type": ["string", "null"]}}),
                        _reason(
                            "popular_in_stream",
                            ["stream"],
                            {
                                "stream": {"type": "string"},
                                "orders": {"type": "integer", "minimum": 0},
                                "clicks": {"type": "integer", "minimum": 0},
                                "minutes": {"type": "integer", "minimum": 1},
                                "on_show": {"type": "boolean"},
                            },
                        ),
                        _reason("popular", [], {"rank": {"type": "integer", "minimum": 1}}),
                        _reason("trending", ["buyers_7d"], {"buyers_7d": {"type": "integer", "minimum": 0}}),
                        _reason(
                            "on_stage",
                            ["source", "model_reason"],
                            {**live_reason, "slot_id": {"type": ["string", "null"]}, "since": STR_OR_NULL},
                        ),
                        _reason(
                            "selling_fast",
                            ["source", "orders", "minutes", "model_reason"],
                            {
                                **live_reason,
                                "orders": {"type": "integer", "minimum": 1, "description": "orders in the window"},
                                "minutes": {"type": "integer", "minimum": 1},
                            },
                        ),
                        _reason(
                            "just_viewed",
                            ["source", "action", "model_reason"],
                            {**live_reason, "action": {"enum": ["product_click", "add_to_cart"]}, "at": STR_OR_NULL},
                        ),
                    ],
                },
                "Live": {
                    "type": "object",
                    "description": "whether the live state (Bigtable) was merged into the answer (docs/serving.md, "
                    "'Live state'); used=false: the batch model's answer, `reason` says why",
                    "required": ["used", "room", "viewer", "ms"],
                    "properties": {
                        "used": {"type": "boolean"},
                        "room": {"enum": ["used", "unavailable", "not_read"]},
                        "viewer": {
                            "enum": ["used", "unavailable", "anonymous", "not_read"],
                            "description": "the session is read for a verified viewer only",
                        },
                        "reason": {"type": "string", "description": "why (part of) the live state was not used"},
                        "as_of": {"type": "string", "description": "when the room was read (RFC 3339)"},
                        "last_event_at": {**STR_OR_NULL, "description": "the room's latest viewer event"},
                        "on_air": {"type": "boolean"},
                        "on_stage": {**STR_OR_NULL, "description": "the item the host presents now"},
                        "sold_out_removed": {"type": "array", "items": {"type": "string"}},
                        "room_cached": {
                            "type": "boolean",
                            "description": "the room's state was reused (read at `as_of`, at most a few seconds ago)",
                        },
                        "session_items": {"type": "integer", "minimum": 0},
                        "ms": {"type": "number", "minimum": 0},
                    },
                },
                "BadParam": {
                    "type": "object",
                    "required": ["error", "param"],
                    "properties": {"error": {"type": "string"}, "param": {"type": "string"}},
                },
                "MethodNotAllowed": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string"},
                        "allowed": {"type": "array", "items": {"type": "string"}},
                        "message": {"type": "string"},
                    },
                },
                "NoModel": {
                    "type": "object",
                    "required": ["error", "retry_after_s"],
                    "properties": {
                        "error": {"type": "string"},
                        "detail": {"type": ["string", "null"]},
                        "retry_after_s": {"type": "integer", "minimum": 1},
                    },
                },
            }
        },
    }


# ------------------------------------------------------------------------------------- analytics
STREAM_SORTS = list(STREAM_COLS)  # every column of the stream table is sortable
HEADLINE = list(queries.HEADLINE)  # the dashboard list view's columns
PRODUCT_SORTS = ["gmv", "ctr", "orders", "clicks", "impressions", "units", "conversion_rate"]
TIME = {"type": ["string", "null"], "format": "date-time"}
STREAM_ID = {"type": "string", "pattern": "^[A-Za-z0-9._:@%-]{1,200}$", "format": F_STREAM}
F_HOST = "daihuo-host-id"
HOST_ID = {"type": "string", "pattern": "^[A-Za-z0-9._:@%-]{1,200}$", "format": F_HOST}


def _kpi(name: str) -> dict:
    if name in ("stream_id", "platform"):
        return {"type": "string"}
    if name in ("start", "end", "started_at", "ended_at"):
        return TIME
    if name in ("title", "host_id", "host_name"):  # from the stream's host actions; null if none was seen
        return {"type": ["string", "null"]}
    return NUM_OR_NULL  # the tables' values unchanged; a rate with a zero denominator is null


def _obj(required: list[str], props: dict, **extra) -> dict:
    return {"type": "object", "required": required, "properties": props, **extra}


def analytics() -> dict:
    cached = {
        "Cache-Control": {"required": True, "schema": {"type": "string", "pattern": "^private, max-age=[0-9]+$"}},
        "ETag": {
            "required": True,
            "schema": {"type": "string", "pattern": '^"[^"]+"$'},
            "description": "the data version; the same for every URL of one version",
        },
    }
    no_store = {"Cache-Control": {"required": True, "schema": {"const": "no-store"}}}
    inm = {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "ETags (list, weak W/ or *); the current one -> 304 without body",
    }
    sid = {
        "name": "stream_id",
        "in": "path",
        "required": True,
        "schema": STREAM_ID,
        "example": "s-00000",
        "description": "a stream id (percent-encoded)",
    }

    def q(name, schema, description):
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    limit = q("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size")
    offset = q("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}, "rows to skip")

    def err(status: int, description: str, html: bool) -> dict:
        if status == 405 or not html:
            content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        else:
            content = {"text/html": {"schema": {"type": "string"}}}
        hdrs = dict(no_store)
        if status == 405:
            hdrs["Allow"] = {"required": True, "schema": {"const": "GET, HEAD"}}
        return {"description": description, "headers": hdrs, "content": content}

    hid = {
        "name": "host_id",
        "in": "path",
        "required": True,
        "schema": HOST_ID,
        "example": "h-0000-douyin",
        "description": "a host id (percent-encoded)",
    }

    def op(
        op_id: str, summary: str, params: list, schema_ref: str | None, *, stream: bool = False, host: bool = False
    ) -> dict:
        html = schema_ref is None
        path_params = [sid] if stream else [hid] if host else []
        content = (
            {"text/html": {"schema": {"type": "string"}}}
            if html
            else {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}
        )
        responses = {
            "200": {
                "description": "UTF-8 HTML page with inline SVG charts" if html else "UTF-8 JSON",
                "headers": cached,
                "content": content,
            },
            "304": {"description": "If-None-Match matched the current ETag; no body", "headers": cached},
            "400": err(400, "a bad value or an unknown parameter (named in `parameter`)", html),
            "404": err(404, "unknown stream" if stream else "unknown host" if host else "no such resource", html),
            "401": err(401, "no operator identity (docs/dashboard.md)", html),
        }
        return {
            "get": {
                "operationId": op_id,
                "summary": summary,
                "parameters": path_params + params + [inm],
                "responses": responses,
            },
            **{
                m: {
                    "operationId": f"{op_id}{m.capitalize()}",
                    "parameters": path_params,
                    "responses": {"405": err(405, "only GET/HEAD", html)},
                }
                for m in ("post", "put", "delete", "patch")
            },
        }

    list_params = [
        q("sort", {"enum": STREAM_SORTS, "default": "gmv"}, "any column of the stream table"),
        q("order", {"enum": ["asc", "desc"]}, "default desc; asc for ids and times"),
        limit,
        offset,
        q("platform", {"type": "string", "examples": ["douyin", "douyin,kuaishou"]}, "one platform or a comma list"),
        q(
            "from",
            {"type": "string", "examples": ["2026-11-27"]},
            "a date YYYY-MM-DD (whole day) or an ISO 8601 instant; on the stream's start",
        ),
        q("to", {"type": "string", "examples": ["2026-11-28"]}, "inclusive; after `from`"),
    ]
    ts_params = [
        q("grain", {"enum": ["minute", "hour"], "default": "minute"}, "bucket grain"),
        q(
            "bucket",
            {"type": "integer", "minimum": 1, "maximum": 60},
            "bucket minutes (minute grain only; default: <= ~240 points)",
        ),
    ]
    prod_params = [
        q("sort", {"enum": PRODUCT_SORTS, "default": "gmv"}, "descending"),
        {**limit, "description": "page size, default 20"},
        offset,
    ]
    paths = {
        "/api/streams": op("listStreams", "streams with headline KPIs: filter, sort, page", list_params, "StreamList"),
        "/api/streams/{stream_id}": op("getStream", "every KPI of one stream", [], "StreamKpis", stream=True),
        "/api/streams/{stream_id}/timeseries": op(
            "getTimeseries", "per-minute-bucket or hourly series", ts_params, "Timeseries", stream=True
        ),
        "/api/streams/{stream_id}/funnel": op(
            "getFunnel", "impressions -> clicks -> carts -> orders", [], "Funnel", stream=True
        ),
        "/api/streams/{stream_id}/products": op(
            "getProducts", "per-product KPIs with catalog titles", prod_params, "Products", stream=True
        ),
        **_host_paths(op, q, limit, offset),
        "/api/quality": op("getQuality", "clean-run reports", [], "Quality"),
        "/api/models": op("getModels", "model versions and their metrics", [], "Models"),
        "/api/experiments": op(
            "getExperiments",
            "recommendation experiments: per arm impressions, clicks, CTR, conversion, attributed GMV with 95 % "
            "intervals, and each arm against the control arm (docs/experiments.md)",
            [],
            "Experiments",
        ),
        "/": op(
            "pageOverview",
            "dashboard: streams ranked by GMV and GPM",
            [
                q("platform", {"type": "string"}, "as /api/streams"),
                q("from", {"type": "string"}, "as /api/streams"),
                q("to", {"type": "string"}, "as /api/streams"),
                list_params[0],
                list_params[1],
            ],
            None,
        ),
        "/streams/{stream_id}": op("pageStream", "dashboard: one stream", [ts_params[1]], None, stream=True),
        "/quality": op("pageQuality", "dashboard: data quality per clean run", [], None),
        "/models": op("pageModels", "dashboard: offline metrics per model version", [], None),
        "/experiments": op("pageExperiments", "dashboard: recommendation experiments per arm", [], None),
    }

    def live_op(op_id: str, summary: str, schema_ref: str | None, *, stream: bool = False) -> dict:
        """The live routes: read from Bigtable at each request, never cached (no ETag, no 304)."""
        html = schema_ref is None
        content = (
            {"text/html": {"schema": {"type": "string"}}}
            if html
            else {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}
        )
        responses = {
            "200": {
                "description": (
                    "UTF-8 HTML page (it polls /api/live/{stream_id})"
                    if html
                    else "UTF-8 JSON; Bigtable slow or down is `available: false` with a message (never a 5xx)"
                ),
                "headers": no_store,
                "content": content,
            },
            "400": err(400, "an unknown parameter (named in `parameter`)", html),
            "401": err(401, "no operator identity (docs/dashboard.md)", html),
        }
        if stream:
            responses["404"] = err(404, "the live table has nothing of this stream", html)
        else:
            responses["404"] = err(404, "no such resource", html)
        return {
            "get": {
                "operationId": op_id,
                "summary": summary,
                "parameters": [sid] if stream else [],
                "responses": responses,
            },
            **{
                m: {
                    "operationId": f"{op_id}{m.capitalize()}",
                    "parameters": [sid] if stream else [],
                    "responses": {"405": err(405, "only GET/HEAD", html)},
                }
                for m in ("post", "put", "delete", "patch")
            },
        }

    paths["/api/live"] = live_op("listLiveStreams", "the rooms of the live table, on air first", "LiveStreams")
    paths["/api/live/{stream_id}"] = live_op(
        "getLiveRoom", "one room now: tiles, per-minute series, on stage, trending, sold out", "LiveRoom", stream=True
    )
    paths["/live"] = live_op("pageLiveIndex", "dashboard: the streams on air", None)
    paths["/live/{stream_id}"] = live_op("pageLive", "dashboard: one room live (polls the JSON)", None, stream=True)
    paths["/assets/live.js"] = {
        "get": {
            "operationId": "assetLiveJs",
            "summary": "the live page's script (the CSP allows scripts from the function only)",
            "parameters": [],
            "responses": {
                "200": {
                    "description": "JavaScript",
                    "headers": {"Cache-Control": cached["Cache-Control"]},
                    "content": {"text/javascript": {"schema": {"type": "string"}}},
                },
                "400": err(400, "an unknown parameter", True),
                "401": err(401, "no operator identity", True),
            },
        },
        **{
            m: {"operationId": f"assetLiveJs{m.capitalize()}", "responses": {"405": err(405, "only GET/HEAD", True)}}
            for m in ("post", "put", "delete", "patch")
        },
    }
    paths.update(_alert_paths(q, err, no_store))
    headline = {c: _kpi(c) for c in HEADLINE}
    count = {"type": "integer", "minimum": 0}
    rate = {"type": ["number", "null"], "minimum": 0}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Daihuo analytics",
            "version": "1.0.0",
            "description": "KPI JSON API under /api/ and the operators' dashboard (HTML with inline SVG "
            "charts); docs/dashboard.md. GET and HEAD only. Every answer of one data version "
            "carries the same ETag; errors are no-store.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": _obj(
                    ["error", "message"],
                    {
                        "error": {
                            "enum": [
                                "bad_parameter",
                                "unknown_stream",
                                "unknown_host",
                                "not_found",
                                "method_not_allowed",
                            ]
                        },
                        "message": {"type": "string"},
                        "parameter": {"type": "string"},
                        "stream_id": {"type": "string"},
                        "host_id": {"type": "string"},
                    },
                ),
                **_host_schemas(),
                **_experiment_schemas(),
                "StreamList": _obj(
                    ["total", "limit", "offset", "sort", "order", "streams"],
                    {
                        "total": count,
                        "limit": {"type": "integer", "minimum": 1, "maximum": 500},
                        "offset": count,
                        "sort": {"enum": STREAM_SORTS},
                        "order": {"enum": ["asc", "desc"]},
                        "streams": {
                            "type": "array",
                            "maxItems": 500,
                            "items": _obj(HEADLINE, headline, additionalProperties=False),
                        },
                    },
                ),
                "StreamKpis": _obj(["stream"], {"stream": _obj(STREAM_SORTS, {c: _kpi(c) for c in STREAM_SORTS})}),
                "Timeseries": _obj(
                    ["stream_id", "grain", "bucket_s", "points"],
                    {
                        "stream_id": {"type": "string"},
                        "grain": {"enum": ["minute", "hour"]},
                        "bucket_s": {"type": "integer", "minimum": 60, "maximum": 3600},
                        "points": {
                            "type": "array",
                            "items": _obj(
                                ["t"],
                                {"t": {"type": "string", "format": "date-time"}},
                                additionalProperties=NUM_OR_NULL,
                            ),
                        },
                    },
                ),
                "Funnel": _obj(
                    ["stream_id", "steps"],
                    {
                        "stream_id": {"type": "string"},
                        "steps": {
                            "type": "array",
                            "minItems": 4,
                            "maxItems": 4,
                            "items": _obj(
                                ["step", "label", "count", "rate_from_previous", "rate_from_first"],
                                {
                                    "step": {"enum": ["impressions", "clicks", "add_to_carts", "orders"]},
                                    "label": {"type": "string"},
                                    "count": count,
                                    "rate_from_previous": rate,
                                    "rate_from_first": rate,
                                },
                            ),
                        },
                    },
                ),
                "Products": _obj(
                    ["stream_id", "total", "limit", "offset", "sort", "products"],
                    {
                        "stream_id": {"type": "string"},
                        "total": count,
                        "limit": {"type": "integer", "minimum": 1, "maximum": 500},
                        "offset": count,
                        "sort": {"enum": PRODUCT_SORTS},
                        "products": {
                            "type": "array",
                            "items": _obj(
                                ["item_id"],
                                {
                                    "item_id": {"type": "string"},
                                    "title": {"type": ["string", "null"]},
                                    "category": {"type": ["string", "null"]},
                                    **dict.fromkeys(
                                        [
                                            "price",
                                            "impressions",
                                            "clicks",
                                            "add_to_carts",
                                            "orders",
                                            "units",
                                            "gmv",
                                            "refunds",
                                            "ctr",
                                            "conversion_rate",
                                        ],
                                        NUM_OR_NULL,
                                    ),
                                },
                                additionalProperties=False,
                            ),
                        },
                    },
                ),
                "Quality": _obj(
                    ["runs", "reasons", "clean_by_reason", "ingest"],
                    {
                        "runs": {
                            "type": "array",
                            "items": _obj(
                                [],
                                {
                                    "run_id": {"type": "string"},
                                    "rows_in": count,
                                    "rows_out": count,
                                    "dropped": count,
                                    "duplicates": count,
                                    "late": count,
                                    "ts_corrected": count,
                                    "dropped_by_reason": {"type": "object", "additionalProperties": count},
                                    "dropped_by_field": {"type": "object", "additionalProperties": count},
                                    "raw_objects": count,
                                    "error": {"type": ["string", "null"]},
                                },
                            ),
                        },
                        "reasons": {"type": "array", "items": {"type": "string"}},
                        "clean_by_reason": {
                            "type": "object",
                            "additionalProperties": count,
                            "description": "rows clean quarantined per reason, over the runs",
                        },
                        "ingest": _obj(
                            ["days", "rows", "objects", "by_reason", "by_day"],
                            {
                                "days": {"type": "integer", "description": "days counted, ending today (UTC)"},
                                "rows": count,
                                "objects": count,
                                "by_reason": {
                                    "type": "object",
                                    "additionalProperties": count,
                                    "description": "rows the webhook refused (quarantine/ingest/), per the field "
                                    "their first reason names",
                                },
                                "by_day": {
                                    "type": "object",
                                    "additionalProperties": {"type": "object", "additionalProperties": count},
                                },
                                "error": {"type": "string"},
                            },
                        ),
                    },
                ),
                "LiveStreams": _obj(
                    ["available", "as_of", "streams"],
                    {
                        "available": {"type": "boolean"},
                        "as_of": {"type": "string", "format": "date-time"},
                        "message": {"type": "string", "description": "why the live data is unavailable"},
                        "streams": {
                            "type": "array",
                            "items": _obj(
                                ["stream_id", "on_air"],
                                {
                                    "stream_id": {"type": "string"},
                                    "title": {"type": ["string", "null"]},
                                    "host_id": {"type": ["string", "null"]},
                                    "host_name": {"type": ["string", "null"]},
                                    "started_at": TIME,
                                    "ended_at": TIME,
                                    "last_event_at": TIME,
                                    "on_air": {"type": "boolean"},
                                },
                            ),
                        },
                    },
                ),
                "LiveRoom": {
                    "oneOf": [
                        _obj(
                            ["stream_id", "available", "as_of", "on_air", "info", "tiles", "minutes", "trending"],
                            {
                                "stream_id": {"type": "string"},
                                "available": {"const": True},
                                "as_of": {"type": "string", "format": "date-time"},
                                "on_air": {"type": "boolean"},
                                "info": _obj(
                                    ["title", "host_name"],
                                    {
                                        **dict.fromkeys(
                                            ["title", "host_id", "host_name", "platform"], {"type": ["string", "null"]}
                                        ),
                                        **dict.fromkeys(["started_at", "ended_at", "last_event_at"], TIME),
                                    },
                                ),
                                "tiles": _obj(
                                    ["viewers_now", "entries", "gmv", "orders", "units", "conversion"],
                                    {
                                        "viewers_now": {"type": ["integer", "null"], "minimum": 0},
                                        "entries": count,
                                        "gmv": {"type": "number"},
                                        "orders": count,
                                        "units": count,
                                        "conversion": rate,
                                    },
                                    additionalProperties={"type": "number"},
                                ),
                                "minutes": {
                                    "type": "array",
                                    "items": _obj(
                                        ["minute", "viewers", "gmv", "orders"],
                                        {
                                            "minute": {"type": "string", "format": "date-time"},
                                            "viewers": count,
                                            "gmv": {"type": "number"},
                                            "orders": count,
                                        },
                                    ),
                                },
                                "on_stage": {
                                    "oneOf": [
                                        {"type": "null"},
                                        _obj(
                                            ["slot_id", "item_id", "started_at", "sales"],
                                            {
                                                "slot_id": {"type": "string"},
                                                "item_id": {"type": "string"},
                                                "title": {"type": ["string", "null"]},
                                                "started_at": {"type": "string", "format": "date-time"},
                                                "price": NUM_OR_NULL,
                                                "currency": {"type": ["string", "null"]},
                                                "sales": _obj(
                                                    ["orders", "units", "gmv"],
                                                    {"orders": count, "units": count, "gmv": {"type": "number"}},
                                                ),
                                                "sold_out": {"type": "boolean"},
                                            },
                                        ),
                                    ]
                                },
                                "slots": count,
                                "trending": {
                                    "type": "array",
                                    "items": _obj(
                                        ["item_id", "score", "rise", "orders", "gmv"],
                                        {
                                            "item_id": {"type": "string"},
                                            "title": {"type": ["string", "null"]},
                                            "score": {"type": "number"},
                                            "previous_score": {"type": "number"},
                                            "rise": {"type": "number"},
                                            "orders": count,
                                            "clicks": count,
                                            "add_to_carts": count,
                                            "gmv": {"type": "number"},
                                            "sold_out": {"type": "boolean"},
                                        },
                                    ),
                                },
                                "trend_minutes": {"type": ["integer", "null"]},
                                "sold_out": {
                                    "type": "array",
                                    "items": _obj(
                                        ["item_id"],
                                        {"item_id": {"type": "string"}, "title": {"type": ["string", "null"]}},
                                    ),
                                },
                            },
                        ),
                        _obj(
                            ["available", "message", "as_of"],
                            {
                                "available": {"const": False},
                                "message": {"type": "string"},
                                "as_of": {"type": "string", "format": "date-time"},
                                "stream_id": {"type": "string"},
                            },
                        ),
                    ]
                },
                **_alert_schemas(),
                "Models": _obj(
                    ["latest", "models", "metrics", "counts", "families"],
                    {
                        "latest": {"type": ["string", "null"], "description": "the version LATEST.json names"},
                        "models": {
                            "type": "array",
                            "description": "models/<v>/meta.json, oldest first, with status, reason, compared_to, below_baseline, baselines, baseline_names",
                            "items": _obj(
                                [],
                                {
                                    "version": {"type": "string"},
                                    "created_at": {"type": ["string", "null"]},
                                    "metrics": {"type": ["object", "null"]},
                                    "error": {"type": "string"},
                                    "status": {
                                        "enum": ["serving", "replaced", "not promoted", "rejected", "unknown"],
                                        "description": "the promotion decision (queries.model_statuses)",
                                    },
                                    "reason": {"type": ["string", "null"], "description": "the gate's reason"},
                                    "compared_to": {"type": ["string", "null"]},
                                    "below_baseline": {"type": ["boolean", "null"]},
                                    "baselines": {
                                        "type": "array",
                                        "items": _obj(
                                            ["block", "metric", "baselines"],
                                            {
                                                "block": {"type": "string"},
                                                "primary": {"type": "boolean"},
                                                "metric": {"type": ["string", "null"]},
                                                "n_queries": {"type": ["integer", "null"]},
                                                "candidate": {"type": ["number", "null"]},
                                                "current": {"type": ["number", "null"]},
                                                "best_baseline": {"type": ["string", "null"]},
                                                "baselines": {
                                                    "type": "object",
                                                    "additionalProperties": {"type": ["number", "null"]},
                                                },
                                                "ratio": {"type": ["number", "null"]},
                                                "ratio_lo": {"type": ["number", "null"]},
                                                "ratio_hi": {"type": ["number", "null"]},
                                            },
                                        ),
                                    },
                                    "baseline_names": {"type": "array", "items": {"type": "string"}},
                                },
                            ),
                        },
                        "metrics": {"type": "array", "items": {"type": "string"}, "description": "score names"},
                        "counts": {"type": "array", "items": {"type": "string"}, "description": "count names"},
                        "families": _obj(
                            ["ranking", "ratio", "count"],
                            {f: {"type": "array", "items": {"type": "string"}} for f in ("ranking", "ratio", "count")},
                        ),
                    },
                ),
            }
        },
    }


def _host_paths(op, q, limit, offset) -> dict:
    """The host and audience routes of the analytics function (shared/dashboard/hosts.py)."""
    from shared.dashboard import hosts

    return {
        "/api/streams/{stream_id}/audience": op(
            "getAudience",
            "new vs returning viewers, followers gained, watch time, the retention curve",
            [],
            "Audience",
            stream=True,
        ),
        "/api/streams/{stream_id}/slots": op(
            "getSlots",
            "sales per presentation slot (讲解)",
            [
                q("sort", {"enum": list(hosts.SLOT_SORTS), "default": "start"}, "start ascending, else descending"),
                {**limit, "description": "page size, default 500"},
                offset,
            ],
            "Slots",
            stream=True,
        ),
        "/api/hosts": op(
            "listHosts",
            "hosts with their totals across streams",
            [
                q("sort", {"enum": ["host_id", *hosts.HOST_SORTS], "default": "gmv"}, "a column of the host table"),
                q("order", {"enum": ["asc", "desc"]}, "default desc; asc for host_id and platform"),
                limit,
                offset,
                q("platform", {"type": "string", "examples": ["douyin"]}, "one platform or a comma list"),
            ],
            "HostList",
        ),
        "/api/hosts/{host_id}": op(
            "getHost", "one host's totals and its streams side by side", [], "HostDetail", host=True
        ),
        "/api/hosts/{host_id}/cohorts": op(
            "getHostCohorts",
            "viewers by the day / week of their first stream with the host, and their return",
            [q("grain", {"enum": list(COHORT_GRAINS), "default": "week"}, "cohort grain")],
            "Cohorts",
            host=True,
        ),
        "/hosts": op("pageHosts", "dashboard: the hosts", [], None),
        "/hosts/{host_id}": op(
            "pageHost",
            "dashboard: one host, its streams side by side, cohorts",
            [q("grain", {"enum": list(COHORT_GRAINS), "default": "week"}, "cohort grain")],
            None,
            host=True,
        ),
    }


def _col(name: str) -> dict:
    if name in ("start", "end", "started_at", "first_stream_at", "last_stream_at", "stream_time"):
        return TIME
    if name in (
        "host_id",
        "host_name",
        "platform",
        "title",
        "currency",
        "best_stream_id",
        "item_id",
        "slot_id",
        "stream_id",
    ):
        return {"type": ["string", "null"]}
    if name == "open_ended":
        return {"type": "boolean"}
    return NUM_OR_NULL


def _host_schemas() -> dict:
    from shared.dashboard import hosts

    count = {"type": "integer", "minimum": 0}
    page = {"total": count, "limit": {"type": "integer", "minimum": 1, "maximum": 500}, "offset": count}

    def row(cols, **kw):
        return _obj(list(cols), {c: _col(c) for c in cols}, additionalProperties=False, **kw)

    return {
        "HostList": _obj(
            ["total", "limit", "offset", "sort", "order", "hosts"],
            {
                **page,
                "sort": {"enum": ["host_id", *hosts.HOST_SORTS]},
                "order": {"enum": ["asc", "desc"]},
                "hosts": {"type": "array", "maxItems": 500, "items": row(hosts.HOST_COLUMNS)},
            },
        ),
        "HostDetail": _obj(
            ["host", "streams"],
            {
                "host": row(hosts.HOST_COLUMNS),
                "streams": {"type": "array", "items": row(hosts.SIDE_BY_SIDE), "description": "oldest first"},
            },
        ),
        "Cohorts": _obj(
            ["host_id", "grain", "cohorts"],
            {
                "host_id": {"type": "string"},
                "grain": {"enum": list(COHORT_GRAINS)},
                "cohorts": {
                    "type": "array",
                    "items": _obj(
                        ["cohort", "cohort_size", "periods"],
                        {
                            "cohort": {"type": "string", "format": "date"},
                            "cohort_size": count,
                            "periods": {
                                "type": "array",
                                "items": _obj(
                                    ["period", "viewers", "share"],
                                    {"period": count, "viewers": count, "share": {"type": "number", "minimum": 0}},
                                ),
                            },
                        },
                    ),
                },
            },
        ),
        "Audience": _obj(
            ["stream_id", "audience", "retention"],
            {
                "stream_id": {"type": "string"},
                "audience": row(hosts.AUDIENCE_COLUMNS),
                "retention": {
                    "type": "array",
                    "description": "minute t = 0, 1, ...: viewers whose watch time is >= t minutes",
                    "items": _obj(
                        ["minute", "viewers", "share", "dropped"],
                        {"minute": count, "viewers": count, "share": {"type": "number"}, "dropped": count},
                    ),
                },
            },
        ),
        "Slots": _obj(
            ["stream_id", "total", "limit", "offset", "sort", "slots"],
            {
                "stream_id": {"type": "string"},
                **page,
                "sort": {"enum": list(hosts.SLOT_SORTS)},
                "slots": {"type": "array", "items": row(hosts.SLOT_COLUMNS)},
            },
        ),
    }


def _alert_paths(q, err, no_store) -> dict:
    """/api/alerts and /alerts (shared/dashboard/alerts.py): read at each request, never cached."""
    from shared.alert_rules import RULE_NAMES
    from shared.dashboard import alerts as alert_view

    rule = q("rule", {"enum": list(RULE_NAMES)}, "only this rule's alerts")
    limit = q("limit", {"type": "integer", "minimum": 1, "maximum": alert_view.MAX_LIMIT}, "most alerts (default 100)")

    def one(op_id: str, summary: str, params: list, html: bool) -> dict:
        content = (
            {"text/html": {"schema": {"type": "string"}}}
            if html
            else {"application/json": {"schema": {"$ref": "#/components/schemas/Alerts"}}}
        )
        return {
            "get": {
                "operationId": op_id,
                "summary": summary,
                "parameters": params,
                "responses": {
                    "200": {
                        "description": "UTF-8 HTML page" if html else "UTF-8 JSON, newest first",
                        "headers": no_store,
                        "content": content,
                    },
                    "400": err(
                        400, "an unknown rule, a bad limit or an unknown parameter (named in `parameter`)", html
                    ),
                    "401": err(401, "no operator identity (docs/dashboard.md)", html),
                    "404": err(404, "no such resource", html),
                },
            },
            **{
                m: {
                    "operationId": f"{op_id}{m.capitalize()}",
                    "parameters": [],
                    "responses": {"405": err(405, "only GET/HEAD", html)},
                }
                for m in ("post", "put", "delete", "patch")
            },
        }

    return {
        "/api/alerts": one("listAlerts", "the recent alerts (docs/alerts.md)", [rule, limit], False),
        "/alerts": one("pageAlerts", "dashboard: the recent alerts", [rule], True),
    }


def _alert_schemas() -> dict:
    from shared.alert_rules import RULE_NAMES

    alert = _obj(
        ["id", "rule", "subject", "value", "threshold", "time", "source", "message", "published", "details"],
        {
            "id": {"type": "string", "description": "hash of (rule, subject, window): the same condition, the same id"},
            "rule": {"enum": list(RULE_NAMES)},
            "subject": {"type": "string", "description": "stream:<id>, clean, subscription:<name> or model"},
            "value": {"type": "number", "description": "what was measured"},
            "threshold": {"type": "number", "description": "the limit it crossed"},
            "time": {"type": "string", "description": "when the condition held (UTC, ISO 8601)"},
            "source": {"enum": ["clean", "live", "train"]},
            "message": {"type": "string"},
            "published": {"type": "boolean", "description": "it reached the alerts topic"},
            "recorded_at": {"type": ["string", "null"]},
            "details": {"type": "object"},
        },
    )
    return {
        "Alert": alert,
        "Alerts": _obj(
            ["alerts", "rules", "days"],
            {
                "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
                "rules": {"type": "array", "items": {"enum": list(RULE_NAMES)}},
                "days": {"type": "integer", "minimum": 1},
            },
        ),
    }


def _experiment_schemas() -> dict:
    from shared.dashboard import experiments as dx
    from shared.pipeline.experiments import METRICS

    proportions = {f"{m}{s}" for m in METRICS if m != "gmv_per_impression" for s in ("", "_lo", "_hi")}

    def col(name: str) -> dict:
        if name in ("first_ts", "last_ts"):
            return TIME
        if name == "arm":
            return {"type": "string"}
        if name == "is_control":
            return {"type": "boolean"}
        if name.endswith("_significant"):
            return {"type": ["boolean", "null"], "description": "the interval excludes 0 (null: the control arm)"}
        if name in ("viewers", "recommendations", "impressions", "clicks", "carts", "conversions", "orders", "units"):
            return {"type": "integer", "minimum": 0}
        if name in ("unmatched_actions",):
            return {
                "type": "integer",
                "minimum": 0,
                "description": "tagged actions whose (rec_id, item) was never shown",
            }
        if name in proportions:
            return {"type": ["number", "null"], "minimum": 0, "maximum": 1}
        return NUM_OR_NULL

    arm = _obj(list(dx.ARM_COLUMNS), {c: col(c) for c in dx.ARM_COLUMNS}, additionalProperties=False)
    return {
        "Experiments": _obj(
            ["experiments"],
            {
                "experiments": {
                    "type": "array",
                    "items": _obj(
                        ["experiment", "control_arm", "first_ts", "last_ts", "arms"],
                        {
                            "experiment": {"type": "string"},
                            "control_arm": {"type": "string"},
                            "first_ts": TIME,
                            "last_ts": TIME,
                            "arms": {"type": "array", "items": arm, "description": "the control arm first"},
                        },
                        additionalProperties=False,
                    ),
                }
            },
            additionalProperties=False,
        )
    }


DOCUMENTS = {"ingest": ingest, "recommend": recommend, "analytics": analytics}


def write_all(out_dir: Path = OUT_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, build in DOCUMENTS.items():
        p = out_dir / f"{name}.json"
        p.write_text(json.dumps(build(), indent=2, ensure_ascii=False, sort_keys=True) + "\n")
        paths.append(p)
    return paths


if __name__ == "__main__":
    for p in write_all():
        print(p, file=sys.stderr)
