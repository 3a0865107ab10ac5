"""Server TLS for both receivers, from one ``TlsServerConfig``: an ``ssl.SSLContext`` for HTTP and
``grpc.ServerCredentials`` for gRPC.

The files are loaded with Python's ssl module for both, so a missing,
garbled, mismatched or passphrase-protected certificate or key fails the
start with one clear message naming the key path (grpcio would only say it
could not add the port).  Messages name files, never their contents.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import grpc

from processor.extensions.factory import ServerAuthenticator
from processor.receivers.config import TlsServerConfig

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class _Encrypted(Exception):
    pass


log = logging.getLogger(__name__)

def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt for a passphrase on the terminal.
    raise _Encrypted


def server_context(tls: TlsServerConfig, where: str) -> ssl.SSLContext:
    """The HTTP receiver's context; OSError naming ``where`` (``receivers.otlp.protocols.http.tls``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[tls.min_version]
    try:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file), password=_no_passphrase)
    except _Encrypted:
        raise OSError(f"{where}.key_file: {tls.key_file} is protected by a passphrase; "
                      "faulttrace needs an unencrypted key (restrict the file's permissions instead)") from None
    except (OSError, ssl.SSLError) as err:  # SSLError is an OSError; kept explicit for the reader
        raise OSError(f"{where}: cannot load cert_file {tls.cert_file} with key_file {tls.key_file}: "
                      f"{_reason(err)}") from None
    if tls.client_ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as err:
            raise OSError(f"{where}.client_ca_file: cannot load {tls.client_ca_file}: {_reason(err)}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def grpc_credentials(tls: TlsServerConfig, where: str) -> grpc.ServerCredentials:
    """The gRPC receiver's credentials (minimum TLS 1.2, grpcio's floor); OSError naming ``where``."""
    server_context(tls, where)  # the same checks and messages as HTTP before grpcio sees the bytes
    try:
        key, chain = Path(str(tls.key_file)).read_bytes(), Path(str(tls.cert_file)).read_bytes()
        client_ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
    except OSError as err:
        raise OSError(f"{where}: cannot read {err.filename}: {err.strerror}") from None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def _reason(err: OSError) -> str:
    if isinstance(err, ssl.SSLError):
        # e.g. KEY_VALUES_MISMATCH, NO_CERTIFICATE_OR_CRL_FOUND; no reason: OpenSSL found no PEM at all
        return err.reason or f"not PEM ({err})"
    return err.strerror or str(err)


def listening_line(protocol: str, component_id: str, endpoint: str, port: int,
                   tls: TlsServerConfig | None, auth: ServerAuthenticator | None) -> str:
    """``OTLP/gRPC receiver otlp on 0.0.0.0:4317 (TLS, auth bearertokenauth)``: what a receiver says it serves."""
    host = endpoint.rsplit(":", 1)[0]
    return f"OTLP/{protocol} receiver {component_id} on {host}:{port}{security_summary(tls, auth)}"


def warn_tokens_in_clear(where: str, auth: ServerAuthenticator | None, encrypted: bool) -> None:
    """Started without TLS but checking tokens: say the tokens cross the network in clear text."""
    if auth is not None and not encrypted:
        log.warning("%s: %s checks tokens without tls: they cross the network in clear text",
                    where, auth.component_id)


def security_summary(tls: TlsServerConfig | None, auth: ServerAuthenticator | None) -> str:
    """`` (TLS, client certificates required, auth bearertokenauth)`` for a receiver's listening line."""
    parts = []
    if tls is not None:
        parts.append("TLS" + (", client certificates required" if tls.client_ca_file else ""))
    if auth is not None:
        parts.append(f"auth {auth.component_id}")
    return f" ({', '.join(parts)})" if parts else ""
