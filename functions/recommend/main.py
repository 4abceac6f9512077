"""recommend: HTTP GET/POST -> JSON recommendations from the served model (logic:
shared/serving/recommend.py). The model is loaded once per instance on the first request and
refreshed by a background thread when models/LATEST.json moves (DAIHUO_MODEL_REFRESH_S)."""
import flask
import functions_framework
import orjson

from shared import runtime
from shared.serving.recommend import ModelHolder, Recommender

_service = None


def _get() -> Recommender:
    global _service
    if _service is None:
        _service = Recommender(ModelHolder(runtime.get_store()))
    return _service


@functions_framework.http
def recommend(request: flask.Request):
    if request.method == "POST":
        args = request.get_json(silent=True, force=True)
        args = args if isinstance(args, dict) else None
    else:
        args = request.args.to_dict()
    status, body, headers = _get().handle(request.method, args)
    return flask.Response(orjson.dumps(body), status=status, headers=headers, mimetype="application/json")
