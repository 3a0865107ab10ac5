"""The ``bearertokenauth`` extension: whether a request's ``authorization`` value carries the token.

The token comes from the config (``token``, already ``${env:…}``-expanded) or
from ``filename``, read at start (one token per line; any of them is
accepted, as in the collector).  Only SHA-256 digests of the expected values
are kept, and a presented value is compared against each in constant time
(``hmac.compare_digest`` on digests, so neither content nor length leaks
through timing).  Nothing here logs or raises with a token in it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

from processor.extensions.config import BearerTokenAuthConfig

log = logging.getLogger(__name__)


def _digest(text: str) -> bytes:
    # Header values arrive as str (aiohttp decodes with surrogateescape); any byte survives the round trip.
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class BearerTokenAuth:
    """A server authenticator: ``authenticate(value)`` is True for ``<scheme> <token>``."""

    def __init__(self, component_id: str, config: BearerTokenAuthConfig) -> None:
        self.component_id = component_id
        self.scheme = config.scheme
        self._config = config
        self._expected: list[bytes] = []

    async def start(self) -> None:
        config = self._config
        if config.filename:
            if config.token is not None:
                log.warning("extensions.%s: both token and filename are set; the token in filename is used "
                            "(as in the collector)", self.component_id)
            tokens = self._read_tokens(config.filename)
        else:  # the config model guarantees a non-empty token when there is no filename
            tokens = [config.token.get_secret_value() if config.token else ""]
        self._expected = [_digest(token) for token in tokens if token]  # never an empty token: fail closed

    async def shutdown(self) -> None:
        self._expected = []

    def authenticate(self, authorization: str | None) -> bool:
        """Whether ``authorization`` (the header or metadata value, None if absent) is accepted.

        The scheme is compared case-insensitively (RFC 9110 §11.1), the token in constant time.
        """
        if not authorization or not self._expected:
            return False
        token = authorization
        if self.scheme:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != self.scheme.lower():
                return False
        presented = _digest(token.strip())
        accepted = False
        for expected in self._expected:  # no early exit: the time does not say which one matched
            accepted |= hmac.compare_digest(expected, presented)
        return accepted

    def _read_tokens(self, filename: str) -> list[str]:
        where = f"extensions.{self.component_id}.filename"
        try:
            text = Path(filename).read_text(encoding="utf-8")
        except OSError as err:
            raise OSError(f"{where}: cannot read {filename}: {err.strerror or err}") from None
        except UnicodeDecodeError:
            raise OSError(f"{where}: {filename} is not UTF-8 text") from None
        tokens = [line.strip() for line in text.splitlines() if line.strip()]
        if not tokens:
            raise OSError(f"{where}: {filename} holds no token")
        return tokens
