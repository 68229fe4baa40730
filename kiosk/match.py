"""Who is this? Cosine matching of one embedding against the enrolled people."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiosk.gallery import Templates


@dataclass(frozen=True)
class Match:
    """The best enrolled person for a face, and whether they are accepted.

    ``person`` is set only when ``score`` is above the threshold *and* at
    least ``margin`` ahead of the best other person; ``best`` names the top
    candidate either way (for logs).
    """

    person: str | None
    best: str | None
    score: float | None
    runner_up: float | None
    runner_up_name: str | None = None

    def above(self, threshold: float) -> bool:
        """The best score cleared ``threshold`` (accepted, or refused only by the margin)."""
        return self.score is not None and self.score > threshold


def match(embedding: np.ndarray, templates: Templates, threshold: float, margin: float = 0.05,
          template_thresholds: np.ndarray | None = None) -> Match:
    """Each person scores their best-matching embedding; the top person must clear both bars.

    With ``template_thresholds`` (one cosine per template, none below
    ``threshold``: :meth:`kiosk.openset.Cohort.template_thresholds`) the top
    person is accepted when one of their templates scores above its own bar,
    so a template that resembles many strangers needs a closer match.
    """
    if not templates.names:
        return Match(None, None, None, None)
    similarities = templates.vectors @ embedding
    bars = np.full(len(similarities), threshold) if template_thresholds is None else template_thresholds
    per_person: dict[str, float] = {}
    cleared: set[str] = set()
    for name, value, bar in zip(templates.names, similarities, bars):
        per_person[name] = max(per_person.get(name, -1.0), float(value))
        if value > bar:
            cleared.add(name)
    ranked = sorted(per_person.items(), key=lambda item: item[1], reverse=True)
    best, score = ranked[0]
    runner_up_name, runner_up = ranked[1] if len(ranked) > 1 else (None, None)
    accepted = best in cleared and (runner_up is None or score - runner_up >= margin)
    return Match(best if accepted else None, best, score, runner_up, runner_up_name)
