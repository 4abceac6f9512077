"""Daihuo's data pipeline: archive (Pub/Sub -> raw/), clean (raw/ -> clean/, quarantine/, reports/),
analytics (clean/ -> analytics/). See docs/pipeline.md and docs/metrics.md."""
