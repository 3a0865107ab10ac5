"""The receiver registry: each receiver type's config model and how its servers are built.

A component id is ``type[/name]`` (``otlp/internal``); the type picks the
entry.  ``processor.config`` validates each ``receivers.<id>`` body against
the entry's model, the pipeline builds the servers with ``build_receivers``,
handing each protocol the authenticator its ``auth.authenticator`` names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from processor.confmap import component_type
from processor.extensions.factory import Extension, ServerAuthenticator
from processor.receivers.config import AuthConfig, OtlpReceiverConfig
from processor.receivers.ingest import Ingest
from processor.receivers.otlp_grpc import GrpcReceiver
from processor.receivers.otlp_http import HttpReceiver
from processor.service.telemetry import Telemetry


class Receiver(Protocol):
    """One listening server of a receiver component."""

    component_id: str
    transport: str   # "grpc" | "http"
    port: int        # the bound port once started (useful with port 0)

    async def start(self) -> int: ...

    def describe(self) -> str: ...  # what listens where, with TLS and auth, once started

    async def stop(self, grace: float) -> None: ...


Extensions = Mapping[str, Extension]


@dataclass(frozen=True, slots=True)
class ReceiverType:
    config: type[BaseModel]
    build: Callable[[str, Any, Ingest, Telemetry, Extensions], list[Receiver]]


def _authenticator(auth: AuthConfig | None, extensions: Extensions) -> ServerAuthenticator | None:
    # processor.config has checked that the id names an enabled authenticator extension.
    return None if auth is None else extensions[auth.authenticator]  # type: ignore[return-value]


def _otlp(component_id: str, config: OtlpReceiverConfig, ingest: Ingest, telemetry: Telemetry,
          extensions: Extensions) -> list[Receiver]:
    receivers: list[Receiver] = []
    grpc, http = config.protocols.grpc, config.protocols.http
    if grpc is not None:
        receivers.append(GrpcReceiver(component_id, grpc, ingest, telemetry,
                                      _authenticator(grpc.auth, extensions)))
    if http is not None:
        receivers.append(HttpReceiver(component_id, http, ingest, telemetry,
                                      _authenticator(http.auth, extensions)))
    return receivers


RECEIVERS: dict[str, ReceiverType] = {"otlp": ReceiverType(OtlpReceiverConfig, _otlp)}


def build_receivers(component_id: str, config: Any, ingest: Ingest, telemetry: Telemetry,
                    extensions: Extensions | None = None) -> list[Receiver]:
    """The servers of ``component_id``, configured by its already-validated config model;
    ``extensions`` are the enabled ones, by id, for ``auth.authenticator``."""
    return RECEIVERS[component_type(component_id)].build(component_id, config, ingest, telemetry,
                                                         extensions or {})
