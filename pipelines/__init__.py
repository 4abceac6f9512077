"""Jobs that run outside the functions, each in its own environment (pipelines/beam: Apache Beam)."""
