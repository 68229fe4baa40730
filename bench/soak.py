"""Soak: run the real door loop on replayed frames at full speed and watch for leaks.

Plays the demo scene (owner, stranger, empty porch) over and over through
``Door.step`` (as ``kiosk run`` does, liveness on) with simulated pins and a clock that advances one
frame period per frame, and samples every ``--every`` seconds: frames
processed, decisions, resident memory and open file descriptors. At the end it
checks that memory and descriptors did not grow (beyond a small allowance
after warm-up) and exits 1 if they did.

    python -m bench.soak --minutes 30 --json bench/results/soak-30min.json --plot docs/soak.png   # the full run
    python -m bench.soak --minutes 1         # the CI-sized run
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def soak(minutes: float, every: float, out=print) -> dict:
    from kiosk import assemble
    from kiosk.camera import PlaylistCamera, ReconnectingCamera
    from kiosk.clock import FakeClock
    from kiosk.config import Config
    from kiosk.demo import demo_data
    from kiosk.enroll import enroll_from_images

    data = demo_data()
    manifest = json.loads((data / "demo.json").read_text())
    files = [data / f for segment in manifest["segments"] for f in segment["frames"]]
    clock = FakeClock()
    samples = []
    with tempfile.TemporaryDirectory(prefix="kiosk-soak-") as state:
        config = Config()
        config.storage.state_dir = state
        # The demo scene is made of photos, which the liveness check rightly refuses (spoof events); without
        # lockout those refusals keep the decision, event log and liveness code busy for the whole soak.
        config.decision.max_denied = 1_000_000
        config.gpio.pin_factory = "mock"
        pipeline = assemble.pipeline(config)
        gallery = assemble.gallery(config, clock=clock)
        enroll_from_images("owner", [data / p for p in manifest["enrol"]["images"]], pipeline, gallery)
        camera = ReconnectingCamera(lambda: PlaylistCamera(files, on_frame=lambda: clock.advance(1 / manifest["fps"]), loop=True), clock)
        door = assemble.door(config, face_pipeline=pipeline, door_gallery=gallery, door_camera=camera, clock=clock)
        decisions = 0
        start = next_sample = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    sample = {"seconds": round(now - start, 1), "frames": door.frames, "decisions": decisions,
                              "rss_mb": round(rss_mb(), 1), "open_fds": open_fds()}
                    samples.append(sample)
                    out(f"{sample['seconds']:7.1f} s  {sample['frames']:7d} frames  {sample['decisions']:5d} decisions  "
                        f"RSS {sample['rss_mb']:6.1f} MB  {sample['open_fds']:3d} open fds")
                    next_sample += every
                    if now - start >= minutes * 60:
                        break
                report = door.step()
                decisions += report.event is not None
        finally:
            door.close()
            gallery.close()
    # Warm-up: the first full pass over the scene decodes (and caches) every frame once.
    warm = next((x for x in samples if x["frames"] >= len(files)), samples[-1])
    last = samples[-1]
    growth = {"rss_mb": last["rss_mb"] - warm["rss_mb"], "open_fds": last["open_fds"] - warm["open_fds"]}
    ok = growth["rss_mb"] <= 10 and growth["open_fds"] <= 0
    out(f"after warm-up: RSS {growth['rss_mb']:+.1f} MB, open fds {growth['open_fds']:+d} -> {'ok' if ok else 'GROWING'}")
    return {"samples": samples, "growth": growth, "ok": ok}


def plot(result: dict, path: Path) -> None:
    """Resident memory and open descriptors over the run, as a PNG (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    minutes = [s["seconds"] / 60 for s in samples]
    figure, (memory, files) = plt.subplots(2, 1, figsize=(7, 4.5), sharex=True)
    memory.plot(minutes, [s["rss_mb"] for s in samples], color="tab:blue")
    memory.set_ylabel("resident memory (MB)")
    memory.set_ylim(0, max(s["rss_mb"] for s in samples) * 1.3)
    files.plot(minutes, [s["open_fds"] for s in samples], color="tab:orange")
    files.set_ylabel("open file descriptors")
    files.set_ylim(0, max(s["open_fds"] for s in samples) + 5)
    files.set_xlabel("minutes")
    last = samples[-1]
    memory.set_title(f"door loop soak: {last['frames']} frames, {last['decisions']} decisions in {minutes[-1]:.0f} min")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--json", type=Path, help="also write the samples here")
    parser.add_argument("--plot", type=Path, help="also draw memory and open files over time into this PNG")
    args = parser.parse_args()
    result = soak(args.minutes, args.every)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result, args.plot)
    raise SystemExit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
