"""Liveness: is the face at the door a live person rather than a photo?

The door asks a :class:`LivenessCheck` once per frame with a face; its
answer goes into the decision (an unlock needs it to pass). The
anti-spoofing models plug in here; until they ship, :class:`NoLivenessCheck`
answers None ("not configured"), which lets the decision proceed and says so
in the granted event's log line.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from kiosk.face import Face


class LivenessCheck(Protocol):
    def check(self, frame: np.ndarray, face: Face) -> bool | None:
        """True: live; False: spoof; None: no check configured."""

    def reset(self) -> None:
        """Forget the current attempt (the face left the view)."""


class NoLivenessCheck:
    """The placeholder check: always passes, and says that no check ran."""

    def check(self, frame: np.ndarray, face: Face) -> bool | None:
        return None

    def reset(self) -> None:
        pass
