"""The batch clean on Apache Beam (``python -m pipelines.beam.clean``), run in its own environment
(``.venv-beam``, requirements/beam.in): the same outputs as ``shared.pipeline.clean``'s DuckDB engine.
Not shipped in the functions' bundles (its image is a Dataflow Flex Template's, docs/scale.md)."""
