"""X-Hub-Signature-256: HMAC-SHA256 of the raw body with the app secret."""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "sha256="


def sign(body: bytes, app_secret: str) -> str:
    return PREFIX + hmac.new(app_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def secrets_match(given: str | None, expected: str) -> bool:
    """Constant-time compare of a shared secret; nothing configured means nothing matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def is_valid_signature(body: bytes, header: str | None, app_secret: str) -> bool:
    """Constant-time check of the header against the raw bytes Meta sent (never re-serialised JSON)."""
    if not app_secret or not header or not header.startswith(PREFIX) or len(header) != len(PREFIX) + 64:
        return False
    expected = sign(body, app_secret).encode("ascii")
    return hmac.compare_digest(expected, header.strip().lower().encode("ascii", "replace"))
