"""Daihuo's deployed code: every function's bundle is a subset of this package (devtools/package.py).

Layout, by kind (what a change touches; the README's "Contributing" says where each kind goes):

* adapters (cloud I/O): ``adapters/storage.py`` (object stores: local, GCS, S3), ``adapters/bus.py``
  (Pub/Sub), ``live/rpc.py`` + ``live/schema.py`` (Bigtable).
* pure logic, no I/O: ``contract`` (the event contract), ``limits``, ``signing``, ``identity``,
  ``layout`` (every storage key), ``settings`` (every ``DAIHUO_*`` variable), ``http`` (the answer
  type), ``log``, ``reco/`` (models, ranker, evaluation protocol), ``pipeline/contract_sql`` and
  ``pipeline/skew``.
* handlers, composing the two: ``ingest``, ``pipeline/`` (archive, clean, analytics, erase,
  retention, replay), ``serving/`` (train, recommend, gate, registry), ``dashboard/``, ``live/``
  (apply, reader); ``runtime`` holds per-instance state and the test-only fault hook.

Development tools (simulator, local cloud, emulators, demo) live in ``devtools/`` and never ship.
"""
