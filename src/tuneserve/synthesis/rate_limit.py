"""A client-side rate limiter: at most R requests and T tokens in any 60-second window.

Owns: waiting before a request until it fits both limits. Shared by the worker threads of one
synthesis run. Retries with backoff after a 429 or a 5xx are the `openai` client's (it honours
Retry-After); this limiter keeps a run from causing them in the first place.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

WINDOW_S = 60.0


class RateLimiter:
    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if (rpm is not None and rpm < 1) or (tpm is not None and tpm < 1):
            raise ValueError("rpm and tpm must be at least 1")
        self.rpm, self.tpm = rpm, tpm
        self._clock, self._sleep = clock, sleep
        self._sent: deque[tuple[float, int]] = deque()  # (time, tokens) of requests in the window
        self._lock = threading.Lock()

    def acquire(self, tokens: int = 0) -> float:
        """Block until a request of `tokens` fits; record it. Returns the seconds waited.

        A request larger than the whole token budget waits for an empty window, then goes
        alone (refusing it would stall the run forever).
        """
        if self.rpm is None and self.tpm is None:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._sent and now - self._sent[0][0] >= WINDOW_S:
                    self._sent.popleft()
                used = sum(t for _, t in self._sent)
                fits_requests = self.rpm is None or len(self._sent) < self.rpm
                fits_tokens = self.tpm is None or used + tokens <= self.tpm or not self._sent
                if fits_requests and fits_tokens:
                    self._sent.append((now, tokens))
                    return waited
                # Wait until the oldest request leaves the window (then look again).
                delay = max(0.01, WINDOW_S - (now - self._sent[0][0]))
            self._sleep(delay)
            waited += delay
