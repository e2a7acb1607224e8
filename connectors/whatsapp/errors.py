"""Graph API error codes → what to do about them (pure, table-tested)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

# Throughput, pair-rate and transient platform errors: try again later.
RETRYABLE_CODES = frozenset({130429, 131056, 4, 80007, 613, 131000, 131016, 1, 2, 133004})
# The message will never go through as it is.
PERMANENT_CODES = frozenset({131047, 131048, 131049, 368, 131026, 131030, 131051, 131052, 131053, 100, 131009, 190})
OUTSIDE_WINDOW = 131047
# An HTTP 5xx may mean the message was sent anyway: retry, but only this often.
MAX_SERVER_ERROR_RETRIES = 2


class Verdict(str, Enum):
    RETRY = "retry"
    TEMPLATE = "template"  # outside the 24 h window: a template is the only way
    FAIL = "fail"


@dataclass(frozen=True)
class GraphError(Exception):
    http_status: int
    code: int | None
    message: str
    details: str | None = None
    fbtrace_id: str | None = None

    def __str__(self) -> str:
        return f"Graph API error {self.code} (HTTP {self.http_status}): {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        # A send's result crosses from the inbox helper process (connectors/inbox_helper.py) pickled;
        # Exception's own reduce would call the constructor with no fields.
        return type(self), (self.http_status, self.code, self.message, self.details, self.fbtrace_id)

    @classmethod
    def from_response(cls, http_status: int, body: Any) -> GraphError:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return cls(http_status, None, f"HTTP {http_status} without an error object")
        data = error.get("error_data") if isinstance(error.get("error_data"), dict) else {}
        code = error.get("code")
        return cls(
            http_status=http_status,
            code=code if isinstance(code, int) else None,
            message=str(error.get("message") or ""),
            details=data.get("details"),
            fbtrace_id=error.get("fbtrace_id"),
        )


def verdict(error: GraphError, server_error_retries: int) -> Verdict:
    """Retry only what can succeed later; 5xx at most MAX_SERVER_ERROR_RETRIES times."""
    if error.code == OUTSIDE_WINDOW:
        return Verdict.TEMPLATE
    if error.code in PERMANENT_CODES:
        return Verdict.FAIL
    if error.code in RETRYABLE_CODES:
        return Verdict.RETRY
    if error.http_status >= 500 or error.http_status == 0:
        return Verdict.RETRY if server_error_retries < MAX_SERVER_ERROR_RETRIES else Verdict.FAIL
    if error.http_status == 429:
        return Verdict.RETRY
    return Verdict.FAIL


def backoff_seconds(attempt: int, random_fraction: float, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base·2^attempt)]."""
    return min(cap, base * (2**attempt)) * random_fraction
