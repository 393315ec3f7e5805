"""Who may post to the webhook: VAPI's secret, or its HMAC signature of the request.

The settings are VAPI's webhook credentials, field by field:

- a bearer token (``BearerAuthenticationPlan``): ``VAPI_SECRET`` is its ``token``,
  taken from ``Authorization``, ``X-Vapi-Secret`` (VAPI's legacy inline secret) or the
  header ``VAPI_SECRET_HEADER_NAME`` names (``headerName``), with or without the
  ``Bearer`` prefix (``bearerPrefixEnabled`` needs no setting);
- an HMAC signature (``HMACAuthenticationPlan``): ``VAPI_HMAC_SECRET`` is its
  ``secretKey`` (base64 of the key with ``VAPI_HMAC_SECRET_IS_BASE64``),
  ``VAPI_HMAC_ALGORITHM`` its ``algorithm`` (sha256, sha512 or sha1), and the signed
  text follows ``VAPI_HMAC_PAYLOAD_FORMAT`` (``{timestamp}``, ``{body}``,
  ``{method}``, ``{url}`` and ``{svix-id}``, the value of
  ``VAPI_HMAC_MESSAGE_ID_HEADER``). The signature comes in
  ``VAPI_HMAC_SIGNATURE_HEADER`` (or ``x-vapi-signature``), after
  ``VAPI_HMAC_SIGNATURE_PREFIX`` or an ``<algorithm>=`` prefix if any, in hex or base64
  (both are understood, so ``signatureEncoding`` needs no setting). With
  ``VAPI_HMAC_INCLUDE_TIMESTAMP`` (the default), the timestamp, in seconds or
  milliseconds, comes in ``VAPI_HMAC_TIMESTAMP_HEADER`` (or ``x-vapi-timestamp``) and
  may be at most ``VAPI_HMAC_MAX_SKEW`` seconds off.

A signed request is accepted once. Its nonce is its MAC (the decoded signature, so the
same signature in another encoding is the same nonce), remembered until the request's
timestamp leaves the skew window (for the skew when nothing is timestamped), among at
most :data:`REPLAY_CACHE_SIZE` (the oldest are forgotten first when it is full).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ...config import Config, ConfigError
from ...core.errors import ServiceError
from ..asgi import Scope
from .assistant import model_url

__all__ = ["REPLAY_CACHE_SIZE", "HmacPlan", "ReplayGuard", "WebhookAuth"]

REPLAY_CACHE_SIZE = 65_536
"""Most signatures remembered against replays (about 10 MB when full)."""

_ALGORITHMS: dict[str, Callable[..., Any]] = {
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
    "sha1": hashlib.sha1,
}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDERS = ("timestamp", "body", "method", "url", "svix-id")
_DEFAULT_PAYLOAD_FORMAT = Config().vapi_hmac_payload_format
# An HTTP header name (RFC 9110 token).
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BEARER = b"bearer "
_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _invalid(message: str = "the webhook signature is not valid") -> ServiceError:
    return ServiceError(401, "invalid_webhook_signature", message)


def _header(setting: str, value: str) -> bytes:
    if not _HEADER_NAME.match(value):
        raise ConfigError(f"{setting} {value!r} is not an HTTP header name")
    return value.lower().encode()


class ReplayGuard:
    """The nonces already accepted, each with the wall-clock time it may be forgotten."""

    def __init__(self, size: int = REPLAY_CACHE_SIZE) -> None:
        self._size = size
        self._until: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._until)

    def first_use(self, nonce: bytes, until: float, now: float) -> bool:
        """Whether ``nonce`` is new (then it is remembered until ``until``), or a replay."""
        until_by_nonce = self._until
        # In arrival order, which is nearly expiry order: drop the expired ones in front.
        while until_by_nonce:
            oldest = next(iter(until_by_nonce))
            if until_by_nonce[oldest] >= now:
                break
            del until_by_nonce[oldest]
        seen = until_by_nonce.pop(nonce, None)
        if seen is not None and seen >= now:
            until_by_nonce[nonce] = seen
            return False
        if len(until_by_nonce) >= self._size:
            del until_by_nonce[next(iter(until_by_nonce))]
        until_by_nonce[nonce] = until
        return True


@dataclass(frozen=True, slots=True)
class HmacPlan:
    """How VAPI signs a webhook request: the HMAC credential's fields, checked."""

    key: bytes
    algorithm: str
    signature_headers: tuple[bytes, ...]
    timestamp_headers: tuple[bytes, ...]
    message_id_header: bytes | None
    prefix: bytes | None
    include_timestamp: bool
    payload_format: str
    # The format cut into literal text (bytes) and placeholder names (str).
    template: tuple[bytes | str, ...]
    url: bytes | None
    max_skew: float

    @classmethod
    def from_config(cls, config: Config) -> HmacPlan | None:
        """The plan of ``VAPI_HMAC_*``, or None without a secret; raises :class:`ConfigError`."""
        if not config.vapi_hmac_secret:
            return None
        secret = config.vapi_hmac_secret
        if config.vapi_hmac_secret_is_base64:
            encoded = secret.strip().encode().translate(_URLSAFE)
            try:
                key = base64.b64decode(encoded + b"=" * (-len(encoded) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(
                    "VAPI_HMAC_SECRET is not base64, but vapi-hmac-secret-is-base64 is set"
                ) from None
        else:
            key = secret.encode()
        algorithm = config.vapi_hmac_algorithm.lower()
        if algorithm not in _ALGORITHMS:
            raise ConfigError(
                f"vapi-hmac-algorithm {config.vapi_hmac_algorithm!r} is not sha256, sha512 or sha1"
            )
        payload_format = config.vapi_hmac_payload_format
        if not config.vapi_hmac_include_timestamp and payload_format == _DEFAULT_PAYLOAD_FORMAT:
            payload_format = "{body}"
        template = _template(payload_format, config.vapi_hmac_include_timestamp)
        url = None
        if "url" in template:
            webhook_url = model_url(config.public_url)[1] if config.public_url else None
            if webhook_url is None:
                raise ConfigError(
                    "vapi-hmac-payload-format signs {url}: set PUBLIC_URL, the base of the "
                    "webhook URL VAPI calls"
                )
            url = webhook_url.encode()
        message_id = config.vapi_hmac_message_id_header
        if "svix-id" in template and message_id is None:
            raise ConfigError(
                "vapi-hmac-payload-format signs {svix-id}: set vapi-hmac-message-id-header"
            )
        prefix = config.vapi_hmac_signature_prefix
        return cls(
            key=key,
            algorithm=algorithm,
            signature_headers=_names(
                _header("vapi-hmac-signature-header", config.vapi_hmac_signature_header),
                b"x-vapi-signature",
            ),
            timestamp_headers=_names(
                _header("vapi-hmac-timestamp-header", config.vapi_hmac_timestamp_header),
                b"x-vapi-timestamp",
            ),
            message_id_header=(
                None if message_id is None else _header("vapi-hmac-message-id-header", message_id)
            ),
            prefix=prefix.encode().lower() if prefix else None,
            include_timestamp=config.vapi_hmac_include_timestamp,
            payload_format=payload_format,
            template=template,
            url=url,
            max_skew=config.vapi_hmac_max_skew,
        )

    def headers(self) -> frozenset[bytes]:
        """Every header the plan reads."""
        names = {*self.signature_headers, *self.timestamp_headers}
        if self.message_id_header is not None:
            names.add(self.message_id_header)
        return frozenset(names)

    def verify(
        self, signature: bytes, given: dict[bytes, bytes], scope: Scope, body: bytes, now: float
    ) -> tuple[bytes, float]:
        """Check a request's signature; returns its MAC and until when it may be replayed.

        ``given`` are the request's headers (the ones :meth:`headers` names). Raises a 401
        :class:`ServiceError` (``invalid_webhook_signature`` or ``stale_webhook_signature``)
        when the request is not signed with the key, now.
        """
        timestamp = _first(given, self.timestamp_headers)
        if self.include_timestamp and timestamp is None:
            name = self.timestamp_headers[0].decode()
            raise _invalid(f"a signed webhook needs an {name!r} header")
        message_id = b""
        if self.message_id_header is not None and "svix-id" in self.template:
            found = given.get(self.message_id_header)
            if found is None:
                raise _invalid(
                    f"a signed webhook needs an {self.message_id_header.decode()!r} header"
                )
            message_id = found
        mac = hmac.new(self.key, digestmod=_ALGORITHMS[self.algorithm])
        for part in self.template:
            if isinstance(part, bytes):
                mac.update(part)
            elif part == "body":
                mac.update(body)
            elif part == "timestamp":
                mac.update(timestamp or b"")
            elif part == "method":
                mac.update(scope["method"].encode())
            elif part == "url":
                assert self.url is not None
                query = scope.get("query_string", b"")
                mac.update(self.url + b"?" + query if query else self.url)
            else:
                mac.update(message_id)
        expected = mac.digest()
        decoded = self._decode(signature, len(expected))
        if decoded is None or not hmac.compare_digest(decoded, expected):
            raise _invalid()
        if not self.include_timestamp:
            return expected, now + self.max_skew
        assert timestamp is not None
        if not timestamp.isdigit() or len(timestamp) > 16:
            raise _invalid()
        # Seconds or milliseconds since the epoch: 1e11 s is 5138 AD, 1e11 ms is 1973.
        seconds = int(timestamp) / (1000 if int(timestamp) >= 10**11 else 1)
        skew = abs(now - seconds)
        if skew > self.max_skew:
            raise ServiceError(
                401,
                "stale_webhook_signature",
                f"the webhook timestamp is {skew:.0f} s off; at most {self.max_skew:g} s is "
                "accepted (check the clocks, or a request was replayed)",
            )
        return expected, seconds + self.max_skew

    def _decode(self, signature: bytes, size: int) -> bytes | None:
        """The MAC a signature header carries: prefix removed, hex or base64 decoded."""
        value = signature
        lowered = value.lower()
        for prefix in (self.prefix, self.algorithm.encode() + b"="):
            if prefix and lowered.startswith(prefix):
                value = value[len(prefix) :].strip()
                break
        if len(value) == 2 * size:
            try:
                return bytes.fromhex(value.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                pass
        padded = value.translate(_URLSAFE) + b"=" * (-len(value) % 4)
        try:
            return base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            return None


def _template(payload_format: str, include_timestamp: bool) -> tuple[bytes | str, ...]:
    """The payload format cut into literal text and placeholders; checked for sense."""
    setting = f"vapi-hmac-payload-format {payload_format!r}"
    parts: list[bytes | str] = []
    end = 0
    for match in _PLACEHOLDER.finditer(payload_format):
        name = match.group(1)
        if name not in _PLACEHOLDERS:
            raise ConfigError(
                f"{setting} has {{{name}}}: the placeholders are "
                + ", ".join(f"{{{known}}}" for known in _PLACEHOLDERS)
            )
        if match.start() > end:
            parts.append(payload_format[end : match.start()].encode())
        parts.append(name)
        end = match.end()
    if end < len(payload_format):
        parts.append(payload_format[end:].encode())
    if "body" not in parts:
        raise ConfigError(f"{setting} has no {{body}}, so the body would not be signed")
    if include_timestamp and "timestamp" not in parts:
        raise ConfigError(
            f"{setting} has no {{timestamp}}, so the timestamp would not be signed: add it, "
            "or set vapi-hmac-include-timestamp false"
        )
    if not include_timestamp and "timestamp" in parts:
        raise ConfigError(
            f"{setting} signs {{timestamp}}, but vapi-hmac-include-timestamp is false"
        )
    return tuple(parts)


def _names(configured: bytes, alias: bytes) -> tuple[bytes, ...]:
    return (configured,) if configured == alias else (configured, alias)


def _first(given: dict[bytes, bytes], names: Iterable[bytes]) -> bytes | None:
    for name in names:
        value = given.get(name)
        if value is not None:
            return value
    return None


class WebhookAuth:
    """Checks a webhook request against the configured credentials, in constant time."""

    def __init__(self, config: Config) -> None:
        """Raises :class:`ConfigError` when the HMAC settings do not make sense."""
        secret = config.vapi_secret
        self._secret = secret.encode() if secret else None
        self._secret_headers = [b"x-vapi-secret", b"authorization"]
        if config.vapi_secret_header_name is not None:
            name = _header("vapi-secret-header-name", config.vapi_secret_header_name)
            if name not in self._secret_headers:
                self._secret_headers.append(name)
        self.hmac = HmacPlan.from_config(config)
        self.replays = ReplayGuard()
        self._headers = frozenset(self._secret_headers).union(
            self.hmac.headers() if self.hmac else ()
        )

    @property
    def enabled(self) -> bool:
        """Whether any secret is configured; without one every request is refused."""
        return self._secret is not None or self.hmac is not None

    def check(self, scope: Scope, body: bytes) -> None:
        """Raise a 401 :class:`ServiceError` unless the request proves it comes from VAPI.

        A signature header is checked when an HMAC secret is configured; otherwise the
        secret, from any of its headers. Callers refuse every request themselves when the
        check is not :attr:`enabled`.
        """
        wanted = self._headers
        given = {name: value.strip() for name, value in scope["headers"] if name in wanted}
        plan = self.hmac
        signature = None if plan is None else _first(given, plan.signature_headers)
        if plan is not None and signature is not None:
            now = time.time()
            nonce, until = plan.verify(signature, given, scope, body, now)
            if not self.replays.first_use(nonce, until, now):
                raise ServiceError(
                    401,
                    "replayed_webhook_signature",
                    "this signed webhook request was already received",
                )
            return
        # "Bearer" with nothing after it is no secret at all.
        candidates = [
            value
            for name in self._secret_headers
            if (value := given.get(name)) and value.lower() != _BEARER.strip()
        ]
        if self._secret is not None and candidates:
            # Every candidate is compared, with and without a Bearer prefix, so the time
            # taken says nothing about which one matched.
            matches = [hmac.compare_digest(value, self._secret) for value in candidates]
            for value in candidates:
                bare = value[len(_BEARER) :].lstrip() if value[:7].lower() == _BEARER else b""
                matches.append(hmac.compare_digest(bare, self._secret))
            if any(matches):
                return
            raise ServiceError(401, "invalid_webhook_secret", "the webhook secret is not valid")
        wanted_text = []
        if self._secret is not None:
            headers = " or ".join(f"'{name.decode()}'" for name in self._secret_headers)
            wanted_text.append(f"the secret in {headers}")
        if plan is not None:
            name = plan.signature_headers[0].decode()
            wanted_text.append(f"an HMAC signature in {name!r}")
        raise ServiceError(
            401, "missing_webhook_secret", f"this webhook needs {' or '.join(wanted_text)}"
        )
