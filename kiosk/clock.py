"""A clock you can move by hand: the demo and the tests run the real loop on it."""

from __future__ import annotations


class FakeClock:
    """Callable like ``time.monotonic``; :meth:`advance` moves it forward."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.now += seconds
