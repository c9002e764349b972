"""Token buckets per partner tenant and per partner+customer, like Partner Center's APIM."""
from __future__ import annotations

import math
import threading
import time


class TokenBucket:
    def __init__(self, per_minute: int):
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self.tokens = float(per_minute)
        self.updated = time.monotonic()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill_per_second)
        self.updated = now

    def seconds_until_available(self, now: float) -> float:
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.refill_per_second


class Throttle:
    def __init__(self, partner_per_minute: int, customer_per_minute: int):
        self._lock = threading.Lock()
        self.configure(partner_per_minute, customer_per_minute)

    def configure(self, partner_per_minute: int, customer_per_minute: int) -> None:
        with self._lock:
            self.partner_per_minute = partner_per_minute
            self.customer_per_minute = customer_per_minute
            self._partner = TokenBucket(partner_per_minute)
            self._customers: dict[str, TokenBucket] = {}

    def acquire(self, customer_id: str | None) -> int | None:
        """Take one token from each applicable bucket; on refusal return Retry-After seconds.

        Both buckets must have a token: a refused call consumes nothing (clients that honour
        Retry-After then succeed exactly when told)."""
        now = time.monotonic()
        with self._lock:
            buckets = [self._partner]
            if customer_id:
                key = customer_id.lower()
                if key not in self._customers:
                    self._customers[key] = TokenBucket(self.customer_per_minute)
                buckets.append(self._customers[key])
            wait = max(bucket.seconds_until_available(now) for bucket in buckets)
            if wait > 0:
                return max(1, math.ceil(wait))
            for bucket in buckets:
                bucket.tokens -= 1
            return None
