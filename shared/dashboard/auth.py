"""Operator access to the analytics function, and the security headers of every answer.

Modes (``DAIHUO_OPERATOR_AUTH``):

* ``token`` (default; the local stack, any deployment without Google IAM in front): every request but
  ``/healthz`` must carry one of the operator tokens of ``DAIHUO_OPERATOR_TOKENS`` (comma-separated,
  each >= 16 characters) as ``Authorization: Bearer <token>`` or as the cookie ``daihuo_operator``
  (HttpOnly, SameSite=Strict), which ``GET /login?token=<token>`` sets for a browser (then 303 to
  ``/``). Tokens are compared in constant time. No token configured -> every request is refused
  (fails closed, logged).
* ``iam`` (the cloud, set by Terraform): the function is not public; Cloud Run admits only callers
  whose Google ID token belongs to an identity with ``roles/run.invoker`` on it (operators through
  ``gcloud run services proxy`` or IAP), so the request is authenticated before it arrives. The
  app then trusts that check (it cannot see the token: Cloud Run strips a verified one).

Refusals: 401 + ``WWW-Authenticate: Bearer realm="daihuo-analytics"``, a JSON body under ``/api/``
and a short HTML page elsewhere; nothing about the data.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from shared.http import HTML_UTF8, JSON_UTF8, Answer, error
from shared.log import get_logger
from shared.settings import load

log = get_logger("analytics.auth")

COOKIE = "daihuo_operator"
COOKIE_MAX_AGE_S = 8 * 3600
# Scripts only from the function itself (the live page's /assets/live.js; no inline script, no eval)
# and fetches only to it (the live page's polls), styles inline (the templates and Vega's SVG use
# them), the favicon is a data: URL; nothing may frame the dashboard, no form posts elsewhere, no
# <base> tricks.
CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
OPEN_PATHS = {"/healthz"}


class OperatorAuth:
    def __init__(self, environ: Mapping[str, str] | None = None):
        env = load(environ)
        self.mode = env.operator_auth.strip().lower()
        if self.mode not in ("token", "iam"):
            log.error("unknown DAIHUO_OPERATOR_AUTH; refusing every request", extra={"mode": self.mode})
        raw = env.operator_token_list
        self.tokens = [t.encode() for t in raw if len(t) >= 16]
        if len(self.tokens) != len(raw):
            log.error("operator tokens shorter than 16 characters are ignored")
        if self.mode == "token" and not self.tokens:
            log.error("no operator token configured (DAIHUO_OPERATOR_TOKENS): every request is refused")

    def _valid(self, token: str | None) -> bool:
        if not token:
            return False
        t = token.strip().encode("utf-8", "replace")
        ok = False
        for good in self.tokens:  # no early exit: the time does not tell which token nearly matched
            ok |= hmac.compare_digest(t, good)
        return ok

    def presented(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
        auth = headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return cookies.get(COOKIE)

    def check(
        self, path: str, args: Mapping[str, str], headers: Mapping[str, str], cookies: Mapping[str, str]
    ) -> Answer | None:
        """None = let the request through; else the answer (a refusal, or the login's redirect)."""
        if path in OPEN_PATHS:
            return None
        if self.mode == "iam":
            return None
        if self.mode == "token" and path == "/login":
            if self._valid(args.get("token")):
                cookie = (
                    f"{COOKIE}={args['token'].strip()}; Path=/; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Strict"
                )
                return Answer(303, b"", {"Location": "/", "Set-Cookie": cookie, "Cache-Control": "no-store"})
            return self._refuse(path, "invalid operator token")
        if self.mode == "token" and self._valid(self.presented(headers, cookies)):
            return None
        return self._refuse(path, "operator authentication required")

    def _refuse(self, path: str, why: str) -> Answer:
        hdrs = {"WWW-Authenticate": 'Bearer realm="daihuo-analytics"', "Cache-Control": "no-store"}
        if path.startswith("/api/"):
            return error(401, "unauthorized", message=why, headers=hdrs, content_type=JSON_UTF8)
        html = (
            '<!doctype html><html lang="en"><meta charset="utf-8"><title>401 Unauthorized</title>'
            f"<h1>401 Unauthorized</h1><p>{why}. See docs/dashboard.md (operator access).</p></html>"
        )
        return Answer(401, html.encode(), {**hdrs, "Content-Type": HTML_UTF8})
