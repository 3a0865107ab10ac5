"""The process around the pipeline: its own metrics, the /metrics and /healthz server, process settings."""
