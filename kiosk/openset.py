"""Strangers let in per attempt, not per comparison: the door's threshold for its gallery.

The model ships an impostor curve F(t) (``open_set.curve`` in ``encoder.json``): the fraction
of comparisons of one stranger's face with one template of someone else that score above the
cosine t, measured through the door's front end on identities the model never trained on, with
the far tail extrapolated (``kiosk-train calibrate-openset``). A stranger at a door is compared with every template, so the chance that any scores above t is

    expected FAR per attempt = 1 - (1 - F(t)) ** M_eff(people, templates per person)

M_eff is the effective number of independent comparisons, ``a * people**b * (templates per
person)**c``, at most the number of templates (``open_set.gallery`` in ``encoder.json``, :class:`GalleryMapping`), fitted by
``kiosk-train calibrate-gallery`` to the door's own rule simulated on the calibration identities
(N people with T templates each, per-template cohort thresholds, margin): the templates of one
person resemble each other, so a stranger close to one is close to the others and c is well
below 1, and the margin rule and the cohort take away further chances. ``a`` includes a safety
factor. A model without that section falls back to the union bound M = templates (every
comparison independent), which is 10-100x too strict in practice. An attempt is taken as one
frame: the frames of a stranger at the door are nearly the same picture, so the door's k-of-n
rule is given no credit.

The curve is an average over templates, and some templates are far from average: a few photos
("hubs": the encoder maps them near its mean) score high with many strangers' faces, so a
door that enrolled one lets in strangers well above its target. The model therefore also ships
a cohort of background faces (``cohort`` in ``encoder.json``, :class:`Cohort`), and every
template gets its own threshold, never below the door's: a template whose k-th closest cohort
face scores clearly higher than an average template's does is taken to have the model's
impostor curve shifted up by that much (in Fisher z), and its threshold moves up with it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.config import RecognitionConfig
from kiosk.encoder import DEFAULT_MODEL_DIR, METADATA_FILE, ModelInfo, sha256_of
from kiosk.errors import ConfigError, ModelError


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


RATE_REFERENCE = 1e-3
"""The per-comparison rate at which M_eff = a * people**b * (templates per person)**c exactly."""


@dataclass(frozen=True)
class GalleryMapping:
    """Independent comparisons a stranger's attempt amounts to, at per-comparison rate F:

        M_eff = min(templates, max(1, a * people**b * (templates / people)**c * (F / 1e-3)**d))

    Never more than the union bound (every template independent), never less than one
    comparison. d > 0: the further out in the tail, the fewer of a gallery's templates a stranger
    comes close to independently (the cohort and the margin rule take out the hub photos that
    make up most of the far tail of F). a, b, c, d from ``open_set.gallery``.
    """

    a: float
    b: float
    c: float
    d: float
    source: str  # "open_set.gallery" or "union bound"

    def comparisons(self, people: int, templates: int, far: float) -> float:
        if people <= 0 or templates <= 0:
            return 0.0
        if self.source == "union bound":
            return float(templates)
        fitted = self.a * people ** self.b * (templates / people) ** self.c * (max(far, 1e-300) / RATE_REFERENCE) ** self.d
        return min(float(templates), max(1.0, fitted))

    @classmethod
    def load(cls, info: ModelInfo) -> GalleryMapping:
        """``open_set.gallery`` of the model metadata, range-checked; the union bound when the section is absent."""
        open_set = info.extra.get("open_set") if isinstance(info.extra, dict) else None
        section = open_set.get("gallery") if isinstance(open_set, dict) else None
        if section is None:
            return UNION_BOUND
        fix = "run kiosk-train calibrate-gallery (or reinstall face-kiosk)"
        if not isinstance(section, dict):
            raise ModelError(f"the field open_set.gallery of the model metadata must be an object; {fix}")
        values = {}
        for name, low, high in GALLERY_RANGES:
            value = section.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low <= value <= high:
                raise ModelError(f"the field open_set.gallery.{name} of the model metadata must be a number in "
                                 f"[{low:g}, {high:g}], got {value!r}; {fix}")
            values[name] = float(value)
        return cls(values["a"], values["b"], values["c"], values["d"], "open_set.gallery")


GALLERY_RANGES = (("a", 0.5, 100.0), ("b", 0.05, 1.5), ("c", 0.0, 1.0), ("d", 0.0, 1.0))
"""(field, lowest, highest) of ``open_set.gallery``: M_eff rises with people (b > 0), at most weakly with each
person's templates (0 <= c <= 1), and falls at most as fast as the rate itself further out in the tail (0 <= d <= 1)."""
UNION_BOUND = GalleryMapping(1.0, 1.0, 1.0, 0.0, "union bound")


def gallery_comparisons(info: ModelInfo, people: int, templates: int, far: float, union_bound: bool = False) -> float:
    """M_eff for this gallery at per-comparison rate ``far`` (the union bound M = templates when asked, or when the
    model has no fitted mapping)."""
    mapping = UNION_BOUND if union_bound else GalleryMapping.load(info)
    return mapping.comparisons(people, templates, far)


def _attempt_far(far: float, comparisons: float) -> float:
    return 1.0 if far >= 1.0 else -math.expm1(comparisons * math.log1p(-far))


def expected_far(info: ModelInfo, threshold: float, people: int, templates: int, union_bound: bool = False) -> float:
    """Expected stranger acceptance per attempt at ``threshold`` with this gallery (see the module docstring)."""
    _check_gallery(people, templates)
    far = comparison_far(info, threshold)
    return _attempt_far(far, gallery_comparisons(info, max(people, 1), max(templates, 1), far, union_bound))


def door_threshold(info: ModelInfo, recognition: RecognitionConfig, people: int, templates: int,
                   union_bound: bool = False) -> DoorThreshold:
    """The threshold for ``recognition.false_accept_rate`` per stranger attempt with this gallery.

    Never below the model's per-comparison threshold (``threshold.value`` in ``encoder.json``).
    A manual ``recognition.threshold`` below the automatic one is refused unless
    ``recognition.allow_threshold_below_model`` is set; below the per-comparison threshold it is
    always refused. Call it again whenever people or templates are added or removed.
    ``union_bound``: count every comparison as independent (M = templates) instead of the model's
    fitted M_eff (for comparison in ``bench.openset``).
    """
    _check_gallery(people, templates)
    target = recognition.false_accept_rate
    gallery = f"{people} {'person' if people == 1 else 'people'} / {templates} templates"
    mapping = UNION_BOUND if union_bound else GalleryMapping.load(info)
    automatic = max(info.threshold, _threshold_for(info, target, mapping, max(people, 1), max(templates, 1), gallery))
    if not recognition.threshold:
        floor = " (the model's per-comparison threshold, which is the floor)" if automatic == info.threshold else ""
        return DoorThreshold(automatic, expected_far(info, automatic, people, templates, union_bound),
                             f"false_accept_rate {target:g} with {gallery}{floor}")
    manual = recognition.threshold
    if manual < info.threshold:
        raise ConfigError(
            f"recognition.threshold {manual:g} is below the model's per-comparison threshold {info.threshold:.4f}; "
            f"that is never allowed, whatever recognition.allow_threshold_below_model says. Set it to 0 "
            f"(automatic: {automatic:.4f} for {gallery}) or to at least {info.threshold:.4f}"
        )
    risk = expected_far(info, manual, people, templates, union_bound)
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


def _threshold_for(info: ModelInfo, target: float, mapping: GalleryMapping, people: int, templates: int,
                   gallery: str) -> float:
    """The cosine at which 1 - (1 - F)^M_eff equals ``target`` (M_eff depends on F: solved by bisection on log F)."""
    if not 0 < target < 1:
        raise ConfigError(f"recognition.false_accept_rate must be in (0, 1), got {target!r}")
    lowest = _curve(info)[1][-1]
    if _attempt_far(lowest, mapping.comparisons(people, templates, lowest)) > target:
        needed = -math.expm1(math.log1p(-target) / templates)
        raise ConfigError(
            f"recognition.false_accept_rate {target:g} with {gallery} needs about {needed:.1e} per comparison, "
            f"beyond the model's impostor curve (down to {lowest:.0e}); raise recognition.false_accept_rate"
        )
    # The attempt rate rises with F (M_eff does too: d >= 0, and the caps keep it monotone), so bisect on log F.
    low, high = math.log(lowest), 0.0
    for _ in range(100):
        middle = (low + high) / 2
        far = math.exp(middle)
        if _attempt_far(far, mapping.comparisons(people, templates, far)) > target:
            high = middle
        else:
            low = middle
    threshold = comparison_threshold(info, max(math.exp(low), lowest))
    return min(float(_curve(info)[0][-1]), threshold)


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


# --- Per-template thresholds from a cohort of background faces -------------------------------------


@dataclass(frozen=True, eq=False)
class Cohort:
    """Background faces shipped with the model, and the rule that turns them into per-template thresholds.

    For a template v, let s(v) be the cosine of its ``rank``-th closest cohort face. An average
    template reaches ``reference`` there (the model's impostor curve at ``rank`` faces out of the
    cohort). A template that reaches more resembles many strangers, and its own impostor curve is
    taken to be the model's shifted up by the excess, in Fisher z (atanh of the cosine), less an
    ``allowance`` for the cohort's sampling noise:

        excess(v)    = max(0, atanh(s(v)) - atanh(reference) - allowance)
        threshold(v) = tanh(atanh(door threshold) + excess(v))

    so a template with no excess keeps the door's threshold exactly, and none gets less.
    """

    faces: np.ndarray  # (N, d) float32, unit rows
    rank: int
    reference: float
    allowance: float
    path: Path

    @classmethod
    def load(cls, model_dir: Path = DEFAULT_MODEL_DIR) -> Cohort:
        """Read the ``cohort`` section of ``encoder.json`` and the file it names, checking its SHA-256, shape and values.

        A missing section, a missing or damaged file, or a cohort made with another model file is
        a :class:`ModelError` naming the file and the command that rebuilds it.
        """
        model_dir = Path(model_dir)
        metadata = model_dir / METADATA_FILE
        info = ModelInfo.load(metadata)
        section = info.extra.get("cohort")
        rebuild = "run kiosk-train cohort (or reinstall face-kiosk)"
        if not isinstance(section, dict):
            raise ModelError(f"model metadata {metadata} has no cohort section, so the door cannot give templates with "
                             f"many look-alikes a stricter threshold; {rebuild}")
        try:
            name = str(section["file"])
            expected_sha = str(section["sha256"])
            shape = tuple(int(n) for n in section["shape"])
            rank = int(section["rank"])
            reference = float(section["reference_cosine"])
            allowance = float(section["allowance"])
            encoder_sha = str(section["encoder_sha256"])
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(f"model metadata {metadata}: cohort section is incomplete or malformed ({error!r}); {rebuild}") from None
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
            raise ModelError(f"model metadata {metadata}: cohort.file must be a plain file name in {model_dir}, got {name!r}")
        path = model_dir / name
        if not (len(shape) == 2 and shape[1] == info.embedding_size and 1 <= rank < shape[0]
                and -1 < reference < 1 and 0 <= allowance < 2):
            raise ModelError(f"model metadata {metadata}: cohort section out of range (shape {shape}, rank {rank}, "
                             f"reference_cosine {reference}, allowance {allowance}); {rebuild}")
        if encoder_sha != info.sha256:
            raise ModelError(f"cohort {path} was embedded with another encoder (cohort.encoder_sha256 differs from "
                             f"tflite_sha256 in {metadata}); {rebuild}")
        if not path.is_file():
            raise ModelError(f"cohort {path} is missing; {rebuild}")
        if sha256_of(path) != expected_sha:
            raise ModelError(f"cohort {path} is damaged or was replaced: its SHA-256 differs from cohort.sha256 in "
                             f"{metadata}; {rebuild}")
        try:
            faces = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ModelError(f"cohort {path} cannot be read: {error}; {rebuild}") from None
        if faces.shape != shape or faces.dtype != np.float16:
            raise ModelError(f"cohort {path} holds {faces.dtype} {faces.shape}, cohort.shape in {metadata} says "
                             f"float16 {shape}; {rebuild}")
        faces = faces.astype(np.float32)
        lengths = np.linalg.norm(faces, axis=1)
        if not np.all(np.isfinite(lengths)) or np.any(np.abs(lengths - 1) > 0.01):
            raise ModelError(f"cohort {path} holds rows that are not unit vectors; {rebuild}")
        return cls(faces / lengths[:, None], rank, reference, allowance, path)

    def excess(self, vectors: np.ndarray) -> np.ndarray:
        """Fisher z by which each template's threshold rises above the door's (0 for most templates)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.faces.shape[1]:
            raise ValueError(f"templates must be an (n, {self.faces.shape[1]}) array, got shape {vectors.shape}")
        if not len(vectors):
            return np.zeros(0)
        similarity = vectors @ self.faces.T
        kth = -np.partition(-similarity, self.rank - 1, axis=1)[:, self.rank - 1]
        return np.maximum(0.0, _fisher_z(kth) - _fisher_z(self.reference) - self.allowance)

    def template_thresholds(self, vectors: np.ndarray, door_threshold: float) -> np.ndarray:
        """One threshold per template (row of ``vectors``), each at least ``door_threshold``.

        A person is let in when some template of theirs scores above its own threshold (and the
        margin rule holds on the raw scores). Call it again whenever the gallery or the door's
        threshold changes; it costs one (templates x cohort) matrix product.
        """
        excess = self.excess(vectors)
        raised = np.tanh(_fisher_z(door_threshold) + excess)
        return np.where(excess > 0, np.maximum(raised, door_threshold), float(door_threshold))


def _fisher_z(cosine: np.ndarray | float) -> np.ndarray:
    return np.arctanh(np.clip(np.asarray(cosine, dtype=np.float64), -0.999999, 0.999999))
