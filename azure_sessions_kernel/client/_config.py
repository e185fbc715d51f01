"""Timeouts and retry policy of the sessions clients.

Two clocks matter and must not be confused (E2B's bugs showed why): the
*connect* timeout says how long to try reaching the pool; the *execution*
deadline says how long code may run. A request that runs code therefore
waits ``execution + margin`` for its response, while every other request
waits ``read``::

    SessionsClient(endpoint, timeout=Timeouts(connect=5, execution=60))
    SessionsClient(endpoint, retry=RetryPolicy(max_attempts=1))   # never retry
"""

from __future__ import annotations

import dataclasses
import email.utils
import math
import random
import time
from collections.abc import Mapping

from .. import wire
from ._exceptions import ConfigurationError

__all__ = ["RetryPolicy", "Timeouts"]


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds the clients wait, per kind of wait.

    ``connect``   reaching the pool (TCP + TLS), and waiting for a pooled connection.
    ``read``      the gap between two reads of a non-execution response, and
                  between two writes of a request body.
    ``execution`` the default execution deadline sent as ``timeoutInSeconds``;
                  Azure caps it at 220 s (reference §7), so larger values are refused.
    ``margin``    added to an execution's deadline for its HTTP read timeout,
                  so the pool's own timeout answer arrives before ours fires.
    """

    connect: float = 10.0
    read: float = 60.0
    execution: float = float(wire.MAX_EXECUTION_TIMEOUT)
    margin: float = 15.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigurationError(f"Timeouts.{field.name} must be a non-negative number of seconds, got {value!r}.")
        execution_seconds(self.execution)

    def http(self, *, read: float | None = None) -> dict[str, float]:
        """The per-request ``httpx`` timeout; ``read`` overrides the read and write limits."""
        limit = self.read if read is None else read
        return {"connect": self.connect, "read": limit, "write": limit, "pool": self.connect}

    def for_execution(self, seconds: int) -> dict[str, float]:
        """Timeout of a request that runs code for at most ``seconds``.

        Never more than Azure's 220 s cap plus ``margin``, whatever was asked.
        """
        return self.http(read=min(seconds, wire.MAX_EXECUTION_TIMEOUT) + self.margin)


def execution_seconds(value: float) -> int:
    """``timeoutInSeconds`` for a deadline: whole seconds, rounded up, 1–220."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigurationError(f"An execution timeout must be a number of seconds, got {value!r}.")
    if not 0 < value <= wire.MAX_EXECUTION_TIMEOUT:
        raise ConfigurationError(
            f"An execution timeout must be more than 0 and at most {wire.MAX_EXECUTION_TIMEOUT} s "
            f"(Azure's cap on one execution), got {value!r}."
        )
    return math.ceil(value)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before re-sending a request.

    ``max_attempts``    total tries, the first one included (1 = never retry).
    ``backoff``         the first delay; it doubles per retry up to ``max_backoff``.
    ``jitter``          draw each delay uniformly from [delay/2, delay] so that
                        many clients do not retry in lockstep.
    ``max_retry_after`` a ``Retry-After`` longer than this is not waited for:
                        the error is raised with its ``retry_after`` instead.
    ``statuses``        responses worth retrying (when the request may be re-sent).

    What may be re-sent is decided per request, not here: reads and deletes
    always; uploads when their body can be rewound; requests that run code
    only after a connect error, because once the request may have reached
    the pool, re-sending it could run the code twice.
    """

    max_attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 20.0
    jitter: bool = True
    max_retry_after: float = 60.0
    statuses: frozenset[int] = frozenset({429, 502, 503, 504})

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigurationError(f"RetryPolicy.max_attempts must be an integer >= 1, got {self.max_attempts!r}.")
        if not (self.backoff >= 0 and self.max_backoff >= 0 and self.max_retry_after >= 0):
            raise ConfigurationError("RetryPolicy delays must be non-negative.")

    def delay(self, retry_number: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry ``retry_number`` (1-based); ``None``: give up.

        A server's ``Retry-After`` wins over the backoff, unless it is longer
        than ``max_retry_after``.
        """
        if retry_number >= self.max_attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        base = min(self.max_backoff, self.backoff * 2 ** (retry_number - 1))
        return random.uniform(base / 2, base) if self.jitter else base


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds from ``Retry-After`` (delta seconds or HTTP date) or Azure's ``retry-after-ms``."""
    millis = headers.get("retry-after-ms") or headers.get("x-ms-retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
