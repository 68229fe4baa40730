"""Per-attempt scores, and the fit of how the texture score and the motion cue combine (:class:`kiosk.liveness.Fusion`)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from kiosk.errors import TrainingError
from kiosk.liveness import Fusion
from kiosk.training.liveness.data import Prepared
from kiosk.training.liveness.metrics import choose_threshold

MIN_MOTION_MEASUREMENTS = 2
"""Motion measurements an attempt needs before motion joins the score: a single pair of frames is too noisy
(about 5% of single print-attack measurements look live on NUAA)."""
PLANAR_LIVE_REFUSED = 0.01
"""The planar-motion floor is this quantile of the fit's live attempts' mean motion (the veto's cost on the fit
attempts; the report and ``bench.liveness_cost`` measure it on attempts left out). Measured on NUAA at the door's
15 fps: 0.01 refuses 1 of 26 live attempts, 0.02 three; at the fit's lowest live attempt (a lower floor) the
red-team's photo captured at the enrol button (3d) got through."""
MOTION_BONUS = 2.0
"""The most, in texture logits, that live-looking motion may add: enough to rescue a borderline texture score,
never a clearly printed one (a replayed video would move like a live face)."""


@dataclass
class AttemptTable:
    """Per-attempt scores (one row per attempt with at least one face)."""

    live: np.ndarray
    subject: np.ndarray
    texture: np.ndarray
    motion: np.ndarray  # nan: the motion cue measured nothing in this attempt
    motion_count: np.ndarray

    def fused(self, fusion: Fusion) -> np.ndarray:
        return np.array([fusion(t, None if np.isnan(m) else m, int(n))
                         for t, m, n in zip(self.texture, self.motion, self.motion_count)])


def attempt_table(prepared: Prepared, logits: np.ndarray, rows: np.ndarray) -> AttemptTable:
    """Attempt scores from per-frame logits (mean over frames with a face) and motion (mean of measurements)."""
    columns: dict[str, list] = defaultdict(list)
    for attempt in np.unique(prepared.attempt[rows]):
        frames = rows[(prepared.attempt[rows] == attempt) & prepared.found[rows]]
        if len(frames) == 0:
            continue
        motion = prepared.motion[frames]
        columns["live"].append(bool(prepared.live[frames[0]]))
        columns["subject"].append(prepared.subject[frames[0]])
        columns["texture"].append(float(np.mean(logits[frames])))
        columns["motion"].append(float(np.nanmean(motion)) if np.isfinite(motion).any() else np.nan)
        columns["motion_count"].append(int(np.isfinite(motion).sum()))
    return AttemptTable(**{name: np.array(values) for name, values in columns.items()})


def fit_fusion(table: AttemptTable, texture_threshold: float, l2: float = 1.0) -> Fusion:
    """The fusion, fitted on validation attempts with at least ``MIN_MOTION_MEASUREMENTS`` motion measurements.

    A logistic model of live on (texture - texture_threshold, clipped mean
    motion) gives the motion's weight relative to the texture's; the offset
    then puts the fused threshold 0 at the centre of the lowest-ACER interval
    of those attempts. The clip range is the 2nd to 98th percentile of their
    motion scores, its upper end lowered so that motion adds at most
    ``MOTION_BONUS`` (and the offset lowered when even the range's lower end
    would add more: with a texture score that separates the attempts by
    itself, the fitted offset is arbitrary). The L2 penalty keeps the weights finite when the
    attempts are separable. The planar-motion floor is the ``PLANAR_LIVE_REFUSED`` quantile of the
    live attempts' motion: below it the attempt is refused whatever its texture score.
    """
    has = table.motion_count >= MIN_MOTION_MEASUREMENTS
    if has.sum() < 4 or len(set(table.live[has])) < 2:
        raise TrainingError(f"only {int(has.sum())} validation attempts have {MIN_MOTION_MEASUREMENTS} or more motion "
                            "measurements, or they are all live or all attacks: too few to fit the fusion "
                            "(the NUAA tree given with --data should hold every training subject's live and spoof sessions)")
    low, high = (float(v) for v in np.percentile(table.motion[has], [2, 98]))
    texture = table.texture[has] - texture_threshold
    motion = np.clip(table.motion[has], low, high)
    weights = _logistic_weights(np.column_stack([texture, motion, np.ones(len(texture))]), table.live[has].astype(float), l2)
    if weights[0] <= 0 or weights[1] <= 0:
        raise TrainingError(f"fitted fusion weights {weights[:2]} are not positive: a cue carries no signal on the "
                            "validation subjects (check the data and the texture CNN's training)")
    weight, offset = weights[1] / weights[0], weights[2] / weights[0]
    offset -= choose_threshold(table.live[has], texture + weight * motion + offset)
    capped = min(high, (MOTION_BONUS - offset) / weight)
    if capped < low:  # even the most planar motion would add more than the cap: the offset is lowered, the range kept,
        offset = MOTION_BONUS - weight * high  # so that planar motion still counts against the attempt
    else:
        high = capped
    floor = float(np.quantile(table.motion[has & table.live], PLANAR_LIVE_REFUSED))
    return Fusion(texture_threshold=texture_threshold, motion_weight=float(weight), motion_offset=float(offset),
                  motion_range=(low, high), min_measurements=MIN_MOTION_MEASUREMENTS, motion_floor=floor)


def _logistic_weights(features: np.ndarray, target: np.ndarray, l2: float) -> np.ndarray:
    """Newton's method for L2-penalised logistic regression; the last column (the intercept) is not penalised."""
    weights = np.zeros(features.shape[1])
    penalty = l2 * np.diag([1.0] * (features.shape[1] - 1) + [0.0])
    for _ in range(100):
        p = 1 / (1 + np.exp(-features @ weights))
        gradient = features.T @ (p - target) + penalty @ weights
        hessian = features.T @ (features * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(len(weights))
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-10:
            break
    return weights
