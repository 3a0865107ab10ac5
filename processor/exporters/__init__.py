"""Exporters: the pipeline's last stage (``base.Exporter``), built by type from ``factory.EXPORTERS``."""
