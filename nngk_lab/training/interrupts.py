"""Ctrl-C and SIGTERM during training: stop cleanly between steps, so the checkpoint is
never taken half-way through an optimiser step."""

from __future__ import annotations

import signal
import time


class DeferredInterrupt:
    """Turns the first Ctrl-C (or SIGTERM, which batch schedulers send before killing a
    job) into a flag checked between steps. A second one interrupts at once, unless it
    comes within ``grace_s`` seconds of the first (under torchrun, one Ctrl-C arrives
    both from the terminal and from torchrun)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, grace_s: float = 0.0):
        self.requested = False
        self.grace_s = grace_s
        self._first = 0.0
        self._previous = {}

    def _handler(self, signum, frame):
        if self.requested:
            if time.monotonic() - self._first < self.grace_s:
                return
            raise KeyboardInterrupt
        self.requested = True
        self._first = time.monotonic()

    def __enter__(self):
        try:
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        except ValueError:  # not the main thread: leave the signals alone
            self._previous = {}
        return self

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        return False
