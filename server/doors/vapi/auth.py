"""Who may post to the webhook: VAPI's secret, or its HMAC signature of the request."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable

from ...core.errors import ServiceError

__all__ = ["WebhookAuth"]


_AUTH_HEADERS = frozenset(
    {
        b"authorization",
        b"x-vapi-secret",
        b"x-signature",
        b"x-vapi-signature",
        b"x-timestamp",
        b"x-vapi-timestamp",
    }
)


def _header_map(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    return {name: value.strip() for name, value in headers if name in _AUTH_HEADERS}


class WebhookAuth:
    """Checks a webhook request against the configured secrets, in constant time."""

    def __init__(self, secret: str | None, hmac_secret: str | None, max_skew: float) -> None:
        self._secret = secret.encode() if secret else None
        self._hmac_key = hmac_secret.encode() if hmac_secret else None
        self._max_skew = max_skew

    @property
    def enabled(self) -> bool:
        """Whether any secret is configured; without one every request is refused."""
        return self._secret is not None or self._hmac_key is not None

    def check(self, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> None:
        """Raise a 401 :class:`ServiceError` unless the request proves it comes from VAPI.

        A signature header is checked when an HMAC secret is configured; otherwise the
        secret, from ``x-vapi-secret`` or ``Authorization`` (``Bearer <secret>`` or bare).
        Callers refuse every request themselves when the check is not :attr:`enabled`.
        """
        given = _header_map(headers)
        signature = given.get(b"x-signature") or given.get(b"x-vapi-signature")
        if self._hmac_key is not None and signature is not None:
            timestamp = given.get(b"x-timestamp") or given.get(b"x-vapi-timestamp")
            self._check_signature(self._hmac_key, signature, timestamp, body)
            return
        candidates = [given[b"x-vapi-secret"]] if b"x-vapi-secret" in given else []
        authorization = given.get(b"authorization")
        if authorization is not None:
            scheme, _, rest = authorization.partition(b" ")
            bearer = rest and scheme.lower() == b"bearer"
            candidates.append(rest.strip() if bearer else authorization)
        if self._secret is not None and candidates:
            # Every candidate is compared, so the time taken says nothing about which.
            matches = [hmac.compare_digest(c, self._secret) for c in candidates]
            if any(matches):
                return
            raise ServiceError(401, "invalid_webhook_secret", "the webhook secret is not valid")
        wanted = []
        if self._secret is not None:
            wanted.append("'x-vapi-secret: <secret>' or 'Authorization: Bearer <secret>'")
        if self._hmac_key is not None:
            wanted.append("an HMAC signature in 'x-signature' with 'x-timestamp'")
        raise ServiceError(
            401, "missing_webhook_secret", f"this webhook needs {' or '.join(wanted)}"
        )

    def _check_signature(
        self, key: bytes, signature: bytes, timestamp: bytes | None, body: bytes
    ) -> None:
        if timestamp is None:
            raise ServiceError(
                401, "invalid_webhook_signature", "a signed webhook needs an 'x-timestamp' header"
            )
        mac = hmac.new(key, timestamp + b".", hashlib.sha256)
        mac.update(body)
        digest = mac.digest()
        if signature[:7].lower() == b"sha256=":
            signature = signature[7:]
        as_hex = hmac.compare_digest(signature.lower(), digest.hex().encode())
        as_base64 = hmac.compare_digest(signature, base64.b64encode(digest))
        if not (as_hex or as_base64) or not timestamp.isdigit() or len(timestamp) > 16:
            raise ServiceError(
                401, "invalid_webhook_signature", "the webhook signature is not valid"
            )
        # Seconds or milliseconds since the epoch: 1e11 s is 5138 AD, 1e11 ms is 1973.
        seconds = int(timestamp) / (1000 if int(timestamp) >= 10**11 else 1)
        skew = abs(time.time() - seconds)
        if skew > self._max_skew:
            raise ServiceError(
                401,
                "stale_webhook_signature",
                f"the webhook timestamp is {skew:.0f} s off; at most {self._max_skew:g} s is "
                "accepted (check the clocks, or a request was replayed)",
            )
