"""shared/http.py: the one answer type of every HTTP function and its Flask adapter. The answers
themselves are checked end to end by test_ingest / test_recommend / test_analytics_api /
test_api_contract; here: the wire form (status, every header, the bytes) and that every HTTP
function of infra/topology.json sends its answers through ``http.to_flask`` only."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import orjson

from shared import http

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = json.loads((ROOT / "infra" / "topology.json").read_text())


def test_json_answer_is_serialised_when_sent_and_reads_back():
    doc = {"accepted": 2, "results": [{"index": 0, "status": "accepted"}], "note": "直播"}
    a = http.json_answer(200, doc, {"X-Model-Version": "v1"})
    assert a.body is doc and a.json == doc  # not serialised yet
    assert a.payload == orjson.dumps(doc)
    assert a.headers == {"Content-Type": "application/json", "X-Model-Version": "v1"}
    assert a.content_type == "application/json"
    keyed = http.json_answer(200, {1: "a"}, content_type=http.JSON_UTF8, non_str_keys=True)
    assert keyed.body == b'{"1":"a"}' and keyed.json == {"1": "a"} and keyed.content_type == http.JSON_UTF8


def test_error_has_reason_fields_and_retry_after():
    a = http.error(503, "pubsub unavailable, retry later", retry_after=5, accepted=0)
    assert a.status == 503 and a.payload == b'{"error":"pubsub unavailable, retry later","accepted":0}'
    assert a.headers == {"Content-Type": "application/json", "Retry-After": "5"}
    b = http.error(405, "nope", headers={"Allow": "POST"})
    assert b.json == {"error": "nope"} and b.headers["Allow"] == "POST" and "Retry-After" not in b.headers


def test_to_flask_keeps_status_headers_and_bytes():
    a = http.error(400, "k: bad", param="k").with_headers({"X-Extra": "1"})
    r = http.to_flask(a)
    assert r.status_code == 400 and r.get_data() == b'{"error":"k: bad","param":"k"}'
    assert dict(r.headers) == {"Content-Type": "application/json", "X-Extra": "1", "Content-Length": "30"}
    html = http.Answer(200, b"<p>ok</p>", {"Content-Type": http.HTML_UTF8, "ETag": '"v"'})
    r = http.to_flask(html)
    assert r.get_data() == b"<p>ok</p>" and r.headers["Content-Type"] == "text/html; charset=utf-8"
    # no Content-Type (a redirect, a 304): Flask's default, as the analytics function always sent
    r = http.to_flask(http.Answer(304, b"", {"ETag": '"v"'}))
    assert r.status_code == 304 and r.get_data() == b"" and r.headers["Content-Type"] == "text/html; charset=utf-8"
    # HEAD: same status and headers, no body
    r = http.to_flask(html.without_body())
    assert r.get_data() == b"" and r.headers["ETag"] == '"v"' and r.headers["Content-Length"] == "0"


def _http_functions() -> list[str]:
    names = [n for n, spec in TOPOLOGY["functions"].items() if spec["trigger"] == "http"]
    return [n for n in names if (ROOT / "functions" / n / "main.py").is_file()]


def test_every_http_function_answers_through_to_flask():
    names = _http_functions()
    assert {"ingest", "recommend", "analytics"} <= set(names)
    for name in names:
        tree = ast.parse((ROOT / "functions" / name / "main.py").read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
        dotted = {ast.unparse(c.func) for c in calls}
        assert "http.to_flask" in dotted, f"{name}: answers are not sent through shared.http.to_flask"
        assert not {d for d in dotted if d.endswith("Response")}, f"{name}: builds a framework response itself"
        returns = [n for n in ast.walk(tree) if isinstance(n, ast.Return) and n.value is not None]
        for ret in returns:  # every handler return is to_flask(...) or a helper that ends in it
            assert isinstance(ret.value, ast.Call), f"{name}: returns {ast.unparse(ret.value)}"
