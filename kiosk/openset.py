"""Strangers let in per attempt, not per comparison: the door's threshold for its gallery.

The model ships an impostor curve F(t) (``open_set.curve`` in ``encoder.json``): the fraction
of comparisons of one stranger's face with one template of someone else that score above the
cosine t, measured through the door's front end on identities the model never trained on, with
the far tail extrapolated (``kiosk-train calibrate-openset``). A stranger at a door with M
templates enrolled is compared with every one of them, so the chance that any scores above t is

    expected FAR per attempt = 1 - (1 - F(t)) ** M

This counts the M comparisons as independent. The templates of one person resemble each
other, so in truth a stranger close to one is close to the others too and fewer distinct
chances exist: the formula errs on the safe side. So does treating an attempt as one frame:
the door wants the same person in k of n frames, but the frames of a stranger standing at the
door are nearly the same picture, so the k-of-n rule is given no credit; nor is the rule that
the best person must lead the runner-up by a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kiosk.config import ConfigError, RecognitionConfig
from kiosk.encoder import ModelError, ModelInfo


@dataclass(frozen=True)
class DoorThreshold:
    """The cosine the door applies to the best person's score, and what it buys."""

    value: float
    expected_far: float  # expected stranger acceptance per attempt at this threshold and gallery size
    source: str  # where the value comes from, for logs and ``kiosk run``'s banner


def comparison_far(info: ModelInfo, threshold: float) -> float:
    """F(t): the share of single stranger comparisons scoring above ``threshold``.

    Log-linear between the curve's points; below its first point it is taken as 1 and above
    its last point as the last point's value (both upper bounds).
    """
    cosines, fars = _curve(info)
    if threshold < cosines[0]:
        return 1.0
    return float(10 ** np.interp(threshold, cosines, np.log10(fars)))


def expected_far(info: ModelInfo, threshold: float, people: int, templates: int) -> float:
    """Expected stranger acceptance per attempt at ``threshold`` with this gallery (see the module docstring)."""
    _check_gallery(people, templates)
    far = comparison_far(info, threshold)
    return 1.0 if far >= 1.0 else -math.expm1(max(templates, 1) * math.log1p(-far))


def door_threshold(info: ModelInfo, recognition: RecognitionConfig, people: int, templates: int) -> DoorThreshold:
    """The threshold for ``recognition.false_accept_rate`` per stranger attempt with this gallery.

    Never below the model's per-comparison threshold (``threshold.value`` in ``encoder.json``).
    A manual ``recognition.threshold`` below the automatic one is refused unless
    ``recognition.allow_threshold_below_model`` is set; below the per-comparison threshold it is
    always refused. Call it again whenever people or templates are added or removed.
    """
    _check_gallery(people, templates)
    target = recognition.false_accept_rate
    gallery = f"{people} {'person' if people == 1 else 'people'} / {templates} templates"
    automatic = max(info.threshold, _threshold_for(info, target, templates, gallery))
    if not recognition.threshold:
        floor = " (the model's per-comparison threshold, which is the floor)" if automatic == info.threshold else ""
        return DoorThreshold(automatic, expected_far(info, automatic, people, templates),
                             f"false_accept_rate {target:g} with {gallery}{floor}")
    manual = recognition.threshold
    if manual < info.threshold:
        raise ConfigError(
            f"recognition.threshold {manual:g} is below the model's per-comparison threshold {info.threshold:.4f}; "
            f"that is never allowed, whatever recognition.allow_threshold_below_model says. Set it to 0 "
            f"(automatic: {automatic:.4f} for {gallery}) or to at least {info.threshold:.4f}"
        )
    risk = expected_far(info, manual, people, templates)
    if manual < automatic and not recognition.allow_threshold_below_model:
        raise ConfigError(
            f"recognition.threshold {manual:g} is below the automatic threshold {automatic:.4f} for "
            f"recognition.false_accept_rate {target:g} with {gallery}: it would let in about {risk:.1e} strangers "
            f"per attempt instead of {target:g}. Set it to 0 (automatic) or to at least {automatic:.4f}, "
            f"or set recognition.allow_threshold_below_model = true to accept that risk"
        )
    return DoorThreshold(manual, risk, f"recognition.threshold {manual:g} (manual)")


def comparison_threshold(info: ModelInfo, rate: float) -> float:
    """The cosine t with F(t) = ``rate`` (the inverse of :func:`comparison_far`); ValueError beyond the curve's last point."""
    cosines, fars = _curve(info)
    if rate < fars[-1]:
        raise ValueError(f"rate {rate:.1e} per comparison is beyond the model's impostor curve (down to {fars[-1]:.0e})")
    # np.interp wants rising x: log10 F falls as the cosine rises, so read the curve backwards.
    return float(np.interp(math.log10(rate), np.log10(fars[::-1]), cosines[::-1]))


def _threshold_for(info: ModelInfo, target: float, templates: int, gallery: str) -> float:
    """The cosine at which 1 - (1 - F)^M equals ``target``."""
    if not 0 < target < 1:
        raise ConfigError(f"recognition.false_accept_rate must be in (0, 1), got {target!r}")
    per_comparison = -math.expm1(math.log1p(-target) / max(templates, 1))
    lowest = _curve(info)[1][-1]
    if per_comparison < lowest:
        raise ConfigError(
            f"recognition.false_accept_rate {target:g} with {gallery} needs {per_comparison:.1e} per comparison, "
            f"beyond the model's impostor curve (down to {lowest:.0e}); raise recognition.false_accept_rate"
        )
    return comparison_threshold(info, per_comparison)


def _curve(info: ModelInfo) -> tuple[np.ndarray, np.ndarray]:
    if not info.impostor_curve:
        raise ModelError(
            "the model metadata has no open-set impostor curve (open_set.curve in encoder.json), so the door cannot "
            "turn recognition.false_accept_rate into a threshold; run kiosk-train calibrate-openset"
        )
    cosines, fars = np.array(info.impostor_curve, dtype=float).T
    return cosines, fars


def _check_gallery(people: int, templates: int) -> None:
    if people < 0 or templates < people:
        raise ValueError(f"a gallery has at least one template per person, got {people} people / {templates} templates")
