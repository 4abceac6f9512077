"""Simulated viewers who react to recommendations: the traffic of a recommendation experiment.

The viewers of a simulated world (``devtools.simulator``: their latent tastes are the ground truth)
open the recommendation list of a stream they watch; each answer's items are shown to them and they
react as the simulator's funnel does, so a model that knows their tastes better genuinely sells more:

* every item shown gets a ``rec_impression`` (``rec_id`` of the answer, ``position`` 1..k);
* the viewer examines position ``p`` with probability ``1 / log2(p + 1) ** position_decay`` (the usual
  position bias) and clicks an examined item with the simulator's click probability
  ``sigmoid(-3.4 + 0.7 a)`` of the true affinity ``a`` (taste . item + quality), then adds it to the
  cart (``sigmoid(-1.8 + 0.4 a)``) and buys it (``sigmoid(-0.6 + 0.35 a)``) at its list price; each of
  these actions carries the answer's ``rec_id`` (the attribution);
* who asks: a viewer of the stream's platform, drawn like the simulator's audiences (activity x taste
  match with the showcase); which stream: by the streams' popularity.

Everything is a pure function of the seed and the answers (numpy ``Generator``), and the truth of each
answer (the expected clicks and GMV of the list shown, from the true probabilities) is returned beside
the events, so a test can compare what the analytics measured with what was true.

    traffic = RecTraffic(sim, seed=1)
    reqs = traffic.requests(2000)                         # [(user_id, stream_id), ...]
    answers = [recommend(u, s) for u, s in reqs]          # recommend answers (dicts with rec_id, items)
    events, truth = traffic.react(reqs, answers, start_ms=now_ms)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from devtools.simulator import _BUY, _CART, _CLICK, Simulation, _affinity, _sigmoid, format_ts

__all__ = ["RecTraffic", "arm_of", "summarise_truth"]


def arm_of(rec_id: str) -> str:
    """The arm named in a rec_id (``r1.<experiment>.<arm>.<ulid>``)."""
    parts = str(rec_id).split(".")
    return parts[2] if len(parts) == 4 else "?"


@dataclass
class RecTraffic:
    sim: Simulation
    seed: int = 0
    position_decay: float = 1.0  #: examination probability 1 / log2(p + 1) ** decay
    gap_ms: int = 700  #: between two answers' first impressions

    def __post_init__(self) -> None:
        w = self.sim.world
        self._item_index = {s: i for i, s in enumerate(w.item_ids)}
        self._user_index = {s: i for i, s in enumerate(w.user_ids)}

    # ------------------------------------------------------------------------------ who asks
    def requests(self, n: int) -> list[tuple[str, str]]:
        """``n`` (user_id, stream_id) pairs: a stream by popularity, then its viewers drawn without
        replacement from its platform's users by activity x taste match with the stream's showcase (as
        the simulator draws audiences): one answer per viewer and stream while the platform has enough
        users, then again from the start."""
        w = self.sim.world
        rng = np.random.default_rng([self.seed, 71])
        streams = w.streams
        pop = np.array([s["popularity"] for s in streams], float)
        which = rng.choice(len(streams), n, p=pop / pop.sum())
        out: list[tuple[str, str]] = []
        for s_idx in range(len(streams)):
            m = int((which == s_idx).sum())
            if m == 0:
                continue
            st = streams[s_idx]
            plat_users = np.flatnonzero(w.user_platform == st["platform_index"])
            if plat_users.size == 0:
                continue
            match = w.user_vec[plat_users] @ w.item_vec[st["showcase"]].mean(0)
            logw = np.log(w.user_activity[plat_users]) + 1.5 * match
            users = np.concatenate(
                [
                    plat_users[np.argsort(-(logw + rng.gumbel(size=plat_users.size)))[: m - j]]
                    for j in range(0, m, plat_users.size)
                ]
            )
            out += [(w.user_ids[u], st["stream_id"]) for u in users]
        order = rng.permutation(len(out))
        return [out[i] for i in order]

    # ------------------------------------------------------------------------------ reactions
    def react(
        self, requests: list[tuple[str, str]], answers: list[dict[str, Any]], start_ms: int | None = None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Contract events (``rec_impression``, ``product_click`` / ``add_to_cart`` / ``purchase`` with the
        answer's ``rec_id``) of the viewers shown ``answers``; and per answer its truth: ``rec_id``,
        ``arm``, ``items``, the expected clicks / purchases / GMV of the list (true probabilities).
        The answers are opened at a time inside their stream (uniform over its middle 90 %), or, with
        ``start_ms``, one after the other from then (``gap_ms`` apart)."""
        w, cfg = self.sim.world, self.sim.cfg
        rng = np.random.default_rng([self.seed, 72])
        stream_plat = {s["stream_id"]: s["platform"] for s in w.streams}
        span = {s["stream_id"]: (s["start_ms"], s["end_ms"]) for s in w.streams}
        if start_ms is None:
            at = rng.uniform(0.05, 0.9, len(requests))
            opened = np.array(
                [span[q[1]][0] + a * (span[q[1]][1] - span[q[1]][0]) for q, a in zip(requests, at, strict=True)],
                np.int64,
            )
        else:
            opened = start_ms + np.arange(len(requests), dtype=np.int64) * self.gap_ms
        R_u, R_i, R_pos, R_req = [], [], [], []
        for r, ((user, _stream), ans) in enumerate(zip(requests, answers, strict=True)):
            u = self._user_index.get(user)
            if u is None or not ans.get("rec_id"):
                continue
            for pos, it in enumerate(ans.get("items") or [], start=1):
                i = self._item_index.get(it["item_id"])
                if i is None:
                    continue
                R_u.append(u)
                R_i.append(i)
                R_pos.append(pos)
                R_req.append(r)
        u_a, i_a, pos_a, req_a = (np.asarray(x, np.int64) for x in (R_u, R_i, R_pos, R_req))
        aff = _affinity(w, u_a, i_a) if u_a.size else np.zeros(0)
        examine = 1.0 / np.log2(pos_a + 1.0) ** self.position_decay
        p_click = examine * _sigmoid(_CLICK[0] + _CLICK[1] * aff)
        p_cart = _sigmoid(_CART[0] + _CART[1] * aff)
        p_buy = _sigmoid(_BUY[0] + _BUY[1] * aff)
        clicked = rng.random(u_a.size) < p_click
        carted = clicked & (rng.random(u_a.size) < p_cart)
        bought = carted & (rng.random(u_a.size) < p_buy)
        price = w.item_price[i_a]
        t_imp = opened[req_a] + (pos_a - 1) * 40 if req_a.size else np.zeros(0, np.int64)
        t_clk = t_imp + 1_000 + rng.exponential(8_000, u_a.size).astype(np.int64)
        t_cart = t_clk + 1_000 + rng.exponential(15_000, u_a.size).astype(np.int64)
        t_buy = t_cart + 1_000 + rng.exponential(20_000, u_a.size).astype(np.int64)
        plus08 = w.user_plus08[u_a] if u_a.size else np.zeros(0, bool)

        events: list[dict[str, Any]] = []

        def emit(mask: np.ndarray, typ: str, t: np.ndarray, extra) -> None:
            idx = np.flatnonzero(mask)
            for j, ts in zip(idx.tolist(), format_ts(t[idx], plus08[idx]), strict=True):
                user, stream = requests[int(req_a[j])]
                ev = {
                    "event_id": f"rx{self.seed}-{typ[:3]}-{j}",
                    "type": typ,
                    "ts": ts,
                    "platform": stream_plat.get(stream, cfg.platforms[int(w.user_platform[u_a[j]])]),
                    "stream_id": stream,
                    "user_id": user,
                    "item_id": w.item_ids[int(i_a[j])],
                    "rec_id": answers[int(req_a[j])]["rec_id"],
                }
                ev.update(extra(j))
                events.append(ev)

        everything = np.ones(u_a.size, bool)
        emit(everything, "rec_impression", t_imp, lambda j: {"position": int(pos_a[j])})
        emit(clicked, "product_click", t_clk, lambda j: {})
        emit(carted, "add_to_cart", t_cart, lambda j: {"quantity": 1})
        emit(
            bought,
            "purchase",
            t_buy,
            lambda j: {"price": float(price[j]), "currency": "CNY", "quantity": 1, "order_id": f"rxo{self.seed}-{j}"},
        )
        events.sort(key=lambda e: (e["ts"][:23], e["event_id"]))

        exp_click = defaultdict(float)
        exp_buy = defaultdict(float)
        exp_gmv = defaultdict(float)
        p_b = p_click * p_cart * p_buy
        for j in range(u_a.size):
            r = int(req_a[j])
            exp_click[r] += float(p_click[j])
            exp_buy[r] += float(p_b[j])
            exp_gmv[r] += float(p_b[j] * price[j])
        truth = [
            {
                "rec_id": a.get("rec_id"),
                "arm": arm_of(a.get("rec_id", "")),
                "user_id": q[0],
                "stream_id": q[1],
                "items": len(a.get("items") or []),
                "expected_clicks": exp_click[r],
                "expected_purchases": exp_buy[r],
                "expected_gmv": exp_gmv[r],
            }
            for r, (q, a) in enumerate(zip(requests, answers, strict=True))
        ]
        return events, truth


def summarise_truth(truth: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per arm: answers, impressions and the expected CTR / conversion / GMV per impression (truth)."""
    out: dict[str, dict[str, float]] = {}
    for t in truth:
        a = out.setdefault(t["arm"], {"answers": 0, "impressions": 0, "clicks": 0.0, "purchases": 0.0, "gmv": 0.0})
        a["answers"] += 1
        a["impressions"] += t["items"]
        a["clicks"] += t["expected_clicks"]
        a["purchases"] += t["expected_purchases"]
        a["gmv"] += t["expected_gmv"]
    for a in out.values():
        n = max(1, a["impressions"])
        a["ctr"] = a["clicks"] / n
        a["conversion"] = a["purchases"] / n
        a["gmv_per_impression"] = a["gmv"] / n
    return out
