"""``kiosk liveness ROOT --out FILE.csv``: liveness scores of recorded attempts.

Every folder under ROOT (ROOT included) that directly holds images is one
attempt: its images, in natural file-name order (``frame_2`` before
``frame_10``), are played as consecutive frames through the door's face
detection and the liveness check, exactly as the door would see them after
a ``reset()``. Frames without a face are skipped (the attempt goes on).
One CSV row per attempt:

``attempt`` (the folder, relative to ROOT), ``mode``, ``frames`` (images read),
``faces`` (frames with a face), ``texture`` (mean texture logit, the score the
threshold applies to), ``movements`` (times the face was seen to move; always
0 in mode ``texture``), ``threshold`` (the shipped one) and ``decision``
(``live``, ``spoof``, ``no movement`` in mode ``both`` when the face was not
seen to move often enough: the door would refuse it after its wait, or ``no
face`` when no frame had one). Unreadable images are reported on stderr and
left out.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

from tqdm import tqdm

from kiosk.decision import Liveness
from kiosk.encoder import DEFAULT_MODEL_DIR
from kiosk.errors import ImageError
from kiosk.face import FaceFinder
from kiosk.images import IMAGE_SUFFIXES, read_image
from kiosk.liveness import LivenessChecker

COLUMNS = ["attempt", "mode", "frames", "faces", "texture", "movements", "threshold", "decision"]
DECISIONS = {Liveness.LIVE: "live", Liveness.SPOOF: "spoof", Liveness.PENDING: "no movement"}


def natural_key(path: Path) -> list:
    """Sort key that orders the digit runs of a file name by value (``2`` before ``10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def attempt_folders(root: Path) -> list[tuple[Path, list[Path]]]:
    """(folder, its images in natural order) for ROOT and every folder below it that holds images."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    folders = []
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        images = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
        if images:
            folders.append((folder, images))
    return folders


def liveness_csv(root: Path, out: Path, mode: str = "both", model_dir: Path = DEFAULT_MODEL_DIR,
                 progress: bool = False) -> list[dict]:
    """Score every attempt folder under ``root`` with the liveness check ``mode``; write and return the rows.

    ``mode`` is ``"texture"`` or ``"both"`` (``"off"`` has nothing to score).
    The CSV is written via a temporary file, so a failed run never leaves half a file.
    """
    root = Path(root)
    checker = LivenessChecker(mode, model_dir)
    finder = FaceFinder()
    rows = []
    for folder, images in tqdm(attempt_folders(root), desc="attempts", unit="attempt", disable=not progress, file=sys.stderr):
        checker.reset()
        frames = 0
        for path in images:
            try:
                image = read_image(path)
            except ImageError as error:
                print(f"skipped: {error}", file=sys.stderr)
                continue
            frames += 1
            face = finder.largest(image)
            if face is not None:
                checker.check(image, face)
        scores = checker.scores()
        decision = "no face" if scores.texture is None else DECISIONS[checker.verdict()]
        rows.append({
            "attempt": folder.relative_to(root).as_posix(),
            "mode": mode,
            "frames": frames,
            "faces": scores.frames,
            "texture": _number(scores.texture),
            "movements": scores.movements,
            "threshold": round(checker.threshold, 4),
            "decision": decision,
        })
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out)
    return rows


def _number(value: float | None) -> float | str:
    return "" if value is None else round(value, 4)


def cmd_liveness(args: argparse.Namespace) -> int:
    """The ``kiosk liveness`` command: write the CSV and print a one-line summary."""
    rows = liveness_csv(args.root, args.out, args.mode, args.models, progress=not args.quiet)
    counts = {kind: sum(row["decision"] == kind for row in rows) for kind in ("live", "spoof", "no movement", "no face")}
    print(f"{len(rows)} attempts: {counts['live']} live, {counts['spoof']} spoof, {counts['no movement']} not seen to move, "
          f"{counts['no face']} without a face "
          f"(mode {args.mode}) -> {args.out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``kiosk liveness`` on the ``kiosk`` command's subparsers."""
    p = subparsers.add_parser(
        "liveness",
        help="score recorded attempts for liveness (is it a live face or a photo?)",
        description=(
            "Check recorded attempts the way the door does. Every folder under ROOT that holds images is one "
            "attempt, its images (in natural file-name order: frame_2 before frame_10) the consecutive frames. "
            "Writes one CSV row per attempt: the texture score (the photo-vs-live CNNs, mean logit; higher for live "
            "faces), how often the face was seen to move, frames with a face, and the decision at the shipped "
            "threshold (live, spoof, or in mode both 'no movement': a face that never moved is not taken as live)."
        ),
    )
    p.add_argument("root", type=Path, metavar="ROOT", help="folder of attempt folders, e.g. ROOT/<attempt>/<frame>.jpg")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.csv", help="where to write the CSV")
    p.add_argument("--mode", choices=["texture", "both"], default="both",
                   help="texture: the CNNs only; both: the CNNs' verdict once the face has moved, as liveness.mode = \"both\" (default)")
    p.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help="folder with liveness.tflite and liveness.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_liveness)
    return p
