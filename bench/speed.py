"""Per-frame speed of face-kiosk beside its peers, on the same 640x480 camera frames, in one run.

Each pipeline does what it would do on a door camera frame: find the faces
(its own detector, on the frame as it would run it) and embed the largest
(see ``bench/pipelines.py``). face-kiosk runs the door's per-frame work: Haar
on the frame downscaled to 320 px wide, tracked (only a window around the
last face is searched, with a full scan every 5th frame: for faces at least
0.7x the one in use while the door uses one), the int8 encoder,
matching against a 50-template gallery and the decision step
(:class:`kiosk.stage_bench.DoorStages`, which ``kiosk bench`` times on a Pi,
here with the liveness check off: the peers have none).

Each pipeline runs in its own process, on 1 thread and on all cores, so the
peak resident memory is that of a process running only that pipeline. Frames
are read before each timed call, not held in memory. The runs are repeated in
turns (:data:`ROUNDS`) and their frames pooled. Prints median, p90 and mean
milliseconds per frame, the ratios to face-kiosk (of medians and of means), the
CPU's int8 features, and face-kiosk's median by stage with what a frame 3x
faster than YuNet + SFace's would leave its encoder. ``python -m bench`` runs this as its speed section; alone:

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
"""pipeline -> threads -> median_ms, p90_ms, mean_ms, frames_with_face, frames, rounds, peak_rss_mb."""


def read_frame(path: Path) -> np.ndarray:
    """One camera frame at 640x480."""
    import cv2

    from kiosk.images import read_image

    frame = read_image(path)
    return frame if frame.shape[:2] == (480, 640) else cv2.resize(frame, (640, 480))


def camera_frames(folder: Path) -> list[Path]:
    """The frames under ``folder`` in the order the camera took them: folder by folder, each in
    :func:`kiosk.camera.frame_order` (NUAA's frame numbers are not zero-padded)."""
    from kiosk.camera import frame_order
    from kiosk.images import image_files

    return sorted(image_files(folder), key=lambda path: (path.parent, frame_order(path)))


def per_frame(name: str, models: Path, threads: int) -> Callable[[np.ndarray], tuple[bool, dict[str, float]]]:
    """A callable(frame) -> (whether a face was embedded, milliseconds of each stage: face-kiosk's only),
    doing the pipeline's full per-frame work."""
    if name != "face-kiosk":
        embed = embedder(name, models, threads)
        return lambda frame: (embed(frame) is not None, {})
    import cv2

    from kiosk import assemble
    from kiosk.clock import FakeClock
    from kiosk.stage_bench import DoorStages

    cv2.setNumThreads(threads)
    config = assemble.default_config(models)
    config.liveness.mode = "off"  # the peers have no liveness check
    stages, clock = DoorStages(config, num_threads=threads), FakeClock()

    def run(frame: np.ndarray) -> tuple[bool, dict[str, float]]:
        clock.advance(1 / 15)
        report = stages.run(frame, clock())
        return report.faces > 0, report.timings

    return run


def measure(name: str, files: list[Path], models: Path, threads: int) -> dict:
    """Time pipeline ``name`` on ``files`` in this process (after 3 warm-up frames)."""
    run = per_frame(name, models, threads)
    for path in files[:3]:
        run(read_frame(path))
    times, found, stages = [], 0, {}
    for path in files:
        frame = read_frame(path)
        start = time.perf_counter()
        face, timings = run(frame)
        times.append(1000 * (time.perf_counter() - start))
        found += face
        for stage, ms in timings.items():
            stages.setdefault(stage, []).append(ms)
    return summary(times) | {"frames_with_face": found, "frames": len(files), "peak_rss_mb": peak_rss_mb(), "times_ms": times,
                             "stages_ms": stages}


def summary(times: list[float]) -> dict[str, float]:
    """Median, 90th percentile and mean of per-frame milliseconds."""
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "mean_ms": float(np.mean(times))}


def peak_rss_mb() -> float:
    """Peak resident memory of this process since it started its program.

    Linux's ``VmHWM``, not ``ru_maxrss``: the latter survives fork and exec, so a child
    would report its parent's peak whenever that was larger.
    """
    status = Path("/proc/self/status")
    if status.exists():
        return next(int(line.split()[1]) / 1024 for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)  # bytes on macOS


ROUNDS = 3
"""Runs of each pipeline, taken in turns (all pipelines once, then again), their frames pooled: a shared or
throttling machine slows whichever pipeline runs at that moment, and turns spread that over all of them."""


def measure_all(names: list[str], frames: Path, count: int, models: Path,
                rounds: int = ROUNDS) -> tuple[Results, dict[str, str]]:
    """Each pipeline in its own process at 1 thread and all cores, ``rounds`` times in turns; returns results
    (pooled over the rounds) and notes on failures."""
    thread_counts = sorted({1, os.cpu_count() or 1})
    runs: dict[str, dict[int, list[dict]]] = {}
    failed: dict[str, str] = {}
    plan = [(n, t) for _ in range(rounds) for n in names for t in thread_counts]
    for name, threads in tqdm(plan, desc="speed", unit="run"):
        if name in failed:
            continue
        done = subprocess.run([sys.executable, "-m", "bench.speed", "--child", name, "--threads", str(threads),
                               "--frames", str(Path(frames).resolve()), "--count", str(count), "--models", str(Path(models).resolve())],
                              capture_output=True, text=True, check=False, cwd=ROOT, env=os.environ | {"OMP_NUM_THREADS": str(threads)})
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            failed[name] = f"failed: {lines[-1] if lines else f'exit status {done.returncode}'}"
            runs.pop(name, None)
            continue
        runs.setdefault(name, {}).setdefault(threads, []).append(json.loads(done.stdout.strip().splitlines()[-1]))
    results: Results = {
        name: {threads: summary([ms for run in done for ms in run["times_ms"]])
               | {"frames_with_face": min(run["frames_with_face"] for run in done), "frames": done[0]["frames"],
                  "rounds": len(done), "peak_rss_mb": max(run["peak_rss_mb"] for run in done),
                  "stage_median_ms": {stage: float(np.median([ms for run in done for ms in run["stages_ms"][stage]]))
                                      for stage in done[0]["stages_ms"]}}
               for threads, done in by_threads.items()}
        for name, by_threads in runs.items()}
    return results, failed


def ratio(results: Results, name: str, threads: int, statistic: str = "median_ms") -> float:
    """Median (or ``statistic``) time per frame of ``name`` over face-kiosk's at the same thread count (nan without
    face-kiosk)."""
    base = results.get("face-kiosk", {}).get(threads)
    return results[name][threads][statistic] / base[statistic] if base else float("nan")


def table(results: Results) -> str:
    """A plain-text table for the terminal."""
    lines = [f"{'pipeline':32s} {'threads':>7s} {'median ms':>10s} {'p90 ms':>8s} {'mean ms':>8s} {'faces':>8s} "
             f"{'peak RSS MB':>12s} {'x face-kiosk':>13s} {'(means)':>8s}"]
    for name, by_threads in results.items():
        for threads, r in by_threads.items():
            lines.append(f"{LABELS[name]:32s} {threads:7d} {r['median_ms']:10.1f} {r['p90_ms']:8.1f} {r['mean_ms']:8.1f} "
                         f"{r['frames_with_face']:4d}/{r['frames']:<3d} {r['peak_rss_mb']:12.0f} {ratio(results, name, threads):13.2f} "
                         f"{ratio(results, name, threads, 'mean_ms'):8.2f}")
    return "\n".join(lines)


TARGET_LEAD = 3.0
"""face-kiosk's target: a frame this many times faster than YuNet + SFace's (issue 13), on any x86 CPU."""


def encoder_budget(results: Results, peer: str = "yunet-sface", lead: float = TARGET_LEAD) -> list[str]:
    """Where face-kiosk's median frame goes, stage by stage, and what the encoder may take for ``lead`` times
    ``peer``'s median frame: that frame time less the other stages' medians (a tracked frame's work)."""
    lines = []
    for threads, run in results.get("face-kiosk", {}).items():
        stages = run.get("stage_median_ms", {})
        if not stages:
            continue
        split = ", ".join(f"{stage} {ms:.1f}" for stage, ms in stages.items())
        line = f"face-kiosk, {threads} thread{'s' * (threads > 1)}, median ms by stage: {split}"
        if threads in results.get(peer, {}):
            frame = results[peer][threads]["median_ms"] / lead
            rest = sum(ms for stage, ms in stages.items() if stage != "encode")
            line += (f"; {lead:g}x {LABELS[peer]} ({frame:.1f} ms a frame) leaves the encoder {frame - rest:.1f} ms "
                     f"(it took {stages.get('encode', float('nan')):.1f})")
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=Path, default=Path("../shared/data/nuaa_train/live"), help="folder of camera frames")
    parser.add_argument("--count", type=int, default=100, help="frames per run (consecutive, as a camera delivers them)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help="face-kiosk's model folder")
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"runs of each pipeline, in turns (default {ROUNDS})")
    parser.add_argument("--child", choices=PIPELINES, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, camera_frames(args.frames)[:args.count], args.models, args.threads)))
        return
    skipped = {name: note for name in args.pipelines if (note := missing(name, args.models))}
    results, failed = measure_all([n for n in args.pipelines if n not in skipped], args.frames, args.count, args.models,
                                  args.rounds)
    for name, note in (skipped | failed).items():
        print(f"{name}: skipped ({note})")
    from bench.report import cpu_int8_features, cpu_model

    print(f"\n{args.count} frames of {args.frames} (640x480), {args.rounds} rounds, {time.strftime('%Y-%m-%d')}; "
          f"CPU {cpu_model()}, {os.cpu_count()} cores, int8 features: {cpu_int8_features()}")
    print(table(results))
    print("\n".join(encoder_budget(results)))


if __name__ == "__main__":
    main()
