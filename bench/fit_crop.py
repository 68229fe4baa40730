"""Fit ``kiosk.face.CROP_GEOMETRY``: where the crop sits relative to a Haar box.

For a sample of training images, YuNet's five landmarks are expressed in units
of the Haar box (origin at its centre, unit = box width); a least-squares fit
of a scale and offset maps them onto SFace's 112x112 alignment template. The
crop built from that geometry puts the average face where SFace expects it.

    python -m bench.fit_crop --data ../shared/data/lfw --limit 1500
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kiosk.face import ALIGNED_TEMPLATE, ENCODER_SIZE, DetectorSettings, FaceFinder
from kiosk.images import read_image
from kiosk.training.teacher import Teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/lfw"))
    parser.add_argument("--limit", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = sorted(args.data.rglob("*.jpg"))
    random.Random(args.seed).shuffle(paths)
    finder = FaceFinder(DetectorSettings(rotations=()))
    teacher = Teacher()
    points = []
    for path in tqdm(paths[: args.limit], desc="landmarks"):
        image = read_image(path)
        face = finder.largest(image)
        yunet = teacher.detect(image)
        if face is None or not yunet:
            continue
        marks = yunet[0].landmarks
        if np.linalg.norm(marks.mean(0) - np.array(face.center)) > face.w / 2:
            continue  # the two detectors found different faces
        points.append((marks - np.array(face.center)) / face.w)
    normalised = np.stack(points)  # [N, 5, 2]
    target = ALIGNED_TEMPLATE - ENCODER_SIZE / 2
    # target = k * (P - d) = k * P - e, solved for k and e = k * d by least squares
    rows, rhs = [], []
    for sample in normalised:
        for (px, py), (tx, ty) in zip(sample, target):
            rows += [[px, -1.0, 0.0], [py, 0.0, -1.0]]
            rhs += [tx, ty]
    (k, ex, ey), *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    scale = ENCODER_SIZE / k
    print(f"{len(points)} faces; CropGeometry(dx={ex / k:.4f}, dy={ey / k:.4f}, scale={scale:.4f})")
    spread = normalised.std(0) * k
    print("landmark spread in crop pixels (std x, y):", np.round(spread, 1).tolist())


if __name__ == "__main__":
    main()
