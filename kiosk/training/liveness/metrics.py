"""ISO/IEC 30107-3 error rates of a liveness score, the DET curve, and the threshold of lowest ACER.

``live`` is a boolean array (True: bona fide presentation), ``scores`` the
matching scores (higher: more live); a presentation is accepted as bona fide
when its score is at least the threshold.
"""

from __future__ import annotations

import numpy as np


def error_rates(live: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """ISO/IEC 30107-3 rates at a threshold (accept as bona fide when score >= threshold).

    APCER: attack presentations accepted as bona fide (one attack instrument species here: print);
    BPCER: bona fide presentations rejected as attacks; ACER: their mean.
    """
    accepted = scores >= threshold
    apcer = float(np.mean(accepted[~live])) if (~live).any() else float("nan")
    bpcer = float(np.mean(~accepted[live])) if live.any() else float("nan")
    return {"apcer": apcer, "bpcer": bpcer, "acer": (apcer + bpcer) / 2,
            "attack_presentations": int((~live).sum()), "bona_fide_presentations": int(live.sum())}


def choose_threshold(live: np.ndarray, scores: np.ndarray) -> float:
    """The threshold of lowest ACER; where a range of thresholds ties, its centre (the widest margin)."""
    values = np.unique(scores)
    candidates = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
    acer = np.array([error_rates(live, scores, t)["acer"] for t in candidates])
    first = last = int(np.argmin(acer))
    while last + 1 < len(acer) and acer[last + 1] == acer[first]:
        last += 1
    return float((candidates[first] + candidates[last]) / 2)


def det_points(live: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(APCER, BPCER) over every threshold, for a DET curve."""
    thresholds = np.concatenate([[-np.inf], np.unique(scores), [np.inf]])
    apcer = np.array([np.mean(scores[~live] >= t) for t in thresholds])
    bpcer = np.array([np.mean(scores[live] < t) for t in thresholds])
    return apcer, bpcer


def equal_error_rate(live: np.ndarray, scores: np.ndarray) -> float:
    """The rate where APCER and BPCER cross."""
    apcer, bpcer = det_points(live, scores)
    index = int(np.argmin(np.abs(apcer - bpcer)))
    return float((apcer[index] + bpcer[index]) / 2)


def rates_by_subject(live: np.ndarray, subjects: np.ndarray, scores: dict[str, np.ndarray],
                     thresholds: dict[str, float]) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`error_rates` of each mode's ``scores`` at its threshold, per subject (the worst one matters)."""
    return {subject: {mode: error_rates(live[rows], values[rows], thresholds[mode]) for mode, values in scores.items()}
            for subject in sorted(set(subjects)) for rows in [subjects == subject]}
