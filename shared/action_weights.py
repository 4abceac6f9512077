"""The implicit-feedback weight of each action type (``shared.reco.interactions`` builds its user x item
matrix with them). A module of its own, with no import, so that the Beam item-item job
(``pipelines/beam/itemknn.py``, whose environment has no pandas / scipy) reads the same numbers."""

from __future__ import annotations

DEFAULT_ACTION_WEIGHTS: dict[str, float] = {
    "product_impression": 0.0,
    "product_click": 1.0,
    "add_to_cart": 3.0,
    "purchase": 5.0,
    "refund": -5.0,
    "like": 0.5,
    "comment": 0.5,
    "share": 0.5,
}
