"""Per-frame speed of face-kiosk beside its peers, on the same 640x480 camera frames, in one run.

Each pipeline does what it would do on a door camera frame: find the faces
(its own detector, on the frame as it would run it) and embed the largest
(see ``bench/pipelines.py``). face-kiosk runs the door's per-frame work: Haar
on the frame downscaled to 320 px wide, tracked (only a window around the
last face is searched, with a full scan every 5th frame), the int8 encoder,
matching against a 50-template gallery and the decision step
(:class:`kiosk.stage_bench.DoorStages`, which ``kiosk bench`` times on a Pi,
here with the liveness check off: the peers have none).

Each pipeline runs in its own process, on 1 thread and on all cores, so the
peak resident memory is that of a process running only that pipeline. Frames
are read before each timed call, not held in memory. Prints median and p90
milliseconds per frame and the ratios to face-kiosk. ``python -m bench`` runs
this as its speed section; alone:

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
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.pipelines import LABELS, PIPELINES, embedder, missing
from kiosk.encoder import DEFAULT_MODEL_DIR

ROOT = Path(__file__).resolve().parent.parent
Results = dict[str, dict[int, dict]]
"""pipeline -> threads -> median_ms, p90_ms, frames_with_face, frames, peak_rss_mb."""


def read_frame(path: Path) -> np.ndarray:
    """One camera frame at 640x480."""
    import cv2

    from kiosk.images import read_image

    frame = read_image(path)
    return frame if frame.shape[:2] == (480, 640) else cv2.resize(frame, (640, 480))


def per_frame(name: str, models: Path, threads: int) -> Callable[[np.ndarray], bool]:
    """A callable(frame) -> whether a face was embedded, doing the pipeline's full per-frame work."""
    if name != "face-kiosk":
        embed = embedder(name, models, threads)
        return lambda frame: embed(frame) is not None
    import cv2

    from kiosk import assemble
    from kiosk.clock import FakeClock
    from kiosk.stage_bench import DoorStages

    cv2.setNumThreads(threads)
    config = assemble.default_config(models)
    config.liveness.mode = "off"  # the peers have no liveness check
    stages, clock = DoorStages(config, num_threads=threads), FakeClock()

    def run(frame: np.ndarray) -> bool:
        clock.advance(1 / 15)
        return stages.run(frame, clock()).faces > 0

    return run


def measure(name: str, files: list[Path], models: Path, threads: int) -> dict:
    """Time pipeline ``name`` on ``files`` in this process (after 3 warm-up frames)."""
    run = per_frame(name, models, threads)
    for path in files[:3]:
        run(read_frame(path))
    times, found = [], 0
    for path in files:
        frame = read_frame(path)
        start = time.perf_counter()
        found += run(frame)
        times.append(1000 * (time.perf_counter() - start))
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "frames_with_face": found,
            "frames": len(files), "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """Peak resident memory of this process since it started its program.

    Linux's ``VmHWM``, not ``ru_maxrss``: the latter survives fork and exec, so a child
    would report its parent's peak whenever that was larger.
    """
    status = Path("/proc/self/status")
    if status.exists():
        return next(int(line.split()[1]) / 1024 for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)  # bytes on macOS


def measure_all(names: list[str], frames: Path, count: int, models: Path) -> tuple[Results, dict[str, str]]:
    """Each pipeline in its own process at 1 thread and all cores; returns results and notes on failures."""
    thread_counts = sorted({1, os.cpu_count() or 1})
    results: Results = {}
    failed: dict[str, str] = {}
    for name, threads in tqdm([(n, t) for n in names for t in thread_counts], desc="speed", unit="run"):
        if name in failed:
            continue
        done = subprocess.run([sys.executable, "-m", "bench.speed", "--child", name, "--threads", str(threads),
                               "--frames", str(Path(frames).resolve()), "--count", str(count), "--models", str(Path(models).resolve())],
                              capture_output=True, text=True, check=False, cwd=ROOT, env=os.environ | {"OMP_NUM_THREADS": str(threads)})
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            failed[name] = f"failed: {lines[-1] if lines else f'exit status {done.returncode}'}"
            results.pop(name, None)
            continue
        results.setdefault(name, {})[threads] = json.loads(done.stdout.strip().splitlines()[-1])
    return results, failed


def ratio(results: Results, name: str, threads: int) -> float:
    """Median time per frame of ``name`` over face-kiosk's at the same thread count (nan without face-kiosk)."""
    base = results.get("face-kiosk", {}).get(threads)
    return results[name][threads]["median_ms"] / base["median_ms"] if base else float("nan")


def table(results: Results) -> str:
    """A plain-text table for the terminal."""
    lines = [f"{'pipeline':32s} {'threads':>7s} {'median ms':>10s} {'p90 ms':>8s} {'faces':>8s} {'peak RSS MB':>12s} {'x face-kiosk':>13s}"]
    for name, by_threads in results.items():
        for threads, r in by_threads.items():
            lines.append(f"{LABELS[name]:32s} {threads:7d} {r['median_ms']:10.1f} {r['p90_ms']:8.1f} "
                         f"{r['frames_with_face']:4d}/{r['frames']:<3d} {r['peak_rss_mb']:12.0f} {ratio(results, name, threads):13.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=Path, default=Path("../shared/data/nuaa_train/live"), help="folder of camera frames")
    parser.add_argument("--count", type=int, default=100, help="frames per run (consecutive, as a camera delivers them)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help="face-kiosk's model folder")
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    parser.add_argument("--child", choices=PIPELINES, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from kiosk.images import image_files

    if args.child:
        print(json.dumps(measure(args.child, image_files(args.frames)[:args.count], args.models, args.threads)))
        return
    skipped = {name: note for name in args.pipelines if (note := missing(name, args.models))}
    results, failed = measure_all([n for n in args.pipelines if n not in skipped], args.frames, args.count, args.models)
    for name, note in (skipped | failed).items():
        print(f"{name}: skipped ({note})")
    print(f"\n{args.count} frames of {args.frames} (640x480), {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(table(results))


if __name__ == "__main__":
    main()
