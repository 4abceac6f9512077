"""Adapters: the only modules of ``shared/`` that talk to a cloud service's API (object storage, Pub/Sub).

Everything else in ``shared/`` is either pure logic (the contract, limits, signing, identity, layout,
settings, the recommendation models in ``reco/``) or a handler that composes logic with these
adapters (``ingest``, ``pipeline/``, ``serving/``, ``dashboard/``, ``live/``; the live layer keeps its
Bigtable calls in ``live/rpc.py`` and ``live/schema.py``). See the README, "Contributing".
"""
