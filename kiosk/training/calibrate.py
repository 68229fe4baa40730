"""Threshold calibration: the cosine above which the door says "same person".

Calibrated on the int8 model, through the door's own pipeline, on identities
that took no part in training, for a target false-accept rate per
comparison. All pairs of the calibration images are scored: pairs of one
identity are genuine, all others impostors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from kiosk.metrics import accept_rate, equal_error_rate, threshold_for_far


@dataclass(frozen=True)
class Calibration:
    """The chosen threshold and what it gives on the calibration pairs."""

    value: float
    target_far: float
    measured_far: float
    tar: float
    eer: float
    genuine_pairs: int
    impostor_pairs: int
    identities: int
    images: int

    def as_dict(self) -> dict:
        return asdict(self)


def pair_scores(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) cosine scores of all pairs; rows of zeros (no face) score NaN."""
    valid = np.linalg.norm(embeddings, axis=1) > 0
    similarity = embeddings @ embeddings.T
    similarity[~valid, :] = np.nan
    similarity[:, ~valid] = np.nan
    upper = np.triu_indices(len(labels), k=1)
    same = labels[upper[0]] == labels[upper[1]]
    scores = similarity[upper]
    return scores[same], scores[~same]


def calibrate_threshold(embeddings: np.ndarray, labels: np.ndarray, target_far: float = 1e-3) -> Calibration:
    """Pick the threshold for ``target_far`` on all pairs of the calibration set."""
    genuine, impostor = pair_scores(embeddings, labels)
    if genuine.size == 0:
        raise ValueError("calibration needs at least one identity with two images")
    value = threshold_for_far(impostor, target_far)
    return Calibration(
        value=round(value, 6),
        target_far=target_far,
        measured_far=accept_rate(impostor, value),
        tar=accept_rate(genuine, value),
        eer=equal_error_rate(genuine, impostor),
        genuine_pairs=int(genuine.size),
        impostor_pairs=int(impostor.size),
        identities=int(np.unique(labels).size),
        images=int(len(labels)),
    )
