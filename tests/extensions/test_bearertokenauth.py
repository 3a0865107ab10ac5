"""processor.extensions.bearertokenauth: which authorization values are accepted, token files,
and that neither the config's repr nor its validation errors show the token."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from processor.extensions.bearertokenauth import BearerTokenAuth
from processor.extensions.config import BearerTokenAuthConfig

TOKEN = "tok-3f9a1c"


def started(**config: object) -> BearerTokenAuth:
    auth = BearerTokenAuth("bearertokenauth", BearerTokenAuthConfig.model_validate(config))
    asyncio.run(auth.start())
    return auth


@pytest.mark.parametrize("value, accepted", [
    (f"Bearer {TOKEN}", True),
    (f"bearer {TOKEN}", True),          # the scheme is case-insensitive (RFC 9110)
    (f"BEARER {TOKEN}", True),
    (f"Bearer {TOKEN.upper()}", False),  # the token is not
    (f"Bearer {TOKEN}x", False),
    (f"Bearer {TOKEN[:-1]}", False),
    ("Bearer ", False),
    (f"Basic {TOKEN}", False),
    (TOKEN, False),
    ("", False),
    (None, False),
])
def test_authenticate(value, accepted):
    assert started(token=TOKEN).authenticate(value) is accepted


def test_a_custom_scheme_and_no_scheme():
    assert started(token=TOKEN, scheme="Token").authenticate(f"Token {TOKEN}")
    assert not started(token=TOKEN, scheme="Token").authenticate(f"Bearer {TOKEN}")
    assert started(token=TOKEN, scheme="").authenticate(TOKEN)
    assert not started(token=TOKEN, scheme="").authenticate(f"Bearer {TOKEN}")


def test_a_token_file_holds_one_token_per_line_and_wins_over_token(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("one\n\n  two \n", encoding="utf-8")
    auth = started(filename=str(path), token="ignored")
    assert auth.authenticate("Bearer one") and auth.authenticate("Bearer two")
    assert not auth.authenticate("Bearer ignored") and not auth.authenticate("Bearer ")


@pytest.mark.parametrize("content, message", [
    (None, "cannot read {path}: No such file or directory"),
    ("\n  \n", "{path} holds no token"),
])
def test_token_file_problems_name_the_key(tmp_path, content, message):
    path = tmp_path / "tokens"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(OSError) as err:
        started(filename=str(path))
    assert str(err.value) == "extensions.bearertokenauth.filename: " + message.format(path=path)


def test_an_unstarted_or_stopped_authenticator_accepts_nothing():
    auth = BearerTokenAuth("bearertokenauth", BearerTokenAuthConfig(token=TOKEN))
    assert not auth.authenticate(f"Bearer {TOKEN}")
    asyncio.run(auth.start())
    asyncio.run(auth.shutdown())
    assert not auth.authenticate(f"Bearer {TOKEN}")


@pytest.mark.parametrize("config", [{}, {"token": ""}, {"scheme": "Bearer"}])
def test_a_token_or_a_filename_is_required_and_empty_is_refused(config):
    with pytest.raises(ValidationError, match="set token or filename"):
        BearerTokenAuthConfig.model_validate(config)


def test_the_token_never_shows_in_a_repr_or_a_validation_error():
    config = BearerTokenAuthConfig(token=TOKEN)
    assert TOKEN not in repr(config) and TOKEN not in str(config)
    with pytest.raises(ValidationError) as err:
        BearerTokenAuthConfig.model_validate({"token": TOKEN, "tokn": TOKEN, "scheme": ["x"]})
    assert TOKEN not in str(err.value)
