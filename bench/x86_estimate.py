"""How face-kiosk's lead over its peers holds on an x86 CPU with AVX2 only (no AVX-512, no int8 dot product).

The speed section of ``python -m bench`` times the pipelines on the machine it runs on; where that machine
has AVX-512 VNNI or AMX, XNNPACK's int8 kernels use them, and face-kiosk's int8 encoder gains more than the
peers' float networks do. Without such a machine, this counts instead: each pipeline's per-frame work
(:func:`bench.speed.per_frame`, the same frames, one thread) runs under ``qemu-x86_64 -cpu Haswell``, so
XNNPACK and OpenCV pick their AVX2/FMA kernels, and a QEMU plugin (``bench/qemu_icount.c``) counts the
instructions of every frame. The counts are exact; time per frame is proportional to them only as far as
the pipelines' instructions per cycle are alike (all are dominated by SIMD convolution and Haar/pyramid
loops), so the ratio of counts is an estimate of the speed ratio on such a CPU, not a timing. A real
AVX2-only machine replaces it: ``python -m bench`` there (its speed section times them).

    python -m bench.x86_estimate                      # 20 NUAA frames per pipeline, a few minutes; needs qemu-user and gcc
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.pi_estimate import PLUGIN_SOURCE, mark
from bench.speed import ROOT, read_frame

CPU = "Haswell"
"""QEMU's model of an x86 CPU with AVX2 and FMA and no AVX-512 (QEMU 7.2+ emulates AVX2)."""
PIPELINES = ("face-kiosk", "yunet-sface")
"""dlib is left out: at about 25x face-kiosk's time, its emulated run would take most of an hour."""
DEFAULT_FRAMES = ROOT.parent / "shared" / "data" / "nuaa_train" / "live"


def guest(name: str, files: list[Path], models: Path) -> None:
    """In the emulator: the pipeline's per-frame work on each frame, marked (label 0 before, 1 after)."""
    from bench.speed import per_frame

    run = per_frame(name, models, threads=1)
    for path in files[:3]:
        run(read_frame(path))
    for path in files:
        frame = read_frame(path)
        mark(0)
        run(frame)
        mark(1)


def frame_counts(plugin_output: str) -> list[int]:
    """Instructions of each marked frame, from the plugin's ``icount LABEL COUNT`` lines."""
    counts, begun = [], None
    for label, value in re.findall(r"^icount (\d+) (\d+)$", plugin_output, re.MULTILINE):
        if label == "0":
            begun = int(value)
        elif label == "1" and begun is not None:
            counts.append(int(value) - begun)
            begun = None
    return counts


def count(name: str, frames: Path, number: int, models: Path, plugin: Path) -> list[int]:
    """Run :func:`guest` for ``name`` under the emulated CPU; the instructions of each frame."""
    done = subprocess.run([shutil.which("qemu-x86_64") or "qemu-x86_64", "-cpu", CPU, "-plugin", str(plugin), sys.executable,
                           "-m", "bench.x86_estimate", "--guest", name, "--frames", str(frames), "--count", str(number),
                           "--models", str(models)], capture_output=True, text=True, cwd=ROOT, check=False)
    counts = frame_counts(done.stderr)
    if done.returncode != 0 or not counts:
        raise SystemExit(f"the emulated {name} run failed (exit status {done.returncode}): {done.stderr.strip()[-2000:]}")
    return counts


def main(argv: list[str] | None = None) -> int:
    from kiosk.encoder import DEFAULT_MODEL_DIR

    parser = argparse.ArgumentParser(prog="python -m bench.x86_estimate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=Path, default=DEFAULT_FRAMES, help="folder of camera frames (default: NUAA live)")
    parser.add_argument("--count", type=int, default=20, help="frames per pipeline (default 20)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--guest", choices=PIPELINES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    files = sorted(Path(args.frames).rglob("*.jpg"))[:: max(1, len(list(Path(args.frames).rglob("*.jpg"))) // args.count)][:args.count]
    if args.guest:
        guest(args.guest, files, args.models)
        return 0
    if shutil.which("qemu-x86_64") is None or shutil.which("gcc") is None:
        raise SystemExit("needs qemu-x86_64 (apt-get install qemu-user) and gcc")
    with tempfile.TemporaryDirectory() as work:
        plugin = Path(work) / "qemu_icount.so"
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(plugin), str(PLUGIN_SOURCE)], check=True)
        print(f"Instructions per 640x480 frame on an emulated {CPU} (AVX2, FMA; no AVX-512, no VNNI), one thread, "
              f"median of {len(files)} frames:", flush=True)
        medians: dict[str, float] = {}
        for name in PIPELINES:
            medians[name] = float(np.median(count(name, Path(args.frames).resolve(), args.count, args.models.resolve(), plugin)))
            print(f"  {name:12s} {medians[name] / 1e6:8.1f} M  ({medians[name] / medians['face-kiosk']:.2f}x face-kiosk)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
