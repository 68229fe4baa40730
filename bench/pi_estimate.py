"""An estimate of the door's speed on a Raspberry Pi 4 and 5, made without one.

Method: the door's stages (:class:`kiosk.stage_bench.DoorStages`, on one
thread, on the demo's recorded frames) run in an arm64 Debian root
(``deploy/test-arm64.sh`` builds one) under QEMU emulating a Cortex-A72 (Pi 4)
or a Cortex-A76 (Pi 5), so XNNPACK and OpenCV pick the NEON kernels that
core would run (the A72 has no int8 dot-product instructions, the A76 has).
A QEMU plugin (``bench/qemu_icount.c``) counts the instructions each stage
executes. Time = instructions / (instructions per cycle x clock), with the
instructions per cycle taken as a range for the kind of code these stages
are (NEON convolution kernels, OpenCV's Haar cascade, Python glue): the A72
decodes 3 instructions a cycle and has one NEON multiply pipe, the A76
decodes 4 and has two; such code sustains about a third to two thirds of
that. The counts are exact; the spread of the estimate is the IPC range,
about a factor of 2, and it leaves out cache misses (a Pi 4 has 1 MB of L2
for 4 cores) and heat throttling. ``kiosk bench`` on a real Pi replaces it.

    sudo .venv/bin/python -m bench.pi_estimate --root /var/tmp/face-kiosk-arm64/bookworm   # needs qemu-user and gcc
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

MARK_MAGIC = 0x1C0DE5EED
"""lseek(-1, MARK_MAGIC, label) marks a point for the plugin (see bench/qemu_icount.c)."""
STAGES = ("capture", "detect", "align", "encode", "liveness", "match", "decide")
CORES = {
    # name: (QEMU cpu, clock GHz, (low, high) instructions per cycle, MIDR part, /proc/cpuinfo features)
    "Pi 4 (Cortex-A72, 1.8 GHz)": ("cortex-a72", 1.8, (1.0, 2.0), "0xd08", "fp asimd evtstrm crc32 cpuid"),
    "Pi 5 (Cortex-A76, 2.4 GHz)": ("cortex-a76", 2.4, (1.3, 2.7), "0xd0b",
                                   "fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"),
}
PLUGIN_SOURCE = Path(__file__).resolve().with_name("qemu_icount.c")


def mark(label: int) -> None:
    """Tell the instruction-counting plugin where this point is; a harmless failing call without it."""
    try:
        os.lseek(-1, MARK_MAGIC, label)
    except OSError:
        pass


def marked(label: int, function: Callable) -> Callable:
    """``function`` with a mark before (2 x label) and after (2 x label + 1) each call."""
    def call(*args, **kwargs):
        mark(2 * label)
        try:
            return function(*args, **kwargs)
        finally:
            mark(2 * label + 1)
    return call


def guest(frames: int, warmup: int) -> None:
    """In the emulated root: the door's stages on the recorded frames, each call marked (one thread)."""
    import cv2

    from kiosk import assemble, stage_bench

    cv2.setNumThreads(1)
    stages = stage_bench.DoorStages(assemble.default_config(), num_threads=1)
    camera = stage_bench.recorded_scene()
    for _ in range(warmup):
        stages.run(camera.read(), time.monotonic())
    stages.tracker.find = marked(STAGES.index("detect"), stages.tracker.find)
    stages.pipeline.encoder_input = marked(STAGES.index("align"), stages.pipeline.encoder_input)
    stages.pipeline.encoder.embed_with_strength = marked(STAGES.index("encode"), stages.pipeline.encoder.embed_with_strength)
    if stages.liveness is not None:
        stages.liveness.check = marked(STAGES.index("liveness"), stages.liveness.check)
    stage_bench.match = marked(STAGES.index("match"), stage_bench.match)
    stages.decision.observe = marked(STAGES.index("decide"), stages.decision.observe)
    read = marked(STAGES.index("capture"), camera.read)
    for _ in range(frames):
        stages.run(read(), time.monotonic())


def stage_counts(plugin_output: str) -> dict[str, list[int]]:
    """Instructions of each marked call, per stage, from the plugin's ``icount LABEL COUNT`` lines."""
    counts: dict[str, list[int]] = {}
    begun: dict[int, int] = {}
    for label, value in re.findall(r"^icount (\d+) (\d+)$", plugin_output, re.MULTILINE):
        label, value = int(label), int(value)
        stage = label // 2
        if label % 2 == 0:
            begun[stage] = value
        elif stage in begun:
            counts.setdefault(STAGES[stage], []).append(value - begun.pop(stage))
    return counts


def estimate_ms(instructions: float, clock_ghz: float, ipc: tuple[float, float]) -> tuple[float, float]:
    """(fastest, slowest) milliseconds for ``instructions`` at ``clock_ghz`` and the IPC range."""
    return instructions / (ipc[1] * clock_ghz * 1e6), instructions / (ipc[0] * clock_ghz * 1e6)


def cpuinfo(part: str, features: str, cores: int) -> str:
    """/proc/cpuinfo as a Pi's kernel writes it: XNNPACK's cpuinfo library picks kernels by the core it names
    (and crashes on the x86 file of the machine running the emulator)."""
    return "".join(f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
                   f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 1\n\n" for i in range(cores))


@contextmanager
def emulator_in(root: Path) -> Iterator[Path]:
    """A folder in ``root`` holding this machine's ``qemu-aarch64`` and the plugin, runnable there by ``chroot``.

    The plugin needs the dynamically linked QEMU (package qemu-user; qemu-user-static cannot load plugins),
    so its x86 libraries are bind-mounted into the root for the run, with ``/sys``: without it XNNPACK's
    cpuinfo library fails and TFLite falls back to its slower built-in kernels, which a Pi does not run.
    Everything is removed afterwards.
    """
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        raise SystemExit("qemu-aarch64 not found: apt-get install qemu-user (the static build cannot load the plugin)")
    work = root / "tmp" / "pi-estimate"
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(qemu, work / "qemu-aarch64")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(work / "qemu_icount.so"), str(PLUGIN_SOURCE)], check=True)
    made, mounted = [], []
    try:
        for host, inside in ((Path("/usr/lib/x86_64-linux-gnu"), root / "usr/lib/x86_64-linux-gnu"),
                             (Path("/lib64").resolve(), root / "lib64"), (Path("/sys"), root / "sys")):
            if not inside.exists():
                inside.mkdir()
                made.append(inside)
            subprocess.run(["mount", "--bind", str(host), str(inside)], check=True)
            mounted.append(inside)
        yield work
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", str(path)], check=False)
        for path in reversed(made):
            path.rmdir()
        shutil.rmtree(work)


def count_in_root(root: Path, work: Path, core: str, frames: int, warmup: int) -> dict[str, list[int]]:
    """Run :func:`guest` in the arm64 root under the emulated ``core`` with the plugin; the per-stage counts."""
    cpu, _, _, part, features = CORES[core]
    fake = root / "proc" / "cpuinfo"
    if os.path.ismount(root / "proc"):
        raise SystemExit(f"{root}/proc is mounted (deploy/test-arm64.sh is running there?): run this when it is done")
    fake.write_text(cpuinfo(part, features, os.cpu_count() or 1))
    inside = Path("/") / work.relative_to(root)
    try:
        done = subprocess.run([shutil.which("chroot") or "/usr/sbin/chroot", str(root), str(inside / "qemu-aarch64"), "-cpu", cpu, "-plugin", str(inside / "qemu_icount.so"),
                               "/opt/face-kiosk/.venv/bin/python", "-m", "bench.pi_estimate", "--guest", "--frames", str(frames),
                               "--warmup", str(warmup)],
                              env={"PYTHONPATH": "/opt/face-kiosk", "PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"},
                              capture_output=True, text=True, check=False)
    finally:
        fake.unlink()
    if done.returncode != 0:
        raise SystemExit(f"the emulated run failed ({cpu}, exit status {done.returncode}): {done.stderr.strip()[-2000:]}")
    return stage_counts(done.stderr)


def report(counts_by_core: dict[str, dict[str, list[int]]]) -> str:
    """A table: median instructions per call, and the estimated milliseconds per stage and per frame with a face."""
    lines = []
    for core, counts in counts_by_core.items():
        _, clock, ipc, _, _ = CORES[core]
        lines.append(f"{core}, IPC {ipc[0]}-{ipc[1]}:")
        lines.append(f"  {'stage':9s} {'M instr.':>9s} {'ms (range)':>14s}")
        total = 0.0
        for stage in STAGES:
            if stage in counts:
                median = float(np.median(counts[stage]))
                fast, slow = estimate_ms(median, clock, ipc)
                lines.append(f"  {stage:9s} {median / 1e6:9.1f} {fast:6.1f} - {slow:5.1f}")
                total += median if stage != "capture" else 0
        fast, slow = estimate_ms(total, clock, ipc)
        lines.append(f"  frame with a face, without capture: {total / 1e6:.0f} M instructions, {fast:.0f}-{slow:.0f} ms, "
                     f"{1000 / slow:.0f}-{1000 / fast:.0f} frames per second on one core")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pi_estimate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="an arm64 Debian root with face-kiosk installed (deploy/test-arm64.sh)")
    parser.add_argument("--frames", type=int, default=40, help="recorded frames to count (default 40, the whole scene)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.guest:
        guest(args.frames, args.warmup)
        return 0
    if args.root is None:
        parser.error("--root is required")
    with emulator_in(args.root) as work:
        counts = {core: count_in_root(args.root, work, core, args.frames, args.warmup) for core in CORES}
    print(report(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
