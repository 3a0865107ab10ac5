"""The receiver registry: each receiver type's config model and how its servers are built.

A component id is ``type[/name]`` (``otlp/internal``); the type picks the
entry.  ``processor.config`` validates each ``receivers.<id>`` body against
the entry's model, the pipeline builds the servers with ``build_receivers``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from processor.confmap import component_type
from processor.receivers.config import OtlpReceiverConfig
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

    def describe(self) -> str: ...  # what listens where, once started

    async def stop(self, grace: float) -> None: ...


@dataclass(frozen=True, slots=True)
class ReceiverType:
    config: type[BaseModel]
    build: Callable[[str, Any, Ingest, Telemetry], list[Receiver]]


def _otlp(component_id: str, config: OtlpReceiverConfig, ingest: Ingest, telemetry: Telemetry) -> list[Receiver]:
    receivers: list[Receiver] = []
    if config.protocols.grpc is not None:
        receivers.append(GrpcReceiver(component_id, config.protocols.grpc, ingest, telemetry))
    if config.protocols.http is not None:
        receivers.append(HttpReceiver(component_id, config.protocols.http, ingest, telemetry))
    return receivers


RECEIVERS: dict[str, ReceiverType] = {"otlp": ReceiverType(OtlpReceiverConfig, _otlp)}


def build_receivers(component_id: str, config: Any, ingest: Ingest, telemetry: Telemetry) -> list[Receiver]:
    """The servers of ``component_id``, configured by its already-validated config model."""
    return RECEIVERS[component_type(component_id)].build(component_id, config, ingest, telemetry)
