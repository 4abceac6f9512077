"""Viewer identity for recommend: a short-lived token the platform signs for one viewer.

Why a token at all: recommend is public (the viewer app calls it without Google credentials), and a
personal answer reveals a viewer's history ("because you viewed X"). So personal results need proof
that the caller *is* that viewer; without it, recommend answers as for a stranger (stream
bestsellers, session context, global) -- never a reason that reveals history.

Format: a JWS compact token (``header.payload.signature``, base64url, i.e. a JWT) signed with
**Ed25519** (``alg: EdDSA``), sent as ``Authorization: Bearer <token>``:

    header   {"alg": "EdDSA", "typ": "JWT", "kid": "<key id>"}
    payload  {"sub": "<user_id>", "aud": "daihuo-recommend", "iat": <unix s>, "exp": <unix s>, "jti"?: "..."}

Why Ed25519 and not HMAC: the verifier holds only **public** keys. A leaked recommend instance, log
or Secret Manager read of ``DAIHUO_VIEWER_KEYS`` cannot mint tokens; only the platform's login
service (which holds the private key) can. Verification is ~50 µs; keys and signatures are short
(32 / 64 bytes). HMAC would put the same minting secret into every recommend instance.

Rules (each refusal has a reason, shown to the caller as ``identity``):
  * at most ``MAX_TOKEN_CHARS`` characters, three base64url parts, header ``alg`` EdDSA, a known ``kid``
    (``DAIHUO_VIEWER_KEYS``: JSON ``{"<kid>": "<base64url 32-byte public key>", ...}``; several kids
    at once = rotation);
  * a valid signature over ``header.payload``;
  * ``aud`` == ``DAIHUO_VIEWER_AUDIENCE`` (default ``daihuo-recommend``; a string or a list containing it);
  * ``iat <= now + leeway``, ``now < exp + leeway`` (leeway ``LEEWAY_S`` = 30 s of clock skew),
    ``exp - iat <= DAIHUO_VIEWER_TOKEN_MAX_TTL_S`` (900 s): a token cannot be made long-lived, and a
    captured one is useless after its expiry (replay beyond expiry is refused);
  * ``sub`` == the requested ``user_id``.
A replay *within* the lifetime returns the same viewer's own recommendations to the bearer (a
bearer token, as an OAuth access token is); ``jti`` is accepted and logged for tracing, not tracked.

``mint()`` and ``python -m shared.identity keygen|mint`` are for platforms, the local stack and tests.
"""

from __future__ import annotations

import base64
import binascii
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from shared import runtime

MAX_TOKEN_CHARS = 2048
LEEWAY_S = 30
DEFAULT_AUDIENCE = "daihuo-recommend"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Identity:
    personal: bool  # the token proves the caller is ``user_id``
    reason: str  # "verified", "no token", "expired", ...
    subject: str | None = None
    kid: str | None = None
    jti: str | None = None


class Verifier:
    """Holds the public keys (by kid) and the rules; ``check(user_id, headers, now)`` -> Identity."""

    def __init__(
        self,
        keys: Mapping[str, bytes] | None = None,
        *,
        audience: str | None = None,
        max_ttl_s: int | None = None,
        environ: Mapping[str, str] | None = None,
    ):
        from shared.settings import load

        env = load(environ)
        self.audience = audience or env.viewer_audience or DEFAULT_AUDIENCE
        self.max_ttl_s = int(max_ttl_s if max_ttl_s is not None else env.viewer_token_max_ttl_s)
        self.config_error: str | None = None
        if keys is None:
            keys = {}
            raw = env.viewer_keys.strip()
            if raw:
                try:
                    keys = {str(k): unb64url(v) for k, v in orjson.loads(raw).items()}
                except Exception as exc:  # a broken key config: nobody is personal, and it is logged
                    self.config_error = f"DAIHUO_VIEWER_KEYS unreadable: {type(exc).__name__}"
                    keys = {}
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        self._keys = {}
        self._verified: dict[str, tuple[dict[str, Any], str]] = {}
        for kid, pub in keys.items():
            try:
                self._keys[kid] = Ed25519PublicKey.from_public_bytes(pub)
            except ValueError:
                self.config_error = f"DAIHUO_VIEWER_KEYS: key {kid!r} is not a 32-byte Ed25519 public key"

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)

    def check(self, user_id: str | None, headers: Mapping[str, str] | None, now: float | None = None) -> Identity:
        if user_id is None:
            return Identity(False, "no user_id")
        auth = (headers or {}).get("Authorization") or (headers or {}).get("authorization") or ""
        if not auth:
            return Identity(False, "no token")
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Identity(False, "malformed Authorization header (expected: Bearer <token>)")
        try:
            claims, kid = self.verify(token.strip(), now)
        except TokenError as exc:
            return Identity(False, str(exc))
        if claims["sub"] != user_id:
            return Identity(False, "token subject does not match user_id", kid=kid)
        jti = claims.get("jti")
        return Identity(True, "verified", claims["sub"], kid, jti if isinstance(jti, str) else None)

    #: tokens whose signature and claims' shape verified -> (claims, kid); the time rules are checked
    #: on every use. A viewer's app sends one token for its whole lifetime (<= 15 min), so a repeat
    #: costs a dict lookup instead of the Ed25519 verification (~50 µs of a ~250 µs request). Only
    #: valid tokens enter (a flood of forged ones cannot fill it); bounded, emptied when full.
    CACHE_SIZE = 8192

    def verify(self, token: str, now: float | None = None) -> tuple[dict[str, Any], str]:
        """The claims and kid of a valid token; TokenError(reason) otherwise."""
        now = time.time() if now is None else now
        hit = self._verified.get(token)
        if hit is not None:
            self._check_times(hit[0], now)
            return hit
        claims, kid = self._verify_signed(token)
        self._check_times(claims, now)
        if len(self._verified) >= self.CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (claims, kid)
        return claims, kid

    def _check_times(self, claims: dict[str, Any], now: float) -> None:
        iat, exp = claims["iat"], claims["exp"]
        if iat > now + LEEWAY_S:
            raise TokenError("token issued in the future")
        if now >= exp + LEEWAY_S:
            raise TokenError("token expired")

    def _verify_signed(self, token: str) -> tuple[dict[str, Any], str]:
        """Signature, header and the claims that do not depend on the time (``verify`` adds those)."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError("token too long")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("malformed token")
        try:
            header = orjson.loads(unb64url(parts[0]))
            payload = unb64url(parts[1])
            sig = unb64url(parts[2])
        except (ValueError, binascii.Error, orjson.JSONDecodeError):
            raise TokenError("malformed token") from None
        if not isinstance(header, dict) or header.get("alg") != "EdDSA":
            raise TokenError("unsupported token algorithm (expected EdDSA)")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError("unknown key id")
        from cryptography.exceptions import InvalidSignature

        try:
            key.verify(sig, (parts[0] + "." + parts[1]).encode("ascii"))
        except InvalidSignature:
            raise TokenError("bad signature") from None
        try:
            claims = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise TokenError("malformed claims") from None
        if not isinstance(claims, dict):
            raise TokenError("malformed claims")
        sub, aud, iat, exp = claims.get("sub"), claims.get("aud"), claims.get("iat"), claims.get("exp")
        if not isinstance(sub, str) or not sub:
            raise TokenError("token has no subject")
        if not (aud == self.audience or (isinstance(aud, list) and self.audience in aud)):
            raise TokenError("wrong audience")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (iat, exp)):
            raise TokenError("token needs numeric iat and exp")
        if exp - iat > self.max_ttl_s:
            raise TokenError(f"token lifetime over {self.max_ttl_s} s")
        return claims, kid


class TokenError(ValueError):
    pass


def _build_verifier() -> Verifier:
    v = Verifier()
    if v.config_error:
        from shared.log import get_logger

        get_logger("identity").error(
            "viewer keys misconfigured: no request is personal", extra={"error": v.config_error}
        )
    return v


_verifier = runtime.per_instance(_build_verifier)


def verifier() -> Verifier:
    """The process's verifier, built from the environment on first use (``shared.runtime``)."""
    return _verifier.get()


# ---------------------------------------------------------------------------------- minting (platform side)
def keygen() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair: (32-byte private seed, 32-byte public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    k = Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    return (
        k.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()),
        k.public_key().public_bytes(raw, serialization.PublicFormat.Raw),
    )


def mint(
    private_seed: bytes,
    kid: str,
    sub: str,
    *,
    aud: str | list = DEFAULT_AUDIENCE,
    ttl_s: int = 600,
    now: float | None = None,
    jti: str | None = None,
    extra: dict | None = None,
    header: dict | None = None,
) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    now = int(time.time() if now is None else now)
    claims = {"sub": sub, "aud": aud, "iat": now, "exp": now + ttl_s, **({"jti": jti} if jti else {}), **(extra or {})}
    h = b64url(orjson.dumps(header or {"alg": "EdDSA", "typ": "JWT", "kid": kid}))
    p = b64url(orjson.dumps(claims))
    sig = Ed25519PrivateKey.from_private_bytes(private_seed).sign(f"{h}.{p}".encode("ascii"))
    return f"{h}.{p}.{b64url(sig)}"


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m shared.identity", description="viewer token keys and tokens")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser(
        "keygen", help="print a new key pair as JSON (private: platform only; public: DAIHUO_VIEWER_KEYS)"
    )
    g.add_argument("--kid", required=True)
    m = sub.add_parser("mint", help="mint a token (testing): private seed from $DAIHUO_VIEWER_PRIVATE_KEY")
    m.add_argument("--kid", required=True)
    m.add_argument("--sub", required=True)
    m.add_argument("--ttl", type=int, default=600)
    m.add_argument("--aud", default=DEFAULT_AUDIENCE)
    a = ap.parse_args(argv)
    if a.cmd == "keygen":
        priv, pub = keygen()
        print(
            orjson.dumps(
                {
                    "kid": a.kid,
                    "private": b64url(priv),
                    "public": b64url(pub),
                    "DAIHUO_VIEWER_KEYS entry": {a.kid: b64url(pub)},
                }
            ).decode()
        )
        return 0
    from shared.settings import settings

    key = settings().viewer_private_key
    if key is None:
        ap.error("DAIHUO_VIEWER_PRIVATE_KEY is not set (the platform's signing seed, base64url)")
    seed = unb64url(key.get_secret_value())
    print(mint(seed, a.kid, a.sub, aud=a.aud, ttl_s=a.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
