"""The verifier's cache of verified viewer tokens (shared/identity.py): a repeat costs no Ed25519
verification, yet the time rules still apply on every use, and refused tokens never enter."""

from __future__ import annotations

import time

import pytest

from shared import identity


@pytest.fixture()
def keys():
    priv, pub = identity.keygen()
    return priv, identity.Verifier({"k1": pub})


def test_a_cached_token_still_expires(keys):
    priv, v = keys
    now = time.time()
    tok = identity.mint(priv, "k1", "u-1", ttl_s=600, now=now)
    claims, kid = v.verify(tok, now=now)
    assert claims["sub"] == "u-1" and kid == "k1" and tok in v._verified
    assert v.verify(tok, now=now + 10) == (claims, kid)  # from the cache
    with pytest.raises(identity.TokenError, match="token expired"):
        v.verify(tok, now=now + 600 + identity.LEEWAY_S + 1)
    early = identity.mint(priv, "k1", "u-2", ttl_s=600, now=now + 120)
    with pytest.raises(identity.TokenError, match="issued in the future"):
        v.verify(early, now=now)  # refused: not cached either
    assert early not in v._verified


def test_refused_tokens_are_not_cached(keys):
    priv, v = keys
    stranger, _ = identity.keygen()
    forged = identity.mint(stranger, "k1", "u-1")
    for _ in range(2):
        with pytest.raises(identity.TokenError, match="bad signature"):
            v.verify(forged)
    assert not v._verified
    with pytest.raises(identity.TokenError, match="lifetime over"):
        v.verify(identity.mint(priv, "k1", "u-1", ttl_s=86400))
    assert not v._verified


def test_the_cache_is_bounded_and_the_repeat_is_cheaper(keys, monkeypatch):
    priv, v = keys
    monkeypatch.setattr(identity.Verifier, "CACHE_SIZE", 4)
    toks = [identity.mint(priv, "k1", f"u-{k}") for k in range(9)]
    for t in toks:
        v.verify(t)
        assert len(v._verified) <= 4
    t = toks[-1]
    n = 300
    c = time.perf_counter()
    for _ in range(n):
        v.verify(t)
    cached = time.perf_counter() - c
    c = time.perf_counter()
    for _ in range(n):
        v._verify_signed(t)
    signed = time.perf_counter() - c
    assert cached < signed / 3, (cached, signed)
