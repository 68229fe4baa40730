"""Verification metrics shared by calibration, evaluation and the benchmarks.

Scores are cosine similarities; a comparison whose face was not found has
score NaN and counts as an error in every metric (a failed comparison).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cosine_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two [N, D] arrays of L2-normalised embeddings."""
    return np.sum(a * b, axis=1)


def threshold_for_far(impostor: np.ndarray, far: float) -> float:
    """Smallest threshold whose false-accept rate on ``impostor`` is <= ``far``.

    A comparison is accepted when ``score > threshold``. Failed comparisons
    (NaN) can never be accepted, so they are left out here.
    """
    impostor = np.sort(impostor[np.isfinite(impostor)])[::-1]
    if impostor.size == 0:
        raise ValueError("no impostor scores to calibrate on")
    allowed = int(np.floor(far * impostor.size))
    if allowed < 1 and far * impostor.size < 1:
        # Fewer pairs than 1/far: the best we can say is "above every impostor".
        return float(impostor[0])
    return float(impostor[allowed]) if allowed < impostor.size else float(impostor[-1])


def accept_rate(scores: np.ndarray, threshold: float) -> float:
    """Fraction of comparisons accepted (score > threshold); NaN is a reject."""
    return float(np.mean(np.nan_to_num(scores, nan=-np.inf) > threshold)) if scores.size else float("nan")


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> tuple[float, float]:
    """True-accept rate at the threshold that gives ``far``; returns (tar, threshold)."""
    threshold = threshold_for_far(impostor, far)
    return accept_rate(genuine, threshold), threshold


def roc_curve(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(far, frr) over every distinct threshold; failed comparisons are errors."""
    g = np.nan_to_num(genuine, nan=-np.inf)
    i = np.nan_to_num(impostor, nan=np.inf)
    thresholds = np.unique(np.concatenate([g[np.isfinite(g)], i[np.isfinite(i)]]))
    far = np.array([np.mean(i > t) for t in thresholds]) if thresholds.size < 5000 else _far_fast(i, thresholds)
    frr = 1.0 - (np.array([np.mean(g > t) for t in thresholds]) if thresholds.size < 5000 else _far_fast(g, thresholds))
    return far, frr


def _far_fast(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    ordered = np.sort(scores)
    return 1.0 - np.searchsorted(ordered, thresholds, side="right") / max(1, scores.size)


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """The error rate where false accepts and false rejects are equal."""
    far, frr = roc_curve(genuine, impostor)
    k = int(np.argmin(np.abs(far - frr)))
    return float((far[k] + frr[k]) / 2)


@dataclass(frozen=True)
class FoldAccuracy:
    """Mean and standard deviation of 10-fold verification accuracy."""

    mean: float
    std: float


def ten_fold_accuracy(scores: np.ndarray, same: np.ndarray, folds: int = 10) -> FoldAccuracy:
    """The standard LFW protocol: pick the threshold on 9 folds, test on the 10th.

    Pairs are split into ``folds`` stratified folds in file order (the View 1
    test file lists all same pairs, then all different pairs). NaN scores are
    counted wrong whatever the threshold.
    """
    same = np.asarray(same, dtype=bool)
    fold_of = np.empty(same.size, dtype=int)
    for label in (True, False):
        index = np.flatnonzero(same == label)
        fold_of[index] = np.arange(index.size) * folds // index.size
    accuracies = []
    valid = np.isfinite(scores)
    for fold in range(folds):
        train, test = fold_of != fold, fold_of == fold
        ordered = np.unique(scores[train & valid])
        candidates = np.concatenate([ordered[:1] - 1e-6, (ordered[1:] + ordered[:-1]) / 2, ordered[-1:]])
        correct = [np.sum(((scores[train] > t) == same[train]) & valid[train]) for t in candidates]
        best = candidates[int(np.argmax(correct))] if candidates.size else 0.0
        accuracies.append(np.mean(((scores[test] > best) == same[test]) & valid[test]))
    return FoldAccuracy(float(np.mean(accuracies)), float(np.std(accuracies)))
