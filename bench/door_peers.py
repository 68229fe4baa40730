"""``python -m bench.door_peers``: strangers let in per attempt and residents let in, face-kiosk beside its peers.

The door-level comparison of issue 13: for 1, 5, 20 and 50 people enrolled (3 photos each), how
many strangers each pipeline lets in per attempt and how many residents it lets in, when every
pipeline is calibrated the way face-kiosk's door is and none on the evaluation identities:

  calibration   each pipeline embeds the open-set calibration identities with its own detector
                (``open_set_images(data, "calibrate")``); its impostor curve F(t) comes from its
                own impostor pairs, its tail widened by its own ``tail_widening`` (the functions
                that made face-kiosk's shipped curve); the threshold for a target per attempt is ``kiosk.openset.door_threshold``
                with the union bound, 1 - (1 - F(t))^M = target with M = 3N templates
  galleries     the evaluation identities (``open_set_images(data, "evaluate")``), 20 random
                galleries per size (fixed seed), the same people and photos for every pipeline:
                3 photos that every pipeline would enrol (face-kiosk: strong enough for its
                enrolment gate) and that agree in every pipeline
  attempts      genuine: every other photo of an enrolled person (a photo without a usable face
                counts as not let in); stranger: every photo, with a usable face, of anyone not
                enrolled; the door's rule (``bench.openset.door_decisions``): the best person by
                raw score has a template above its threshold and leads the runner-up by ``margin``

face-kiosk also gets its shipped cohort's per-template thresholds on top of the same threshold,
and the door as it ships (empirical M_eff + cohort). The "oracle" rows are measured on the
evaluation galleries themselves (the lowest threshold at which at most 1e-3 of the stranger
attempts got in), with and without the margin rule (a cosine margin weighs differently on each
encoder's scale): they compare the encoders, no door can set its threshold that way.

  python -m bench.door_peers                          # rewrites the door-peers block of docs/benchmarks.md
  python -m bench.door_peers --quick                  # a few hundred photos, 2 draws of 1 and 5 people, prints only
  python -m bench.door_peers --pipelines face-kiosk dlib
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from bench.openset import TEMPLATES_PER_PERSON, door_decisions, rate, setting_threshold, template_thresholds
from bench.pipelines import DESCRIPTIONS, LABELS, PIPELINES, embedder, missing, model_files
from bench.report import cpu_model, duration, machine
from kiosk.config import RecognitionConfig
from kiosk.encoder import DEFAULT_MODEL_DIR, METADATA_FILE, ModelInfo
from kiosk.errors import ImageError
from kiosk.images import read_image
from kiosk.openset import Cohort, comparison_threshold, door_threshold
from kiosk.training.calibrate import (
    TAIL_FROM,
    FaceSet,
    embed_through_door,
    impostor_curve,
    impostor_scores,
    open_set_images,
    tail_widening,
)

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
MARKER = "door-peers"
SIZES = (1, 5, 20, 50)
TARGETS = (1e-3, 1e-4)
"""Strangers let in per attempt the door is set for (``recognition.false_accept_rate``)."""
ORACLE_RATE = 1e-3
"""The oracle rows: the threshold at which at most this share of stranger attempts got in, on the evaluation galleries."""
AGREE_RATE = 1e-3
"""Per-comparison rate of the cosine at which enrolment photos must agree (kiosk enroll's rule), and the floor of the
door threshold: face-kiosk's per-comparison threshold is calibrated at this rate; each pipeline gets its own."""
ENROL_TRIES = 20
QUICK_IMAGES = 300
"""The quick run's evaluation photos: the first of the evaluation list (about a dozen wild CelebA people)."""
QUICK_CALIBRATION_STRIDE = 12
QUICK_TAIL_FROM = 1e-3
"""The quick run's calibration photos (every 12th, about 300) have too few impostor pairs to measure down to 1e-4."""


@dataclass(frozen=True)
class Pipeline:
    """One pipeline's evaluation embeddings and the impostor curve of its calibration embeddings."""

    name: str
    evaluation: FaceSet
    curve: ModelInfo  # its curve and per-comparison threshold, as face-kiosk's door reads a model's
    calibration: FaceSet
    impostor_pairs: int
    widening: float  # the stretch of its curve's extrapolated tail (tail_widening)


@dataclass(frozen=True)
class Row:
    """One gallery size, target and pipeline setting, summed over the draws."""

    people: int
    target: float | None  # strangers per attempt the threshold is set for; None for the oracle
    pipeline: str
    setting: str
    threshold: float
    strangers_accepted: int
    stranger_attempts: int
    genuine_accepted: int
    genuine_attempts: int
    worst_person: float  # the lowest genuine acceptance among the enrolled, median over draws


def cache_key(pipeline: str, models: Path, paths: list[str]) -> str:
    """What a peer's embeddings depend on: its settings (its description states them), its weight files, the photos."""
    weights = [hashlib.sha256(path.read_bytes()).hexdigest() for path in model_files(pipeline, models)]
    return hashlib.sha256("\n".join([pipeline, DESCRIPTIONS[pipeline], *weights, *paths]).encode()).hexdigest()


def embed(pipeline: str, models: Path, images: list[tuple[Path, str]], cache_file: Path, desc: str) -> FaceSet:
    """``images`` through ``pipeline`` (its own detector, largest face, one thread); NaN rows where no usable face.

    Cached in ``cache_file`` and reused only for the same key: face-kiosk through
    ``embed_through_door`` (bench.openset's embeddings and cache rule: model file, quality gate,
    detector settings, photo list), a peer by :func:`cache_key`.
    """
    if pipeline == "face-kiosk":
        return embed_through_door(models, images, cache_file, desc=f"{pipeline} {desc}")
    paths = [str(path) for path, _ in images]
    identities = np.array([identity for _, identity in images])
    key = cache_key(pipeline, models, paths)
    if cache_file.exists():
        cached = np.load(cache_file)
        if str(cached["key"]) == key:
            return FaceSet(paths, cached["identities"], cached["embeddings"])
    embed_largest = embedder(pipeline, models, threads=1)
    vectors: list[np.ndarray | None] = []
    for path, _ in tqdm(images, desc=f"{pipeline} {desc}", unit="img"):
        try:
            vectors.append(embed_largest(read_image(path)))
        except ImageError:
            vectors.append(None)
    size = next((len(vector) for vector in vectors if vector is not None), 1)
    embeddings = np.full((len(images), size), np.nan, np.float32)
    for row, vector in enumerate(vectors):
        if vector is not None:
            embeddings[row] = vector
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache_file, key=key, identities=identities, embeddings=embeddings)
    return FaceSet(paths, identities, embeddings)


def curve_info(scores: np.ndarray, embedding_size: int, tail_from: float = TAIL_FROM, widening: float = 1.0) -> ModelInfo:
    """The impostor curve of ``scores`` (per-comparison impostor cosines) as model metadata for ``kiosk.openset``.

    Its per-comparison threshold (the door threshold's floor, the enrolment agreement cosine) is
    the curve's cosine at ``AGREE_RATE``, as face-kiosk's is calibrated at that rate.
    """
    curve = tuple((cosine, far) for cosine, far in impostor_curve(scores, tail_from=tail_from, widening=widening))
    info = ModelInfo(input_size=1, embedding_size=embedding_size, threshold=0.5, target_far=AGREE_RATE, sha256="",
                     impostor_curve=curve)
    return ModelInfo(input_size=1, embedding_size=embedding_size, threshold=comparison_threshold(info, AGREE_RATE),
                     target_far=AGREE_RATE, sha256="", impostor_curve=curve)


def union_threshold(info: ModelInfo, target: float, people: int) -> float:
    """face-kiosk's door threshold for ``target`` strangers per attempt, every one of the 3N templates counted independent."""
    recognition = RecognitionConfig(false_accept_rate=target)
    return door_threshold(info, recognition, people, TEMPLATES_PER_PERSON * people, union_bound=True).value


def photos_agree(vectors: np.ndarray, agree: float) -> bool:
    """kiosk enroll's rule: every photo's best match among the others scores above ``agree``."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1.0)
    return bool(np.all(similarity.max(axis=1) > agree))


def draw_galleries(faces: list[FaceSet], agree: list[float], people: int, draws: int,
                   seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``draws`` galleries of ``people`` people with 3 photos each, one set of galleries for every pipeline.

    ``faces``: each pipeline's embeddings of the same photos, row for row. A person qualifies with 4
    or more photos (at least one left to try); the 3 enrolled photos are ones every pipeline would
    enrol (``FaceSet.enrollable``: a usable face, for face-kiosk one its enrolment gate takes) and
    agree in every pipeline (each at its own ``agree`` cosine), up to 20 tries a person.
    """
    identities = faces[0].identities
    if any(other.paths != faces[0].paths for other in faces[1:]):
        raise ValueError("every pipeline must embed the same photos in the same order")
    usable = np.logical_and.reduce([pipeline.enrollable for pipeline in faces])
    names, counts = np.unique(identities, return_counts=True)
    candidates = names[counts > TEMPLATES_PER_PERSON]
    rng = np.random.default_rng([seed, people])
    galleries = []
    for _ in range(draws):
        gallery: dict[str, np.ndarray] = {}
        for name in rng.permutation(candidates):
            rows = np.flatnonzero(usable & (identities == name))
            for _ in range(ENROL_TRIES if len(rows) >= TEMPLATES_PER_PERSON else 0):
                chosen = np.sort(rng.choice(rows, TEMPLATES_PER_PERSON, replace=False))
                if all(photos_agree(pipeline.embeddings[chosen], cosine) for pipeline, cosine in zip(faces, agree)):
                    gallery[str(name)] = chosen
                    break
            if len(gallery) == people:
                break
        if len(gallery) < people:
            raise SystemExit(f"bench.door_peers: fewer than {people} people have {TEMPLATES_PER_PERSON} agreeing photos "
                             f"that every pipeline would enrol and one more photo; use smaller gallery sizes")
        galleries.append(gallery)
    return galleries


def measure(faces: FaceSet, galleries: list[dict[str, np.ndarray]], threshold: float, cohort: Cohort | None,
            margin: float) -> tuple[int, int, int, int, float]:
    """(strangers let in, stranger attempts, genuine let in, genuine attempts, worst person's share, median over draws).

    Every template gets ``threshold``, or with ``cohort`` its own from the cohort (never below it).
    A genuine photo without a usable face is an attempt not let in; a stranger's is no attempt.
    """
    strangers_in = strangers = genuine_in = genuine = 0
    worst = []
    for gallery in galleries:
        bars = template_thresholds(faces, gallery, threshold, cohort)
        let_in, shows = door_decisions(faces, gallery, bars, margin)
        enrolled = np.zeros(len(faces.paths), bool)
        enrolled[np.concatenate(list(gallery.values()))] = True
        stranger = (shows < 0) & faces.found
        attempt = (shows >= 0) & ~enrolled
        strangers_in += int(np.count_nonzero(stranger & (let_in >= 0)))
        strangers += int(np.count_nonzero(stranger))
        genuine_in += int(np.count_nonzero(attempt & (let_in == shows)))
        genuine += int(np.count_nonzero(attempt))
        worst.append(min(np.mean(let_in[attempt & (shows == person)] == person) for person in range(len(gallery))))
    return strangers_in, strangers, genuine_in, genuine, float(np.median(worst))


def oracle_threshold(faces: FaceSet, galleries: list[dict[str, np.ndarray]], margin: float,
                     share: float = ORACLE_RATE) -> float:
    """The lowest single threshold at which at most ``share`` of the stranger attempts on ``galleries`` got in.

    With one threshold for every template, a stranger is let in exactly when the best person's
    best score is above it and the margin rule passes, so that score is the attempt's critical cosine.
    """
    critical = []
    for gallery in galleries:
        rows = np.concatenate(list(gallery.values()))
        let_in, shows = door_decisions(faces, gallery, np.full(len(rows), -np.inf), margin)
        stranger = (shows < 0) & faces.found
        best = (faces.embeddings[stranger] @ faces.embeddings[rows].T).max(axis=1)
        critical.append(np.where(let_in[stranger] >= 0, best, -np.inf))
    ranked = np.sort(np.concatenate(critical))[::-1]
    allowed = int(share * len(ranked))
    return float(ranked[allowed]) if allowed < len(ranked) else -1.0


def evaluate(pipelines: list[Pipeline], galleries: dict[int, list[dict[str, np.ndarray]]], targets: tuple[float, ...],
             margin: float, models: Path) -> list[Row]:
    """Every pipeline on the same galleries, at each target and the oracle threshold (module docstring)."""
    with_kiosk = any(pipeline.name == "face-kiosk" for pipeline in pipelines)
    shipped = ModelInfo.load(models / METADATA_FILE) if with_kiosk else None
    cohort = Cohort.load(models) if with_kiosk else None
    rows = []
    for people, drawn in galleries.items():
        for target in targets:
            for pipeline in pipelines:
                threshold = union_threshold(pipeline.curve, target, people)
                settings: list[tuple[str, float, Cohort | None]] = [("own curve, union bound", threshold, None)]
                if pipeline.name == "face-kiosk" and shipped is not None:
                    door, _, _ = setting_threshold(shipped, target, people, "empirical", True)
                    settings += [("own curve, union bound + shipped cohort", threshold, cohort),
                                 ("as shipped: empirical M_eff + cohort", door, cohort)]
                for setting, value, per_template in settings:
                    counts = measure(pipeline.evaluation, drawn, value, per_template, margin)
                    rows.append(Row(people, target, pipeline.name, setting, value, *counts))
        for pipeline in pipelines:
            for rule_margin, label in ((margin, f"margin {margin:g}"), (0.0, "no margin rule")):
                value = oracle_threshold(pipeline.evaluation, drawn, rule_margin)
                counts = measure(pipeline.evaluation, drawn, value, None, rule_margin)
                rows.append(Row(people, None, pipeline.name, f"oracle: at most {ORACLE_RATE:g} measured, {label}", value,
                                *counts))
    return rows


def table(rows: list[Row]) -> str:
    header = ("| people enrolled | strangers per attempt, target | pipeline | threshold from | threshold | "
              "strangers let in per attempt | genuine let in | worst enrolled person (median over draws) |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        target = f"{row.target:g}" if row.target is not None else "oracle (evaluation set)"
        lines.append(f"| {row.people} | {target} | {LABELS[row.pipeline]} | {row.setting} | {row.threshold:.4f} | "
                     f"{rate(row.strangers_accepted, row.stranger_attempts)} | "
                     f"{100 * row.genuine_accepted / row.genuine_attempts:.1f}% | {100 * row.worst_person:.0f}% |")
    return "\n".join(lines)


def kiosk_settings_note(rows: list[Row]) -> str:
    """Where face-kiosk's cohort and shipped rows differ from its union-bound row, as measured (the reader asks why not)."""
    by_setting: dict[str, dict[tuple[int, float], Row]] = {}
    for row in rows:
        if row.pipeline == "face-kiosk" and row.target is not None:
            by_setting.setdefault(row.setting, {})[(row.people, row.target)] = row
    plain = by_setting.get("own curve, union bound", {})
    cohort = by_setting.get("own curve, union bound + shipped cohort", {})
    shipped = by_setting.get("as shipped: empirical M_eff + cohort", {})
    if not plain or not cohort or not shipped:
        return ""
    changed = sum(1 for key, row in cohort.items() if row.strangers_accepted != plain[key].strangers_accepted
                  or row.genuine_accepted != plain[key].genuine_accepted)
    same_threshold = sum(1 for key, row in shipped.items() if row.threshold == plain[key].threshold)
    return (f" On these galleries the cohort changed a decision in {changed} of the {len(cohort)} settings, and the "
            f"shipped M_eff gave the union bound's threshold in {same_threshold} of {len(shipped)} (M_eff is at most the 3N "
            f"templates, the union bound).")


def notes(pipelines: list[Pipeline], skipped: dict[str, str], draws: int, margin: float, seconds: float,
          args: argparse.Namespace, rows: list[Row]) -> str:
    """What was measured, on which photos, how each row's threshold was made, when and where."""
    shipped = ModelInfo.load(args.models / METADATA_FILE)
    own = next((p.curve.impostor_curve for p in pipelines if p.name == "face-kiosk"), None)
    kiosk_curve = "" if own is None else (" face-kiosk's own curve is the one it ships." if own == shipped.impostor_curve
                                          else " face-kiosk's own curve here differs from the one it ships.")
    evaluation, calibration = pipelines[0].evaluation, pipelines[0].calibration
    names, photos = np.unique(evaluation.identities, return_counts=True)
    most = np.argsort(-photos)[:2]
    per_pipeline = "; ".join(
        f"{LABELS[p.name]}: {100 * np.mean(p.evaluation.found):.1f}% of the evaluation and "
        f"{100 * np.mean(p.calibration.found):.1f}% of the calibration photos with a usable face, "
        f"{p.impostor_pairs:,} calibration impostor pairs, tail widening {p.widening:g}, per-comparison "
        f"{AGREE_RATE:g} cosine {p.curve.threshold:.4f}" for p in pipelines)
    skipped_text = "".join(f" Skipped: {LABELS[name]} ({why})." for name, why in skipped.items())
    info = machine()
    return (
        f"Measured {datetime.date.today()} on {cpu_model()} ({info['CPU'].rsplit(', ', 1)[-1]}), face-kiosk commit "
        f"{info['face-kiosk commit']}, by `python -m bench.door_peers{' --quick' if args.quick else ''}` in "
        f"{duration(seconds)} (embeddings cached in cache/door_peers/ count only when they were made). "
        f"Evaluation: {len(evaluation.paths):,} photos of {len(names):,} people (the evaluation half of wild CelebA and "
        f"the people of lfw_pairsDevTest.txt). Calibration: {len(calibration.paths):,} photos of "
        f"{len(np.unique(calibration.identities)):,} other identities (held aside from face-kiosk's training, and the "
        f"calibration half of wild CelebA). Each pipeline runs from the raw photo with its own detector, one thread; "
        f"for face-kiosk a usable face has also passed its quality gate. {per_pipeline}.{skipped_text}\n\n"
        f"Threshold from: \"own curve, union bound\": the pipeline's impostor curve from its own calibration embeddings "
        f"(`impostor_curve`: measured down to {extrapolated_below(args.quick):g} per comparison, below it an exponential "
        f"tail in Fisher z stretched by the pipeline's own `tail_widening`), and face-kiosk's rule "
        f"`kiosk.openset.door_threshold` with the union bound: the t with 1 - (1 - F(t))^(3N) = the target, never below "
        f"the per-comparison cosine above; the same for every pipeline.{kiosk_curve} \"+ shipped cohort\" (face-kiosk): "
        f"the same t, each enrolled template's own threshold from the cohort shipped with the model "
        f"(`Cohort.template_thresholds`, never below t). \"as shipped\" (face-kiosk): what the door does today, "
        f"`recognition.false_accept_rate` with the shipped curve, the fitted M_eff and the cohort.{kiosk_settings_note(rows)} "
        f"\"oracle\": the "
        f"lowest single threshold at which at most {ORACLE_RATE:g} of the stranger attempts on these galleries got in, "
        f"so it is measured on the evaluation identities and compares the encoders at one stranger rate; no door can "
        f"set its threshold that way.\n\n"
        f"Galleries: {draws} random draws per size (fixed seed), the same people and photos for every pipeline: 3 photos "
        f"of a person with 4 or more that every pipeline would enrol (a usable face; for face-kiosk also above its "
        f"enrolment gate, `quality.min_enrol_strength` {shipped.min_enrol_strength:g}) and that agree in every pipeline "
        f"(each photo's best match among the other two above that pipeline's per-comparison cosine, kiosk enroll's "
        f"rule). Genuine attempt: every other photo of an enrolled person (no usable face: not let in); the share pools "
        f"every attempt, so people with many photos weigh more ({names[most[0]]} has {photos[most[0]]}, "
        f"{names[most[1]]} {photos[most[1]]}): the worst-person column shows the spread. Stranger attempt: every photo "
        f"with a usable face of anyone not enrolled, so each pipeline counts its own. The door's rule for every "
        f"pipeline: the best person by raw cosine, a template above its threshold, and a lead of {margin:g} over the "
        f"runner-up. That margin is face-kiosk's, in cosine; dlib's cosines are crowded near 1, so the same margin "
        f"refuses far more of its residents (compare its two oracle rows). 0 let in: the 95% upper bound in brackets, "
        f"counting every attempt independent (the draws reuse photos, so it is optimistic). These are news and "
        f"celebrity photos: genuine acceptance at a door camera is higher."
    )


def write_block(markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the door-peers block of ``path``, or append one (``bench.report`` keeps such blocks when it rewrites)."""
    text = path.read_text(encoding="utf-8")
    block = f"<!-- {MARKER} -->\n{markdown.strip()}\n<!-- /{MARKER} -->"
    pattern = re.compile(rf"<!-- {MARKER} -->.*?<!-- /{MARKER} -->", re.DOTALL)
    path.write_text(pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n",
                    encoding="utf-8")


def calibrated(name: str, args: argparse.Namespace) -> Pipeline:
    """Embed the calibration and evaluation photos with pipeline ``name`` and fit its impostor curve."""
    suffix = "-quick" if args.quick else ""
    images = {}
    for role in ("calibrate", "evaluate"):
        listed = open_set_images(args.data, role)
        if args.quick:
            listed = listed[:QUICK_IMAGES] if role == "evaluate" else listed[::QUICK_CALIBRATION_STRIDE]
        images[role] = embed(name, args.models, listed, args.cache / f"{name}-{role}{suffix}.npz",
                             "calibration photos" if role == "calibrate" else "evaluation photos")
    scores = impostor_scores(images["calibrate"])
    widening = tail_widening(images["calibrate"])
    curve = curve_info(scores, images["calibrate"].embeddings.shape[1], extrapolated_below(args.quick), widening)
    return Pipeline(name, images["evaluate"], curve, images["calibrate"], int(scores.size), widening)


def extrapolated_below(quick: bool) -> float:
    """Per-comparison rate below which the impostor curve is extrapolated (the quick run has few impostor pairs)."""
    return QUICK_TAIL_FROM if quick else TAIL_FROM


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.door_peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="the shared data folder (default %(default)s)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help="face-kiosk's model folder (default: shipped)")
    parser.add_argument("--cache", type=Path, default=ROOT / "cache" / "door_peers",
                        help="embedding cache folder, <pipeline>-<role>.npz (default %(default)s)")
    parser.add_argument("--pipelines", nargs="+", choices=PIPELINES, default=list(PIPELINES),
                        help="pipelines to compare (default: all); the galleries are drawn from the photos all of them see")
    parser.add_argument("--people", type=int, nargs="+", default=list(SIZES), help="gallery sizes (default 1 5 20 50)")
    parser.add_argument("--draws", type=int, default=20, help="random galleries per size (default %(default)s)")
    parser.add_argument("--margin", type=float, default=RecognitionConfig().margin,
                        help="the best person's lead over the runner-up, in cosine (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help=f"the first {QUICK_IMAGES} evaluation photos, every {QUICK_CALIBRATION_STRIDE}th calibration "
                             "photo, 2 draws of 1 and 5 people; prints only: checks the code")
    parser.add_argument("--doc", type=Path, default=BENCHMARKS_MD,
                        help="markdown file whose door-peers block the full run rewrites (default %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    cv2.setNumThreads(1)
    skipped = {name: why for name in args.pipelines if (why := missing(name, args.models))}
    for name, why in skipped.items():
        print(f"bench.door_peers: skipped {name}: {why}", file=sys.stderr)
    names = [name for name in args.pipelines if name not in skipped]
    if not names:
        raise SystemExit("bench.door_peers: none of the pipelines asked for is installed")
    pipelines = [calibrated(name, args) for name in names]
    sizes, draws = (([n for n in args.people if n <= 5] or [1]), 2) if args.quick else (args.people, args.draws)
    agree = [pipeline.curve.threshold for pipeline in pipelines]
    galleries = {people: draw_galleries([p.evaluation for p in pipelines], agree, people, draws, args.seed)
                 for people in tqdm(sizes, desc="galleries", unit="size")}
    rows = evaluate(pipelines, galleries, TARGETS, args.margin, args.models)
    report = "\n\n".join([
        "## Door-level, beside the peers",
        ("Strangers let in per attempt and genuine acceptance at the door for 1, 5, 20 and 50 people enrolled (3 photos "
         "each), every pipeline calibrated the way face-kiosk's door is, on its own calibration identities, and measured "
         "on the same galleries of the evaluation identities (`python -m bench.door_peers`)."),
        table(rows),
        notes(pipelines, skipped, draws, args.margin, time.monotonic() - started, args, rows)])
    print(report)
    if not args.quick:
        write_block(report, args.doc)
        print(f"\nwrote the door-peers block of {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
