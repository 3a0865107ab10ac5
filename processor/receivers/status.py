"""google.rpc.Status bodies and details shared by both OTLP receivers."""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

# What a request without a valid token is told, on either transport: nothing about why.
UNAUTHENTICATED_MESSAGE = "missing or invalid authorization"


def status(code: int, message: str, retry_after: float | None = None) -> status_pb2.Status:
    """A Status, with a RetryInfo detail when the client should wait before retrying."""
    st = status_pb2.Status(code=code, message=message)
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        st.details.append(detail)
    return st


INVALID_ARGUMENT = code_pb2.INVALID_ARGUMENT
UNAVAILABLE = code_pb2.UNAVAILABLE
RESOURCE_EXHAUSTED = code_pb2.RESOURCE_EXHAUSTED
INTERNAL = code_pb2.INTERNAL
UNAUTHENTICATED = code_pb2.UNAUTHENTICATED
DEADLINE_EXCEEDED = code_pb2.DEADLINE_EXCEEDED
