"""The zstd module OTLP bodies are (de)compressed with: the standard library's from Python 3.14
(``compression.zstd``), its backport (``backports.zstd``) before."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

__all__ = ["zstd"]
