"""Webhook signatures: HMAC-SHA256 over ``<timestamp>.<body>`` with a per-platform secret.

A platform signs every webhook request with three headers::

    X-Daihuo-Platform:  douyin
    X-Daihuo-Timestamp: 1795810503            (unix seconds, when it signed)
    X-Daihuo-Signature: v1=<hex hmac_sha256(secret, b"1795810503." + body)>

The receiver recomputes the MAC with the platform's secret (environment variable
``DAIHUO_SECRET_<PLATFORM>``, e.g. ``DAIHUO_SECRET_DOUYIN``), compares in constant time, and refuses
timestamps more than ``MAX_SKEW_S`` (300 s) away from its clock: an old captured request cannot be
replayed later. A replay inside the window re-delivers the same ``event_id``s, which the cleaning step
deduplicates, so it changes nothing downstream.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping

from shared import settings

HEADER_PLATFORM = "X-Daihuo-Platform"
HEADER_TIMESTAMP = "X-Daihuo-Timestamp"
HEADER_SIGNATURE = "X-Daihuo-Signature"
MAX_SKEW_S = 300
_PLATFORM_RE = re.compile(r"^[a-z0-9_]{1,32}$")
# ASCII digits only: str.isdigit() / int() also accept "²", "٣", full-width digits (int("²") raises)
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")


class SignatureError(Exception):
    """The request is not authentic; ``str(err)`` says why (safe to show the caller)."""


secret_env_name = settings.secret_env_name  # DAIHUO_SECRET_<PLATFORM>, declared in shared/settings.py


def sign(secret: bytes | str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Return the signature headers (without the platform header) for ``body``."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, str(ts).encode() + b"." + body, hashlib.sha256).hexdigest()
    return {HEADER_TIMESTAMP: str(ts), HEADER_SIGNATURE: "v1=" + mac}


def signed_headers(platform: str, secret: bytes | str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    return {HEADER_PLATFORM: platform, **sign(secret, body, timestamp)}


def lookup_secret(platform: str, environ: Mapping[str, str] | None = None) -> bytes | None:
    return settings.platform_secret(platform, environ)


def verify(
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    environ: Mapping[str, str] | None = None,
    max_skew_s: int = MAX_SKEW_S,
) -> str:
    """Check a request's signature; return the authenticated platform or raise SignatureError."""
    platform = (headers.get(HEADER_PLATFORM) or "").strip().lower()
    ts_raw = (headers.get(HEADER_TIMESTAMP) or "").strip()
    sig = (headers.get(HEADER_SIGNATURE) or "").strip()
    if not platform or not ts_raw or not sig:
        raise SignatureError(f"missing signature headers ({HEADER_PLATFORM}, {HEADER_TIMESTAMP}, {HEADER_SIGNATURE})")
    if not _PLATFORM_RE.match(platform):
        raise SignatureError("malformed platform header")
    secret = lookup_secret(platform, environ)
    if secret is None:
        raise SignatureError(f"unknown platform {platform!r}")
    if not _TIMESTAMP_RE.fullmatch(ts_raw):
        raise SignatureError("malformed timestamp header")
    now = time.time() if now is None else now
    if abs(now - int(ts_raw)) > max_skew_s:
        raise SignatureError(f"timestamp outside the {max_skew_s}s window (replay or clock skew)")
    if not sig.startswith("v1="):
        raise SignatureError("unsupported signature scheme (expected v1=<hex>)")
    expected = hmac.new(secret, ts_raw.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), sig[3:].encode()):
        raise SignatureError("signature mismatch")
    return platform
