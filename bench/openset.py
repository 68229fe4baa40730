"""``python -m bench.openset``: strangers let in per attempt at the door, by number of people enrolled.

Open-set identification on the evaluation identities only (the evaluation half of wild CelebA
and every person of ``lfw_pairsDevTest.txt``; ``kiosk-train calibrate-openset`` and the cohort
never use them), each photo through the door's front end (the detector settings ``kiosk run``
uses, the int8 encoder, the quality gate). For N people enrolled with 3 photos each (random
draws, fixed seed; the 3 photos must match each other, as ``kiosk enroll`` requires):

  genuine attempt   every other photo of an enrolled person (a photo without a usable face counts
                    as not let in)
  stranger attempt  every photo, with a usable face, of someone not enrolled

and the door's rule: the best person (by raw score) has a template scoring above that template's
threshold, and the best person's raw score is at least ``margin`` ahead of the runner-up's. One
photo stands for one attempt (see ``kiosk.openset``). Settings compared:
``recognition.false_accept_rate`` 1e-4 (the default) and 1e-3, each with the door's threshold
for every template ("door threshold only") and with per-template thresholds from the cohort
shipped with the model ("+ cohort", :class:`kiosk.openset.Cohort`), and the threshold shipped
before the door counted its gallery ("before", a fixed per-comparison threshold).

The full run adds "door camera": genuine acceptance at the door's thresholds on NUAA live
webcam frames, each subject enrolled from 3 frames of one capture session and every frame of
the other session an attempt.

  python -m bench.openset              # 20 draws per gallery size; rewrites the table in docs/security.md
  python -m bench.openset --quick      # 300 photos, 2 draws of 1 and 5 people, prints only: checks the code
  python -m bench.openset --faces DIR  # your own photos instead (DIR/<person>/<photo>), prints only
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from itertools import permutations
from pathlib import Path

import numpy as np

from kiosk.config import RecognitionConfig
from kiosk.encoder import DEFAULT_MODEL_DIR, METADATA_FILE, ModelInfo
from kiosk.openset import Cohort, comparison_threshold, door_threshold, expected_far
from kiosk.training.calibrate import CHECK_RATES, TAIL_FROM, FaceSet, embed_through_door, impostor_scores, open_set_images
from kiosk.training.datasets import identity_folders

ROOT = Path(__file__).resolve().parent.parent
SECURITY_MD = ROOT / "docs" / "security.md"
MARK_START, MARK_END = "<!-- openset:start -->", "<!-- openset:end -->"
BEFORE_THRESHOLD = 0.4266
"""The per-comparison threshold (FAR 1e-3 per comparison) the door applied whatever its gallery, before."""
TEMPLATES_PER_PERSON = 3
QUICK_IMAGES = 300
"""The quick run uses the first photos of the evaluation list only (about a dozen wild CelebA people)."""
SETTINGS = (("before", None), (1e-3, "union"), (1e-3, "empirical"), (1e-4, "union"), (1e-4, "empirical"))
"""(recognition.false_accept_rate or "before", how the gallery is counted: "union" = every template an independent
comparison, the door before; "empirical" = the model's fitted M_eff, open_set.gallery). Every automatic setting
applies the cohort's per-template thresholds, as the door does; "before" is the fixed threshold without them."""
CAMERA_SIZES = (1, 5, 20, 50)
CAMERA_DRAWS = 10
"""Enrolments (3 frames each) per subject and direction in the door-camera rows."""


@dataclass(frozen=True)
class Row:
    """One gallery size and setting, summed over the draws."""

    people: int
    setting: str
    target: float | None  # recognition.false_accept_rate; None for the fixed threshold of before
    threshold: float
    expected_far: float
    strangers_accepted: int
    stranger_attempts: int
    genuine_accepted: int
    genuine_attempts: int
    wrong_person: int  # enrolled people let in under someone else's name
    worst_person: float  # the lowest genuine acceptance among the enrolled, median over draws
    cohort: bool = False  # per-template thresholds from the cohort
    raised: float = 0.0  # share of enrolled templates whose threshold the cohort raised
    strangers_let_in_as: Counter = field(default_factory=Counter)  # enrolled name -> strangers let in under it
    mapping: str | None = None  # "union" or "empirical"; None for before


def enrol(faces: FaceSet, rng: np.random.Generator, people: int, agree: float) -> dict[str, np.ndarray] | None:
    """Rows of ``faces`` enrolled for ``people`` random people, 3 agreeing photos each; None if too few people qualify.

    Only photos that enrolment takes (strong enough, :attr:`FaceSet.enrollable`) become templates; a person needs
    one more usable photo to make an attempt.
    """
    usable, enrollable = faces.found, faces.enrollable
    candidates = [name for name in np.unique(faces.identities)
                  if np.count_nonzero(usable & (faces.identities == name)) > TEMPLATES_PER_PERSON
                  and np.count_nonzero(enrollable & (faces.identities == name)) >= TEMPLATES_PER_PERSON]
    enrolled: dict[str, np.ndarray] = {}
    for name in rng.permutation(candidates):
        rows = np.flatnonzero(enrollable & (faces.identities == name))
        for _ in range(20):
            chosen = rng.choice(rows, TEMPLATES_PER_PERSON, replace=False)
            similarity = faces.embeddings[chosen] @ faces.embeddings[chosen].T
            np.fill_diagonal(similarity, -1.0)
            if np.all(similarity.max(axis=1) > agree):  # kiosk.enroll.check_photos_agree
                enrolled[str(name)] = chosen
                break
        if len(enrolled) == people:
            return enrolled
    return None


def door_decisions(faces: FaceSet, enrolled: dict[str, np.ndarray], thresholds: np.ndarray,
                   margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(whom each photo is let in as, -1 for nobody; index of the enrolled person it shows, -1 for a stranger).

    ``thresholds``: one per template, in the order of ``enrolled``'s rows. The best person by raw
    score is let in when one of their templates scores above its own threshold and their raw
    score leads the runner-up's by ``margin``.
    """
    names = list(enrolled)
    rows = np.concatenate(list(enrolled.values()))
    owner = np.concatenate([np.full(len(chosen), person) for person, chosen in enumerate(enrolled.values())])
    scores = np.nan_to_num(faces.embeddings, nan=0.0) @ faces.embeddings[rows].T
    per_person = np.full((len(faces.paths), len(names)), -np.inf)
    cleared = np.zeros((len(faces.paths), len(names)), bool)
    for person in range(len(names)):
        mine = owner == person
        if mine.any():  # a person whose enrolment was refused has no template
            per_person[:, person] = scores[:, mine].max(axis=1)
            cleared[:, person] = (scores[:, mine] > thresholds[mine]).any(axis=1)
    ranked = np.sort(per_person, axis=1)[:, ::-1]
    best = np.argmax(per_person, axis=1)
    with np.errstate(invalid="ignore"):  # -inf - -inf: nobody to compare, and nobody cleared
        lead = ranked[:, 0] - ranked[:, 1] if len(names) > 1 else np.full(len(faces.paths), np.inf)
    accepted = faces.found & cleared[np.arange(len(faces.paths)), best] & (lead >= margin)
    shows = np.array([names.index(n) if n in enrolled else -1 for n in faces.identities])
    return np.where(accepted, best, -1), shows


def template_thresholds(faces: FaceSet, enrolled: dict[str, np.ndarray], threshold: float,
                        cohort: Cohort | None) -> np.ndarray:
    """The door threshold for every template, or each template's own from the cohort."""
    rows = np.concatenate(list(enrolled.values()))
    if cohort is None:
        return np.full(len(rows), threshold)
    return cohort.template_thresholds(faces.embeddings[rows], threshold)


def evaluate(faces: FaceSet, info: ModelInfo, cohort: Cohort, sizes: list[int], draws: int, margin: float,
             seed: int = 0, refuse_hubs: bool = False, shut_out_enrol_anyway: bool = False) -> list[Row]:
    """Stranger and genuine acceptance for each gallery size and setting (module docstring).

    ``refuse_hubs``: the alternative to the cohort that was measured against it; the same
    galleries, but every enrolled photo that :func:`hub_photos` flags is replaced by another
    agreeing photo of the same person, as if enrolment had refused it; door threshold only.
    ``shut_out_enrol_anyway``: a person with no other photo keeps theirs instead of staying out.
    """
    rows = []
    flagged = hub_photos(faces, cohort) if refuse_hubs else None
    for people in sizes:
        rng = np.random.default_rng([seed, people])
        galleries = [enrol(faces, rng, people, info.threshold) for _ in range(draws)]
        if any(gallery is None for gallery in galleries):
            raise SystemExit(f"bench.openset: fewer than {people} people have {TEMPLATES_PER_PERSON + 1} or more "
                             "usable, agreeing photos; use smaller gallery sizes")
        settings = SETTINGS
        if flagged is not None:
            replace_rng = np.random.default_rng([seed, people, 1])
            galleries = [refuse(faces, gallery, flagged, replace_rng, info.threshold, shut_out_enrol_anyway)
                         for gallery in galleries]
            settings = tuple(setting for setting in SETTINGS if setting[0] != "before")
        for setting, mapping in settings:
            with_cohort = mapping is not None and flagged is None
            threshold, expected, label = setting_threshold(info, setting, people, mapping, with_cohort)
            if flagged is not None:
                label = label.replace("door threshold only", "hub photos refused at enrolment")
            counts = np.zeros(5, dtype=int)
            worst, raised = [], []
            let_in_as: Counter = Counter()
            for gallery in galleries:
                bars = template_thresholds(faces, gallery, threshold, cohort if with_cohort else None)
                raised.append(float(np.mean(bars > threshold)))
                let_in, shows = door_decisions(faces, gallery, bars, margin)
                used = np.zeros(len(faces.paths), bool)
                used[np.concatenate(list(gallery.values()))] = True
                stranger = (shows < 0) & faces.found
                genuine = (shows >= 0) & ~used
                counts += [np.count_nonzero(stranger & (let_in >= 0)), np.count_nonzero(stranger),
                           np.count_nonzero(genuine & (let_in == shows)), np.count_nonzero(genuine),
                           np.count_nonzero(genuine & (let_in >= 0) & (let_in != shows))]
                worst.append(min(np.mean(let_in[genuine & (shows == p)] == p) for p in range(people)))
                names = list(gallery)
                let_in_as.update(names[p] for p in let_in[stranger & (let_in >= 0)])
            target = None if setting == "before" else float(setting)
            rows.append(Row(people, label, target, threshold, expected, *counts, float(np.median(worst)),
                            with_cohort, float(np.mean(raised)), let_in_as, mapping))
    return rows


HUB_COSINE, HUB_SHARE = 0.6, 1e-3
"""The enrolment-time alternative: a photo is a hub when more than 0.1% of the cohort's faces score above 0.6 with it."""


def hub_photos(faces: FaceSet, cohort: Cohort) -> np.ndarray:
    """Which usable photos the refuse-at-enrolment rule would refuse."""
    share = np.mean(np.nan_to_num(faces.embeddings, nan=0.0) @ cohort.faces.T > HUB_COSINE, axis=1)
    return faces.found & (share > HUB_SHARE)


def refuse(faces: FaceSet, gallery: dict[str, np.ndarray], flagged: np.ndarray, rng: np.random.Generator,
           agree: float, keep_if_none: bool = False) -> dict[str, np.ndarray]:
    """``gallery`` with flagged photos replaced by other agreeing photos of the same person.

    When the person has no such trio, their unflagged photos stay (fewer templates); a person with
    none could not enrol: they keep no template, and every attempt of theirs fails (with
    ``keep_if_none``, they keep their photos instead).
    """
    result = {}
    for name, rows in gallery.items():
        result[name] = rows
        if not flagged[rows].any():
            continue
        pool = np.flatnonzero(faces.found & ~flagged & (faces.identities == name))
        kept = rows[~flagged[rows]]
        result[name] = rows if keep_if_none and not len(kept) else kept
        for _ in range(20 if len(pool) >= TEMPLATES_PER_PERSON else 0):
            chosen = rng.choice(pool, TEMPLATES_PER_PERSON, replace=False)
            similarity = faces.embeddings[chosen] @ faces.embeddings[chosen].T
            np.fill_diagonal(similarity, -1.0)
            if np.all(similarity.max(axis=1) > agree):
                result[name] = chosen
                break
    return result


def setting_threshold(info: ModelInfo, setting: str | float, people: int, mapping: str | None = "empirical",
                      with_cohort: bool = True) -> tuple[float, float, str]:
    """(door threshold, expected stranger acceptance per attempt, label) of one setting for a gallery size."""
    templates = TEMPLATES_PER_PERSON * people
    if setting == "before":
        return BEFORE_THRESHOLD, expected_far(info, BEFORE_THRESHOLD, people, templates), "before (fixed 0.4266)"
    union = mapping == "union"
    door = door_threshold(info, RecognitionConfig(false_accept_rate=setting), people, templates, union_bound=union)
    default = " (default)" if setting == RecognitionConfig().false_accept_rate else ""
    how = ", union bound" if union else ", empirical M_eff"
    return door.value, door.expected_far, f"false_accept_rate {setting:g}{default}{how}{'' if with_cohort else ', no cohort'}"


# --- Door camera: genuine acceptance on webcam frames, enrolled in one session, tried in another ----


def camera_sessions(faces: FaceSet) -> dict[str, dict[str, np.ndarray]]:
    """subject -> capture session -> rows, from NUAA file names ``ID_glasses_pos_session_frame.jpg``."""
    sessions: dict[str, dict[str, list[int]]] = {}
    for row, (path, subject) in enumerate(zip(faces.paths, faces.identities)):
        session = Path(path).stem.split("_")[3]
        sessions.setdefault(str(subject), {}).setdefault(session, []).append(row)
    return {subject: {session: np.array(rows) for session, rows in by_session.items()}
            for subject, by_session in sessions.items()}


@dataclass(frozen=True)
class CameraRow:
    """Door-camera results at one door threshold, summed over subjects, directions and draws."""

    people: int
    setting: str
    threshold: float
    genuine_accepted: int
    genuine_attempts: int
    per_subject: dict[str, float]  # subject -> share of their other-session frames let in
    strangers_accepted: int
    stranger_attempts: int
    raised: float  # share of the enrolled frames whose threshold the cohort raised


def door_camera(faces: FaceSet, info: ModelInfo, cohort: Cohort, sizes: tuple[int, ...] = CAMERA_SIZES,
                draws: int = CAMERA_DRAWS, seed: int = 0) -> list[CameraRow]:
    """Each two-session subject alone at the door, enrolled from 3 agreeing frames of one session.

    Genuine attempts: every frame of the other session (no usable face: not let in). Stranger
    attempts: every usable frame of the other subjects. The threshold is the one the door uses
    with ``people`` enrolled; with one person enrolled the margin rule never applies.
    """
    sessions = camera_sessions(faces)
    rng = np.random.default_rng(seed)
    enrolments = []  # (subject, template rows, attempt rows)
    for subject, by_session in sorted(sessions.items()):
        if len(by_session) < 2:
            continue
        for enrol_session, attempt_session in permutations(sorted(by_session), 2):
            usable = by_session[enrol_session][faces.found[by_session[enrol_session]]]
            for _ in range(draws):
                for _ in range(50):
                    chosen = rng.choice(usable, TEMPLATES_PER_PERSON, replace=False)
                    similarity = faces.embeddings[chosen] @ faces.embeddings[chosen].T
                    np.fill_diagonal(similarity, -1.0)
                    if np.all(similarity.max(axis=1) > info.threshold):
                        enrolments.append((subject, chosen, by_session[attempt_session]))
                        break
    vectors = np.nan_to_num(faces.embeddings, nan=0.0)
    rows = []
    for people in sizes:
        for setting, mapping in SETTINGS:
            if setting == "before" and people != sizes[0]:
                continue  # a fixed threshold: the same for every gallery size
            with_cohort = mapping is not None
            threshold, _, label = setting_threshold(info, setting, people, mapping, with_cohort)
            accepted = attempts = strangers_in = strangers = 0
            raised = []
            by_subject: dict[str, list[int]] = {}
            for subject, chosen, tries in enrolments:
                bars = cohort.template_thresholds(faces.embeddings[chosen], threshold) if with_cohort else \
                    np.full(len(chosen), threshold)
                raised.append(float(np.mean(bars > threshold)))
                let_in = faces.found & (vectors @ faces.embeddings[chosen].T > bars).any(axis=1)
                stranger = faces.found & (faces.identities != subject)
                accepted += int(np.count_nonzero(let_in[tries]))
                attempts += len(tries)
                strangers_in += int(np.count_nonzero(let_in & stranger))
                strangers += int(np.count_nonzero(stranger))
                tally = by_subject.setdefault(subject, [0, 0])
                tally[0] += int(np.count_nonzero(let_in[tries]))
                tally[1] += len(tries)
            rows.append(CameraRow(people, label, threshold, accepted, attempts,
                                  {subject: a / n for subject, (a, n) in by_subject.items()},
                                  strangers_in, strangers, float(np.mean(raised))))
    return rows


def camera_table(rows: list[CameraRow], faces: FaceSet) -> str:
    subjects = sorted(rows[0].per_subject)
    lines = [
        ("Door camera: genuine acceptance on webcam frames (NUAA live, 640x480, through the door front end). "
         f"Each of the {len(subjects)} subjects filmed in two sessions is enrolled alone from 3 agreeing frames of one "
         f"session ({CAMERA_DRAWS} draws, both ways round); every frame of the other session is one attempt. The "
         "threshold is the one a door with N people enrolled uses (3 templates each), so the rows show what a resident "
         "meets as the household grows; with one person enrolled the margin rule does not apply. Strangers: every "
         "frame of the other subjects."),
        "",
        ("| threshold of a door with N people | setting | threshold | genuine frames let in | worst subject | "
         "enrolled frames with a stricter threshold | strangers' frames let in |"),
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        worst = min(row.per_subject, key=row.per_subject.get)
        lines.append(f"| {row.people} | {row.setting} | {row.threshold:.4f} | "
                     f"{100 * row.genuine_accepted / row.genuine_attempts:.1f}% | "
                     f"{100 * row.per_subject[worst]:.0f}% (subject {worst}) | {100 * row.raised:.1f}% | "
                     f"{rate(row.strangers_accepted, row.stranger_attempts)} |")
    usable = 100 * np.mean(faces.found)
    lines += ["", (f"{len(faces.paths)} frames of {len(np.unique(faces.identities))} subjects, {usable:.1f}% with a usable "
                   "face. A frame is an attempt here; the door wants the same person in k of n frames, so a resident "
                   "standing at the door for a second or two gets several tries and fares better than this.")]
    return "\n".join(lines)


def curve_check(faces: FaceSet, info: ModelInfo) -> str:
    """Markdown: the per-comparison rate the curve predicts against the rate on the evaluation pairs."""
    scores = impostor_scores(faces)
    lines = ["The curve against the evaluation pairs, per comparison (every pair of photos of two different people):",
             "",
             "| predicted by the curve | threshold | observed | observed / predicted |",
             "|---|---|---|---|"]
    ratios = []
    for predicted in (1e-3, *CHECK_RATES):
        threshold = comparison_threshold(info, predicted)
        above = int(np.count_nonzero(scores > threshold))
        ratios.append(above / scores.size / predicted)
        lines.append(f"| {predicted:.0e} | {threshold:.4f} | {rate(above, scores.size)} | {ratios[-1]:.1f} |")
    if max(ratios) > 1.5:
        lines += ["", (f"The evaluation pairs' far tail is up to {max(ratios):.1f}x heavier than the curve: the top "
                       "impostor pairs come from a few photos that resemble many people's, and how many such photos "
                       "a set of people holds varies. Counting templates as independent makes up for part of it "
                       "(compare expected and measured in the \"before\" rows).")]
    return "\n".join(lines)


def method(info: ModelInfo) -> str:
    """How the door's threshold is made, from the model's own metadata."""
    open_set = info.extra["open_set"]
    checks = ", ".join(f"{c['predicted']:.0e} -> {c['observed']:.1e}" for c in open_set["tail_check"])
    text = (
        f"How the door picks its threshold: the model ships an impostor curve F(t), the share of comparisons of a "
        f"stranger's face with one enrolled template that score above t, measured by `kiosk-train calibrate-openset` "
        f"on {open_set['impostor_pairs']:,} pairs of {open_set['identities']} identities kept out of training (with half "
        f"of wild CelebA) through the door's front end, extrapolated below {TAIL_FROM:g} per comparison by an "
        f"exponential tail in Fisher z (check on held-out calibration identities, predicted -> "
        f"observed: {checks}). With a gallery of N people and T photos each, the door expects 1 - (1 - F(t))^M "
        f"strangers let in per attempt, and picks the t that makes this `recognition.false_accept_rate`, never below "
        f"the per-comparison threshold {info.threshold:.4f}. An attempt is taken as one frame (the frames of one "
        f"stranger at the door are nearly the same picture)."
    )
    gallery = open_set.get("gallery")
    text += "\n\n" + (
        "\"union bound\" (the door before): M = N x T, every template an independent comparison. "
        if gallery is None else
        f"\"union bound\" (the door before): M = N x T, every template an independent comparison. \"empirical "
        f"M_eff\" (the door now, `open_set.gallery`, `kiosk-train calibrate-gallery`): M = min(N x T, "
        f"{gallery['a']} x N^{gallery['b']} x T^{gallery['c']}), fitted on the calibration identities only: the "
        f"door's own rule (best person by raw score, per-template cohort thresholds, margin 0.05) simulated for "
        f"N = 1, 5, 20, 50 and T = 1, 3, 5 (cohort from one half of the identities, galleries and strangers from the "
        f"other, both ways round, 20 galleries per half), the implied M = log(1 - A(t)) / log(1 - F(t)) read at every "
        f"threshold where 3 or more and at most 0.2% of strangers got in, its largest value per gallery fitted in "
        f"log N and log T; a is the smallest factor that bounds every gallery ({gallery['envelope_a']}), times a "
        f"safety factor of {gallery['safety']:g}. Implied M on the calibration identities (at the rates fitted): "
        + "; ".join(f"{e['people']}x{e['templates_per_person']} "
                    f"{min(m for _, m in e['implied_comparisons']):.1f}-{max(m for _, m in e['implied_comparisons']):.1f}"
                    for e in gallery["measured"])
        + ". c < 1: one person's photos resemble each other, so a stranger close to one is close to the others; "
          "more photos of yourself cost far less than another person does, and never more than the union bound. "
          "The implied M also falls with the rate (about 3x from 1e-3 to 1e-4 on the calibration identities); a "
          "rate-dependent M_eff ((F/1e-3)^0.75) fitted that way let in 2.4e-4 at 1e-4 and 1.0e-3 at 1e-3 with 50 "
          "people on the evaluation identities (one enrolled hub photo the cohort does not catch), so it is not used."
    )
    cohort = info.extra.get("cohort")
    if cohort:
        text += (
            f"\n\nPer-template thresholds (\"+ cohort\"): F(t) is an average over templates, and a few photos (\"hubs\", "
            f"which the encoder maps near its mean) score high with many strangers. The model ships a cohort of "
            f"{cohort['shape'][0]:,} background faces of {cohort['identities']} calibration identities (`kiosk/models/"
            f"{cohort['file']}`, float16, `kiosk-train cohort`). For each template v, s(v) is the cosine of its "
            f"{ordinal(cohort['rank'])} closest cohort face; an average template reaches {cohort['reference_cosine']:.4f} there "
            f"(the curve at {cohort['reference_rate']:.1e}). A template that reaches more is taken to have the model's "
            f"impostor curve shifted up by the excess in Fisher z, less an allowance of {cohort['allowance']} for the "
            f"cohort's sampling noise (measured {cohort['noise_sd']}, split-half): its threshold is "
            f"tanh(atanh(t) + max(0, atanh(s(v)) - atanh({cohort['reference_cosine']:.4f}) - {cohort['allowance']})), "
            f"never below the door's t. {100 * cohort['calibration_faces_raised']:.1f}% of the calibration faces would "
            f"get a stricter threshold. The cohort's identities are never the evaluation identities measured here."
        )
    return text


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def upper_bound_95(attempts: int) -> float:
    """One-sided 95% upper bound on a rate when 0 of ``attempts`` were accepted (Clopper-Pearson)."""
    return 1.0 - 0.05 ** (1.0 / attempts)


def rate(accepted: int, attempts: int) -> str:
    if accepted == 0:
        return f"0 / {attempts:,} (< {upper_bound_95(attempts):.1e})"
    return f"{accepted:,} / {attempts:,} ({accepted / attempts:.1e})"


def table(rows: list[Row]) -> str:
    header = ("| people enrolled (3 photos each) | setting | door threshold | expected stranger acceptance (model) | "
              "templates with a stricter threshold | strangers let in per attempt | genuine let in | "
              "worst enrolled person (median over draws) |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        stricter = f"{100 * row.raised:.1f}%" if row.cohort else "-"
        lines.append(f"| {row.people} | {row.setting} | {row.threshold:.4f} | {row.expected_far:.1e} | {stricter} | "
                     f"{rate(row.strangers_accepted, row.stranger_attempts)} | "
                     f"{100 * row.genuine_accepted / row.genuine_attempts:.1f}% | {100 * row.worst_person:.0f}% |")
    return "\n".join(lines)


def alternative(faces: FaceSet, cohort: Cohort, rows: list[Row], refused: list[Row], anyway: list[Row]) -> str:
    """The alternative measured against the cohort: refuse hub photos at enrolment (same galleries otherwise)."""
    flagged = hub_photos(faces, cohort)
    with_cohort = {(row.people, row.target): row for row in rows if row.cohort}
    names = np.unique(faces.identities[flagged])
    shut_out = sum(1 for name in names if np.all(flagged[faces.found & (faces.identities == name)]))
    lines = [
        (f"The alternative measured against it: refuse at enrolment every photo with which more than {HUB_SHARE:.1%} of "
         f"the cohort's faces score above {HUB_COSINE} ({100 * np.count_nonzero(flagged) / np.count_nonzero(faces.found):.1f}% "
         "of these photos) and take another agreeing photo of the same person instead, door threshold only; the same "
         f"galleries otherwise. {shut_out} of the {len(names)} people with a refused photo have no other photo and "
         "cannot enrol: they count as refused at every attempt (\"shut out\"), or, in the third column, enrol with "
         "their photos all the same (as a household would insist on)."),
        "",
        ("| people enrolled | false_accept_rate | strangers let in: hub photos refused, shut out | "
         "hub photos refused, enrolled anyway | + cohort | genuine let in: refused / cohort |"),
        "|---|---|---|---|---|---|",
    ]
    for row, kept in zip(refused, anyway):
        other = with_cohort[(row.people, row.target)]
        lines.append(f"| {row.people} | {row.target:g} | {rate(row.strangers_accepted, row.stranger_attempts)} | "
                     f"{rate(kept.strangers_accepted, kept.stranger_attempts)} | "
                     f"{rate(other.strangers_accepted, other.stranger_attempts)} | "
                     f"{100 * row.genuine_accepted / row.genuine_attempts:.1f}% / "
                     f"{100 * other.genuine_accepted / other.genuine_attempts:.1f}% |")
    lines += ["", ("The door uses the cohort: it refuses no photo and shuts nobody out, it protects every gallery at "
                   "every load (photos enrolled before included), and a template's bar rises with how far it is from "
                   "ordinary and with the door's threshold, where the refusal rule is one fixed cut at 0.6.")]
    return "\n".join(lines)


def write_block(markdown: str, path: Path = SECURITY_MD) -> None:
    """Replace only the text between the openset markers of ``path``."""
    text = path.read_text()
    start, end = text.index(MARK_START) + len(MARK_START), text.index(MARK_END)
    path.write_text(text[:start] + "\n" + markdown.strip() + "\n" + text[end:])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.openset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="the shared data folder (default %(default)s)")
    parser.add_argument("--faces", type=Path, help="a folder-per-person tree to use instead of the evaluation identities")
    parser.add_argument("--camera", type=Path,
                        help="NUAA-style live frames, SUBJECT/ID_glasses_pos_session_frame.jpg, for the door-camera rows "
                             "of the full run (default DATA/nuaa_train/live)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help="the model folder (default: the shipped model)")
    parser.add_argument("--cache", type=Path, default=ROOT / "cache" / "openset",
                        help="embedding cache folder (default %(default)s)")
    parser.add_argument("--people", type=int, nargs="+", default=[1, 5, 20, 50], help="gallery sizes (default 1 5 20 50)")
    parser.add_argument("--draws", type=int, default=20, help="random galleries per size (default %(default)s)")
    parser.add_argument("--margin", type=float, default=RecognitionConfig().margin,
                        help="the best person's lead over the runner-up (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help=f"2 draws of 1 and 5 people on the first {QUICK_IMAGES} evaluation photos; prints only")
    parser.add_argument("--doc", type=Path, default=SECURITY_MD,
                        help="markdown file whose openset block the full run rewrites (default %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    info = ModelInfo.load(args.models / METADATA_FILE)
    cohort = Cohort.load(args.models)
    if args.faces:
        images = [(path, name) for name, paths in sorted(identity_folders(args.faces).items()) for path in paths]
        faces = embed_through_door(args.models, images)
    elif args.quick:
        images = open_set_images(args.data, "evaluate")[:QUICK_IMAGES]
        faces = embed_through_door(args.models, images, args.cache / "evaluate-quick.npz", desc="evaluation photos")
    else:
        images = open_set_images(args.data, "evaluate")
        faces = embed_through_door(args.models, images, args.cache / "evaluate.npz", desc="evaluation photos")
    sizes, draws = (args.people, args.draws)
    if args.quick:
        sizes, draws = [n for n in args.people if n <= 5] or [1], 2
    rows = evaluate(faces, info, cohort, sizes, draws, args.margin, args.seed)
    parts = [table(rows), notes(faces, rows, draws, args), method(info), curve_check(faces, info)]
    full = not (args.quick or args.faces)
    camera = args.camera or args.data / "nuaa_train" / "live"
    if full and camera.is_dir():
        frames = [(path, name) for name, paths in sorted(identity_folders(camera).items()) for path in paths]
        frame_faces = embed_through_door(args.models, frames, args.cache / "nuaa-live.npz", desc="door camera frames")
        camera_rows = door_camera(frame_faces, info, cohort)
        parts.insert(2, camera_table(camera_rows, frame_faces))
        parts.insert(2, supported_default(rows, camera_rows))
    elif full:
        print(f"bench.openset: no door-camera frames under {camera}; the door-camera rows are left out", file=sys.stderr)
    report = "\n\n".join(parts)
    print(report)
    if full:
        write_block(report, args.doc)
        print(f"\nwrote the tables into {args.doc}")
    return 0


def verdict(rows: list[Row], mapping: str) -> str:
    """Which automatic rows with this gallery mapping held their target, measured (upper 95% bound where 0 got in)."""
    over = []
    automatic = [row for row in rows if row.target is not None and row.mapping == mapping]
    for row in automatic:
        measured = row.strangers_accepted / row.stranger_attempts
        if measured > row.target:
            over.append(f"{row.people} people at {row.target:g} ({measured / row.target:.1f}x)")
    what = "With the union bound" if mapping == "union" else "With the empirical M_eff"
    held = len(automatic) - len(over)
    return f"{what}, the target held in {held} of {len(automatic)} rows" + (
        f"; it did not with {', '.join(over)}." if over else ".")


RESIDENT_COST_POINTS = 5.0
"""Largest loss of residents' single door-camera frames (percentage points, any gallery size) at which the stricter
setting is still the one the numbers support: with k of n frames wanted, a few points of single frames cost a
resident a fraction of a second."""


def supported_default(rows: list[Row], camera: list[CameraRow]) -> str:
    """One paragraph: which recognition.false_accept_rate the measurements support as the default, and why."""
    lines = []
    held = {}
    for target in sorted({row.target for row in rows if row.target is not None}, reverse=True):
        empirical = [row for row in rows if row.target == target and row.mapping == "empirical"]
        worst = max(max(row.strangers_accepted, 0) / row.stranger_attempts if row.strangers_accepted
                    else upper_bound_95(row.stranger_attempts) for row in empirical)
        held[target] = all(row.strangers_accepted / row.stranger_attempts <= target for row in empirical)
        cam = {row.people: row for row in camera if row.setting.endswith("empirical M_eff")
               and f"false_accept_rate {target:g}" in row.setting}
        genuine = ", ".join(f"{100 * row.genuine_accepted / row.genuine_attempts:.0f}% (worst subject "
                            f"{100 * min(row.per_subject.values()):.0f}%) with {people}"
                            for people, row in sorted(cam.items()))
        lines.append(f"at {target:g} the empirical mapping {'held' if held[target] else 'did not hold'} its target "
                     f"in every gallery size (worst measured or 95% bound {worst:.1e}); door-camera genuine frames let "
                     f"in: {genuine or 'not measured'}")
    supported = sorted(target for target, ok in held.items() if ok)
    if not supported:
        verdict = "No automatic setting held its target everywhere; neither can be recommended as it stands."
    elif len(supported) == 1:
        verdict = f"Only {supported[0]:g} held its target in every gallery size. The lead decides."
    else:
        strict, lenient = supported[0], supported[-1]
        shares = {target: {row.people: 100 * row.genuine_accepted / row.genuine_attempts for row in camera
                           if row.setting.endswith("empirical M_eff") and f"false_accept_rate {target:g}" in row.setting}
                  for target in (strict, lenient)}
        cost = max((shares[lenient][n] - shares[strict][n] for n in shares[strict] if n in shares[lenient]), default=0.0)
        advice = (f"the stricter {strict:g} costs residents at most {cost:.1f} points of single frames here, and the door "
                  f"wants the same person in k of n frames: the numbers support {strict:g}"
                  if cost <= RESIDENT_COST_POINTS else
                  f"{strict:g} costs residents up to {cost:.1f} points of single frames here: the numbers support "
                  f"{lenient:g} for a household of more than one or two people")
        verdict = (f"Both stranger targets held with the empirical mapping, so the choice is what residents pay: {advice}. "
                   "The lead decides.")
    return "Which default: " + "; ".join(lines) + ". " + verdict


def culprits(rows: list[Row]) -> str:
    """Under which enrolled names the strangers got in."""
    let_in_as = sum((row.strangers_let_in_as for row in rows), Counter())
    total = sum(let_in_as.values())
    if not total:
        return "no stranger was let in."
    top = let_in_as.most_common(3)
    share = sum(n for _, n in top)
    text = f"{total} strangers let in, {share} of them under {', '.join(f'{name} {n}' for name, n in top)}"
    return text + (": a few enrolled photos that resemble many strangers' photos, not a spread over everyone enrolled."
                   if total >= 10 and share >= total / 2 else ".")


def notes(faces: FaceSet, rows: list[Row], draws: int, args: argparse.Namespace) -> str:
    """The text under the table: what was measured, and how far to trust it."""
    source = f"photos under {args.faces}" if args.faces else (
        "the evaluation identities (the evaluation half of wild CelebA and the people of lfw_pairsDevTest.txt, "
        "never used to train or calibrate, nor in the cohort)")
    union = [row for row in rows if row.mapping == "union"]
    empirical = [row for row in rows if row.mapping == "empirical"]
    wrong = {name: sum(row.wrong_person for row in group)
             for name, group in (("before", [row for row in rows if row.target is None]), ("union", union),
                                 ("empirical", empirical))}
    return (
        f"{verdict(rows, 'union')} {verdict(rows, 'empirical')}\n\n"
        f"Union bound (all rows): {culprits(union)} Empirical M_eff: {culprits(empirical)}\n\n"
        f"Measured on {len(faces.paths):,} photos of {len(np.unique(faces.identities)):,} people from {source}, "
        f"{100 * np.mean(faces.found):.1f}% with a usable face; {draws} random galleries per size (the same galleries "
        f"for every setting), margin {args.margin}. The bound for 0 accepted counts every attempt as independent; the "
        f"draws reuse the same photos, so it is optimistic. Enrolled people let in under someone else's name: "
        f"{wrong['before']} before, {wrong['union']} with the union bound, {wrong['empirical']} with the empirical "
        f"M_eff (all rows together).\n\n"
        f"These are news and celebrity photos: pose, light, age, make-up and the camera change between photos of one "
        f"person far more than between frames at a door, so genuine acceptance here is much lower than at a door "
        f"camera (see the door-camera rows). The stranger rates are what a door that enrolled these photos would see."
    )


if __name__ == "__main__":
    sys.exit(main())
