"""Pure recommendation models and offline evaluation for Daihuo.

Arrays / DataFrames in, arrays out: no network, no storage, no pickle.

Public API
----------
* ``build_user_items``, ``build_stream_items``, ``Interactions``,
  ``DEFAULT_ACTION_WEIGHTS``            (``shared.reco.interactions``)
* ``ItemItemCF``, ``item_similarity``, ``cooccurrence``,
  ``similarity_from_cooccurrence``      (``shared.reco.itemknn``)
* ``EASE``, ``ease_weights``             (``shared.reco.ease``)
* ``ContentModel``, ``item_texts``       (``shared.reco.content``)
* ``Popularity``                         (``shared.reco.popularity``)
* ``HybridRecommender``                  (``shared.reco.hybrid``)
* metrics (``shared.reco.metrics``), splits (``shared.reco.splits``),
  evaluation CLI (``python -m devtools.evaluate``).
"""

from .content import ContentModel, item_texts
from .ease import EASE, ease_weights
from .hybrid import HybridRecommender
from .interactions import DEFAULT_ACTION_WEIGHTS, Interactions, build_stream_items, build_user_items
from .itemknn import ItemItemCF, cooccurrence, item_similarity, similarity_from_cooccurrence
from .popularity import Popularity

__all__ = [
    "ContentModel",
    "item_texts",
    "EASE",
    "ease_weights",
    "HybridRecommender",
    "DEFAULT_ACTION_WEIGHTS",
    "Interactions",
    "build_stream_items",
    "build_user_items",
    "ItemItemCF",
    "cooccurrence",
    "item_similarity",
    "similarity_from_cooccurrence",
    "Popularity",
]
