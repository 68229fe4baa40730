"""Build the frames of ``kiosk demo`` from a few LFW photos (run once; the output is committed).

Each photo is cut to head and shoulders, blended with a soft oval onto a
synthetic porch at 640x480, and moved and scaled over the frames as if the
person walked up to the camera. Output: ``kiosk/demo_data/`` with the frames,
the enrolment photos and ``demo.json`` (the playlist, the expected outcome
of each segment and the credits).

    python -m bench.make_demo_frames --lfw ../shared/data/lfw
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np

OUT = Path(__file__).resolve().parent.parent / "kiosk" / "demo_data"
WIDTH, HEIGHT, FPS = 640, 480, 15
ENROLLED = "Colin_Powell"
ENROL_PHOTOS = [1, 2, 3]
STRANGER = "Hugo_Chavez"


def porch(rng: np.random.Generator) -> np.ndarray:
    """A plain synthetic background: wall, door frame, a little sensor noise."""
    y = np.linspace(0, 1, HEIGHT)[:, None, None]
    wall = (np.array([150, 170, 185]) * (0.8 + 0.25 * y)).astype(np.float32) * np.ones((HEIGHT, WIDTH, 3), np.float32)
    cv2.rectangle(wall, (40, 20), (250, 480), (90, 110, 140), -1)
    cv2.rectangle(wall, (52, 32), (238, 480), (70, 90, 120), 6)
    cv2.circle(wall, (220, 270), 8, (60, 170, 200), -1)
    cv2.rectangle(wall, (470, 140), (600, 260), (200, 210, 215), -1)
    wall += rng.normal(0, 3, wall.shape)
    return np.clip(wall, 0, 255).astype(np.uint8)


def paste(background: np.ndarray, photo: np.ndarray, center: tuple[float, float], side: float) -> np.ndarray:
    """Blend the head-and-shoulders cut of an LFW photo onto the background."""
    head = photo[25:235, 25:225]  # the face sits at the centre of LFW's 250x250 images
    h, w = head.shape[:2]
    scale = side / w
    resized = cv2.resize(head, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
    rh, rw = resized.shape[:2]
    mask = np.zeros((rh, rw), np.float32)
    cv2.ellipse(mask, (rw // 2, rh // 2), (int(rw * 0.46), int(rh * 0.49)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, rw * 0.04))[..., None]
    x0, y0 = int(center[0] - rw / 2), int(center[1] - rh / 2)
    frame = background.copy().astype(np.float32)
    xs, ys = slice(max(0, x0), min(WIDTH, x0 + rw)), slice(max(0, y0), min(HEIGHT, y0 + rh))
    sub = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
    frame[ys, xs] = frame[ys, xs] * (1 - mask[sub]) + resized[sub] * mask[sub]
    return frame.astype(np.uint8)


def walk(background: np.ndarray, photo: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Frames of a person approaching: growing, drifting towards the centre, a little sway."""
    frames = []
    for i in range(count):
        t = i / max(1, count - 1)
        side = 190 + 130 * t
        center = (400 - 70 * t + 6 * np.sin(3 * t * np.pi), 250 - 10 * t)
        frame = paste(background, photo, center, side)
        frames.append(np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "frames").mkdir(parents=True)
    (OUT / "enrol").mkdir()
    background = porch(rng)

    def lfw(name: str, number: int) -> Path:
        return args.lfw / name / f"{name}_{number:04d}.jpg"

    enrol = []
    for number in ENROL_PHOTOS:
        target = OUT / "enrol" / lfw(ENROLLED, number).name
        shutil.copy(lfw(ENROLLED, number), target)
        target.chmod(0o644)
        enrol.append(f"enrol/{target.name}")

    def save(frames: list[np.ndarray], prefix: str) -> list[str]:
        names = []
        for i, frame in enumerate(frames):
            name = f"frames/{prefix}_{i:02d}.jpg"
            cv2.imwrite(str(OUT / name), frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
            names.append(name)
        return names

    empty = save([background], "empty")
    segments = [
        {"name": f"{ENROLLED.replace('_', ' ')} walks up", "frames": save(walk(background, cv2.imread(str(lfw(ENROLLED, 5))), 12, rng), "a1"), "expect": "granted"},
        {"name": "nobody at the door (6 s)", "frames": empty * (6 * FPS), "expect": "locked"},
        {"name": f"a stranger ({STRANGER.replace('_', ' ')}) walks up", "frames": save(walk(background, cv2.imread(str(lfw(STRANGER, 5))), 15, rng), "stranger"), "expect": "no unlock"},
        {"name": "nobody at the door (3 s)", "frames": empty * (3 * FPS), "expect": "locked"},
        {"name": f"{ENROLLED.replace('_', ' ')} comes back", "frames": save(walk(background, cv2.imread(str(lfw(ENROLLED, 8))), 12, rng), "a2"), "expect": "granted"},
        {"name": "nobody at the door (6 s)", "frames": empty * (6 * FPS), "expect": "locked"},
    ]
    manifest = {
        "fps": FPS,
        "enrol": {"name": ENROLLED.replace("_", " "), "images": enrol},
        "segments": segments,
        "credits": (
            "Photos from Labeled Faces in the Wild, deep-funneled (Huang, Ramesh, Berg, Learned-Miller, UMass Amherst, 2007), "
            "research benchmark of news photos of public figures; composed onto a synthetic background by "
            "bench/make_demo_frames.py."
        ),
    }
    (OUT / "demo.json").write_text(json.dumps(manifest, indent=1))
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
