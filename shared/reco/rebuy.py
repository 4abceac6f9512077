"""Buy-again statistics: how likely and when a buyer rebuys an item, learned from purchases.

A purchase *occasion* is a distinct (user, item, UTC day): two orders of the same item on one day
are one occasion (a live room often takes an order and its re-order minutes apart).  From the
occasions of the training window:

* per (user, item): ``count`` (occasions) and ``last`` (day of the last one, days since the epoch);
* per item ``i`` with ``n_i`` buyers of whom ``r_i`` bought it on two or more occasions, the
  **rebuy rate** shrunk towards its category's rate, which is shrunk towards the global rate::

      rate_c = (r_c + m·rate_all) / (n_c + m),    rate_i = (r_i + m·rate_c) / (n_i + m)

  (``m`` = ``prior`` pseudo-buyers, default 5);
* the **interval** (days between consecutive occasions of the same user and item) as a geometric
  mean shrunk the same way in log space: ``log τ_i = (Σ log g + m·log τ_c) / (k_i + m)`` over the
  item's ``k_i`` observed gaps ``g``.

Durables (rebuy rate ≈ 0) and consumables (rate high, τ their cycle) come out of the data; the
ranker (``shared.reco.ranker``) turns them into features such as "due": how close the time since the
user's last purchase is to τ_i.  Pure numpy; every array serialises without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .interactions import _codes

__all__ = ["DAY_S", "Occasions", "purchase_occasions", "RepeatStats", "ts_days", "ts_ns", "ts_ns1"]

DAY_S = 86400.0


def ts_ns(ts) -> np.ndarray:
    """UTC timestamps (Series / array) -> int64 nanoseconds since the epoch, whatever the tz / unit."""
    s = ts if isinstance(ts, pd.Series) else pd.Series(ts)
    if not len(s):
        return np.empty(0, np.int64)
    return pd.to_datetime(s, utc=True).dt.as_unit("ns").astype("int64").to_numpy()


def ts_ns1(t) -> int:
    """One timestamp (naive = UTC) -> int64 nanoseconds since the epoch."""
    t = pd.Timestamp(t)
    return int((t.tz_convert("UTC") if t.tzinfo else t.tz_localize("UTC")).as_unit("ns").value)


def ts_days(ts) -> np.ndarray:
    """UTC timestamps (Series / array / scalar) -> float days since the epoch."""
    return ts_ns(ts).astype(np.float64) / (DAY_S * 1e9)


@dataclass
class Occasions:
    """Distinct purchase occasions, sorted by (user, item, day)."""

    user: np.ndarray  # int64 codes into user_ids
    item: np.ndarray  # int64 codes into item_ids
    day: np.ndarray  # float64 days since the epoch (time of the first order that day)

    def pairs(self, n_users: int, n_items: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(count, last day) per (user, item) as two CSR matrices with the same sparsity pattern."""
        if self.user.size == 0:
            z = sp.csr_matrix((n_users, n_items), dtype=np.float32)
            return z, z.copy()
        head = np.ones(self.user.size, dtype=bool)
        head[1:] = (self.user[1:] != self.user[:-1]) | (self.item[1:] != self.item[:-1])
        starts = np.flatnonzero(head)
        ends = np.r_[starts[1:], self.user.size] - 1
        cnt = np.diff(np.r_[starts, self.user.size]).astype(np.float32)
        u, i = self.user[starts], self.item[starts]
        C = sp.csr_matrix((cnt, (u, i)), shape=(n_users, n_items))
        L = sp.csr_matrix((self.day[ends].astype(np.float64), (u, i)), shape=(n_users, n_items))
        C.sort_indices()
        L.sort_indices()
        return C, L


def purchase_occasions(events: pd.DataFrame, user_ids, item_ids, purchase_type: str = "purchase") -> Occasions:
    """Purchases of ``events`` -> distinct (user, item, day) occasions (codes into the given ids)."""
    ev = events[(events["type"] == purchase_type) & events["item_id"].notna() & events["user_id"].notna()]
    if ev.empty:
        e = np.empty(0, dtype=np.int64)
        return Occasions(e, e, np.empty(0))
    u = _codes(ev["user_id"], np.asarray(user_ids))[0]
    i = _codes(ev["item_id"], np.asarray(item_ids))[0]
    d = ts_days(ev["ts"])
    ok = (u >= 0) & (i >= 0)
    u, i, d = u[ok], i[ok], d[ok]
    o = np.lexsort((d, i, u))
    u, i, d = u[o], i[o], d[o]
    day = np.floor(d)
    keep = np.ones(u.size, dtype=bool)
    keep[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1]) | (day[1:] != day[:-1])
    return Occasions(u[keep].astype(np.int64), i[keep].astype(np.int64), d[keep])


@dataclass
class RepeatStats:
    rate: np.ndarray  # float32 per item: P(bought again | bought), shrunk
    interval: np.ndarray  # float32 per item: typical days between purchases, shrunk
    global_rate: float
    global_interval: float
    buyers: np.ndarray  # int32 per item: distinct buyers in the window
    prior: float = 5.0

    @classmethod
    def fit(
        cls,
        occ: Occasions,
        n_items: int,
        item_category: np.ndarray | None = None,
        prior: float = 5.0,
        default_interval: float = 14.0,
    ) -> RepeatStats:
        m = float(prior)
        n_items = int(n_items)
        if occ.user.size == 0:
            return cls(
                np.zeros(n_items, np.float32),
                np.full(n_items, default_interval, np.float32),
                0.0,
                default_interval,
                np.zeros(n_items, np.int32),
                m,
            )
        head = np.ones(occ.user.size, dtype=bool)
        head[1:] = (occ.user[1:] != occ.user[:-1]) | (occ.item[1:] != occ.item[:-1])
        starts = np.flatnonzero(head)
        cnt = np.diff(np.r_[starts, occ.user.size])
        pair_item = occ.item[starts]
        buyers = np.bincount(pair_item, minlength=n_items).astype(np.float64)
        rebuyers = np.bincount(pair_item, weights=(cnt >= 2).astype(np.float64), minlength=n_items)
        # consecutive gaps inside a (user, item) run, in days (>= 1 day: occasions are distinct days)
        same = ~head[1:]
        gaps = np.maximum(np.diff(occ.day)[same], 0.5)
        g_item = occ.item[1:][same]
        lg_sum = np.bincount(g_item, weights=np.log(gaps), minlength=n_items)
        lg_n = np.bincount(g_item, minlength=n_items).astype(np.float64)
        rate_all = float(rebuyers.sum() / buyers.sum()) if buyers.sum() else 0.0
        lint_all = float(lg_sum.sum() / lg_n.sum()) if lg_n.sum() else float(np.log(default_interval))
        if item_category is not None and len(item_category) == n_items:
            cats, code = np.unique(np.asarray(item_category).astype(str), return_inverse=True)
            k = len(cats)
            cb, cr = np.bincount(code, buyers, k), np.bincount(code, rebuyers, k)
            cl, cn = np.bincount(code, lg_sum, k), np.bincount(code, lg_n, k)
            rate_c = ((cr + m * rate_all) / (cb + m))[code]
            lint_c = ((cl + m * lint_all) / (cn + m))[code]
        else:
            rate_c = np.full(n_items, rate_all)
            lint_c = np.full(n_items, lint_all)
        rate = (rebuyers + m * rate_c) / (buyers + m)
        lint = (lg_sum + m * lint_c) / (lg_n + m)
        return cls(
            rate.astype(np.float32),
            np.exp(lint).astype(np.float32),
            rate_all,
            float(np.exp(lint_all)),
            buyers.astype(np.int32),
            m,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"rate": self.rate, "interval": self.interval, "buyers": self.buyers}

    @property
    def meta(self) -> dict:
        return {"global_rate": self.global_rate, "global_interval": self.global_interval, "prior": self.prior}

    @classmethod
    def from_arrays(cls, arrays, meta) -> RepeatStats:
        return cls(
            np.asarray(arrays["rate"]),
            np.asarray(arrays["interval"]),
            float(meta["global_rate"]),
            float(meta["global_interval"]),
            np.asarray(arrays["buyers"]),
            float(meta.get("prior", 5.0)),
        )
