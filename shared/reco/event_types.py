"""The event-type sets the recommenders read, each defined once.

The type names come from the event contract (``shared.contract.VIEWER_ACTIONS``); this module only
groups them by what they mean to the models:

* ``POSITIVE_TYPES``: a viewer showing interest in an item (click, cart, purchase). These "touch" an
  item (history for the protocol's ``new`` variant, the ranker's last-touch feature), are the
  relevant items of the ``any`` target and the in-stream positives.
* ``CART_OR_BUY_TYPES``: the ``cart`` target (carted or bought).
* ``NON_TOUCH_TYPES``: every other type of the contract (impressions, refunds, stream-level actions,
  catalog records, and any type the contract adds later, e.g. host actions): they never count as a
  viewer touching an item.
* ``REC_IMPRESSION``: an item of a recommend answer shown (a non-touch type: it is not interest);
  ``REC_TAGGED_TYPES``: the actions that may carry its ``rec_id`` (click, cart, purchase), the
  experiments' attribution (``shared.pipeline.experiments``).
* ``QUERY_ROOM_TYPES``: what an evaluation query records of its room (``shared.reco.protocol``).
* ``RANKER_ROOM_TYPES``: the room counts so far the served ranker reads (``shared.reco.ranker``);
  ``ROOM_RECENT``: its recent windows ``(type, minutes)``; ``ROOM_WINDOWS`` both, as
  ``(type, minutes or None)`` (``shared.reco.recipe.room_so_far``); ``room_key`` names a count
  (``"purchase"``, ``"purchase@10m"``).
"""

from __future__ import annotations

from shared.contract import ALL_TYPES, MODEL_BY_TYPE, VIEWER_ACTIONS

__all__ = [
    "PURCHASE",
    "ADD_TO_CART",
    "PRODUCT_CLICK",
    "PRODUCT_IMPRESSION",
    "REC_IMPRESSION",
    "REC_TAGGED_TYPES",
    "POSITIVE_TYPES",
    "CART_OR_BUY_TYPES",
    "NON_TOUCH_TYPES",
    "QUERY_ROOM_TYPES",
    "RANKER_ROOM_TYPES",
    "ROOM_RECENT",
    "ROOM_WINDOWS",
    "ROOM_RECENT_KEYS",
    "room_key",
]


def _contract_type(name: str) -> str:
    if name not in VIEWER_ACTIONS:  # the contract renamed or dropped it: fail at import, not silently
        raise ImportError(f"event type {name!r} is not in shared.contract.VIEWER_ACTIONS")
    return name


PURCHASE = _contract_type("purchase")
ADD_TO_CART = _contract_type("add_to_cart")
PRODUCT_CLICK = _contract_type("product_click")
PRODUCT_IMPRESSION = _contract_type("product_impression")
REC_IMPRESSION = _contract_type("rec_impression")
# the viewer actions that may carry the ``rec_id`` of the recommendation they came from (attribution)
REC_TAGGED_TYPES: tuple[str, ...] = tuple(
    t for t in VIEWER_ACTIONS if t != REC_IMPRESSION and "rec_id" in MODEL_BY_TYPE[t].model_fields
)

POSITIVE_TYPES: tuple[str, ...] = (PRODUCT_CLICK, ADD_TO_CART, PURCHASE)
CART_OR_BUY_TYPES: tuple[str, ...] = (ADD_TO_CART, PURCHASE)
NON_TOUCH_TYPES: frozenset[str] = frozenset(ALL_TYPES) - frozenset(POSITIVE_TYPES)
QUERY_ROOM_TYPES: tuple[str, ...] = (PURCHASE, PRODUCT_CLICK, ADD_TO_CART, PRODUCT_IMPRESSION)
RANKER_ROOM_TYPES: tuple[str, ...] = (PURCHASE, PRODUCT_CLICK)
ROOM_RECENT: tuple[tuple[str, int], ...] = ((PURCHASE, 10), (PRODUCT_CLICK, 5), (PRODUCT_IMPRESSION, 5))
ROOM_WINDOWS: tuple[tuple[str, int | None], ...] = tuple((t, None) for t in RANKER_ROOM_TYPES) + ROOM_RECENT


def room_key(event_type: str, minutes: int | None = None) -> str:
    """The key of a room count: the type (so far) or ``"<type>@<minutes>m"`` (a recent window)."""
    return event_type if minutes is None else f"{event_type}@{minutes}m"


ROOM_RECENT_KEYS: tuple[str, ...] = tuple(room_key(t, m) for t, m in ROOM_RECENT)
