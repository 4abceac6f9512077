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

OUT_DIR = Path(__file__).resolve().parent.parent / "schema" / "openapi"

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _error(description: str, headers: dict | None = None) -> dict:
    out = {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
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
        {"name": "X-Daihuo-Platform", "in": "header", "required": True,
         "schema": {"type": "string", "pattern": "^[a-z0-9_]{1,32}$"}, "description": "the sending platform"},
        {"name": "X-Daihuo-Timestamp", "in": "header", "required": True,
         "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"}, "description": "unix seconds at signing; must be within 300 s"},
        {"name": "X-Daihuo-Signature", "in": "header", "required": True,
         "schema": {"type": "string", "pattern": "^v1=[0-9a-f]{64}$"},
         "description": "v1=<hex HMAC-SHA256(secret, timestamp + '.' + body)>"},
    ]
    result_item = {"type": "object", "required": ["index", "status"], "properties": {
        "index": {"type": "integer", "minimum": 0}, "event_id": {"type": ["string", "null"]},
        "status": {"enum": ["accepted", "rejected"]},
        "reasons": {"type": "array", "items": {"type": "string"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Daihuo ingest webhook", "version": "1.0.0",
                 "description": "Receives signed viewer-action webhooks and publishes them to Pub/Sub. "
                                "Limits: body 1 MiB, 1000 events, 16 KiB per event."},
        "paths": {"/": {
            "post": {
                "operationId": "ingest",
                "parameters": sig_headers,
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"oneOf": [
                        {"$ref": "#/components/schemas/Record"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/Record"}, "maxItems": 1000}]}},
                    "application/x-ndjson": {"schema": {"type": "string"},
                                             "description": "one Record per line"}}},
                "responses": {
                    "200": {"description": "processed; rejected events are quarantined with their reasons",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestResult"}}}},
                    "400": _error("the body is not JSON, a JSON array or NDJSON"),
                    "401": _error("missing/invalid signature, unknown platform, or timestamp outside the window"),
                    "413": _error("body, event count or one event over the limits"),
                    "503": _error("Pub/Sub or storage unavailable; nothing accepted",
                                  {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}}),
                }},
            "get": {"operationId": "ingestWrongMethod", "responses": {"405": _error("only POST is allowed")}},
        }},
        "components": {"schemas": {
            "Error": ERROR,
            "Record": moved["record"],
            **moved["defs"],
            "IngestResult": {"type": "object", "required": ["accepted", "rejected", "results"], "properties": {
                "accepted": {"type": "integer", "minimum": 0}, "rejected": {"type": "integer", "minimum": 0},
                "messages": {"type": "integer", "minimum": 0}, "received_at": {"type": "string"},
                "results": {"type": "array", "items": result_item}}},
        }},
    }


DOCUMENTS = {"ingest": ingest}


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
