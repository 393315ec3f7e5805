"""Who may post to the webhook: each credential VAPI offers, and each way to get it wrong.

Every server here is a real process configured as a VAPI credential would be; requests
are signed as VAPI signs them (``HMACAuthenticationPlan``) or carry the secret as a
``BearerAuthenticationPlan`` sends it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from server.doors.vapi.auth import ReplayGuard

from .conftest import ROOT, FakeOllama, Process, start_server
from .vapi_bodies import (
    HMAC_SECRET,
    INFORMATIONAL,
    PUBLIC_URL,
    SECRET,
    assert_error,
    assert_serving,
    encode,
    envelope,
    now_millis,
    now_seconds,
    post,
    sign,
    signed,
    unique,
)


def body() -> bytes:
    """A status update no request has carried before."""
    return encode(unique(INFORMATIONAL["status-update"]))


@pytest.fixture(scope="module")
def default_server(fake: FakeOllama) -> Iterator[Process]:
    """Both secrets, with VAPI's default HMAC credential (sha256, {timestamp}.{body}, hex)."""
    process = start_server(fake.url, "--vapi-secret", SECRET, VAPI_HMAC_SECRET=HMAC_SECRET)
    yield process
    process.stop()


# The default credentials

Credentials = Callable[[bytes], dict[str, str]]

GOOD_CREDENTIALS: dict[str, Credentials] = {
    "x-vapi-secret": lambda body: {"x-vapi-secret": SECRET},
    "bearer": lambda body: {"authorization": f"Bearer {SECRET}"},
    "bare authorization": lambda body: {"authorization": SECRET},
    "x-vapi-secret with a Bearer prefix": lambda body: {"x-vapi-secret": f"Bearer {SECRET}"},
    "hmac hex, seconds": lambda body: signed(body),
    "hmac sha256= prefix, milliseconds, x-vapi- headers": lambda body: {
        "x-vapi-signature": "sha256=" + sign(body, ts := now_millis()),
        "x-vapi-timestamp": ts,
    },
    "hmac base64": lambda body: {
        "x-signature": base64.b64encode(bytes.fromhex(sign(body, ts := now_seconds()))).decode(),
        "x-timestamp": ts,
    },
    "hmac base64url without padding": lambda body: {
        "x-signature": base64.urlsafe_b64encode(bytes.fromhex(sign(body, ts := now_seconds())))
        .decode()
        .rstrip("="),
        "x-timestamp": ts,
    },
    "hmac upper-case hex": lambda body: {
        "x-signature": sign(body, ts := now_seconds()).upper(),
        "x-timestamp": ts,
    },
}


@pytest.mark.parametrize("scheme", sorted(GOOD_CREDENTIALS))
def test_each_default_scheme_with_the_right_secret_is_accepted(
    default_server: Process, scheme: str
) -> None:
    content = body()
    response = post(default_server, content, GOOD_CREDENTIALS[scheme](content))
    assert response.status_code == 200, response.text
    assert response.json() == {}


BAD_CREDENTIALS: dict[str, tuple[Credentials, str]] = {
    "nothing": (lambda body: {}, "missing_webhook_secret"),
    "an empty bearer": (lambda body: {"authorization": "Bearer"}, "missing_webhook_secret"),
    "wrong x-vapi-secret": (lambda body: {"x-vapi-secret": "guess"}, "invalid_webhook_secret"),
    "wrong bearer": (lambda body: {"authorization": "Bearer guess"}, "invalid_webhook_secret"),
    "the hmac secret as the shared secret": (
        lambda body: {"authorization": f"Bearer {HMAC_SECRET}"},
        "invalid_webhook_secret",
    ),
    "hmac with another secret": (
        lambda body: signed(body, secret="another-secret"),  # noqa: S106
        "invalid_webhook_signature",
    ),
    "hmac of another body": (lambda body: signed(body + b" "), "invalid_webhook_signature"),
    "hmac of another timestamp": (
        lambda body: {"x-signature": sign(body, now_seconds()), "x-timestamp": "1748876645"},
        "invalid_webhook_signature",
    ),
    "hmac with sha512 instead of sha256": (
        lambda body: {
            "x-signature": sign(body, ts := now_seconds(), algorithm="sha512"),
            "x-timestamp": ts,
        },
        "invalid_webhook_signature",
    ),
    "hmac that is neither hex nor base64": (
        lambda body: {"x-signature": "not a signature!", "x-timestamp": now_seconds()},
        "invalid_webhook_signature",
    ),
    "hmac without a timestamp": (
        lambda body: {"x-signature": sign(body, now_seconds())},
        "invalid_webhook_signature",
    ),
    "hmac with a timestamp that is not a number": (
        lambda body: signed(body, "yesterday"),
        "invalid_webhook_signature",
    ),
    "hmac an hour old": (
        lambda body: signed(body, str(int(time.time()) - 3600)),
        "stale_webhook_signature",
    ),
    "hmac an hour ahead, in milliseconds": (
        lambda body: signed(body, str(int(time.time() * 1000) + 3_600_000)),
        "stale_webhook_signature",
    ),
}


@pytest.mark.parametrize(("index", "case"), list(enumerate(sorted(BAD_CREDENTIALS))))
def test_bad_default_credentials_get_401_and_change_nothing(
    default_server: Process, index: int, case: str
) -> None:
    headers, code = BAD_CREDENTIALS[case]
    marker = f"+1555010{index:04d}"
    content = json.dumps(envelope("end-of-call-report", customer={"number": marker})).encode()
    response = post(default_server, content, headers(content))
    error = assert_error(response, 401, code)
    assert error["type"] == "authentication_error"
    assert marker.encode() not in default_server.output()
    assert_serving(default_server)


def test_a_signed_request_is_accepted_once(default_server: Process) -> None:
    content = body()
    headers = signed(content)
    assert post(default_server, content, headers).status_code == 200
    replayed = post(default_server, content, headers)
    assert_error(replayed, 401, "replayed_webhook_signature")
    # The same signature in another encoding is the same nonce.
    as_base64 = base64.b64encode(bytes.fromhex(headers["x-signature"])).decode()
    again = post(default_server, content, {**headers, "x-signature": "sha256=" + as_base64})
    assert_error(again, 401, "replayed_webhook_signature")
    # The same body signed at another second is a new request.
    later = str(int(headers["x-timestamp"]) - 1)
    assert post(default_server, content, signed(content, later)).status_code == 200
    assert_serving(default_server)


def test_webhook_without_a_secret_is_disabled(server: Process) -> None:
    for headers in ({}, {"x-vapi-secret": SECRET}, {"authorization": f"Bearer {SECRET}"}):
        response = post(server, INFORMATIONAL["hang"], headers)
        assert_error(response, 401, "webhook_disabled")
    assert b"VAPI webhook /vapi/webhook is disabled" in server.output()


def test_hmac_secret_alone_takes_no_shared_secret(fake: FakeOllama) -> None:
    process = start_server(fake.url, wait_warm=False, VAPI_HMAC_SECRET=HMAC_SECRET)
    try:
        content = body()
        response = post(process, content, {"x-vapi-secret": HMAC_SECRET})
        error = assert_error(response, 401, "missing_webhook_secret")
        assert "an HMAC signature in 'x-signature'" in error["message"]
        assert post(process, content, signed(content)).status_code == 200
    finally:
        process.stop()


def test_malformed_messages_are_checked_after_the_signature(default_server: Process) -> None:
    content = b"{not json"
    assert_error(post(default_server, content, {}), 401, "missing_webhook_secret")
    assert_error(post(default_server, content, signed(content)), 400, "invalid_json")


# A credential with every field set: sha512, custom headers, prefix, payload format,
# base64 secret; and the bearer token on a header of its own

KEY = b"\x8a\x01raw key bytes\xff\x00"
CUSTOM = {
    "VAPI_HMAC_SECRET": base64.b64encode(KEY).decode(),
    "VAPI_HMAC_SECRET_IS_BASE64": "true",
    "VAPI_HMAC_ALGORITHM": "sha512",
    "VAPI_HMAC_SIGNATURE_HEADER": "X-Hub-Signature",
    "VAPI_HMAC_TIMESTAMP_HEADER": "X-Hub-Time",
    "VAPI_HMAC_SIGNATURE_PREFIX": "v1=",
    "VAPI_HMAC_PAYLOAD_FORMAT": "{timestamp}:{method}:{url}:{body}",
    "VAPI_SECRET_HEADER_NAME": "X-Api-Token",
}
WEBHOOK_URL = f"{PUBLIC_URL}/vapi/webhook"


def flag(variable: str) -> str:
    return "--" + variable.lower().replace("_", "-")


@pytest.fixture(scope="module")
def custom_server(fake: FakeOllama) -> Iterator[Process]:
    # Each setting's flag is its variable's name, lower-case, with dashes.
    flags = [part for name, value in CUSTOM.items() for part in (flag(name), value)]
    process = start_server(fake.url, "--vapi-secret", SECRET, "--public-url", PUBLIC_URL, *flags)
    yield process
    process.stop()


def custom_signature(
    content: bytes,
    timestamp: str,
    url: str = WEBHOOK_URL,
    key: bytes = KEY,
    algorithm: str = "sha512",
) -> str:
    payload = f"{timestamp}:POST:{url}:".encode() + content
    return "v1=" + base64.b64encode(hmac.new(key, payload, algorithm).digest()).decode()


def test_a_fully_custom_hmac_credential_is_accepted(custom_server: Process) -> None:
    content = body()
    stamp = now_millis()
    headers = {"x-hub-signature": custom_signature(content, stamp), "x-hub-time": stamp}
    response = post(custom_server, content, headers)
    assert response.status_code == 200, response.text


def test_the_signed_url_is_the_one_vapi_calls_with_its_query(custom_server: Process) -> None:
    content = body()
    stamp = now_seconds()
    signature = custom_signature(content, stamp, url=f"{WEBHOOK_URL}?tenant=7")
    response = httpx.post(
        f"{custom_server.url}/vapi/webhook?tenant=7",
        content=content,
        headers={"x-hub-signature": signature, "x-hub-time": stamp},
        timeout=10,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-token": f"Bearer {SECRET}"},
        {"x-api-token": SECRET},
        {"x-vapi-secret": SECRET},
    ],
)
def test_the_bearer_token_on_its_own_header_with_or_without_the_prefix(
    custom_server: Process, headers: dict[str, str]
) -> None:
    assert post(custom_server, body(), headers).status_code == 200


CUSTOM_BAD: dict[str, tuple[Callable[[bytes, str], dict[str, str]], str]] = {
    "signed with sha256": (
        lambda c, ts: {
            "x-hub-signature": custom_signature(c, ts, algorithm="sha256"),
            "x-hub-time": ts,
        },
        "invalid_webhook_signature",
    ),
    "signed with the base64 text as the key": (
        lambda c, ts: {
            "x-hub-signature": custom_signature(c, ts, key=CUSTOM["VAPI_HMAC_SECRET"].encode()),
            "x-hub-time": ts,
        },
        "invalid_webhook_signature",
    ),
    "signed for another URL": (
        lambda c, ts: {
            "x-hub-signature": custom_signature(c, ts, url="https://evil.example.com/vapi/webhook"),
            "x-hub-time": ts,
        },
        "invalid_webhook_signature",
    ),
    "the default payload format": (
        lambda c, ts: {"x-hub-signature": "v1=" + sign(c, ts), "x-hub-time": ts},
        "invalid_webhook_signature",
    ),
    "no timestamp in its header": (
        lambda c, ts: {"x-hub-signature": custom_signature(c, ts), "x-timestamp": ts},
        "invalid_webhook_signature",
    ),
    "a wrong token on the bearer's header": (
        lambda c, ts: {"x-api-token": "Bearer guess"},
        "invalid_webhook_secret",
    ),
}


@pytest.mark.parametrize("case", sorted(CUSTOM_BAD))
def test_bad_custom_credentials_get_401(custom_server: Process, case: str) -> None:
    headers, code = CUSTOM_BAD[case]
    content = body()
    error = assert_error(post(custom_server, content, headers(content, now_seconds())), 401, code)
    if case == "no timestamp in its header":
        assert "'x-hub-time'" in error["message"]


# Without a timestamp: sha1 of the body alone


@pytest.fixture(scope="module")
def untimed_server(fake: FakeOllama) -> Iterator[Process]:
    process = start_server(
        fake.url,
        "--vapi-hmac-algorithm", "sha1",
        "--vapi-hmac-include-timestamp", "false",
        VAPI_HMAC_SECRET=HMAC_SECRET,
    )  # fmt: skip
    yield process
    process.stop()


def sha1_of(content: bytes) -> str:
    return hmac.new(HMAC_SECRET.encode(), content, hashlib.sha1).hexdigest()


def test_an_untimed_signature_of_the_body_is_accepted_once(untimed_server: Process) -> None:
    content = body()
    headers = {"x-signature": sha1_of(content)}
    assert post(untimed_server, content, headers).status_code == 200
    assert_error(post(untimed_server, content, headers), 401, "replayed_webhook_signature")


@pytest.mark.parametrize(
    "headers",
    [
        lambda c: {"x-signature": sha1_of(c + b"\n")},
        lambda c: {"x-signature": sign(c, "0", algorithm="sha1")},
        lambda c: {"x-signature": hmac.new(HMAC_SECRET.encode(), c, "sha256").hexdigest()},
    ],
    ids=["another body", "with a timestamp", "sha256"],
)
def test_bad_untimed_signatures_get_401(
    untimed_server: Process, headers: Callable[[bytes], dict[str, str]]
) -> None:
    content = body()
    assert_error(post(untimed_server, content, headers(content)), 401, "invalid_webhook_signature")


# Svix-style: a message id in the signed payload


@pytest.fixture(scope="module")
def svix_server(fake: FakeOllama) -> Iterator[Process]:
    process = start_server(
        fake.url,
        "--vapi-hmac-payload-format", "{svix-id}.{timestamp}.{body}",
        "--vapi-hmac-message-id-header", "svix-id",
        "--vapi-hmac-timestamp-header", "svix-timestamp",
        "--vapi-hmac-signature-header", "svix-signature",
        VAPI_HMAC_SECRET=HMAC_SECRET,
    )  # fmt: skip
    yield process
    process.stop()


def svix_headers(content: bytes, message_id: str, signed_id: str | None = None) -> dict[str, str]:
    stamp = now_seconds()
    payload = f"{signed_id or message_id}.{stamp}.".encode() + content
    digest = hmac.new(HMAC_SECRET.encode(), payload, hashlib.sha256).digest()
    return {
        "svix-id": message_id,
        "svix-timestamp": stamp,
        "svix-signature": base64.b64encode(digest).decode(),
    }


def test_a_message_id_signature(svix_server: Process) -> None:
    content = body()
    assert post(svix_server, content, svix_headers(content, "msg_2f8a")).status_code == 200
    other = svix_headers(content, "msg_2f8b", signed_id="msg_2f8c")
    assert_error(post(svix_server, content, other), 401, "invalid_webhook_signature")
    missing = svix_headers(content, "msg_2f8d")
    del missing["svix-id"]
    error = assert_error(post(svix_server, content, missing), 401, "invalid_webhook_signature")
    assert "'svix-id'" in error["message"]


# Settings that cannot describe a VAPI credential stop the server, and the command


def run_command(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VAPI_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "server", "vapi-assistant", "--public-url", PUBLIC_URL],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"VAPI_HMAC_ALGORITHM": "md5"}, "vapi-hmac-algorithm 'md5' is not sha256, sha512 or sha1"),
        (
            {"VAPI_HMAC_SIGNATURE_HEADER": "x signature"},
            "vapi-hmac-signature-header 'x signature' is not an HTTP header name",
        ),
        (
            {"VAPI_HMAC_PAYLOAD_FORMAT": "{timestmap}.{body}"},
            "has {timestmap}: the placeholders are {timestamp}, {body}, {method}, {url}, {svix-id}",
        ),
        ({"VAPI_HMAC_PAYLOAD_FORMAT": "{timestamp}"}, "has no {body}"),
        ({"VAPI_HMAC_PAYLOAD_FORMAT": "{body}"}, "has no {timestamp}"),
        (
            {"VAPI_HMAC_PAYLOAD_FORMAT": "{timestamp}:{body}", "VAPI_HMAC_INCLUDE_TIMESTAMP": "0"},
            "signs {timestamp}, but vapi-hmac-include-timestamp is false",
        ),
        (
            {"VAPI_HMAC_PAYLOAD_FORMAT": "{svix-id}.{timestamp}.{body}"},
            "set vapi-hmac-message-id-header",
        ),
        (
            {"VAPI_HMAC_SECRET_IS_BASE64": "yes", "VAPI_HMAC_SECRET": "not base64!"},
            "VAPI_HMAC_SECRET is not base64",
        ),
        (
            {"VAPI_HMAC_INCLUDE_TIMESTAMP": "maybe"},
            "VAPI_HMAC_INCLUDE_TIMESTAMP='maybe' is not true or false",
        ),
        ({"VAPI_SECRET_HEADER_NAME": "X:Token"}, "vapi-secret-header-name 'X:Token'"),
    ],
)
def test_settings_no_vapi_credential_has_are_one_line_errors(
    env: dict[str, str], reason: str
) -> None:
    done = run_command(**{"VAPI_HMAC_SECRET": HMAC_SECRET, **env})
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("python -m server vapi-assistant: error: ")
    assert reason in line
    assert "not base64!" not in line


def test_a_url_signature_without_a_public_url_stops_the_server(fake: FakeOllama) -> None:
    with pytest.raises(RuntimeError, match="the server exited") as exited:
        start_server(
            fake.url,
            VAPI_HMAC_SECRET=HMAC_SECRET,
            VAPI_HMAC_PAYLOAD_FORMAT="{timestamp}.{url}.{body}",
        )
    assert "vapi-hmac-payload-format signs {url}: set PUBLIC_URL" in str(exited.value)
    assert HMAC_SECRET not in str(exited.value)


def test_the_replay_cache_is_bounded_and_forgets_what_expired() -> None:
    guard = ReplayGuard(size=2)
    assert guard.first_use(b"a", until=100.0, now=0.0)
    assert not guard.first_use(b"a", until=100.0, now=50.0)  # a replay in its window
    assert guard.first_use(b"b", until=10.0, now=0.0)
    assert guard.first_use(b"c", until=100.0, now=5.0)  # full: "a", the oldest, is forgotten
    assert guard.first_use(b"a", until=100.0, now=6.0)  # so it passes, and "b" is forgotten
    assert len(guard) == 2
    assert not guard.first_use(b"c", until=100.0, now=99.0)
    assert guard.first_use(b"c", until=300.0, now=101.0)  # its window ended at 100
    assert len(guard) == 1  # "a" expired too
