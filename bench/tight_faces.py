"""Faces that fill the photo: how often each pipeline finds no face in ID-photo-like crops.

People enrol from the photos they have: ID photos, avatars, phone photos cropped to the face. This
benchmark makes such a set from LFW (one photo per person, people drawn with a fixed seed): each photo
is cropped to a square around the face, its side 0.8, 0.9 or 1.0 times YuNet's face box (a box that
runs from the brows to the chin, so 0.8 cuts into the face), resized to 200x200; a grayscale copy of
the 0.9 set stands for scanned or black-and-white photos. Every installed pipeline then runs on every
crop as it runs on any photo, and the share of crops where it finds no face (failure to acquire) is
reported. YuNet defines the crops, so its own figure is a ceiling, not a fair contest.

  python -m bench.tight_faces                   # 500 people; rewrites the table in docs/benchmarks.md
  python -m bench.tight_faces --people 50 --no-write
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from bench.pipelines import LABELS, PIPELINES, embedder, missing
from bench.speed import ROOT
from kiosk.encoder import DEFAULT_MODEL_DIR
from kiosk.images import read_image

SCALES = (0.8, 0.9, 1.0)
SIDE = 200
MARKER = "tight-faces"


def tight_crops(lfw: Path, people: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """The crop sets by name ("0.8x", "0.9x", "1.0x", "0.9x gray"), one crop per person YuNet finds."""
    from kiosk.training.teacher import Teacher

    folders = sorted(p for p in lfw.iterdir() if p.is_dir())
    chosen = np.random.default_rng(seed).choice(len(folders), min(people, len(folders)), replace=False)
    teacher = Teacher(score_threshold=0.6)
    sets: dict[str, list[np.ndarray]] = {f"{s:.1f}x": [] for s in SCALES}
    sets["0.9x gray"] = []
    for index in tqdm(sorted(chosen), desc="cropping", unit="person"):
        image = read_image(sorted(folders[index].glob("*.jpg"))[0])
        faces = teacher.detect(image)
        if not faces:
            continue
        x, y, w, h = faces[0].box
        cx, cy = x + w / 2, y + h / 2
        for scale in SCALES:
            half = max(w, h) * scale / 2
            top, left = int(round(max(0, cy - half))), int(round(max(0, cx - half)))
            crop = cv2.resize(image[top:int(round(cy + half)), left:int(round(cx + half))], (SIDE, SIDE))
            sets[f"{scale:.1f}x"].append(crop)
            if scale == 0.9:
                sets["0.9x gray"].append(cv2.cvtColor(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR))
    return sets


def failure_to_acquire(sets: dict[str, list[np.ndarray]], models: Path) -> dict[str, dict[str, float]]:
    """Per installed pipeline, per set: the share of crops with no face found."""
    results = {}
    for name in PIPELINES:
        why = missing(name, models)
        if why:
            print(f"skipped {name}: {why}")
            continue
        embed = embedder(name, models, threads=1)
        results[name] = {label: float(np.mean([embed(crop) is None for crop in crops]))
                         for label, crops in tqdm(sets.items(), desc=name, unit="set")}
    return results


def table(sets: dict[str, list[np.ndarray]], results: dict[str, dict[str, float]]) -> str:
    labels = list(sets)
    lines = ["| pipeline | " + " | ".join(f"{label} ({len(sets[label])})" for label in labels) + " |",
             "|---|" + "---|" * len(labels)]
    for name, rates in results.items():
        lines.append(f"| {LABELS[name]} | " + " | ".join(f"{100 * rates[label]:.1f}%" for label in labels) + " |")
    return "\n".join(lines)


def write(markdown: str, path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    block = f"<!-- {MARKER} -->\n{markdown}\n<!-- /{MARKER} -->"
    pattern = re.compile(rf"<!-- {MARKER} -->.*?<!-- /{MARKER} -->", re.S)
    path.write_text(pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n",
                    encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tight_faces", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="folder holding lfw/")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help="face-kiosk's model folder")
    parser.add_argument("--people", type=int, default=500, help="people (one photo each) in the set (default 500)")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    sets = tight_crops(args.data / "lfw", args.people)
    markdown = ("## Faces that fill the photo\n\nFailure to acquire on faces that fill the photo (LFW, one photo per person, cropped to 0.8/0.9/1.0 x "
                "YuNet's face box, 200x200; `python -m bench.tight_faces`). YuNet defines the crops: its figure is a "
                "ceiling.\n\n" + table(sets, failure_to_acquire(sets, args.models)))
    print(markdown)
    if not args.no_write:
        write(markdown, ROOT / "docs" / "benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
