"""Deterministic traffic simulator of live-stream selling sessions (直播带货), with ground truth.

The simulator builds a small world -- platforms, a product catalog with Chinese titles, hosts'
streams with product showcases, viewers with latent tastes -- and plays one evening of viewer
sessions on it. Every viewer action is an event of contract v1 (``shared.contract``). Optional faults
(duplicates, malformed rows, late and clock-skewed events, unknown types) are injected into the send
order and every one of them is recorded in the ground truth, so downstream tests can assert exact
outcomes.

Quick use::

    from devtools.simulator import SimConfig, simulate
    sim = simulate(SimConfig(seed=7, n_streams=5, n_users=2000, n_items=500, faults="default"))
    sim.catalog                    # catalog_item records (sent first)
    sim.events                     # viewer events in SEND order; unparseable rows are ``str``
    sim.truth.fault_log            # key -> {"kind": ..., ...} for every injected fault
    sim.truth.expected_clean()     # DataFrame: what a perfect cleaner keeps
    sim.truth.affinity("u-000042", ["sku-000001", "sku-000002"])

Large runs (10M events) stream stream-by-stream with bounded memory: ``sim.iter_events()``,
``sim.iter_batches(n)``, ``write_files(sim, out, truth_tables=False)``.

Repeat world (many days, hosts streaming repeatedly, consumables rebought around their cycle, the
presented item and social proof driving sales): ``simulate(SimConfig.repeat_preset(seed=1))`` or
``python -m devtools.simulator --repeat-world --out DIR``; ground truth ``CATEGORY_CYCLE_DAYS``,
``sim.truth.repeat_profile()``, ``sim.truth.presentation(stream_id)``, ``sim.truth.summary()["repeat"]``.

Host side (``SimConfig(host_events=True)``): stream start/end with titles and hosts, presentation
slots (the item on stage sells more, flash sales more still), showcase changes, stock and sell-outs;
ground truth ``sim.host_truth`` and ``sim.live_truth()`` (what a live layer must count).

Everything is a pure function of the ``SimConfig`` (numpy ``Generator`` seeded from the config,
one independent generator per stream, no wall clock), so the same config gives byte-identical
output however it is consumed. See ``docs/simulator.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import math
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

__all__ = [
    "CATEGORIES",
    "CATEGORY_CYCLE_DAYS",
    "DEFAULT_FAULTS",
    "FAULT_KINDS",
    "FaultRates",
    "GroundTruth",
    "HOST_TYPES",
    "HostTruth",
    "LiveTruth",
    "REPEAT_WORLD",
    "SendResult",
    "SimConfig",
    "Simulation",
    "main",
    "repeat_profile",
    "send",
    "simulate",
    "write_files",
]

# ----------------------------------------------------------------------------------------------
# Vocabulary: per-category word lists (no downloads). Each entry:
# (category, english, attributes, nouns, english words, median price CNY, price log-sigma)
# ----------------------------------------------------------------------------------------------
CATEGORIES: list[tuple[str, str, list[str], list[str], list[str], float, float]] = [
    (
        "女装/连衣裙",
        "women/dress",
        ["夏季", "碎花", "雪纺", "法式", "收腰", "显瘦", "气质", "复古", "长款", "方领", "泡泡袖", "小个子"],
        ["连衣裙", "长裙", "吊带裙", "衬衫裙"],
        ["floral", "chiffon", "dress", "slim", "vintage"],
        159.0,
        0.45,
    ),
    (
        "男装/T恤",
        "men/t-shirt",
        ["纯棉", "宽松", "短袖", "圆领", "冰丝", "潮牌", "百搭", "透气", "重磅", "印花"],
        ["T恤", "polo衫", "打底衫"],
        ["cotton", "tee", "oversize", "breathable"],
        69.0,
        0.4,
    ),
    (
        "美妆/口红",
        "beauty/lipstick",
        ["哑光", "丝绒", "显白", "滋润", "不掉色", "小金条", "豆沙色", "正红色", "奶茶色"],
        ["口红", "唇釉", "唇泥"],
        ["matte", "velvet", "lipstick", "long-lasting"],
        129.0,
        0.45,
    ),
    (
        "美妆/护肤",
        "beauty/skincare",
        ["补水", "保湿", "修护", "抗皱", "紧致", "烟酰胺", "玻尿酸", "敏感肌", "提亮"],
        ["面霜", "精华液", "面膜", "爽肤水"],
        ["hydrating", "serum", "repair", "cream"],
        239.0,
        0.6,
    ),
    (
        "食品/零食",
        "food/snacks",
        ["网红", "香辣", "低脂", "独立包装", "零添加", "手工", "整箱", "解馋", "办公室"],
        ["牛肉干", "坚果礼盒", "辣条", "饼干", "鸭脖"],
        ["spicy", "snack", "nuts", "gift-box"],
        39.9,
        0.5,
    ),
    (
        "食品/生鲜水果",
        "food/fresh-fruit",
        ["现摘", "新鲜", "产地直发", "脆甜", "大果", "当季", "顺丰包邮", "5斤装"],
        ["丑橘", "猕猴桃", "车厘子", "芒果", "苹果"],
        ["fresh", "fruit", "orchard", "sweet"],
        49.9,
        0.5,
    ),
    (
        "家居/收纳",
        "home/storage",
        ["大容量", "可折叠", "防尘", "加厚", "多层", "北欧风", "免安装", "透明"],
        ["收纳箱", "置物架", "衣柜整理袋", "抽屉盒"],
        ["storage", "foldable", "box", "shelf"],
        59.0,
        0.5,
    ),
    (
        "数码/耳机",
        "digital/earphones",
        ["蓝牙", "降噪", "无线", "运动", "长续航", "低延迟", "入耳式", "骨传导"],
        ["耳机", "耳麦", "耳塞"],
        ["bluetooth", "noise-cancelling", "earbuds", "wireless"],
        199.0,
        0.7,
    ),
    (
        "母婴/纸尿裤",
        "baby/diapers",
        ["超薄", "透气", "干爽", "新生儿", "拉拉裤", "夜用", "量贩装", "柔软"],
        ["纸尿裤", "尿不湿", "湿巾"],
        ["diapers", "ultra-thin", "baby", "dry"],
        119.0,
        0.4,
    ),
    (
        "运动/跑鞋",
        "sports/running-shoes",
        ["轻便", "缓震", "透气", "防滑", "网面", "碳板", "竞速", "休闲"],
        ["跑步鞋", "运动鞋", "训练鞋"],
        ["running", "shoes", "cushioning", "lightweight"],
        329.0,
        0.45,
    ),
    (
        "珠宝/项链",
        "jewelry/necklace",
        ["925银", "轻奢", "小众", "锁骨链", "淡水珍珠", "18K金", "简约", "生日礼物"],
        ["项链", "吊坠", "手链"],
        ["silver", "pearl", "necklace", "gift"],
        299.0,
        0.8,
    ),
    (
        "家电/空气炸锅",
        "appliance/air-fryer",
        ["家用", "大容量", "可视", "智能", "无油", "多功能", "不粘", "5L"],
        ["空气炸锅", "电烤箱", "煎烤机"],
        ["air-fryer", "smart", "oil-free", "kitchen"],
        299.0,
        0.35,
    ),
]
_BRANDS = [
    "悦然",
    "木子",
    "星禾",
    "云朵",
    "拾光",
    "青柚",
    "南风",
    "初见",
    "暖阳",
    "山茶",
    "小鹿",
    "橙意",
    "Lumi",
    "Moka",
    "Aurora",
]
_SELLING = ["直播间专享价", "主播推荐", "限时秒杀", "买一送一", "七天无理由退换", "顺丰包邮", "库存不多", "回购率超高"]
_COMMENTS = [
    "主播好美",
    "这个多少钱",
    "上链接!",
    "已拍",
    "尺码怎么选",
    "{n}号链接还有吗",
    "好看好看",
    "求讲解{n}号",
    "包邮吗",
    "质量怎么样",
    "已下单 期待",
    "有优惠券吗",
    "发货快吗",
    "第一次来 关注了",
    "能便宜点吗",
    "拍了两件",
    "颜色好正",
    "主播辛苦了",
    "想要!",
    "还有货吗",
    "支持支持",
    "66666",
    "❤❤❤",
    "这个适合学生吗",
    "回购了",
    "等了好久",
    "求返场",
    "太划算了吧",
    "刚进来 讲的是什么",
    "主播声音好好听",
]
#: Repurchase cycle in days of the consumable categories (repeat world, ``repeat_purchases=True``);
#: every other category is a durable (``None``): bought once, almost never bought again.
CATEGORY_CYCLE_DAYS: dict[str, float | None] = {
    "女装/连衣裙": None,
    "男装/T恤": None,
    "美妆/口红": 15.0,
    "美妆/护肤": 21.0,
    "食品/零食": 7.0,
    "食品/生鲜水果": 5.0,
    "家居/收纳": None,
    "数码/耳机": None,
    "母婴/纸尿裤": 10.0,
    "运动/跑鞋": None,
    "珠宝/项链": None,
    "家电/空气炸锅": None,
}


_DURABLE_BIAS = 2.5  # repeat world: item_bias offset of durables (considered purchases convert less)
_CONSUMABLE = np.array([CATEGORY_CYCLE_DAYS[c[0]] is not None for c in CATEGORIES])


def repeat_profile() -> dict[str, dict[str, Any]]:
    """Ground truth of the repeat model: category -> {"consumable": bool, "cycle_days": float | None}."""
    return {
        c[0]: {"consumable": CATEGORY_CYCLE_DAYS[c[0]] is not None, "cycle_days": CATEGORY_CYCLE_DAYS[c[0]]}
        for c in CATEGORIES
    }


_HOST_NAMES = ["小杨哥", "薇娅同款", "琦琦", "阿亮", "大狼狗", "小月", "老罗好物", "东方小甄", "佳佳", "可乐姐"]
_GIFT_VALUES = np.array([0.1, 1.0, 6.6, 9.9, 19.9, 52.0, 99.0, 520.0, 1314.0])
_GIFT_P = np.array([0.35, 0.25, 0.15, 0.1, 0.06, 0.04, 0.03, 0.015, 0.005])

# Event type codes; the code order is also the tie-break order inside one millisecond.
TYPES = (
    "stream_enter",
    "product_impression",
    "like",
    "comment",
    "share",
    "follow",
    "gift",
    "product_click",
    "add_to_cart",
    "purchase",
    "stream_leave",
    "refund",
)
(T_ENTER, T_IMP, T_LIKE, T_COMMENT, T_SHARE, T_FOLLOW, T_GIFT, T_CLICK, T_CART, T_BUY, T_LEAVE, T_REFUND) = range(
    len(TYPES)
)
_PRODUCT_TYPES = {T_IMP, T_CLICK, T_CART, T_BUY, T_REFUND}

#: Fault kinds. "extra row" kinds add a row derived from a real event (with its own event_id, or no
#: usable one); duplicate re-sends a real event verbatim; late and skew alter how a real event is sent.
FAULT_KINDS = (
    "duplicate",
    "malformed_json",
    "wrong_type",
    "missing_field",
    "negative_quantity",
    "unknown_item",
    "unknown_type",
    "late",
    "skew",
)
#: Kinds whose row a perfect cleaner drops (it never reaches the clean table).
INVALID_KINDS = frozenset(
    {"malformed_json", "wrong_type", "missing_field", "negative_quantity", "unknown_item", "unknown_type"}
)
_DAY_MS = 86_400_000
_H_MS = 3_600_000


@dataclass(frozen=True)
class FaultRates:
    """Per-event probabilities of each fault (all 0 = a perfectly clean feed).

    ``duplicate``/``late``/``skew`` pick real events; the other kinds add one corrupted row per hit,
    derived from a real event of the same stream, at a random place in that stream's send order.
    """

    duplicate: float = 0.0
    malformed_json: float = 0.0
    wrong_type: float = 0.0
    missing_field: float = 0.0
    negative_quantity: float = 0.0
    unknown_item: float = 0.0
    unknown_type: float = 0.0
    late: float = 0.0
    skew: float = 0.0

    def any(self) -> bool:
        return any(v > 0 for v in dataclasses.asdict(self).values())


DEFAULT_FAULTS = FaultRates(
    duplicate=0.01,
    malformed_json=0.001,
    wrong_type=0.001,
    missing_field=0.001,
    negative_quantity=0.001,
    unknown_item=0.0005,
    unknown_type=0.001,
    late=0.003,
    skew=0.002,
)


@dataclass(frozen=True)
class SimConfig:
    """All knobs of the simulation; the output is a pure function of this object."""

    seed: int = 0
    n_streams: int = 5
    n_users: int = 2000
    n_items: int = 500
    platforms: tuple[str, ...] = ("douyin", "kuaishou")
    start: str = "2026-11-27T12:00:00Z"  #: start of the simulated evening (UTC); streams start within
    window_hours: float = 8.0  #: ... this many hours after ``start``
    mean_viewers_per_stream: float = 300.0  #: scale knob: mean sessions per stream (power-law spread)
    stream_hours: float = 2.0  #: median stream duration
    watch_minutes: float = 6.0  #: median session length (lognormal)
    showcase_min: int = 10
    showcase_max: int = 40
    latent_dim: int = 16
    no_leave_rate: float = 0.02  #: sessions that never send stream_leave (app killed)
    refund_rate: float = 0.08  #: base refund probability per purchase (higher if disliked)
    plus08_rate: float = 0.3  #: share of users whose device sends "+08:00" timestamps
    faults: FaultRates | str | None = None  #: FaultRates, "default", or None/"none"
    # --- repeat world (all defaults are no-ops: the single evening above, byte-identical) -------------
    days: float = 0.0  #: >0: a multi-day world: hosts stream repeatedly over this many days
    n_hosts: int = 0  #: hosts of the multi-day world (0 = about one per 2.5 days of streams)
    host_loyalty: float = 1.0  #: visit logit of a viewer following (or who bought from) the host
    repeat_purchases: bool = False  #: consumables are rebought around their cycle, durables almost never
    rebuy_boost: float = 6.0  #: affinity boost of a consumable bought exactly one cycle ago
    rebuy_intent: float = 0.9  #: p(viewer looks up a due item in the cart list) at full dueness
    room_dynamics: bool = False  #: presented item sells more; sales cluster (social proof)
    presented_boost: float = 2.5  #: affinity boost of the item the host presents right now
    social_proof: float = 0.8  #: affinity boost per log1p(sales of the item in the last window)
    social_window_minutes: float = 10.0  #: social proof window
    # --- host-side events (all defaults are no-ops; ``host_events=True`` switches them on) -----------
    host_events: bool = False  #: send stream_start/end, slot_start/end, showcase_update (+ their truth)
    slot_uplift: float = 2.0  #: affinity boost of the item on stage during its presentation slot
    flash_rate: float = 0.15  #: share of slots that are flash sales (on-stage price below list price)
    flash_uplift: float = 1.5  #: extra affinity boost of the item on stage in a flash-sale slot
    stock_rate: float = 0.3  #: share of showcase items with a limited stock (they can sell out)
    restock_rate: float = 0.4  #: p(the host restocks a sold-out item a few minutes later)
    # --- timing (defaults: the evening above; ``make demo`` dates a short evening that ends now) -----
    stream_min_hours: float = 0.5  #: shortest stream (the lognormal duration is clipped to these bounds)
    stream_max_hours: float = 5.0  #: longest stream
    refund_hours: float = 6.0  #: median delay of a refund after its purchase (lognormal, sigma 1)
    until: str | None = None  #: no row happens after this instant (UTC, RFC 3339): later refunds are not sent

    @classmethod
    def repeat_preset(cls, seed: int = 0, scale: float = 1.0, **overrides: Any) -> SimConfig:
        """A ~28-day repeat world (``REPEAT_WORLD``): hosts streaming repeatedly, consumables rebought
        around their cycle, live-room dynamics. ``scale`` multiplies streams, users and items."""
        kw = dict(REPEAT_WORLD)
        for k in ("n_streams", "n_users", "n_items"):
            kw[k] = max(1, int(round(kw[k] * scale)))
        kw.update(overrides)
        return cls(seed=seed, **kw)

    def multi_day(self) -> bool:
        return self.days > 0

    def uses_v2(self) -> bool:
        """Any repeat-world knob on (the per-stream generator then keeps state across streams)."""
        return self.days > 0 or self.repeat_purchases or self.room_dynamics or self.host_events

    def fault_rates(self) -> FaultRates:
        if self.faults is None or self.faults == "none":
            return FaultRates()
        if self.faults == "default":
            return DEFAULT_FAULTS
        if isinstance(self.faults, FaultRates):
            return self.faults
        if isinstance(self.faults, Mapping):
            return FaultRates(**self.faults)
        raise ValueError(f"faults: expected FaultRates, 'default' or None, got {self.faults!r}")

    def start_ms(self) -> int:
        return _iso_ms(self.start)

    def until_ms(self) -> int | None:
        return None if self.until is None else _iso_ms(self.until)


def _iso_ms(value: str) -> int:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(round(dt.timestamp() * 1000))


#: The repeat-world preset (``SimConfig.repeat_preset()``): 28 days, 150 streams x ~300 viewers.
REPEAT_WORLD: dict[str, Any] = dict(
    days=28.0,
    n_streams=150,
    n_users=2400,
    n_items=450,
    mean_viewers_per_stream=300.0,
    start="2026-11-01T11:00:00Z",
    window_hours=6.0,
    repeat_purchases=True,
    room_dynamics=True,
)
#: Knobs added with the repeat world; left out of ``truth.to_json()["config"]`` while at their default.
_V2_FIELDS = (
    "days",
    "n_hosts",
    "host_loyalty",
    "repeat_purchases",
    "rebuy_boost",
    "rebuy_intent",
    "room_dynamics",
    "presented_boost",
    "social_proof",
    "social_window_minutes",
    "host_events",
    "slot_uplift",
    "flash_rate",
    "flash_uplift",
    "stock_rate",
    "restock_rate",
    "stream_min_hours",
    "stream_max_hours",
    "refund_hours",
    "until",
)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def format_ts(ms: np.ndarray | int, plus08: np.ndarray | bool) -> list[str]:
    """Format epoch milliseconds as RFC 3339 with ms: ``...Z`` or, where ``plus08``, ``...+08:00``."""
    ms = np.atleast_1d(np.asarray(ms, dtype=np.int64))
    p8 = np.broadcast_to(np.asarray(plus08, dtype=bool), ms.shape)
    local = ms + np.where(p8, 8 * _H_MS, 0)
    s = np.datetime_as_string(local.astype("datetime64[ms]"), unit="ms").tolist()
    return [a + ("+08:00" if b else "Z") for a, b in zip(s, p8.tolist())]


def parse_ts_ms(ts: str) -> int:
    """Epoch milliseconds of an RFC 3339 timestamp (inverse of ``format_ts``)."""
    return int(round(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000))


def _dumps(obj: Any) -> bytes:
    return obj.encode() if isinstance(obj, str) else orjson.dumps(obj)


# ----------------------------------------------------------------------------------------------
# the world: catalog, users, streams
# ----------------------------------------------------------------------------------------------


@dataclass
class World:
    item_ids: list[str]
    item_cat: np.ndarray  # (N,) category index
    item_price: np.ndarray  # (N,) CNY
    item_vec: np.ndarray  # (N, D)
    item_bias: np.ndarray  # (N,) quality / popularity logit offset
    item_pop: np.ndarray  # (N,) popularity weight (power law)
    titles: list[str]
    descriptions: list[str]
    user_ids: list[str]
    user_platform: np.ndarray  # (U,) platform index
    user_vec: np.ndarray  # (U, D)
    user_cat_w: np.ndarray  # (U, K) category mixture
    user_activity: np.ndarray  # (U,) how often they watch (power law)
    user_engage: np.ndarray  # (U,) likes/comments multiplier
    user_plus08: np.ndarray  # (U,) device sends +08:00
    cat_centers: np.ndarray  # (K, D)
    streams: list[dict[str, Any]]  # sorted by start
    hosts: list[dict[str, Any]] | None = None  # multi-day world: the hosts (index = host_index)
    user_cycle_jitter: np.ndarray | None = None  # (U, K) repeat world: user's cycle = category cycle x this


def _build_world(cfg: SimConfig) -> World:
    rng = np.random.default_rng([cfg.seed, 0])
    K, D, N, U, S, P = len(CATEGORIES), cfg.latent_dim, cfg.n_items, cfg.n_users, cfg.n_streams, len(cfg.platforms)
    if min(N, U, S, P) < 1:
        raise ValueError("n_items, n_users, n_streams and platforms must all be >= 1")
    centers = rng.normal(0, 1, (K, D)) * (2.0 / math.sqrt(D))
    cat_w = rng.pareto(1.0, K) + 0.5
    p_cat = cat_w / cat_w.sum()
    if cfg.repeat_purchases:  # a flatter category mix, consumables (food, beauty, baby) twice as common
        p_cat = np.sqrt(cat_w) * np.where(_CONSUMABLE, 2.0, 1.0)
        p_cat = p_cat / p_cat.sum()
    item_cat = rng.choice(K, N, p=p_cat)
    item_vec = centers[item_cat] + rng.normal(0, 0.6 / math.sqrt(D), (N, D))
    item_pop = rng.pareto(1.3, N) + 0.05
    item_bias = 0.3 * np.log(item_pop / np.median(item_pop)) + rng.normal(0, 0.2, N)
    if cfg.repeat_purchases:  # durables are considered purchases: lower base conversion (part of the truth)
        item_bias = item_bias - _DURABLE_BIAS * ~_CONSUMABLE[item_cat]
    med = np.array([c[5] for c in CATEGORIES])[item_cat]
    sig = np.array([c[6] for c in CATEGORIES])[item_cat]
    raw = med * np.exp(rng.normal(0, 1, N) * sig)
    price = np.maximum(np.round(np.floor(raw) + np.where(rng.random(N) < 0.6, 0.9, 0.0), 2), 0.9)

    titles, descs = [], []
    for i in range(N):
        name, en, attrs, nouns, en_words, _, _ = CATEGORIES[item_cat[i]]
        k = int(rng.integers(2, 5))
        a = [attrs[j] for j in rng.choice(len(attrs), min(k, len(attrs)), replace=False)]
        noun = nouns[int(rng.integers(len(nouns)))]
        brand = _BRANDS[int(rng.integers(len(_BRANDS)))]
        extra = a[-1:] if rng.random() < 0.5 else []
        titles.append(" ".join([brand] + a[:-1] + [noun] + extra))
        ew = [en_words[j] for j in rng.choice(len(en_words), min(3, len(en_words)), replace=False)]
        sell = _SELLING[int(rng.integers(len(_SELLING)))]
        descs.append(f"{brand}{''.join(a)}{noun}，{sell}。{name} | {brand} {' '.join(ew)} ({en})")
    item_ids = [f"sku-{i:06d}" for i in range(N)]

    user_cat_w = rng.dirichlet(np.full(K, 0.3), U)
    user_vec = 1.5 * user_cat_w @ centers + rng.normal(0, 0.5 / math.sqrt(D), (U, D))
    user_platform = rng.integers(0, P, U)
    user_activity = rng.pareto(1.5, U) + 0.1
    user_engage = rng.lognormal(0, 0.8, U)
    user_plus08 = rng.random(U) < cfg.plus08_rate
    user_ids = [f"u-{u:06d}" for u in range(U)]

    if cfg.uses_v2():
        hosts, streams = _build_streams_v2(cfg, item_cat, item_pop)
        jitter = None
        if cfg.repeat_purchases:
            jitter = np.exp(np.random.default_rng([cfg.seed, 6]).normal(0, 0.2, (U, K)))
        return World(
            item_ids,
            item_cat,
            price,
            item_vec,
            item_bias,
            item_pop,
            titles,
            descs,
            user_ids,
            user_platform,
            user_vec,
            user_cat_w,
            user_activity,
            user_engage,
            user_plus08,
            centers,
            streams,
            hosts,
            jitter,
        )
    streams = _legacy_streams(cfg, rng, item_cat, item_pop)
    return World(
        item_ids,
        item_cat,
        price,
        item_vec,
        item_bias,
        item_pop,
        titles,
        descs,
        user_ids,
        user_platform,
        user_vec,
        user_cat_w,
        user_activity,
        user_engage,
        user_plus08,
        centers,
        streams,
    )


def _legacy_streams(
    cfg: SimConfig, rng: np.random.Generator, item_cat: np.ndarray, item_pop: np.ndarray
) -> list[dict[str, Any]]:
    """The single-evening streams (``_build_world`` for a legacy config, and the v2 generator when
    ``days == 0``): same draws from ``rng``, so legacy output stays byte-identical."""
    K, N, S, P = len(CATEGORIES), len(item_cat), cfg.n_streams, len(cfg.platforms)
    start_ms = cfg.start_ms()
    pop = rng.pareto(1.2, S) + 0.2
    pop = pop / pop.mean()
    streams = []
    for s in range(S):
        plat = s % P if S >= P else int(rng.integers(P))
        n_show = min(int(rng.integers(cfg.showcase_min, cfg.showcase_max + 1)), N)
        main = rng.choice(K, size=int(rng.integers(1, 4)), replace=False)
        w = item_pop * np.where(np.isin(item_cat, main), 1.0, 0.08)
        g = np.log(w) + rng.gumbel(size=N)
        show = np.sort(np.argpartition(-g, n_show - 1)[:n_show])
        st = start_ms + int(rng.uniform(0, cfg.window_hours * _H_MS))
        dur = int(
            np.clip(
                rng.lognormal(math.log(cfg.stream_hours * _H_MS), 0.4),
                cfg.stream_min_hours * _H_MS,
                cfg.stream_max_hours * _H_MS,
            )
        )
        host = int(rng.integers(len(_HOST_NAMES)))
        streams.append(
            {
                "stream_id": f"s-{s:05d}",
                "platform": cfg.platforms[plat],
                "platform_index": plat,
                "host_id": f"h-{s % max(1, S // 2 + 1):04d}-{cfg.platforms[plat]}",
                "title": f"{_HOST_NAMES[host]}直播间 {CATEGORIES[main[0]][0].split('/')[1]}专场",
                "start_ms": st,
                "end_ms": st + dur,
                "popularity": float(pop[s]),
                "main_categories": [CATEGORIES[k][0] for k in main],
                "showcase": show,
                "slot_ms": int(rng.uniform(120_000, 300_000)),
                "index": s,
            }
        )
    streams.sort(key=lambda d: (d["start_ms"], d["index"]))
    return streams


def _build_streams_v2(
    cfg: SimConfig, item_cat: np.ndarray, item_pop: np.ndarray
) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """Streams of a repeat world. With ``days > 0``: hosts (platform, 1-3 main categories, a core
    assortment, a popularity and a streaming frequency), each streaming on distinct days at about the
    same hour, with showcases drawn mostly from their core assortment (so they overlap). Every stream
    gets a fixed presentation order (``presentation``) and its host's index (``host_index``)."""
    K, N, S, P = len(CATEGORIES), len(item_cat), cfg.n_streams, len(cfg.platforms)
    rng = np.random.default_rng([cfg.seed, 4])
    if not cfg.multi_day():
        streams = _legacy_streams(cfg, rng, item_cat, item_pop)
        host_ix: dict[str, int] = {}
        for st in streams:
            st["host_index"] = host_ix.setdefault(st["host_id"], len(host_ix))
    else:
        n_days = max(1, int(math.ceil(cfg.days)))
        H = cfg.n_hosts or max(2, int(round(S / max(1.0, cfg.days / 2.5))))
        H = min(H, S)
        start_ms = cfg.start_ms()
        hosts = []
        for h in range(H):
            plat = h % P
            pm = np.where(_CONSUMABLE, 2.0, 1.0) if cfg.repeat_purchases else np.ones(K)
            main = rng.choice(K, size=int(rng.integers(1, 4)), replace=False, p=pm / pm.sum())
            n_core = min(N, int(rng.integers(cfg.showcase_min + 10, cfg.showcase_max + 11)))
            w = item_pop * np.where(np.isin(item_cat, main), 1.0, 0.05)
            core = np.sort(np.argpartition(-(np.log(w) + rng.gumbel(size=N)), n_core - 1)[:n_core])
            hosts.append(
                {
                    "host_id": f"h-{h:04d}-{cfg.platforms[plat]}",
                    "host_index": h,
                    "platform": cfg.platforms[plat],
                    "platform_index": plat,
                    "name": _HOST_NAMES[h % len(_HOST_NAMES)]
                    + ("" if h < len(_HOST_NAMES) else str(h // len(_HOST_NAMES) + 1)),
                    "main": main,
                    "core": core,
                    "popularity": float(rng.pareto(1.2) + 0.2),
                    "frequency": float(rng.pareto(1.0) + 0.5),
                    "hour_offset_ms": int(rng.uniform(0, 0.6 * cfg.window_hours * _H_MS)),
                    "slot_ms": int(rng.uniform(120_000, 300_000)),
                }
            )
        # streams per host: at least one, the rest by frequency, at most one a day
        freq = np.array([h["frequency"] for h in hosts])
        counts = np.ones(H, np.int64) + rng.multinomial(S - H, freq / freq.sum())
        counts = np.minimum(counts, n_days)
        short = S - int(counts.sum())
        for h in np.argsort(-freq, kind="stable").tolist() * n_days:  # hand the overflow to others
            if short <= 0:
                break
            if counts[h] < n_days:
                counts[h] += 1
                short -= 1
        raw = []
        for h, hd in enumerate(hosts):
            for d in np.sort(rng.choice(n_days, int(counts[h]), replace=False)).tolist():
                off = hd["hour_offset_ms"] + int(rng.normal(0, 0.4 * _H_MS))
                st = start_ms + d * _DAY_MS + int(np.clip(off, 0, cfg.window_hours * _H_MS))
                dur = int(
                    np.clip(
                        rng.lognormal(math.log(cfg.stream_hours * _H_MS), 0.4),
                        cfg.stream_min_hours * _H_MS,
                        cfg.stream_max_hours * _H_MS,
                    )
                )
                n_show = min(int(rng.integers(cfg.showcase_min, cfg.showcase_max + 1)), N)
                w = item_pop * np.where(
                    np.isin(np.arange(N), hd["core"]), 25.0, np.where(np.isin(item_cat, hd["main"]), 1.0, 0.05)
                )
                show = np.sort(np.argpartition(-(np.log(w) + rng.gumbel(size=N)), n_show - 1)[:n_show])
                main = hd["main"]
                raw.append(
                    {
                        "platform": hd["platform"],
                        "platform_index": hd["platform_index"],
                        "host_id": hd["host_id"],
                        "host_index": h,
                        "title": f"{hd['name']}直播间 {CATEGORIES[main[0]][0].split('/')[1]}专场 第{d + 1}天",
                        "start_ms": st,
                        "end_ms": st + dur,
                        "popularity": hd["popularity"] * float(rng.lognormal(0, 0.3)),
                        "main_categories": [CATEGORIES[k][0] for k in main],
                        "showcase": show,
                        "slot_ms": hd["slot_ms"],
                    }
                )
        raw.sort(key=lambda d: (d["start_ms"], d["host_index"]))
        mean_pop = float(np.mean([d["popularity"] for d in raw]))
        streams = []
        for s_, d in enumerate(raw):
            d["popularity"] = d["popularity"] / mean_pop
            streams.append({"stream_id": f"s-{s_:05d}", **d, "index": s_})
    for st in streams:
        st["presentation"] = np.random.default_rng([cfg.seed, 5, st["index"]]).permutation(st["showcase"])
    if cfg.host_events:
        for st in streams:
            h = st["host_index"]
            name = hosts[h]["name"] if cfg.multi_day() else _host_name(h)
            _stream_meta(cfg, st, name, _host_name(h, english=True))
    hosts_out = None
    if cfg.multi_day():
        hosts_out = [{k: v for k, v in h.items()} for h in hosts]
    return hosts_out, streams


# ----------------------------------------------------------------------------------------------
# host side (``host_events``): stream metadata, presentation slots, showcase changes, stock
# ----------------------------------------------------------------------------------------------

#: Host-side event types (``shared.contract.HOST_ACTIONS``); none has a user_id.
HOST_TYPES = ("stream_start", "stream_end", "slot_start", "slot_end", "showcase_update")
_HOST_NAMES_EN = ["Xiao Yang", "Vivian", "Qiqi", "A-Liang", "Big Wolf", "Luna", "Lao Luo", "Zhen", "Jiajia", "Cola"]
_TITLES = [
    "{name}直播间 {cat}专场",
    "{name}的{cat}好物分享 | {en} live",
    "双12狂欢 {cat}限时秒杀 | {en}'s flash deals",
    "{name}直播间 · 今晚{cat}福利 宠粉价",
    "{en} Live: {cat_en} picks tonight | {name}直播间",
    "工厂直发 {cat}源头好货 {name}带你逛",
]
_ADD_RATE = 0.15  # showcase items put on the shelf mid-stream (not there at the start)
_REMOVE_RATE = 0.08  # items taken off the shelf mid-stream
_PRICE_RATE = 0.10  # items whose list price drops mid-stream (直播间专享价)


def _host_name(h: int, english: bool = False) -> str:
    names = _HOST_NAMES_EN if english else _HOST_NAMES
    return names[h % len(names)] + ("" if h < len(names) else str(h // len(names) + 1))


def _stream_meta(cfg: SimConfig, st: dict[str, Any], name: str, en: str) -> None:
    """Host name, a live-commerce room title (Chinese / English) and the scheduled times (RNG
    ``[seed, 8, stream#]``): scheduled start on the quarter hour nearest the real start, scheduled
    end on the half hour of the planned duration."""
    rng = np.random.default_rng([cfg.seed, 8, st["index"]])
    cat = st["main_categories"][0]
    cat_zh = cat.split("/")[1]
    cat_en = next(c[1] for c in CATEGORIES if c[0] == cat).split("/")[1]
    tpl = _TITLES[int(rng.integers(len(_TITLES)))]
    st["host_name"] = name
    st["title"] = tpl.format(name=name, en=en, cat=cat_zh, cat_en=cat_en)
    q, hh = 15 * 60_000, 30 * 60_000
    sched = int(round(st["start_ms"] / q)) * q
    st["scheduled_start_ms"] = sched
    st["scheduled_end_ms"] = sched + max(hh, int(round((st["end_ms"] - st["start_ms"]) / hh)) * hh)


def _discount(p: np.ndarray | float, f: np.ndarray | float) -> np.ndarray:
    """A price like ``p * f`` that ends in .9 when possible, always below ``p`` and >= 0.01."""
    p, f = np.asarray(p, float), np.asarray(f, float)
    v = np.floor(p * f) + 0.9
    v = np.where(v < p, v, np.round(p * f, 2))
    return np.round(np.maximum(v, 0.01), 2)


class _HostPlan:
    """One stream's host side (RNG ``[seed, 7, stream#]``, independent of the viewer draws): the
    availability window of every showcase item, mid-stream price drops, which items have a limited
    stock, and the presentation slots with their on-stage price (flash sales below the list price).
    ``cap_stock`` then applies the stock to the purchases and records sell-outs and restocks."""

    def __init__(self, cfg: SimConfig, world: World, st: dict[str, Any]):
        rng = self.rng = np.random.default_rng([cfg.seed, 7, st["index"]])
        self.cfg, self.st = cfg, st
        s0, s1, show = st["start_ms"], st["end_ms"], st["showcase"]
        m, dur = len(show), s1 - s0
        self.s0, self.s1, self.show, self.m = s0, s1, show, m
        self.cut = s1 - 1  # every viewer action of the session happens before stream_end
        self.pos = np.full(len(world.item_ids), -1, np.int64)
        self.pos[show] = np.arange(m)
        self.list_price = world.item_price[show].astype(float)
        late = rng.random(m) < _ADD_RATE
        if (~late).sum() < 3:
            late[:] = False
        t_add = s0 + (rng.uniform(0.1, 0.6, m) * dur).astype(np.int64)
        self.added = np.where(late, t_add, s0)
        rm = ~late & (rng.random(m) < _REMOVE_RATE)
        t_rm = s0 + (rng.uniform(0.4, 0.9, m) * dur).astype(np.int64)
        self.removed = np.where(rm, t_rm, s1)
        self.pc = rng.random(m) < _PRICE_RATE
        self.pc_t = self.added + (rng.uniform(0.2, 0.8, m) * (self.removed - self.added)).astype(np.int64)
        self.pc_price = _discount(self.list_price, rng.uniform(0.7, 0.95, m))
        self.limited = rng.random(m) < cfg.stock_rate
        self.plus08 = bool(rng.random() < cfg.plus08_rate)
        # presentation slots: one item after another (a shuffled cycle of what is on the shelf),
        # lognormal length around the stream's slot_ms, short chats between slots
        L = st["slot_ms"]
        starts, ends, poss, flash, price = [], [], [], [], []
        t = s0 + int(rng.uniform(30_000, 180_000))
        cycle: list[int] = []
        while True:
            d = int(np.clip(rng.lognormal(math.log(L), 0.3), 60_000, 600_000))
            if t + 60_000 > s1 - 30_000:
                break
            end = min(t + d, s1 - 30_000)
            p = -1
            for _ in range(2 * m):
                if not cycle:
                    cycle = rng.permutation(m).tolist()
                j = cycle.pop()
                if self.added[j] <= t and end <= self.removed[j]:
                    p = j
                    break
            if p >= 0:
                fl = bool(rng.random() < cfg.flash_rate)
                cur = float(self.list_at(np.array([p]), np.array([t]))[0])
                starts.append(t)
                ends.append(end)
                poss.append(p)
                flash.append(fl)
                price.append(float(_discount(cur, rng.uniform(0.5, 0.85))) if fl else cur)
            t = end + int(rng.uniform(5_000, 30_000))
        self.slot_start = np.array(starts, np.int64)
        self.slot_end = np.array(ends, np.int64)
        self.slot_pos = np.array(poss, np.int64)
        self.slot_flash = np.array(flash, bool)
        self.slot_price = np.array(price, float)
        self.slot_ids = [f"{st['stream_id']}-k{k:03d}" for k in range(len(starts))]
        self.stock: dict[int, int] = {}  # showcase position -> initial units
        self.sold_out: list[dict[str, Any]] = []  # {pos, sold_out_ms, restock_ms, restock_units}

    # --- lookups (vectorised over aligned item-index / time arrays) -----------------------------
    def list_at(self, p: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.where(self.pc[p] & (t >= self.pc_t[p]), self.pc_price[p], self.list_price[p])

    def slot_at(self, t: np.ndarray) -> np.ndarray:
        """Index of the slot running at each t, or -1."""
        j = np.searchsorted(self.slot_start, t, side="right") - 1
        ok = (j >= 0) & (t < self.slot_end[np.maximum(j, 0)]) if len(self.slot_start) else np.zeros(len(t), bool)
        return np.where(ok, j, -1)

    def on_stage(self, i: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(item i is on stage at t, ... in a flash-sale slot)."""
        j = self.slot_at(t)
        jj = np.maximum(j, 0)
        on = (j >= 0) & (self.show[self.slot_pos[jj]] == i) if len(self.slot_start) else np.zeros(len(t), bool)
        return on, on & self.slot_flash[jj] if len(self.slot_start) else on

    def available(self, i: np.ndarray, t: np.ndarray) -> np.ndarray:
        """On the shelf at t (added, not removed, before the stream ends); stock is applied later."""
        p = self.pos[i]
        return (p >= 0) & (self.added[p] <= t) & (t < self.removed[p]) & (t < self.cut)

    def price_at(self, i: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The price a viewer sees at t: the list price (after any price drop), or the on-stage price
        during the item's flash-sale slot."""
        p = np.maximum(self.pos[i], 0)
        out = self.list_at(p, t)
        if len(self.slot_start):
            on, fl = self.on_stage(i, t)
            out = np.where(fl, self.slot_price[np.maximum(self.slot_at(t), 0)], out)
        return out

    # --- stock ----------------------------------------------------------------------------------
    def cap_stock(self, items: np.ndarray, t: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Apply limited stock to the purchases (item index, time, quantity), in time order per item:
        a purchase takes at most what is left (the last buyer may get fewer units than carted); when
        the units sold reach the stock the item is sold out (``sold_out`` at the next ms) and no later
        purchase goes through unless the host restocks it (``restock_rate``, 2-10 min later). The
        stock itself is a share (0.3-1.2) of the item's uncapped demand, so sell-outs happen. Returns
        the quantities (0 = the purchase did not happen)."""
        q = q.copy()
        rng = self.rng
        for p in np.flatnonzero(self.limited).tolist():
            ix = np.flatnonzero(items == self.show[p])
            ix = ix[np.argsort(t[ix], kind="stable")]
            demand = int(q[ix].sum())
            f, fallback = rng.uniform(0.3, 1.2), int(rng.integers(5, 100))
            units = max(1, int(round(demand * f))) if demand else fallback
            self.stock[p] = units
            left, out_at, re_at, re_units = units, -1, -1, 0
            for j in ix.tolist():
                tj = int(t[j])
                if out_at >= 0 and 0 <= re_at <= tj:  # restocked
                    left, out_at, re_at = re_units, -1, -1
                if out_at >= 0:
                    q[j] = 0
                    continue
                take = min(int(q[j]), left)
                q[j] = take
                left -= take
                if left == 0:
                    out_at = tj + 1
                    re_at, re_units = -1, 0
                    restock, delay, frac = (
                        rng.random() < self.cfg.restock_rate,
                        rng.uniform(120_000, 600_000),
                        rng.uniform(0.3, 1.0),
                    )
                    if restock and out_at + delay < min(int(self.removed[p]), self.s1 - 60_000):
                        re_at, re_units = out_at + int(delay), max(1, int(round(units * frac)))
                    self.sold_out.append(
                        {
                            "pos": p,
                            "sold_out_ms": out_at,
                            "restock_ms": re_at if re_at >= 0 else None,
                            "restock_units": re_units or None,
                        }
                    )
        return q

    # --- the host events ------------------------------------------------------------------------
    def events(self, world: World) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """(times, rows without event_id) of the host events, in time order."""
        st, show, iid = self.st, self.show, world.item_ids
        sid, host = st["stream_id"], st["host_id"]
        ev: list[tuple[int, dict[str, Any]]] = []
        ev.append(
            (
                self.s0,
                {
                    "type": "stream_start",
                    "stream_id": sid,
                    "host_id": host,
                    "host_name": st["host_name"],
                    "title": st["title"],
                    "scheduled_start": format_ts(st["scheduled_start_ms"], self.plus08)[0],
                    "scheduled_end": format_ts(st["scheduled_end_ms"], self.plus08)[0],
                },
            )
        )

        def upd(t: int, p: int, change: str, **kw: Any) -> None:
            ev.append(
                (int(t), {"type": "showcase_update", "stream_id": sid, "item_id": iid[show[p]], "change": change, **kw})
            )

        for p in range(self.m):
            t_add = int(self.added[p]) + (1 + p if self.added[p] == self.s0 else 0)
            upd(t_add, p, "add", price=float(self.list_price[p]), currency="CNY")
            if p in self.stock:
                upd(t_add + (self.m if self.added[p] == self.s0 else 1), p, "stock", stock=self.stock[p])
            if self.removed[p] < self.s1:
                upd(int(self.removed[p]), p, "remove")
            if self.pc[p]:
                upd(int(self.pc_t[p]), p, "price", price=float(self.pc_price[p]), currency="CNY")
        for so in self.sold_out:
            upd(so["sold_out_ms"], so["pos"], "sold_out")
            if so["restock_ms"] is not None:
                upd(so["restock_ms"], so["pos"], "stock", stock=so["restock_units"])
        for k, sl in enumerate(self.slot_ids):
            item = iid[show[self.slot_pos[k]]]
            ev.append(
                (
                    int(self.slot_start[k]),
                    {
                        "type": "slot_start",
                        "stream_id": sid,
                        "slot_id": sl,
                        "item_id": item,
                        "host_id": host,
                        "price": float(self.slot_price[k]),
                        "currency": "CNY",
                    },
                )
            )
            ev.append(
                (
                    int(self.slot_end[k]),
                    {"type": "slot_end", "stream_id": sid, "slot_id": sl, "item_id": item, "host_id": host},
                )
            )
        ev.append((self.s1, {"type": "stream_end", "stream_id": sid, "host_id": host}))
        order = sorted(range(len(ev)), key=lambda j: (ev[j][0], j))
        times = np.array([ev[j][0] for j in order], np.int64)
        return times, [ev[j][1] for j in order]

    def truth(self, world: World) -> dict[str, Any]:
        """JSON-able record of what the host did (``Simulation.host_truth`` reads it)."""
        iid, show = world.item_ids, self.show
        return {
            "slots": [
                {
                    "slot_id": sl,
                    "slot": k,
                    "item_id": iid[show[self.slot_pos[k]]],
                    "start_ms": int(self.slot_start[k]),
                    "end_ms": int(self.slot_end[k]),
                    "flash": bool(self.slot_flash[k]),
                    "price": float(self.slot_price[k]),
                    "list_price": float(self.list_at(self.slot_pos[k : k + 1], self.slot_start[k : k + 1])[0]),
                }
                for k, sl in enumerate(self.slot_ids)
            ],
            "items": [
                {
                    "item_id": iid[show[p]],
                    "added_ms": int(self.added[p]),
                    "removed_ms": int(self.removed[p]) if self.removed[p] < self.s1 else None,
                    "list_price": float(self.list_price[p]),
                    "price_change_ms": int(self.pc_t[p]) if self.pc[p] else None,
                    "new_price": float(self.pc_price[p]) if self.pc[p] else None,
                    "stock": self.stock.get(p),
                }
                for p in range(self.m)
            ],
            "sold_out": [
                {"item_id": iid[show[so["pos"]]], **{k: v for k, v in so.items() if k != "pos"}} for so in self.sold_out
            ],
        }


# Funnel logits: p(click | impression), p(cart | click), p(buy | cart) all rise with affinity.
_CLICK = (-3.4, 0.7)
_CART = (-1.8, 0.4)
_BUY = (-0.6, 0.35)


def _affinity(world: World, u: np.ndarray, i: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", world.user_vec[u], world.item_vec[i]) * 1.5 + world.item_bias[i]


# ----------------------------------------------------------------------------------------------
# one stream's true events (columnar, vectorised)
# ----------------------------------------------------------------------------------------------


def _stream_events(cfg: SimConfig, world: World, st: dict[str, Any]) -> list[dict[str, Any]]:
    rng = np.random.default_rng([cfg.seed, 1, st["index"]])
    s0, s1, show = st["start_ms"], st["end_ms"], st["showcase"]
    plat_users = np.flatnonzero(world.user_platform == st["platform_index"])
    if len(plat_users) == 0:
        return []
    # who watches: activity x taste-match with the showcase, weighted sampling without replacement
    match = world.user_vec[plat_users] @ world.item_vec[show].mean(0)
    w = world.user_activity[plat_users] * np.exp(1.5 * match)
    n_v = int(min(rng.poisson(cfg.mean_viewers_per_stream * st["popularity"]), len(plat_users)))
    if n_v == 0:
        return []
    g = np.log(w) + rng.gumbel(size=len(plat_users))
    users = plat_users[np.argpartition(-g, n_v - 1)[:n_v]] if n_v < len(plat_users) else plat_users.copy()
    users = np.sort(users)
    V = len(users)
    dur = s1 - s0
    early = rng.random(V) < 0.35
    enter = s0 + np.where(early, rng.uniform(0, 600_000, V), rng.uniform(0, dur * 0.95, V)).astype(np.int64)
    watch = np.clip(rng.lognormal(math.log(cfg.watch_minutes * 60_000), 1.0, V), 5_000, None).astype(np.int64)
    leave = np.minimum(enter + watch, s1 + rng.integers(0, 60_000, V))
    leave = np.maximum(leave, enter + 2_000)

    cols_sess, cols_t, cols_type, cols_item = [], [], [], []

    def add(sess, t, typ, item=None):
        cols_sess.append(np.asarray(sess, np.int64))
        cols_t.append(np.asarray(t, np.int64))
        cols_type.append(np.full(len(sess), typ, np.int8))
        cols_item.append(np.full(len(sess), -1, np.int64) if item is None else np.asarray(item, np.int64))

    # host presentation schedule: slot k presents showcase item order[k % m]
    m, L = len(show), st["slot_ms"]
    order = rng.permutation(show)
    k0 = (enter - s0) // L
    k1 = np.minimum((leave - s0) // L, (s1 - s0) // L)
    n_slots = np.maximum(k1 - k0 + 1, 0)
    sess = np.repeat(np.arange(V), n_slots)
    first = np.repeat(np.cumsum(n_slots) - n_slots, n_slots)
    k = np.repeat(k0, n_slots) + (np.arange(len(sess)) - first)
    t = np.maximum(s0 + k * L, enter[sess]) + rng.integers(1_000, 8_000, len(sess))
    ok = t < leave[sess] - 1_000
    imp_s, imp_t, imp_i = sess[ok], t[ok], order[k[ok] % m]
    # shopping-cart browsing (小黄车): a few random showcase items at one moment
    browse = rng.random(V) < 0.35
    nb = np.where(browse, rng.integers(2, 8, V), 0)
    bs = np.repeat(np.arange(V), nb)
    bt0 = enter + (rng.random(V) * (leave - enter) * 0.8).astype(np.int64)
    bfirst = np.repeat(np.cumsum(nb) - nb, nb)
    bt = bt0[bs] + 1_000 + (np.arange(len(bs)) - bfirst) * 1_500
    bi = show[rng.integers(0, m, len(bs))]
    okb = bt < leave[bs] - 1_000
    imp_s = np.concatenate([imp_s, bs[okb]])
    imp_t = np.concatenate([imp_t, bt[okb]])
    imp_i = np.concatenate([imp_i, bi[okb]])
    add(imp_s, imp_t, T_IMP, imp_i)

    # funnel: impression -> click -> cart -> purchase, driven by taste . item affinity
    u_imp = users[imp_s]
    aff = _affinity(world, u_imp, imp_i)
    clk = rng.random(len(aff)) < _sigmoid(_CLICK[0] + _CLICK[1] * aff)
    c_s, c_i, c_a = imp_s[clk], imp_i[clk], aff[clk]
    c_t = imp_t[clk] + 1_000 + rng.exponential(15_000, len(c_s)).astype(np.int64)
    add(c_s, c_t, T_CLICK, c_i)
    crt = rng.random(len(c_s)) < _sigmoid(_CART[0] + _CART[1] * c_a)
    a_s, a_i, a_a = c_s[crt], c_i[crt], c_a[crt]
    a_t = c_t[crt] + 1_000 + rng.exponential(30_000, len(a_s)).astype(np.int64)
    a_q = rng.choice(np.array([1, 2, 3]), len(a_s), p=[0.82, 0.13, 0.05])
    add(a_s, a_t, T_CART, a_i)
    buy = rng.random(len(a_s)) < _sigmoid(_BUY[0] + _BUY[1] * a_a)
    b_s, b_i, b_a, b_q = a_s[buy], a_i[buy], a_a[buy], a_q[buy]
    b_t = a_t[buy] + 1_000 + rng.exponential(45_000, len(b_s)).astype(np.int64)
    add(b_s, b_t, T_BUY, b_i)

    # engagement, uniform over the session
    wm = (leave - enter) / 60_000.0
    eng = world.user_engage[users]

    def spread(counts, typ):
        ss = np.repeat(np.arange(V), counts)
        tt = enter[ss] + 1 + (rng.random(len(ss)) * (leave[ss] - enter[ss] - 2)).astype(np.int64)
        add(ss, tt, typ)
        return ss

    like_s = spread(rng.poisson(0.35 * wm * eng), T_LIKE)
    com_s = spread(rng.poisson(0.12 * wm * eng), T_COMMENT)
    spread((rng.random(V) < 0.04).astype(np.int64), T_SHARE)
    spread(
        (rng.random(V) < 0.03 + 0.03 * np.tanh(np.maximum(match[np.searchsorted(plat_users, users)], 0))).astype(
            np.int64
        ),
        T_FOLLOW,
    )
    gift_s = spread(rng.poisson(0.015 * wm * eng), T_GIFT)

    # leave after the last action; some sessions never send it
    act_s = np.concatenate(cols_sess)
    act_t = np.concatenate(cols_t)
    last = enter.copy()
    np.maximum.at(last, act_s, act_t)
    leave = np.maximum(leave, last + rng.integers(1_000, 20_000, V))
    send_leave = rng.random(V) >= cfg.no_leave_rate
    add(np.arange(V), enter, T_ENTER)
    add(np.flatnonzero(send_leave), leave[send_leave], T_LEAVE)

    # refunds: later, possibly after the stream ended; likelier for disliked items
    p_ref = np.clip(cfg.refund_rate * np.exp(-0.3 * (b_a - 4.0)), 0, 0.5)
    ref = rng.random(len(b_s)) < p_ref
    r_t = b_t[ref] + rng.lognormal(math.log(cfg.refund_hours * _H_MS), 1.0, int(ref.sum())).astype(np.int64)
    add(b_s[ref], r_t, T_REFUND, b_i[ref])

    return _rows(
        world,
        st,
        rng,
        (cols_sess, cols_t, cols_type, cols_item),
        a_q,
        b_q,
        ref,
        len(like_s),
        len(com_s),
        len(gift_s),
        users,
        m,
    )


def _rows(
    world: World,
    st: dict[str, Any],
    rng: np.random.Generator,
    cols: tuple[list, list, list, list],
    a_q: np.ndarray,
    b_q: np.ndarray,
    ref: np.ndarray,
    n_like: int,
    n_com: int,
    n_gift: int,
    users: np.ndarray,
    m: int,
    price_fn: Any = None,
    ms_out: list[np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """Event dicts of one stream from its columns, added in the order imp, click, cart, buy, like,
    comment, share, follow, gift, enter, leave, refund. ``price_fn(items, ms)`` (host events) gives
    the price of each product event at its time (a refund carries its purchase's price);
    ``ms_out`` receives the rows' times (epoch ms)."""
    cols_sess, cols_t, cols_type, cols_item = cols
    S_ = np.concatenate(cols_sess)
    T_ = np.concatenate(cols_t)
    Y_ = np.concatenate(cols_type)
    I_ = np.concatenate(cols_item)
    # per-row extras, aligned with the concatenation order above
    n = len(S_)
    qty = np.zeros(n, np.int64)
    val = np.zeros(n, np.float64)
    order_no = np.full(n, -1, np.int64)
    aux = np.zeros(n, np.int64)
    offs = np.cumsum([0] + [len(c) for c in cols_sess])
    # order of add(): imp, click, cart, buy, like, comment, share, follow, gift, enter, leave, refund
    sl = {
        name: slice(offs[j], offs[j + 1])
        for j, name in enumerate(
            ["imp", "click", "cart", "buy", "like", "comment", "share", "follow", "gift", "enter", "leave", "refund"]
        )
    }
    qty[sl["cart"]] = a_q
    qty[sl["buy"]] = b_q
    qty[sl["refund"]] = b_q[ref]
    buy_no = np.arange(len(b_q))
    order_no[sl["buy"]] = buy_no
    order_no[sl["refund"]] = buy_no[ref]
    qty[sl["like"]] = np.minimum(rng.geometric(0.15, n_like), 200)
    aux[sl["comment"]] = rng.integers(0, len(_COMMENTS) * 100, n_com)
    val[sl["gift"]] = rng.choice(_GIFT_VALUES, n_gift, p=_GIFT_P)

    srt = np.lexsort((Y_, S_, T_))
    S_, T_, Y_, I_, qty, val, order_no, aux = (a[srt] for a in (S_, T_, Y_, I_, qty, val, order_no, aux))
    U_ = users[S_]
    ts = format_ts(T_, world.user_plus08[U_])
    if ms_out is not None:
        ms_out.append(T_)
    row_price = None
    if price_fn is not None:
        P_ = np.asarray(price_fn(np.maximum(I_, 0), T_), float)
        isb, isr = Y_ == T_BUY, Y_ == T_REFUND
        by_order = np.zeros(max(int(order_no.max()) if n else 0, 0) + 1)
        by_order[order_no[isb]] = P_[isb]
        P_[isr] = by_order[order_no[isr]]
        row_price = np.round(P_, 2).tolist()

    plat, sid, pfx = st["platform"], st["stream_id"], f"{st['platform']}-{st['index']:05d}-"
    uid, iid, price = world.user_ids, world.item_ids, world.item_price.tolist()
    rows: list[dict[str, Any]] = []
    append = rows.append
    for n_, (y, u, i, tsv, q, v, o, ax) in enumerate(
        zip(Y_.tolist(), U_.tolist(), I_.tolist(), ts, qty.tolist(), val.tolist(), order_no.tolist(), aux.tolist())
    ):
        d = {
            "event_id": pfx + f"{n_:07d}",
            "type": TYPES[y],
            "ts": tsv,
            "platform": plat,
            "stream_id": sid,
            "user_id": uid[u],
        }
        if y in _PRODUCT_TYPES:
            d["item_id"] = iid[i]
            d["price"] = price[i] if row_price is None else row_price[n_]
            d["currency"] = "CNY"
            if y == T_CART:
                d["quantity"] = q
            elif y == T_BUY or y == T_REFUND:
                d["quantity"] = q
                d["order_id"] = f"o-{st['index']:05d}-{o:06d}"
        elif y == T_LIKE:
            d["count"] = q
        elif y == T_COMMENT:
            d["text"] = _COMMENTS[ax % len(_COMMENTS)].replace("{n}", str(ax // len(_COMMENTS) % m + 1))
        elif y == T_GIFT:
            d["gift_value"] = v
            d["currency"] = "CNY"
        elif y == T_ENTER:
            d["props"] = {"device": "ios" if u % 3 == 0 else "android"}
        append(d)
    return rows


# ----------------------------------------------------------------------------------------------
# repeat world: state carried across streams (in start order) and the stateful stream generator
# ----------------------------------------------------------------------------------------------

#: Fixed shape constants of the rebuy model (see docs/simulator.md "Repeat world").
_REBUY_SIGMA = 0.35  # width of the due bell in log(gap / cycle)
_REBUY_LOYAL = 1.5  # affinity bonus for a consumable past its cycle (a product the user knows)
_REBUY_EARLY = 6.0  # penalty for rebuying a consumable at r -> 0 (linear, gone at r = 0.5)
_REBUY_DURABLE = 12.0  # penalty for rebuying a durable
_STOCKED = 3.0  # penalty for another item of a consumable category bought < 1 cycle ago (linear in r)
_OWNED = 2.0  # penalty for another item of a durable category the user bought before
_VISIT_DUE = 4.5  # visit logit per unit of the best due item in the stream's showcase
_VISIT_BOUGHT = 1.0  # visit logit per earlier purchase session with the host (capped at 3)


class _RepeatState:
    """Per-(user, item) last purchase time and per-(user, host) follow / purchase history, updated
    stream by stream in start order. Purchases before a stream's start all come from streams that
    started earlier, so the state a stream sees at its start is exact."""

    def __init__(self, cfg: SimConfig, world: World):
        U, N = len(world.user_ids), len(world.item_ids)
        self.cfg = cfg
        self.world = world
        n_hosts = 1 + max(st["host_index"] for st in world.streams) if world.streams else 1
        self.followed = np.zeros((U, n_hosts), bool)
        self.bought_from = np.zeros((U, n_hosts), np.int16)
        self.last: np.ndarray | None = None
        if cfg.repeat_purchases:
            if U * N > 30_000_000:
                raise ValueError("repeat_purchases keeps a dense (users x items) state: n_users * n_items <= 3e7")
            self.last = np.full((U, N), -1, np.int64)
            self.last_cat = np.full((U, len(CATEGORIES)), -1, np.int64)
            cyc = np.array([CATEGORY_CYCLE_DAYS[c[0]] or 0.0 for c in CATEGORIES]) * _DAY_MS
            self.cycle_ms = cyc[world.item_cat]  # (N,) 0 = durable
        self.n_buys = 0
        self.n_repeat = 0
        # stream_id -> the true sessions (users, enter/leave ms, leave sent, followed): AudienceTruth
        self.sessions: dict[str, dict[str, np.ndarray]] = {}
        self.repeat_by_cat = np.zeros((len(CATEGORIES), 2), np.int64)  # (buys, repeats) per category

    # --- the rebuy model ------------------------------------------------------------------------
    def _ratio(self, u: np.ndarray, i: np.ndarray, t: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bought before, consumable, r = gap / user's cycle) for aligned (u, i) (or broadcast grids)."""
        last = self.last[u, i]
        bought = last >= 0
        cyc = self.cycle_ms[i] * self.world.user_cycle_jitter[u, self.world.item_cat[i]]
        cons = cyc > 0
        gap = np.maximum(np.asarray(t) - last, 1)
        r = gap / np.where(cons, cyc, 1.0)
        return bought, cons, r

    def rebuy(self, u: np.ndarray, i: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(affinity boost, bought before) at impression time t."""
        bought, cons, r = self._ratio(u, i, t)
        bell = np.exp(-(np.log(r) ** 2) / (2 * _REBUY_SIGMA**2))
        cb = self.cfg.rebuy_boost * bell + _REBUY_LOYAL * (r >= 1.0) - _REBUY_EARLY * np.clip(1.0 - 2.0 * r, 0, 1)
        boost = np.where(bought, np.where(cons, cb, -_REBUY_DURABLE), 0.0)
        # another item of a category the user is stocked with (consumable within its cycle) or
        # already owns (durable): less likely
        c = self.world.item_cat[i]
        lc = self.last_cat[u, c]
        rc = np.maximum(np.asarray(t) - lc, 1) / np.where(
            cons, self.cycle_ms[i] * self.world.user_cycle_jitter[u, c], 1.0
        )
        other = (lc >= 0) & ~bought
        boost = boost - other * np.where(cons, _STOCKED * np.clip(1.0 - rc, 0, 1), _OWNED)
        return boost, bought

    def due(self, users: np.ndarray, show: np.ndarray, t: int) -> np.ndarray:
        """(len(users), len(show)) dueness in [0, 1]: the bell for consumables bought before, else 0."""
        bought, cons, r = self._ratio(users[:, None], show[None, :], t)
        return np.where(bought & cons, np.exp(-(np.log(r) ** 2) / (2 * _REBUY_SIGMA**2)), 0.0)

    def visit_logit(self, users: np.ndarray, st: dict[str, Any]) -> np.ndarray:
        """Extra log-weight of each candidate viewer: host loyalty and due items in the showcase."""
        h = st["host_index"]
        out = self.cfg.host_loyalty * self.followed[users, h] + _VISIT_BOUGHT * np.minimum(
            self.bought_from[users, h], 3
        )
        if self.last is not None:
            out = out + _VISIT_DUE * self.due(users, st["showcase"], st["start_ms"]).max(1)
        return out

    def record(
        self,
        st: dict[str, Any],
        buy_u: np.ndarray,
        buy_i: np.ndarray,
        buy_t: np.ndarray,
        repeat: np.ndarray,
        followers: np.ndarray,
    ) -> None:
        h = st["host_index"]
        self.followed[followers, h] = True
        self.bought_from[np.unique(buy_u), h] += 1
        self.n_buys += len(buy_u)
        self.n_repeat += int(repeat.sum())
        cat = self.world.item_cat[buy_i]
        np.add.at(self.repeat_by_cat, (cat, 0), 1)
        np.add.at(self.repeat_by_cat, (cat, 1), repeat.astype(np.int64))
        if self.last is not None and len(buy_u):
            o = np.lexsort((buy_t, buy_i, buy_u))  # the latest purchase of a (user, item) wins
            self.last[buy_u[o], buy_i[o]] = np.maximum(self.last[buy_u[o], buy_i[o]], buy_t[o])
            o = np.lexsort((buy_t, cat, buy_u))
            self.last_cat[buy_u[o], cat[o]] = np.maximum(self.last_cat[buy_u[o], cat[o]], buy_t[o])

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "purchases": self.n_buys,
            "repeat_purchases": self.n_repeat,
            "repeat_share": round(self.n_repeat / max(1, self.n_buys), 4),
        }
        if self.last is not None:
            out["repeat_share_by_category"] = {
                CATEGORIES[k][0]: {"purchases": int(b), "repeats": int(r), "share": round(r / max(1, b), 4)}
                for k, (b, r) in enumerate(self.repeat_by_cat.tolist())
                if b
            }
        return out


def _stream_events_v2(
    cfg: SimConfig,
    world: World,
    st: dict[str, Any],
    state: _RepeatState,
    host_log: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One stream of a repeat world: like ``_stream_events`` plus host loyalty and due items in the
    viewer draw, due-item look-ups in the cart list, the rebuy boost, the presented-item boost and
    social proof in the funnel. Reads and then updates ``state``.

    With ``host_events`` the host side comes from a ``_HostPlan`` (its own RNG): viewers see the item
    on stage of each slot, the on-stage uplift (stronger in flash sales) replaces ``presented_boost``,
    product actions happen only while the item is on the shelf, purchases respect its stock, prices
    follow price drops and flash sales, and the host events are merged into the rows in time order
    (``host_log[stream_id]`` receives the plan's truth)."""
    rng = np.random.default_rng([cfg.seed, 1, st["index"]])
    hp = _HostPlan(cfg, world, st) if cfg.host_events else None
    s0, s1, show = st["start_ms"], st["end_ms"], st["showcase"]
    plat_users = np.flatnonzero(world.user_platform == st["platform_index"])
    if len(plat_users) == 0:
        return [] if hp is None else _merge_host(world, st, hp, [], None, host_log)
    match = world.user_vec[plat_users] @ world.item_vec[show].mean(0)
    logw = np.log(world.user_activity[plat_users]) + 1.5 * match + state.visit_logit(plat_users, st)
    n_v = int(min(rng.poisson(cfg.mean_viewers_per_stream * st["popularity"]), len(plat_users)))
    if n_v == 0:
        return [] if hp is None else _merge_host(world, st, hp, [], None, host_log)
    g = logw + rng.gumbel(size=len(plat_users))
    pick = np.sort(np.argpartition(-g, n_v - 1)[:n_v]) if n_v < len(plat_users) else np.arange(len(plat_users))
    users = plat_users[pick]
    V = len(users)
    dur = s1 - s0
    early = rng.random(V) < 0.35
    enter = s0 + np.where(early, rng.uniform(0, 600_000, V), rng.uniform(0, dur * 0.95, V)).astype(np.int64)
    watch = np.clip(rng.lognormal(math.log(cfg.watch_minutes * 60_000), 1.0, V), 5_000, None).astype(np.int64)
    leave = np.minimum(enter + watch, s1 + rng.integers(0, 60_000, V))
    leave = np.maximum(leave, enter + 2_000)

    cols_sess: list[np.ndarray] = []
    cols_t: list[np.ndarray] = []
    cols_type: list[np.ndarray] = []
    cols_item: list[np.ndarray] = []

    def add(sess, t, typ, item=None):
        cols_sess.append(np.asarray(sess, np.int64))
        cols_t.append(np.asarray(t, np.int64))
        cols_type.append(np.full(len(sess), typ, np.int8))
        cols_item.append(np.full(len(sess), -1, np.int64) if item is None else np.asarray(item, np.int64))

    m, L = len(show), st["slot_ms"]
    order = st["presentation"]
    if hp is None:
        k0 = (enter - s0) // L
        k1 = np.minimum((leave - s0) // L, (s1 - s0) // L)
        n_slots = np.maximum(k1 - k0 + 1, 0)
        sess = np.repeat(np.arange(V), n_slots)
        first = np.repeat(np.cumsum(n_slots) - n_slots, n_slots)
        k = np.repeat(k0, n_slots) + (np.arange(len(sess)) - first)
        t = np.maximum(s0 + k * L, enter[sess]) + rng.integers(1_000, 8_000, len(sess))
        ok = t < leave[sess] - 1_000
        imp_s, imp_t, imp_i = [sess[ok]], [t[ok]], [order[k[ok] % m]]
    else:  # the host's slots: every viewer in the room sees the item on stage (slot start or entry)
        j0 = np.searchsorted(hp.slot_end, enter, side="right")
        j1 = np.searchsorted(hp.slot_start, leave, side="left") - 1
        n_slots = np.maximum(j1 - j0 + 1, 0)
        sess = np.repeat(np.arange(V), n_slots)
        first = np.repeat(np.cumsum(n_slots) - n_slots, n_slots)
        k = np.repeat(j0, n_slots) + (np.arange(len(sess)) - first)
        t = np.maximum(hp.slot_start[k], enter[sess]) + rng.integers(1_000, 8_000, len(sess))
        ok = (t < leave[sess] - 1_000) & (t < hp.slot_end[k])
        imp_s, imp_t, imp_i = [sess[ok]], [t[ok]], [show[hp.slot_pos[k[ok]]]]
    browse = rng.random(V) < 0.35
    nb = np.where(browse, rng.integers(2, 8, V), 0)
    bs = np.repeat(np.arange(V), nb)
    bt0 = enter + (rng.random(V) * (leave - enter) * 0.8).astype(np.int64)
    bfirst = np.repeat(np.cumsum(nb) - nb, nb)
    bt = bt0[bs] + 1_000 + (np.arange(len(bs)) - bfirst) * 1_500
    bi = show[rng.integers(0, m, len(bs))]
    okb = bt < leave[bs] - 1_000
    imp_s.append(bs[okb])
    imp_t.append(bt[okb])
    imp_i.append(bi[okb])
    if state.last is not None:
        # a viewer with a due consumable in the showcase looks it up in the cart list (回购)
        due = state.due(users, show, s0)
        hit = rng.random(due.shape) < np.clip(cfg.rebuy_intent * due, 0, 0.95)
        vs, js = np.nonzero(hit)
        it = enter[vs] + 1_000 + (rng.random(len(vs)) * (leave[vs] - enter[vs]) * 0.8).astype(np.int64)
        # ... unless the host presents it during the session: then the viewer buys it in its slot (the
        # slot impression above carries the rebuy boost), no extra look-up
        if hp is None:
            pos = np.empty(show.max() + 1, np.int64)
            pos[order] = np.arange(m)
            kk = k0[vs] + (pos[show[js]] - k0[vs]) % m
            in_slot = (kk <= k1[vs]) & (np.maximum(s0 + kk * L, enter[vs]) + 8_000 < leave[vs] - 1_000)
        else:  # the host's slots are not a fixed cycle: the look-up happens anyway
            in_slot = np.zeros(len(vs), bool)
        oki = (it < leave[vs] - 1_000) & ~in_slot
        imp_s.append(vs[oki])
        imp_t.append(it[oki])
        imp_i.append(show[js[oki]])
    imp_s, imp_t, imp_i = np.concatenate(imp_s), np.concatenate(imp_t), np.concatenate(imp_i)
    if hp is not None:  # only what is on the shelf can be seen
        keep_imp = hp.available(imp_i, imp_t)
        imp_s, imp_t, imp_i = imp_s[keep_imp], imp_t[keep_imp], imp_i[keep_imp]
    add(imp_s, imp_t, T_IMP, imp_i)

    # funnel with all three decisions drawn per impression: aff + rebuy + presented + social proof
    n = len(imp_s)
    u_imp = users[imp_s]
    aff = _affinity(world, u_imp, imp_i)
    boost = np.zeros(n)
    repeat = np.zeros(n, bool)
    if hp is not None:  # the item on stage sells more during its slot, flash sales even more
        on, fl = hp.on_stage(imp_i, imp_t)
        boost += cfg.slot_uplift * on + cfg.flash_uplift * fl
    elif cfg.room_dynamics:
        presented = order[((imp_t - s0) // L) % m] == imp_i
        boost += cfg.presented_boost * presented
    if state.last is not None:
        rb, repeat = state.rebuy(u_imp, imp_i, imp_t)
        boost += rb
    u1, u2, u3 = rng.random(n), rng.random(n), rng.random(n)
    c_t = imp_t + 1_000 + rng.exponential(15_000, n).astype(np.int64)
    a_t = c_t + 1_000 + rng.exponential(30_000, n).astype(np.int64)
    b_t = a_t + 1_000 + rng.exponential(45_000, n).astype(np.int64)
    q = rng.choice(np.array([1, 2, 3]), n, p=[0.82, 0.13, 0.05])
    if hp is not None:  # an action needs the item on the shelf at its time (fixed masks: still monotone)
        av_c, av_a, av_b = hp.available(imp_i, c_t), hp.available(imp_i, a_t), hp.available(imp_i, b_t)
    else:
        av_c = av_a = av_b = np.ones(n, bool)

    def decide(extra):
        a = aff + boost + extra
        clk = (u1 < _sigmoid(_CLICK[0] + _CLICK[1] * a)) & av_c
        crt = clk & (u2 < _sigmoid(_CART[0] + _CART[1] * a)) & av_a
        return clk, crt, crt & (u3 < _sigmoid(_BUY[0] + _BUY[1] * a)) & av_b

    clk, crt, buy = decide(0.0)
    if cfg.room_dynamics and cfg.social_proof > 0:
        # social proof: sales of the item in this stream in [t - W, t). Decisions are monotone in it
        # and purchases come after their impression, so iterating to the fixed point gives exactly the
        # causal (sequential) outcome.
        W = int(cfg.social_window_minutes * 60_000)
        q_hi = (imp_i << 32) | (imp_t - s0)
        q_lo = (imp_i << 32) | np.maximum(imp_t - s0 - W, 0)
        for _ in range(100):
            keys = np.sort((imp_i[buy] << 32) | (b_t[buy] - s0))
            cnt = np.searchsorted(keys, q_hi) - np.searchsorted(keys, q_lo)
            clk, crt, nbuy = decide(cfg.social_proof * np.log1p(cnt))
            if np.array_equal(nbuy, buy):
                break
            buy = nbuy
    # one purchase of an item per session (the earliest); later carts of it stay carts
    bidx = np.flatnonzero(buy)
    bidx = bidx[np.lexsort((b_t[bidx], imp_i[bidx], imp_s[bidx]))]
    keep = np.ones(len(bidx), bool)
    keep[1:] = (imp_s[bidx][1:] != imp_s[bidx][:-1]) | (imp_i[bidx][1:] != imp_i[bidx][:-1])
    buy = np.zeros(n, bool)
    buy[bidx[keep]] = True
    qb = q
    if hp is not None:  # limited stock: sell-outs, restocks, the last buyer gets what is left
        qb = q.copy()
        bix = np.flatnonzero(buy)
        qb[bix] = hp.cap_stock(imp_i[bix], b_t[bix], q[bix])
        buy &= qb > 0
    add(imp_s[clk], c_t[clk], T_CLICK, imp_i[clk])
    add(imp_s[crt], a_t[crt], T_CART, imp_i[crt])
    a_q = q[crt]
    b_s, b_i, b_a, b_q, b_tt = imp_s[buy], imp_i[buy], aff[buy], qb[buy], b_t[buy]
    add(b_s, b_tt, T_BUY, b_i)

    wm = (leave - enter) / 60_000.0
    eng = world.user_engage[users]

    def spread(counts, typ):
        ss = np.repeat(np.arange(V), counts)
        tt = enter[ss] + 1 + (rng.random(len(ss)) * (leave[ss] - enter[ss] - 2)).astype(np.int64)
        if hp is not None:  # the room closes at stream_end
            ss, tt = ss[tt < hp.cut], tt[tt < hp.cut]
        add(ss, tt, typ)
        return ss

    like_s = spread(rng.poisson(0.35 * wm * eng), T_LIKE)
    com_s = spread(rng.poisson(0.12 * wm * eng), T_COMMENT)
    spread((rng.random(V) < 0.04).astype(np.int64), T_SHARE)
    p_follow = (0.03 + 0.03 * np.tanh(np.maximum(match[pick], 0))) * ~state.followed[users, st["host_index"]]
    fol_s = spread((rng.random(V) < p_follow).astype(np.int64), T_FOLLOW)
    gift_s = spread(rng.poisson(0.015 * wm * eng), T_GIFT)

    act_s = np.concatenate(cols_sess)
    act_t = np.concatenate(cols_t)
    last = enter.copy()
    np.maximum.at(last, act_s, act_t)
    leave = np.maximum(leave, last + rng.integers(1_000, 20_000, V))
    if hp is not None:  # viewers still in the room leave when it closes
        leave = np.minimum(leave, hp.cut)
    send_leave = rng.random(V) >= cfg.no_leave_rate
    add(np.arange(V), enter, T_ENTER)
    add(np.flatnonzero(send_leave), leave[send_leave], T_LEAVE)
    followed = np.zeros(V, bool)
    followed[fol_s] = True
    state.sessions[st["stream_id"]] = {  # (no draw: the events stay as they were)
        "user": users.copy(),
        "enter_ms": enter.copy(),
        "leave_ms": leave.copy(),
        "leave_sent": send_leave.copy(),
        "followed": followed,
    }

    p_ref = np.clip(cfg.refund_rate * np.exp(-0.3 * (b_a - 4.0)), 0, 0.5)
    ref = rng.random(len(b_s)) < p_ref
    r_t = b_tt[ref] + rng.lognormal(math.log(cfg.refund_hours * _H_MS), 1.0, int(ref.sum())).astype(np.int64)
    add(b_s[ref], r_t, T_REFUND, b_i[ref])

    state.record(st, users[b_s], b_i, b_tt, repeat[buy], users[fol_s])
    ms: list[np.ndarray] = []
    rows = _rows(
        world,
        st,
        rng,
        (cols_sess, cols_t, cols_type, cols_item),
        a_q,
        b_q,
        ref,
        len(like_s),
        len(com_s),
        len(gift_s),
        users,
        m,
        price_fn=None if hp is None else hp.price_at,
        ms_out=ms,
    )
    if hp is None:
        return rows
    return _merge_host(world, st, hp, rows, ms[0] if ms else None, host_log)


def _merge_host(
    world: World,
    st: dict[str, Any],
    hp: _HostPlan,
    rows: list[dict[str, Any]],
    v_t: np.ndarray | None,
    host_log: dict[str, dict[str, Any]] | None,
) -> list[dict[str, Any]]:
    """The stream's viewer rows (times ``v_t``) with its host events merged in time order (a host event
    first at the same ms); a stream nobody watched still has its host side."""
    if v_t is None:  # no viewers: the stock of limited items is still set
        e = np.zeros(0, np.int64)
        hp.cap_stock(e, e, e)
        v_t = e
    h_t, h_rows = hp.events(world)
    pfx = f"{st['platform']}-{st['index']:05d}-h"
    h_ts = format_ts(h_t, hp.plus08) if len(h_t) else []
    h_rows = [
        {"event_id": f"{pfx}{j:05d}", "type": r.pop("type"), "ts": tsv, "platform": st["platform"], **r}
        for j, (r, tsv) in enumerate(zip(h_rows, h_ts))
    ]
    t_all = np.concatenate([h_t, v_t])
    src = np.concatenate([np.zeros(len(h_t), np.int8), np.ones(len(v_t), np.int8)])
    o = np.lexsort((src, t_all))
    both = h_rows + rows
    if host_log is not None:
        host_log[st["stream_id"]] = hp.truth(world)
    return [both[j] for j in o.tolist()]


# ----------------------------------------------------------------------------------------------
# faults
# ----------------------------------------------------------------------------------------------

_REQUIRED = {
    "common": ["event_id", "ts", "platform", "type", "stream_id", "user_id"],
    "product": ["item_id"],
    "purchase": ["price"],
}
_HOST_ONLY_FIELDS = ("host_id", "host_name", "title", "scheduled_start", "scheduled_end", "slot_id", "change", "stock")


def _host_required(r: dict[str, Any]) -> list[str]:
    """The required fields of a host event (HOST_EVENTS spec)."""
    req = ["event_id", "ts", "platform", "type", "stream_id"]
    t = r["type"]
    if t == "stream_start":
        req.append("host_id")
    elif t in ("slot_start", "slot_end"):
        req += ["slot_id", "item_id"]
    elif t == "showcase_update":
        req += ["item_id", "change"] + [f for f in ("price", "stock") if r.get("change") == f]
    return req


_WRONG_TYPES = [
    ("price", "abc"),
    ("quantity", "two"),
    ("user_id", 12345),
    ("ts", 1795810503),
    ("count", "many"),
    ("stream_id", None),
]


def _inject_faults(
    rows: list[dict[str, Any]], rates: FaultRates, cfg: SimConfig, st: dict[str, Any], world: World
) -> tuple[list[tuple[Any, dict | None]], list[tuple[int, Any, dict]]]:
    """Return (send-order rows with fault meta, late rows as (sent_at_ms, row, meta))."""
    n = len(rows)
    if n == 0 or not rates.any():
        return [(r, None) for r in rows], []
    rng = np.random.default_rng([cfg.seed, 2, st["index"]])
    perm = rng.permutation(n)
    pos = 0

    def take(rate: float) -> np.ndarray:
        nonlocal pos
        k = min(int(rng.binomial(n, rate)) if rate > 0 else 0, n - pos)
        out = perm[pos : pos + k]
        pos += k
        return out

    dup_idx, late_idx, skew_idx = take(rates.duplicate), take(rates.late), take(rates.skew)
    late_set = set(late_idx.tolist())
    out_rows: list[Any] = list(rows)
    meta: list[dict | None] = [None] * n
    inserts: list[tuple[int, int, Any, dict]] = []  # (after original index, tiebreak, row, meta)
    seq = 0
    for i in skew_idx.tolist():
        r = dict(rows[i])
        true_ts = r["ts"]
        off = int(rng.uniform(600_000, 6 * _H_MS)) * (1 if rng.random() < 0.5 else -1)
        r["ts"] = format_ts(parse_ts_ms(true_ts) + off, true_ts.endswith("+08:00"))[0]
        out_rows[i] = r
        meta[i] = {
            "kind": "skew",
            "event_id": r["event_id"],
            "true_ts": true_ts,
            "sent_ts": r["ts"],
            "skew_s": off / 1000.0,
        }
    for i in dup_idx.tolist():
        later = min(n - 1, i + int(rng.integers(1, 200)))
        inserts.append((later, seq, out_rows[i], {"kind": "duplicate", "event_id": rows[i]["event_id"], "copies": 2}))
        seq += 1

    def fresh_id() -> str:
        nonlocal seq
        seq += 1
        return f"{st['platform']}-{st['index']:05d}-f{seq:06d}"

    def place(row: Any, m: dict) -> None:
        nonlocal seq
        inserts.append((int(rng.integers(0, n)), seq, row, m))
        seq += 1

    def extra(rate: float) -> list[int]:
        k = int(rng.binomial(n, rate)) if rate > 0 else 0
        return rng.integers(0, n, k).tolist()

    for i in extra(rates.malformed_json):
        b = orjson.dumps(rows[i]).decode()
        style = int(rng.integers(3))
        raw = (
            b[: max(1, int(len(b) * rng.uniform(0.2, 0.9)))]
            if style == 0
            else (str(rows[i]) if style == 1 else "ERROR 502 upstream <html>")
        )
        place(raw, {"kind": "malformed_json", "field": "record", "source_event_id": rows[i]["event_id"], "raw": raw})
    for i in extra(rates.wrong_type):
        r = dict(rows[i], event_id=fresh_id())
        f, v = _WRONG_TYPES[int(rng.integers(len(_WRONG_TYPES)))]
        if (
            f == "price"
            and "price" not in r
            or f == "quantity"
            and "quantity" not in r
            or f == "count"
            and "count" not in r
        ):
            f, v = "user_id", 12345
        r[f] = v
        place(r, {"kind": "wrong_type", "event_id": r["event_id"], "field": f, "source_event_id": rows[i]["event_id"]})
    for i in extra(rates.missing_field):
        r = dict(rows[i], event_id=fresh_id())
        if r["type"] in HOST_TYPES:
            req = _host_required(r)
        else:
            req = list(_REQUIRED["common"])
        if r["type"] in ("product_impression", "product_click", "add_to_cart", "purchase", "refund"):
            req += _REQUIRED["product"]
        if r["type"] == "purchase":
            req += _REQUIRED["purchase"]
        f = req[int(rng.integers(len(req)))]
        eid = r["event_id"]
        del r[f]
        place(
            r,
            {
                "kind": "missing_field",
                "event_id": None if f == "event_id" else eid,
                "field": f,
                "source_event_id": rows[i]["event_id"],
            },
        )
    prod = [j for j, r in enumerate(rows) if r["type"] in ("add_to_cart", "purchase", "refund")]
    buys = [j for j, r in enumerate(rows) if r["type"] == "purchase"]
    for i in extra(rates.negative_quantity):
        if not prod:
            break
        src = rows[prod[i % len(prod)]]
        r = dict(src, event_id=fresh_id(), quantity=-int(rng.integers(1, 4)))
        place(
            r,
            {
                "kind": "negative_quantity",
                "event_id": r["event_id"],
                "field": "quantity",
                "source_event_id": src["event_id"],
            },
        )
    for i in extra(rates.unknown_item):
        if buys:
            src = rows[buys[i % len(buys)]]
        else:
            src = dict(rows[i], type="purchase", item_id="x", price=99.0, currency="CNY", quantity=1)
            src.pop("props", None)
            for kk in ("count", "text", "gift_value") + _HOST_ONLY_FIELDS:
                src.pop(kk, None)
            if "user_id" not in src:  # a host event: no viewer to buy
                continue
        eid = fresh_id()
        r = dict(src, event_id=eid, item_id=f"sku-x{seq:06d}", order_id=f"o-{st['index']:05d}-x{seq:06d}")
        place(r, {"kind": "unknown_item", "event_id": eid, "field": "item_id", "source_event_id": src["event_id"]})
    for i in extra(rates.unknown_type):
        r = dict(rows[i], event_id=fresh_id(), type="superchat")
        place(
            r,
            {
                "kind": "unknown_type",
                "event_id": r["event_id"],
                "field": "type",
                "source_event_id": rows[i]["event_id"],
            },
        )

    late: list[tuple[int, Any, dict]] = []
    for i in sorted(late_set):
        delay = int(rng.uniform(1 * _H_MS, 12 * _H_MS))
        m_ = {"kind": "late", "event_id": rows[i]["event_id"], "delay_s": delay / 1000.0}
        late.append((parse_ts_ms(rows[i]["ts"]) + delay, out_rows[i], m_))

    by_pos: dict[int, list[tuple[int, Any, dict]]] = defaultdict(list)
    for p, s_, r, m_ in inserts:
        by_pos[p].append((s_, r, m_))
    result: list[tuple[Any, dict | None]] = []
    for i in range(n):
        if i not in late_set:
            result.append((out_rows[i], meta[i]))
        for _, r, m_ in sorted(by_pos.get(i, ()), key=lambda x: x[0]):
            result.append((r, m_))
    return result, late


# ----------------------------------------------------------------------------------------------
# ground truth + simulation
# ----------------------------------------------------------------------------------------------


class GroundTruth:
    """What really happened: latent tastes, the streams, every injected fault, the clean events.

    Arrays are indexed by position: ``user_ids[u]``, ``item_ids[i]``; ``user_index``/``item_index``
    map ids to positions.
    """

    def __init__(self, sim: Simulation):
        self._sim = sim
        w = sim.world
        self.config = sim.cfg
        self.categories = [c[0] for c in CATEGORIES]
        self.item_ids, self.user_ids = w.item_ids, w.user_ids
        self.item_index = {s: i for i, s in enumerate(w.item_ids)}
        self.user_index = {s: i for i, s in enumerate(w.user_ids)}
        self.item_category = [self.categories[k] for k in w.item_cat]
        self.item_price = w.item_price
        self.item_vectors, self.item_bias, self.item_popularity = w.item_vec, w.item_bias, w.item_pop
        self.user_vectors, self.user_category_weights = w.user_vec, w.user_cat_w
        self.user_platform = [sim.cfg.platforms[p] for p in w.user_platform]
        self.user_activity = w.user_activity

    # --- tastes -------------------------------------------------------------------------------
    def _idx(self, user: str | int, items: Iterable[str | int] | None) -> tuple[np.ndarray, np.ndarray]:
        u = self.user_index[user] if isinstance(user, str) else int(user)
        if items is None:
            ii = np.arange(len(self.item_ids))
        else:
            ii = np.array([self.item_index[i] if isinstance(i, str) else int(i) for i in items], dtype=np.int64)
        return np.full(len(ii), u), ii

    def affinity(self, user: str | int, items: Iterable[str | int] | None = None) -> np.ndarray:
        """Latent score of user for items (all items if None): higher = likelier to click/cart/buy."""
        u, i = self._idx(user, items)
        return _affinity(self._sim.world, u, i)

    def affinity_matrix(self, users: Sequence[str | int] | None = None) -> np.ndarray:
        """(n_users, n_items) affinity scores (all users if None) - for small worlds."""
        w = self._sim.world
        uu = (
            np.arange(len(self.user_ids))
            if users is None
            else np.array([self.user_index[u] if isinstance(u, str) else int(u) for u in users])
        )
        return (w.user_vec[uu] @ w.item_vec.T) * 1.5 + w.item_bias[None, :]

    def purchase_prob(self, user: str | int, items: Iterable[str | int] | None = None) -> np.ndarray:
        """P(purchase | impression) = p(click) p(cart|click) p(buy|cart), the recommender's ideal."""
        a = self.affinity(user, items)
        return _sigmoid(_CLICK[0] + _CLICK[1] * a) * _sigmoid(_CART[0] + _CART[1] * a) * _sigmoid(_BUY[0] + _BUY[1] * a)

    def top_items(self, user: str | int, k: int = 10, items: Iterable[str | int] | None = None) -> list[str]:
        """The k items with the highest true purchase probability (optionally among ``items``)."""
        cand = (
            list(range(len(self.item_ids)))
            if items is None
            else [self.item_index[i] if isinstance(i, str) else int(i) for i in items]
        )
        p = self.purchase_prob(user, cand)
        return [self.item_ids[cand[j]] for j in np.argsort(-p, kind="stable")[:k]]

    # --- streams ------------------------------------------------------------------------------
    @property
    def streams(self):
        """DataFrame: stream_id, platform, host_id, title, start, end, popularity, main_categories, showcase."""
        import pandas as pd

        rows = []
        for s in self._sim.world.streams:
            rows.append(
                {
                    "stream_id": s["stream_id"],
                    "platform": s["platform"],
                    "host_id": s["host_id"],
                    "title": s["title"],
                    "start": pd.Timestamp(s["start_ms"], unit="ms", tz="UTC"),
                    "end": pd.Timestamp(s["end_ms"], unit="ms", tz="UTC"),
                    "popularity": s["popularity"],
                    "main_categories": s["main_categories"],
                    "slot_s": s["slot_ms"] / 1000,
                    "showcase": [self.item_ids[i] for i in s["showcase"]],
                }
            )
        return pd.DataFrame(rows)

    def showcase(self, stream_id: str) -> list[str]:
        for s in self._sim.world.streams:
            if s["stream_id"] == stream_id:
                return [self.item_ids[i] for i in s["showcase"]]
        raise KeyError(stream_id)

    # --- repeat world -------------------------------------------------------------------------
    def repeat_profile(self) -> dict[str, dict[str, Any]]:
        """category -> {"consumable", "cycle_days"} (``CATEGORY_CYCLE_DAYS``). The user-specific cycle of
        user u in category k is ``cycle_days * user_cycle_jitter[u, k]`` (repeat_purchases worlds)."""
        return repeat_profile()

    @property
    def user_cycle_jitter(self) -> np.ndarray | None:
        return self._sim.world.user_cycle_jitter

    @property
    def hosts(self):
        """DataFrame of a multi-day world's hosts (host_id, platform, main categories, core assortment)."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "host_id": h["host_id"],
                    "platform": h["platform"],
                    "name": h["name"],
                    "main_categories": [CATEGORIES[k][0] for k in h["main"]],
                    "core": [self.item_ids[i] for i in h["core"]],
                    "popularity": h["popularity"],
                    "frequency": h["frequency"],
                }
                for h in (self._sim.world.hosts or [])
            ]
        )

    def presentation(self, stream_id: str):
        """DataFrame (slot, start_ms, end_ms, item_id): what the host presents when (repeat-world knobs
        on; the legacy single evening draws its order inside the event generator and does not keep it)."""
        import pandas as pd

        st = next((s for s in self._sim.world.streams if s["stream_id"] == stream_id), None)
        if st is None:
            raise KeyError(stream_id)
        if "presentation" not in st:
            raise ValueError("presentation is recorded only with days/repeat_purchases/room_dynamics on")
        if self.config.host_events:  # the host's slots (with chats between them)
            sl = self._sim.host_truth.slots(stream_id)
            return sl[["slot", "start_ms", "end_ms", "item_id"]].reset_index(drop=True)
        L, order = st["slot_ms"], st["presentation"]
        n = (st["end_ms"] - st["start_ms"]) // L + 1
        k = np.arange(n)
        return pd.DataFrame(
            {
                "slot": k,
                "start_ms": st["start_ms"] + k * L,
                "end_ms": st["start_ms"] + (k + 1) * L,
                "item_id": [self.item_ids[i] for i in order[k % len(order)]],
            }
        )

    # --- faults and clean events ---------------------------------------------------------------
    @property
    def fault_log(self) -> dict[str, dict[str, Any]]:
        """key -> fault record. Key = the row's event_id, or ``"line:<n>"`` (n = 0-based index in the
        events send order, catalog excluded) for rows without a usable event_id (malformed JSON, a
        removed event_id). Record: ``kind``, ``line``, ``event_id``, plus per kind ``field``
        (the field a validator names), ``true_ts``/``sent_ts``/``skew_s`` (skew), ``delay_s``
        (late), ``source_event_id`` (the real event a corrupted row was derived from), ``raw``."""
        self._sim._ensure(need_rows=False)
        return self._sim._fault_log

    def faults_frame(self):
        import pandas as pd

        return pd.DataFrame([{"key": k, **v} for k, v in self.fault_log.items()])

    def clean_events(self) -> list[dict[str, Any]]:
        """The true events (one per event_id, true ts), in true per-stream order."""
        self._sim._ensure()
        return self._sim._clean

    def expected_clean(self):
        """DataFrame of the events a perfect cleaner keeps: each valid event_id once, true ts.

        Columns: the contract fields (missing ones NaN/None), ``ts`` as sent by an honest clock (str),
        ``ts_utc`` (pandas UTC datetime), ``skewed`` (bool: it was sent with a wrong ts),
        ``late`` (bool: sent hours late). Invalid rows (see ``INVALID_KINDS``) are absent.
        """
        import pandas as pd

        log = self.fault_log
        df = pd.DataFrame(self.clean_events())
        if df.empty:
            return df
        df["ts_utc"] = pd.to_datetime(df["ts"], format="ISO8601", utc=True)
        kinds = df["event_id"].map(lambda e: log.get(e, {}).get("kind"))
        df["skewed"] = (kinds == "skew").to_numpy()
        df["late"] = (kinds == "late").to_numpy()
        return df

    def catalog_frame(self):
        import pandas as pd

        return pd.DataFrame(self._sim.catalog)

    def summary(self) -> dict[str, Any]:
        self._sim._ensure(need_rows=False)
        return self._sim._summary

    def to_json(self) -> dict[str, Any]:
        """JSON-able truth (no vectors): config, streams, fault log, summary."""
        cfg = dataclasses.asdict(self.config)
        cfg["faults"] = dataclasses.asdict(self.config.fault_rates())
        defaults = SimConfig()
        for k in _V2_FIELDS:  # repeat-world knobs only when used: older truth files stay as they were
            if cfg[k] == getattr(defaults, k):
                del cfg[k]
        streams = [
            {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in s.items()} for s in self._sim.world.streams
        ]
        for s in streams:
            s["showcase"] = [self.item_ids[i] for i in s["showcase"]]
            if "presentation" in s:
                s["presentation"] = [self.item_ids[i] for i in s["presentation"]]
        out = {"config": cfg, "streams": streams, "fault_log": self.fault_log, "summary": self.summary()}
        if self.config.repeat_purchases:
            out["repeat_profile"] = repeat_profile()
        if self.config.host_events:
            out["host"] = self._sim.host_truth.to_json()
        return out


_LIVE_SUMS = (
    "entries",
    "leaves",
    "like_events",
    "likes",
    "comments",
    "shares",
    "follows",
    "gifts",
    "gift_value",
    "impressions",
    "clicks",
    "add_to_carts",
    "orders",
    "units",
    "gmv",
    "refunds",
    "refund_units",
    "refund_amount",
)
_MINUTE_COLS = ("entries", "leaves", "impressions", "clicks", "add_to_carts", "orders", "units", "gmv")


class HostTruth:
    """What the hosts did (``host_events=True``): ``sim.host_truth``. Times are epoch ms (UTC).

    * ``streams`` DataFrame: stream_id, platform, host_id, host_name, title, scheduled_start_ms,
      scheduled_end_ms, start_ms (stream_start), end_ms (stream_end).
    * ``slots(stream_id=None)``: stream_id, slot, slot_id, item_id, start_ms, end_ms, flash,
      price (on stage), list_price (at the slot's start).
    * ``items(stream_id=None)``: the showcase: added_ms, removed_ms, list_price, price_change_ms,
      new_price, stock (initial units or None = unlimited).
    * ``sold_out(stream_id=None)``: stream_id, item_id, sold_out_ms, restock_ms, restock_units.
    * ``on_stage(stream_id, ms)`` -> slot dict or None; ``price_at(stream_id, item_id, ms)``;
      ``is_sold_out(stream_id, item_id, ms)``; ``to_json()``.
    """

    def __init__(self, sim: Simulation):
        if not sim.cfg.host_events:
            raise ValueError("host truth needs SimConfig(host_events=True)")
        self._sim = sim

    def _log(self) -> dict[str, dict[str, Any]]:
        self._sim._ensure(need_rows=False)
        return self._sim._host_log

    def _index(self, stream_id: str) -> tuple[list[int], list[dict[str, Any]], dict[str, dict[str, Any]]]:
        cache = self._sim.__dict__.setdefault("_host_index", {})
        if stream_id not in cache:
            lg = self._log()[stream_id]
            cache[stream_id] = (
                [s["start_ms"] for s in lg["slots"]],
                lg["slots"],
                {i["item_id"]: i for i in lg["items"]},
            )
        return cache[stream_id]

    def _frame(self, key: str, stream_id: str | None):
        import pandas as pd

        log = self._log()
        sids = [stream_id] if stream_id is not None else list(log)
        rows = [{"stream_id": s, **r} for s in sids for r in log.get(s, {}).get(key, [])]
        return pd.DataFrame(rows)

    @property
    def streams(self):
        import pandas as pd

        log = self._log()
        return pd.DataFrame(
            [
                {
                    "stream_id": s["stream_id"],
                    "platform": s["platform"],
                    "host_id": s["host_id"],
                    "host_name": s["host_name"],
                    "title": s["title"],
                    "scheduled_start_ms": s["scheduled_start_ms"],
                    "scheduled_end_ms": s["scheduled_end_ms"],
                    "start_ms": s["start_ms"],
                    "end_ms": s["end_ms"],
                }
                for s in self._sim.world.streams
                if s["stream_id"] in log
            ]
        )

    def slots(self, stream_id: str | None = None):
        return self._frame("slots", stream_id)

    def items(self, stream_id: str | None = None):
        df = self._frame("items", stream_id)
        for c in ("removed_ms", "price_change_ms", "stock"):
            if c in df:
                df[c] = df[c].astype("Int64")
        return df

    def sold_out(self, stream_id: str | None = None):
        import pandas as pd

        df = self._frame("sold_out", stream_id)
        if not len(df):
            return pd.DataFrame(columns=["stream_id", "item_id", "sold_out_ms", "restock_ms", "restock_units"])
        for c in ("restock_ms", "restock_units"):
            df[c] = df[c].astype("Int64")
        return df

    def on_stage(self, stream_id: str, ms: int) -> dict[str, Any] | None:
        """The slot running at ``ms`` (its dict from ``slots``), or None between slots."""
        import bisect

        starts, slots, _ = self._index(stream_id)
        j = bisect.bisect_right(starts, ms) - 1
        return slots[j] if j >= 0 and ms < slots[j]["end_ms"] else None

    def price_at(self, stream_id: str, item_id: str, ms: int) -> float:
        """What a viewer pays at ``ms``: the on-stage price in the item's flash slot, else the list
        price after any price drop."""
        sl = self.on_stage(stream_id, ms)
        if sl is not None and sl["item_id"] == item_id and sl["flash"]:
            return sl["price"]
        it = self._index(stream_id)[2][item_id]
        if it["price_change_ms"] is not None and ms >= it["price_change_ms"]:
            return it["new_price"]
        return it["list_price"]

    def is_sold_out(self, stream_id: str, item_id: str, ms: int) -> bool:
        for so in self._log()[stream_id]["sold_out"]:
            if (
                so["item_id"] == item_id
                and so["sold_out_ms"] <= ms
                and (so["restock_ms"] is None or ms < so["restock_ms"])
            ):
                return True
        return False

    def to_json(self) -> dict[str, Any]:
        return {"streams": self.streams.to_dict("records"), "by_stream": self._log()}


class AudienceTruth:
    """The true audience of every stream (``sim.audience_truth``; the stateful generator: any repeat-world
    knob or ``host_events``): one session per (stream, viewer) as the generator drew it, before any
    fault. Times are epoch ms (UTC).

    * ``sessions`` DataFrame: stream_id, platform, host_id, stream_start_ms, user_id, enter_ms, leave_ms
      (the true leave, also when the ``stream_leave`` was never sent), leave_sent, followed, watch_s.
    * ``retention(stream_id, minutes)``: share of the stream's viewers who watched at least t minutes,
      for each t of ``minutes``; ``median_watch_s(stream_id)``.
    * ``audience()`` DataFrame per stream: viewers, new_host_viewers / returning_host_viewers (watched
      an earlier-starting stream of the same host), new_platform_viewers / returning_platform_viewers
      (same platform), followers (viewers who followed in the stream).
    * ``cohorts(grain, tz)``: host_id, cohort (the day / Monday week of the viewer's first stream with
      the host, in ``tz``), period (days / weeks later), viewers (of the cohort who watched the host then).
    """

    def __init__(self, sim: Simulation):
        if not sim.cfg.uses_v2():
            raise ValueError("audience truth needs the stateful generator (days, host_events, ...)")
        self._sim = sim

    @property
    def sessions(self):
        import pandas as pd

        self._sim._ensure(need_rows=False)
        log = self._sim._session_log
        frames = []
        w = self._sim.world
        for st in w.streams:
            d = log.get(st["stream_id"])
            if d is None or not len(d["user"]):
                continue
            frames.append(
                pd.DataFrame(
                    {
                        "stream_id": st["stream_id"],
                        "platform": st["platform"],
                        "host_id": st["host_id"],
                        "stream_start_ms": st["start_ms"],
                        "user_id": np.asarray(w.user_ids, dtype=object)[d["user"]],
                        "enter_ms": d["enter_ms"],
                        "leave_ms": d["leave_ms"],
                        "leave_sent": d["leave_sent"],
                        "followed": d["followed"],
                    }
                )
            )
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if len(df):
            df["watch_s"] = (df["leave_ms"] - df["enter_ms"]) / 1000.0
        return df

    def retention(self, stream_id: str, minutes: Iterable[int]) -> list[float]:
        s = self.sessions
        w = s.loc[s["stream_id"] == stream_id, "watch_s"].to_numpy()
        return [float((w >= 60 * t).mean()) for t in minutes]

    def median_watch_s(self, stream_id: str) -> float:
        s = self.sessions
        return float(np.median(s.loc[s["stream_id"] == stream_id, "watch_s"].to_numpy()))

    def audience(self):
        s = self.sessions
        first_host = s.groupby(["host_id", "user_id"])["stream_start_ms"].transform("min")
        first_plat = s.groupby(["platform", "user_id"])["stream_start_ms"].transform("min")
        s = s.assign(ret_host=s["stream_start_ms"] > first_host, ret_plat=s["stream_start_ms"] > first_plat)
        g = s.groupby("stream_id")
        out = g.agg(
            host_id=("host_id", "first"),
            viewers=("user_id", "size"),
            returning_host_viewers=("ret_host", "sum"),
            returning_platform_viewers=("ret_plat", "sum"),
            followers=("followed", "sum"),
        )
        out["new_host_viewers"] = out["viewers"] - out["returning_host_viewers"]
        out["new_platform_viewers"] = out["viewers"] - out["returning_platform_viewers"]
        return out.reset_index()

    def cohorts(self, grain: str = "day", tz: str = "UTC"):
        import pandas as pd

        s = self.sessions
        day = pd.to_datetime(s["stream_start_ms"], unit="ms", utc=True).dt.tz_convert(tz).dt.tz_localize(None)
        day = day.dt.normalize()
        if grain == "week":
            day = day - pd.to_timedelta(day.dt.day_of_week, unit="D")
        d = pd.DataFrame({"host_id": s["host_id"], "user_id": s["user_id"], "p": day}).drop_duplicates()
        d["cohort"] = d.groupby(["host_id", "user_id"])["p"].transform("min")
        d["period"] = (d["p"] - d["cohort"]).dt.days // (7 if grain == "week" else 1)
        out = d.groupby(["host_id", "cohort", "period"]).size().rename("viewers").reset_index()
        out["cohort"] = out["cohort"].dt.date
        return out


@dataclass
class LiveTruth:
    """The numbers a live layer must show, recounted from the rows the simulator SENT: each event_id
    once (its first copy in send order), rows the contract rejects left out, late rows (sent after
    everything else) only with ``include_late``. ``sim.live_truth(...)`` builds it.

    ``streams[stream_id]``: entries, leaves, unique_viewers, current_viewers (entries - leaves),
    peak_viewers (max of that running count in send order, which within a stream is true time order),
    like_events, likes (sum of count), comments, shares, follows, gifts, gift_value, impressions,
    clicks, add_to_carts, orders, units, gmv (sum price * quantity of purchases), buyers, refunds,
    refund_units, refund_amount, ``funnel`` (users who entered / saw / clicked / carted / bought),
    ``on_stage`` (the slot_id/item_id/price of the last slot_start not yet ended, or None),
    ``showcase`` (items added and not removed, by the showcase_update rows), ``sold_out`` (those of
    them sold out: last update sold_out or stock 0), ``started``/``ended``, ``events`` (rows counted).
    ``per_minute``: stream_id, minute (UTC, from the ts AS SENT: a skewed row counts in the minute
    it claims), entries, leaves, impressions, clicks, add_to_carts, orders, units, gmv, viewers (the
    running entries - leaves count after the minute's last row in send order).
    ``slots``: the true slots (``HostTruth.slots``) with the impressions / clicks / add_to_carts /
    orders / units / gmv of the slot's item whose ts falls inside the slot.
    ``duplicates``: event_id -> extra copies sent; ``late_event_ids``; ``rejected_lines`` (0-based
    send lines the contract rejects); ``unknown_item_event_ids`` (valid per the contract, counted
    here, quarantined by the batch clean; ``drop_unknown_items=True`` leaves them out).
    ``rows``: the counted rows (line, event_id, type, stream_id, user_id, item_id, price, qty, amount,
    ms as sent, slot_id, change, stock); ``orders_in_window(stream_id, end_ms, minutes=5)``.
    """

    streams: dict[str, dict[str, Any]]
    per_minute: Any
    slots: Any
    duplicates: dict[str, int]
    late_event_ids: list[str]
    rejected_lines: list[int]
    unknown_item_event_ids: list[str]
    include_late: bool = False
    upto: int | None = None
    rows: Any = None

    def stream(self, stream_id: str) -> dict[str, Any]:
        return self.streams[stream_id]

    def orders_in_window(self, stream_id: str, end_ms: int, minutes: float = 5.0) -> dict[str, int]:
        """item_id -> orders counted with ts (as sent) in ``[end_ms - minutes, end_ms)``: "selling fast
        in this room" (本场热卖 · 近5分钟 N 单)."""
        r = self.rows
        if r is None or not len(r):
            return {}
        m = (r["stream_id"] == stream_id) & (r["type"] == "purchase") & (r["ms"] < end_ms)
        m &= r["ms"] >= end_ms - int(minutes * 60_000)
        return {str(k): int(v) for k, v in r[m].groupby("item_id").size().items()}


def _live_truth(sim: Simulation, upto: int | None, include_late: bool, drop_unknown_items: bool) -> LiveTruth:
    import pandas as pd

    log = sim.truth.fault_log
    kind_at: dict[int, str] = {}
    for m in log.values():
        for e in [m, *m.get("also", [])]:
            kind_at[e["line"]] = e["kind"]
    seen: set[str] = set()
    dups: Counter = Counter()
    rejected, late_ids, unknown = [], [], []
    keep = []
    events = sim.events
    n_lines = len(events) if upto is None else min(upto, len(events))
    for line in range(n_lines):
        r = events[line]
        kind = kind_at.get(line)
        if isinstance(r, str) or (kind in INVALID_KINDS and kind != "unknown_item"):
            rejected.append(line)
            continue
        eid = r["event_id"]
        if eid in seen:
            dups[eid] += 1
            continue
        seen.add(eid)
        if kind == "late":
            late_ids.append(eid)
            if not include_late:
                continue
        if kind == "unknown_item":
            unknown.append(eid)
            if drop_unknown_items:
                continue
        keep.append(line)
    df = pd.DataFrame([events[i] for i in keep])
    if df.empty:
        return LiveTruth(
            {}, pd.DataFrame(), pd.DataFrame(), dict(dups), late_ids, rejected, unknown, include_late, upto, df
        )
    df["line"] = keep
    for c in ("user_id", "item_id", "price", "quantity", "count", "gift_value", "slot_id", "change", "stock"):
        if c not in df:
            df[c] = None
    df["ms"] = pd.to_datetime(df["ts"], format="ISO8601", utc=True).dt.as_unit("ms").astype("int64")
    df["qty"] = df["quantity"].fillna(1).astype(float)
    df["amount"] = df["price"].fillna(0).astype(float) * df["qty"]
    t = df["type"]
    df["entries"] = t.eq("stream_enter")
    df["leaves"] = t.eq("stream_leave")
    df["like_events"] = t.eq("like")
    df["likes"] = np.where(df["like_events"], df["count"].fillna(1).astype(float), 0)
    df["comments"], df["shares"], df["follows"], df["gifts"] = (t.eq(x) for x in ("comment", "share", "follow", "gift"))
    df["gift_value"] = np.where(df["gifts"], df["gift_value"].fillna(0).astype(float), 0)
    df["impressions"], df["clicks"], df["add_to_carts"] = (
        t.eq(x) for x in ("product_impression", "product_click", "add_to_cart")
    )
    buy, ref = t.eq("purchase"), t.eq("refund")
    df["orders"], df["units"], df["gmv"] = buy, np.where(buy, df["qty"], 0), np.where(buy, df["amount"], 0)
    df["refunds"], df["refund_units"], df["refund_amount"] = (
        ref,
        np.where(ref, df["qty"], 0),
        np.where(ref, df["amount"], 0),
    )
    df["delta"] = df["entries"].astype(int) - df["leaves"].astype(int)
    df = df.sort_values("line", kind="stable")
    df["level"] = df.groupby("stream_id")["delta"].cumsum()
    out: dict[str, dict[str, Any]] = {}
    for sid, g in df.groupby("stream_id", sort=True):
        d: dict[str, Any] = {}
        for c in _LIVE_SUMS:
            v = g[c].sum()
            d[c] = round(float(v), 2) if c in ("gmv", "gift_value", "refund_amount") else int(v)
        viewer = g[g["user_id"].notna() & ~g["refunds"]]
        d["unique_viewers"] = int(viewer["user_id"].nunique())
        d["buyers"] = int(g.loc[g["orders"], "user_id"].nunique())
        d["current_viewers"] = int(g["delta"].sum())
        d["peak_viewers"] = int(max(0, g["level"].max()))
        d["funnel"] = {
            k: int(g.loc[g[c], "user_id"].nunique())
            for k, c in (
                ("entered", "entries"),
                ("saw", "impressions"),
                ("clicked", "clicks"),
                ("carted", "add_to_carts"),
                ("bought", "orders"),
            )
        }
        d["events"] = len(g)
        d["started"] = bool(t.loc[g.index].eq("stream_start").any())
        d["ended"] = bool(t.loc[g.index].eq("stream_end").any())
        sl = g[g["type"].isin(["slot_start", "slot_end"])]
        last = sl.iloc[-1] if len(sl) else None
        d["on_stage"] = (
            {"slot_id": last["slot_id"], "item_id": last["item_id"], "price": last["price"]}
            if last is not None and last["type"] == "slot_start" and not d["ended"]
            else None
        )
        upd = g[g["type"].eq("showcase_update")]
        state: dict[str, str] = {}
        for it, ch, stock in zip(upd["item_id"], upd["change"], upd["stock"]):
            if ch == "sold_out" or (ch == "stock" and stock == 0):
                state[it] = "sold_out"
            elif ch == "remove":
                state[it] = "removed"
            elif ch == "add" or (ch == "stock" and stock and stock > 0):
                state[it] = "on"
        d["showcase"] = sorted(k for k, v in state.items() if v != "removed")
        d["sold_out"] = sorted(k for k, v in state.items() if v == "sold_out")
        out[str(sid)] = d
    df["minute"] = pd.to_datetime(df["ms"] // 60_000 * 60_000, unit="ms", utc=True)
    grp = df.groupby(["stream_id", "minute"], sort=True)
    pm = grp[list(_MINUTE_COLS)].sum()
    pm["viewers"] = grp["level"].last()  # the running count after the minute's last row (send order)
    pm = pm.reset_index()
    for c in (*_MINUTE_COLS, "viewers"):
        pm[c] = pm[c].round(2) if c == "gmv" else pm[c].astype(int)
    slots = pd.DataFrame()
    if sim.cfg.host_events:
        slots = sim.host_truth.slots()
        prod = df[
            df["item_id"].notna() & df["type"].isin(["product_impression", "product_click", "add_to_cart", "purchase"])
        ]
        agg = {
            c: np.zeros(len(slots), float) for c in ("impressions", "clicks", "add_to_carts", "orders", "units", "gmv")
        }
        for sid, g in prod.groupby("stream_id"):
            ix = np.flatnonzero((slots["stream_id"] == sid).to_numpy())
            if not len(ix):
                continue
            s_start, s_end = slots["start_ms"].to_numpy()[ix], slots["end_ms"].to_numpy()[ix]
            s_item = slots["item_id"].to_numpy()[ix]
            j = np.searchsorted(s_start, g["ms"].to_numpy(), side="right") - 1
            jj = np.maximum(j, 0)
            inside = (j >= 0) & (g["ms"].to_numpy() < s_end[jj]) & (g["item_id"].to_numpy() == s_item[jj])
            for c in agg:
                np.add.at(agg[c], ix[jj[inside]], g[c].to_numpy()[inside].astype(float))
        for c, v in agg.items():
            slots[c] = np.round(v, 2) if c == "gmv" else v.astype(int)
    cols = ["line", "event_id", "type", "stream_id", "user_id", "item_id", "price", "qty", "amount", "ms"]
    rows_out = df[cols + [c for c in ("slot_id", "change", "stock") if c in df]].reset_index(drop=True)
    return LiveTruth(out, pm, slots, dict(dups), late_ids, rejected, unknown, include_late, upto, rows_out)


class Simulation:
    """A simulated evening. ``catalog``/``events``/``truth`` materialise lazily (cached); the
    ``iter_*`` methods stream stream-by-stream without keeping events in memory."""

    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        self.rates = cfg.fault_rates()
        self.world = _build_world(cfg)
        self._catalog: list[dict[str, Any]] | None = None
        self._events: list[Any] | None = None
        self._clean: list[dict[str, Any]] | None = None
        self._event_platforms: list[str] | None = None
        self._fault_log: dict[str, dict[str, Any]] = {}
        self._host_log: dict[str, dict[str, Any]] = {}
        self._session_log: dict[str, dict[str, np.ndarray]] = {}
        self._summary: dict[str, Any] = {}
        self._done = False  # a full pass has run: fault log and summary are complete
        self.truth = GroundTruth(self)

    # --- catalog ------------------------------------------------------------------------------
    @property
    def catalog(self) -> list[dict[str, Any]]:
        if self._catalog is None:
            w, cfg = self.world, self.cfg
            by_item: dict[int, list[str]] = defaultdict(list)
            first_plat: dict[int, str] = {}
            for s in sorted(w.streams, key=lambda d: d["index"]):
                for i in s["showcase"].tolist():
                    by_item[i].append(s["stream_id"])
                    first_plat.setdefault(i, s["platform"])
            t0 = cfg.start_ms() - _H_MS
            ts = format_ts(t0 + np.arange(len(w.item_ids)) * 100, False)
            price = w.item_price.tolist()
            cat = []
            for i, iid in enumerate(w.item_ids):
                plat = first_plat.get(i, cfg.platforms[i % len(cfg.platforms)])
                d = {
                    "event_id": f"{plat}-cat-{i:06d}",
                    "type": "catalog_item",
                    "ts": ts[i],
                    "platform": plat,
                    "item_id": iid,
                    "title": w.titles[i],
                    "description": w.descriptions[i],
                    "category": CATEGORIES[w.item_cat[i]][0],
                    "price": price[i],
                    "currency": "CNY",
                    "stream_ids": by_item.get(i, []),
                }
                cat.append(d)
            self._catalog = cat
        return self._catalog

    # --- events -------------------------------------------------------------------------------
    def _iter_send(self, keep_clean: bool = False) -> Iterator[tuple[str, Any]]:
        """Yield (platform, row) in send order (events only) and rebuild the fault log as it goes."""
        log: dict[str, dict[str, Any]] = {}
        clean: list[dict[str, Any]] = []
        by_type: Counter = Counter()
        late_all: list[tuple[int, int, str, Any, dict]] = []
        line = 0
        n_true = 0

        def record(m: dict | None, row: Any) -> None:
            if m is None:
                return
            m = dict(m, line=line)
            key = m.get("event_id") if m["kind"] != "malformed_json" else None
            if not key:
                key = f"line:{line}"
            if key in log:  # same event hit twice (e.g. duplicate of a skewed event): keep both kinds
                log[key].setdefault("also", []).append(m)
            else:
                log[key] = m

        state = _RepeatState(self.cfg, self.world) if self.cfg.uses_v2() else None
        until = self.cfg.until_ms()
        host_log: dict[str, dict[str, Any]] = {}
        for st in self.world.streams:
            rows = (
                _stream_events(self.cfg, self.world, st)
                if state is None
                else _stream_events_v2(self.cfg, self.world, st, state, host_log)
            )
            if until is not None:  # what has not happened by ``until`` (late refunds) is not sent
                rows = [r for r in rows if parse_ts_ms(r["ts"]) <= until]
            n_true += len(rows)
            if keep_clean:
                clean.extend(rows)
            for r in rows:
                by_type[r["type"]] += 1
            sent, late = _inject_faults(rows, self.rates, self.cfg, st, self.world)
            for sent_at, r, m in late:
                late_all.append((sent_at, len(late_all), st["platform"], r, m))
            for r, m in sent:
                record(m, r)
                yield st["platform"], r
                line += 1
        late_all.sort(key=lambda x: (x[0], x[1]))
        for _, _, plat, r, m in late_all:
            record(m, r)
            yield plat, r
            line += 1
        self._fault_log = log
        self._host_log = host_log
        self._session_log = state.sessions if state is not None else {}
        self._summary = {
            "true_events": n_true,
            "sent_rows": line,
            "events_by_type": dict(sorted(by_type.items())),
            "faults_by_kind": dict(sorted(Counter(v["kind"] for v in log.values()).items())),
            "catalog_items": len(self.world.item_ids),
            "streams": len(self.world.streams),
        }
        if state is not None:
            self._summary["repeat"] = state.summary()
            if self.world.hosts is not None:
                self._summary["hosts"] = len(self.world.hosts)
        self._done = True
        if keep_clean:
            self._clean = clean

    def _ensure(self, need_rows: bool = True) -> None:
        if self._events is None and (need_rows or not self._done):
            pairs = list(self._iter_send(keep_clean=True))
            self._event_platforms = [p for p, _ in pairs]
            self._events = [r for _, r in pairs]

    @property
    def host_truth(self) -> HostTruth:
        """What the hosts did: slots, showcase, stock and sell-outs (``host_events=True``)."""
        return HostTruth(self)

    @property
    def audience_truth(self) -> AudienceTruth:
        """Who watched which stream for how long, followed, came back (repeat-world generator)."""
        return AudienceTruth(self)

    def live_truth(
        self, upto: int | None = None, include_late: bool = False, drop_unknown_items: bool = False
    ) -> LiveTruth:
        """The live layer's numbers recounted from the sent rows (``LiveTruth``): the first ``upto``
        rows of ``events`` (all if None), duplicates once, contract-rejected rows out, late rows only
        if ``include_late``."""
        return _live_truth(self, upto, include_late, drop_unknown_items)

    @property
    def events(self) -> list[Any]:
        """All event rows in SEND order, fault rows included (unparseable ones are ``str``); with
        ``host_events`` the host events of each stream are among them in time order."""
        self._ensure()
        return self._events  # type: ignore[return-value]

    def iter_events(self) -> Iterator[Any]:
        """Stream the events (send order) stream by stream; memory stays bounded. Refreshes the fault
        log and summary when exhausted."""
        for _, r in self._iter_send():
            yield r

    def iter_records(self, include_catalog: bool = True) -> Iterator[Any]:
        if include_catalog:
            yield from self.catalog
        if self._events is not None:
            yield from self._events
        else:
            yield from self.iter_events()

    def iter_batches(self, batch_size: int = 500, include_catalog: bool = True) -> Iterator[list[Any]]:
        """Lists of up to ``batch_size`` records in send order (catalog first)."""
        buf: list[Any] = []
        for r in self.iter_records(include_catalog):
            buf.append(r)
            if len(buf) >= batch_size:
                yield buf
                buf = []
        if buf:
            yield buf

    def iter_platform_batches(
        self, batch_size: int = 500, include_catalog: bool = True
    ) -> Iterator[tuple[str, list[Any]]]:
        """(platform, rows) batches: each platform's rows in send order, as its webhooks would carry."""
        bufs: dict[str, list[Any]] = defaultdict(list)
        src: Iterable[tuple[str, Any]] = ((r["platform"], r) for r in self.catalog) if include_catalog else ()

        def events() -> Iterator[tuple[str, Any]]:
            if self._events is not None:  # reuse the materialised rows
                yield from zip(self._event_platforms, self._events)
            else:
                yield from self._iter_send()

        for plat, r in _chain(src, events()):
            b = bufs[plat]
            b.append(r)
            if len(b) >= batch_size:
                yield plat, b
                bufs[plat] = []
        for plat, b in bufs.items():
            if b:
                yield plat, b


def _chain(*its: Iterable) -> Iterator:
    for it in its:
        yield from it


def simulate(cfg: SimConfig | None = None, **overrides: Any) -> Simulation:
    """Build the world for ``cfg`` (or ``SimConfig(**overrides)``). Events are generated lazily on first
    access of ``.events``/``.truth.fault_log``; use ``iter_events`` for runs too big for memory."""
    cfg = cfg or SimConfig()
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    return Simulation(cfg)


# ----------------------------------------------------------------------------------------------
# output: files, HTTP
# ----------------------------------------------------------------------------------------------


def write_files(
    sim: Simulation, out_dir: str | os.PathLike, gzip_output: bool = False, truth_tables: bool = True
) -> dict[str, str]:
    """Write ``catalog.ndjson``, ``events.ndjson`` (send order, raw lines verbatim), ``truth.json``,
    and if ``truth_tables``: ``expected_clean.parquet``, ``items.parquet``, ``users.parquet``
    (latent vectors). ``gzip_output`` writes ``.ndjson.gz``. Streams (bounded memory) unless
    ``truth_tables`` needs the clean events. Returns {name: path}."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = ".ndjson.gz" if gzip_output else ".ndjson"
    opener = (lambda p: gzip.open(p, "wb", compresslevel=5)) if gzip_output else (lambda p: open(p, "wb"))
    paths = {
        "catalog": str(out / f"catalog{ext}"),
        "events": str(out / f"events{ext}"),
        "truth": str(out / "truth.json"),
    }
    with opener(paths["catalog"]) as f:
        for r in sim.catalog:
            f.write(orjson.dumps(r) + b"\n")
    with opener(paths["events"]) as f:
        rows = sim.events if truth_tables else sim.iter_events()
        buf = []
        for r in rows:
            buf.append(_dumps(r))
            if len(buf) >= 10_000:
                f.write(b"\n".join(buf) + b"\n")
                buf = []
        if buf:
            f.write(b"\n".join(buf) + b"\n")
    with open(paths["truth"], "wb") as f:
        f.write(orjson.dumps(sim.truth.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    if truth_tables:
        t = sim.truth
        df = t.expected_clean()
        if "props" in df:
            df["props"] = df["props"].map(lambda p: None if not isinstance(p, dict) else json.dumps(p))
        paths["expected_clean"] = str(out / "expected_clean.parquet")
        df.to_parquet(paths["expected_clean"], index=False)
        paths["items"] = str(out / "items.parquet")
        pd.DataFrame(
            {
                "item_id": t.item_ids,
                "category": t.item_category,
                "price": t.item_price,
                "bias": t.item_bias,
                "popularity": t.item_popularity,
                "vector": list(t.item_vectors),
            }
        ).to_parquet(paths["items"], index=False)
        paths["users"] = str(out / "users.parquet")
        pd.DataFrame(
            {
                "user_id": t.user_ids,
                "platform": t.user_platform,
                "activity": t.user_activity,
                "vector": list(t.user_vectors),
                "category_weights": list(t.user_category_weights),
            }
        ).to_parquet(paths["users"], index=False)
    return paths


@dataclass
class SendResult:
    """Outcome of ``send``. ``responses`` holds one summary per HTTP request (no per-event results)."""

    accepted: int = 0
    rejected: int = 0
    rows_sent: int = 0
    batches: int = 0
    requests: int = 0
    failed_batches: int = 0
    by_platform: dict[str, dict[str, int]] = field(default_factory=dict)
    by_status: dict[int, int] = field(default_factory=dict)
    reject_reasons: dict[str, int] = field(default_factory=dict)
    responses: list[dict[str, Any]] = field(default_factory=list)


def _post_batch(
    session: Any,
    url: str,
    platform: str,
    secret: str | bytes,
    rows: list[Any],
    body_format: str,
    timeout: float,
    max_retries: int,
    max_wait_s: float,
    sleep=time.sleep,
) -> list[dict[str, Any]]:
    from shared.signing import signed_headers

    if body_format == "ndjson":
        bodies = [(b"\n".join(_dumps(r) for r in rows) + b"\n", len(rows))]
        ctype = "application/x-ndjson"
    else:  # JSON array; unparseable raw lines cannot live in an array: each goes alone
        objs = [r for r in rows if not isinstance(r, str)]
        bodies = [(orjson.dumps(objs), len(objs))] if objs else []
        bodies += [(r.encode(), 1) for r in rows if isinstance(r, str)]
        ctype = "application/json"
    out = []
    for body, n in bodies:
        summary: dict[str, Any] = {"platform": platform, "rows": n, "attempts": 0}
        for attempt in range(max_retries + 1):
            summary["attempts"] = attempt + 1
            headers = {**signed_headers(platform, secret, body), "Content-Type": ctype}
            try:
                resp = session.post(url, data=body, headers=headers, timeout=timeout)
            except Exception as exc:  # connection trouble: retry with backoff
                summary.update(status=None, error=f"{type(exc).__name__}: {exc}")
                if attempt < max_retries:
                    sleep(min(max_wait_s, 0.5 * 2**attempt))
                    continue
                break
            summary["status"] = resp.status_code
            if resp.status_code in (429, 503) and attempt < max_retries:
                ra = resp.headers.get("Retry-After", "1")
                try:
                    wait_s = float(ra)
                except ValueError:
                    wait_s = 1.0
                sleep(max(0.0, min(max_wait_s, wait_s)))
                continue
            try:
                ans = resp.json()
            except ValueError:
                ans = {"error": resp.text[:200]}
            summary.pop("error", None)
            if isinstance(ans, dict):
                summary["accepted"] = int(ans.get("accepted") or 0) if resp.status_code < 300 else 0
                summary["rejected"] = int(ans.get("rejected") or 0) if resp.status_code < 300 else 0
                reasons: Counter = Counter()
                for res in ans.get("results") or []:
                    if isinstance(res, dict) and res.get("status") == "rejected":
                        for reason in res.get("reasons") or ["?"]:
                            reasons[str(reason).split(":")[0]] += 1
                summary["reject_fields"] = dict(reasons)
                if "error" in ans:
                    summary["error"] = str(ans["error"])[:300]
            break
        out.append(summary)
    return out


def send(
    sim: Simulation,
    url: str,
    secrets: Mapping[str, str | bytes],
    batch_size: int = 500,
    concurrency: int = 4,
    progress: bool = True,
    body_format: str = "ndjson",
    include_catalog: bool = True,
    timeout: float = 30.0,
    max_retries: int = 5,
    max_wait_s: float = 30.0,
) -> SendResult:
    """POST the simulation (catalog first, then events in send order) to an ingest URL.

    Rows are grouped per platform into batches of ``batch_size``; each body (NDJSON by default, or a
    JSON array with ``body_format="json"``) is signed with ``signed_headers(platform, secrets[platform],
    body)``. ``concurrency`` threads each use their own ``requests.Session``. 503/429 are retried
    honouring ``Retry-After`` (at most ``max_retries`` times, each wait capped at ``max_wait_s``).
    Returns totals of the ingest answers' ``accepted``/``rejected`` and a summary per request.
    A batch of a platform missing from ``secrets`` raises ``KeyError`` before anything is sent.
    """
    import requests

    missing = sorted(set(sim.cfg.platforms) - set(secrets))
    if missing:
        raise KeyError(f"no secret for platform(s): {', '.join(missing)}")
    local = threading.local()

    def work(plat: str, rows: list[Any]) -> list[dict[str, Any]]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return _post_batch(local.session, url, plat, secrets[plat], rows, body_format, timeout, max_retries, max_wait_s)

    res = SendResult()
    total = ((len(sim.catalog) if include_catalog else 0) + len(sim._events)) if sim._events is not None else 0
    t0 = time.monotonic()

    def collect(summaries: list[dict[str, Any]]) -> None:
        for s in summaries:
            res.requests += s.get("attempts", 1)
            res.responses.append(s)
            st = s.get("status")
            res.by_status[st] = res.by_status.get(st, 0) + 1
            bp = res.by_platform.setdefault(s["platform"], {"accepted": 0, "rejected": 0, "rows": 0})
            bp["rows"] += s["rows"]
            bp["accepted"] += s.get("accepted", 0)
            bp["rejected"] += s.get("rejected", 0)
            res.accepted += s.get("accepted", 0)
            res.rejected += s.get("rejected", 0)
            res.rows_sent += s["rows"]
            if st is None or st >= 300:
                res.failed_batches += 1
            for k, v in (s.get("reject_fields") or {}).items():
                res.reject_reasons[k] = res.reject_reasons.get(k, 0) + v
        if progress:
            el = time.monotonic() - t0
            tot = f"/{total}" if total else ""
            sys.stderr.write(
                f"\rsent {res.rows_sent}{tot} rows  accepted {res.accepted}  rejected {res.rejected}"
                f"  failed batches {res.failed_batches}  {res.rows_sent / max(el, 1e-9):.0f} rows/s "
            )
            sys.stderr.flush()

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        pending: set = set()
        for plat, rows in sim.iter_platform_batches(batch_size, include_catalog):
            res.batches += 1
            pending.add(pool.submit(work, plat, rows))
            if len(pending) >= 4 * max(1, concurrency):  # bounded in-flight work -> bounded memory
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    collect(f.result())
        for f in pending:
            collect(f.result())
    if progress:
        sys.stderr.write("\n")
    return res


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def _parse_faults(spec: str | None) -> FaultRates | str | None:
    """ "default", "none", or "kind=rate,kind=rate" (starting from zero)."""
    if not spec or spec == "none":
        return None
    if spec == "default":
        return "default"
    kw = {}
    for part in spec.split(","):
        k, _, v = part.partition("=")
        if k.strip() not in FaultRates.__dataclass_fields__:
            raise SystemExit(f"--faults: unknown kind {k!r}; kinds: {', '.join(FAULT_KINDS)}")
        kw[k.strip()] = float(v)
    return FaultRates(**kw)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m devtools.simulator", description="Deterministic live-stream selling traffic with ground truth."
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--streams", type=int, default=5)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--viewers", type=float, default=300.0, help="mean viewers (sessions) per stream")
    ap.add_argument("--platforms", default="douyin,kuaishou")
    ap.add_argument("--start", default="2026-11-27T12:00:00Z")
    ap.add_argument(
        "--faults", default=None, help="'default', 'none', or kind=rate,... (kinds: %s)" % ", ".join(FAULT_KINDS)
    )
    ap.add_argument(
        "--repeat-world",
        action="store_true",
        help="the ~28-day repeat world preset (SimConfig.repeat_preset); --seed/--faults/--platforms/"
        "--start apply, --streams/--users/--items/--viewers are ignored (use --scale)",
    )
    ap.add_argument("--scale", type=float, default=1.0, help="with --repeat-world: scale streams, users, items")
    ap.add_argument("--days", type=float, default=None, help="with --repeat-world: days of the world (default 28)")
    ap.add_argument(
        "--host-events",
        action="store_true",
        help="also send host events (stream start/end, presentation slots, showcase updates, sold-out)",
    )
    ap.add_argument("--out", help="write NDJSON + truth files into this directory")
    ap.add_argument("--gzip", action="store_true", help="with --out: write .ndjson.gz")
    ap.add_argument("--no-truth-tables", action="store_true", help="with --out: skip parquet truth (streams)")
    ap.add_argument("--url", help="POST to this ingest URL")
    ap.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="PLATFORM=SECRET",
        help="per-platform signing secret (default: $DAIHUO_SECRET_<PLATFORM>)",
    )
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--format", choices=["ndjson", "json"], default="ndjson")
    a = ap.parse_args(argv)
    if a.repeat_world:
        over: dict[str, Any] = {
            "platforms": tuple(p for p in a.platforms.split(",") if p),
            "faults": _parse_faults(a.faults),
        }
        if a.start != ap.get_default("start"):
            over["start"] = a.start
        if a.days is not None:
            over["days"] = a.days
        if a.host_events:
            over["host_events"] = True
        cfg = SimConfig.repeat_preset(seed=a.seed, scale=a.scale, **over)
    else:
        cfg = SimConfig(
            seed=a.seed,
            n_streams=a.streams,
            n_users=a.users,
            n_items=a.items,
            mean_viewers_per_stream=a.viewers,
            platforms=tuple(p for p in a.platforms.split(",") if p),
            start=a.start,
            faults=_parse_faults(a.faults),
            host_events=a.host_events,
        )
    sim = simulate(cfg)
    t0 = time.monotonic()
    report: dict[str, Any] = {}
    if a.out:
        report["files"] = write_files(sim, a.out, gzip_output=a.gzip, truth_tables=not a.no_truth_tables)
    if a.url:
        from shared.settings import platform_secret

        secrets: dict[str, str] = {}
        for p in cfg.platforms:
            v = platform_secret(p)  # $DAIHUO_SECRET_<PLATFORM>
            if v:
                secrets[p] = v.decode()
        for s in a.secret:
            p, _, v = s.partition("=")
            secrets[p] = v
        r = send(sim, a.url, secrets, batch_size=a.batch_size, concurrency=a.concurrency, body_format=a.format)
        report["send"] = {
            "accepted": r.accepted,
            "rejected": r.rejected,
            "rows_sent": r.rows_sent,
            "batches": r.batches,
            "failed_batches": r.failed_batches,
            "by_status": r.by_status,
            "by_platform": r.by_platform,
            "reject_reasons": r.reject_reasons,
        }
    if not a.out and not a.url:
        for _ in sim.iter_events():
            pass
    report["summary"] = sim.truth.summary()
    report["seconds"] = round(time.monotonic() - t0, 2)
    sys.stdout.write(json.dumps(report, ensure_ascii=False, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
