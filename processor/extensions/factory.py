"""The extension registry: each extension type's config model and implementation, and the factory.

Types: ``bearertokenauth`` (an authenticator receivers name) and ``health_check``
(told by the pipeline when it is ready).

A component id is ``type[/name]`` (``bearertokenauth/agents``); the type
picks the entry.  ``processor.config`` validates each ``extensions.<id>``
body against the entry's model (types the collector has and faulttrace does
not get a message saying what to do instead); the pipeline builds, starts and
stops the extensions listed in ``service.extensions``, before and after
everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from processor.confmap import component_type
from processor.extensions.bearertokenauth import BearerTokenAuth
from processor.extensions.config import BearerTokenAuthConfig, HealthCheckConfig
from processor.extensions.healthcheck import HealthCheck


class Extension(Protocol):
    component_id: str

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...


@runtime_checkable
class ReadinessReporter(Extension, Protocol):
    """An extension told when the pipeline is ready (started) and when it stops being (``health_check``)."""

    def set_ready(self, ready: bool) -> None: ...


class ServerAuthenticator(Extension, Protocol):
    """What a receiver's ``auth.authenticator`` names: checks each request's ``authorization`` value."""

    scheme: str  # for WWW-Authenticate on HTTP 401

    def authenticate(self, authorization: str | None) -> bool: ...


@dataclass(frozen=True, slots=True)
class ExtensionType:
    config: type[BaseModel]
    build: Callable[[str, Any], Extension]
    authenticator: bool  # usable as a receiver's auth.authenticator


EXTENSIONS: dict[str, ExtensionType] = {
    "bearertokenauth": ExtensionType(BearerTokenAuthConfig, BearerTokenAuth, authenticator=True),
    "health_check": ExtensionType(HealthCheckConfig, HealthCheck, authenticator=False),
}

# Extension types of the collector that faulttrace does not implement, and what to do instead.
COLLECTOR_ONLY: dict[str, str] = {
    "pprof": "profile the process from outside instead, e.g. with py-spy",
    "zpages": "faulttrace's counters are on /metrics at service.telemetry.metrics.address",
    "oidc": "authenticate clients with bearertokenauth or with client certificates (tls.client_ca_file), "
            "or check OIDC tokens in a proxy in front of faulttrace",
    "basicauth": "authenticate clients with bearertokenauth or with client certificates (tls.client_ca_file)",
    "file_storage": "faulttrace journals spans itself: set processors.faulttrace.storage.path",
}


def unsupported_message(component_id: str) -> str | None:
    """The error for an extension type the collector has and faulttrace does not, else None."""
    kind = component_type(component_id)
    hint = COLLECTOR_ONLY.get(kind)
    if hint is None:
        return None
    return (f"extensions.{component_id}: {kind!r} is supported by the collector, not by faulttrace: {hint}; "
            "remove it from extensions and service.extensions")


def build_extensions(configs: Mapping[str, Any], enabled: list[str]) -> dict[str, Extension]:
    """The enabled extensions, by id, configured by their already-validated config models."""
    return {cid: EXTENSIONS[component_type(cid)].build(cid, configs[cid]) for cid in enabled}
