"""Rate limits: a token bucket (document updates) and a sliding window (presence relays)."""

from __future__ import annotations

import math
import time
from collections import deque


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`: a busy second may see burst + rate."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = max(burst, 1.0)
        self._tokens = self._burst
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def take(self) -> bool:
        """Spend one token if there is one."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until one token is available."""
        self._refill()
        # A hair more than exact, so a timer set for it finds the token there.
        return max(0.0, (1.0 - self._tokens) / self._rate) + 1e-4

    def take_or_wait(self) -> float:
        """Spend a token and return 0, or return how long to wait for one (spending nothing)."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


class SlidingWindow:
    """At most `rate` events in ANY one-second window (at most one per 1/`rate` s below 1 Hz).

    A token bucket lets burst + rate through in its first second (40 with 30 Hz and a burst
    of 10); a log of the last `limit` event times bounds every window exactly, while still
    letting events come close together (timer jitter) as long as the window has room.
    """

    __slots__ = ("_limit", "_times", "_window")

    def __init__(self, rate: float) -> None:
        self._limit = max(1, math.floor(rate))
        self._window = max(1.0, self._limit / rate)
        self._times: deque[float] = deque(maxlen=self._limit)

    def take(self) -> bool:
        """Count one event now if the window has room."""
        now = time.monotonic()
        times = self._times
        if len(times) < self._limit or now - times[0] >= self._window:
            times.append(now)  # maxlen drops the oldest, which has left the window
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until the window has room."""
        if len(self._times) < self._limit:
            return 0.0
        # A hair more than exact, so a timer set for it finds the room there.
        return max(0.0, self._times[0] + self._window - time.monotonic()) + 1e-4
