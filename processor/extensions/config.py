"""Configuration of the extensions (``extensions.<type>``): the bearer-token authenticator's and the
health check's keys."""

from __future__ import annotations

from pydantic import ConfigDict, SecretStr, field_validator, model_validator

from processor.confmap import Endpoint, StrictModel


class BearerTokenAuthConfig(StrictModel):
    """The collector's ``bearertokenauth``: requests must carry ``authorization: <scheme> <token>``.

    ``token`` is a SecretStr so that no repr, log line or error message of the
    config can show it.  As in the collector, ``filename`` wins over ``token``
    when both are set.
    """

    # A validation error's text must not quote the input: it may hold the token.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    token: SecretStr | None = None
    filename: str | None = None  # read at start: one token per line (any of them is accepted)
    scheme: str = "Bearer"       # "" sends and expects the bare token

    @model_validator(mode="after")
    def _a_token(self) -> BearerTokenAuthConfig:
        if not self.filename and not (self.token and self.token.get_secret_value()):
            # `token: ${env:T}` with T unset expands to "": never accept an empty token.
            raise ValueError("set token or filename (an empty token, e.g. from an unset "
                             "environment variable, is refused)")
        return self


class HealthCheckResponseBody(StrictModel):
    healthy: str = ""
    unhealthy: str = ""


class HealthCheckConfig(StrictModel):
    """The collector's ``health_check``: ``GET path`` on ``endpoint`` says whether faulttrace is ready.
    The collector listens on localhost:13133 by default; so does faulttrace (127.0.0.1)."""

    endpoint: Endpoint = "127.0.0.1:13133"
    path: str = "/"
    response_body: HealthCheckResponseBody | None = None  # plain-text bodies instead of the JSON status

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"{v!r} must start with /")
        return v
