"""recommend: HTTP GET/POST -> JSON recommendations from the served model (logic:
shared/serving/recommend.py). The model is loaded once per instance on the first request and
refreshed by a background thread when models/LATEST.json moves (DAIHUO_MODEL_REFRESH_S).

A POST body is bounded before it is parsed: over ``DAIHUO_RECOMMEND_MAX_BODY_BYTES`` (16 KiB) ->
413, nested deeper than 4 levels or not JSON -> 400 ``param: body`` (shared/limits.py)."""

import flask
import functions_framework

from shared import http, limits, runtime
from shared.serving.recommend import ModelHolder, Recommender
from shared.settings import settings

_service = runtime.per_instance(lambda: Recommender(ModelHolder(runtime.get_store())))
MAX_BODY = settings().recommend_max_body_bytes
MAX_DEPTH = 4  # {"context": [...]} needs 2


@functions_framework.http
def recommend(request: flask.Request):
    if request.method == "POST":
        try:
            args = limits.read_json_body(request.content_length, request.stream, MAX_BODY, MAX_DEPTH)
        except limits.BodyRefused as exc:
            return http.to_flask(http.error(exc.status, str(exc), param="body"))
        args = args if isinstance(args, dict) else None
    else:
        args = request.args.to_dict()
    return http.to_flask(_service.get().handle(request.method, args, request.headers))
