"""What the door's neighbours cost it: per-frame time and memory with the web page open and MQTT connected.

Runs ``kiosk run``'s real loop (:class:`kiosk.service.DoorService`, the demo's recorded scene looping as the
camera, liveness on, mock pins, paced to ``camera.max_fps``) for the same number of frames in two set-ups, each
in a fresh process, alternating, ``--rounds`` times:

- ``bare``: the door alone (the local API socket, which ``kiosk run`` always serves, included);
- ``full``: plus the web admin page with a logged-in browser stand-in fetching the status page and its JSON every
  second, and the Home Assistant bridge connected to an MQTT broker (amqtt, in another process).

Each run has the environment ``deploy/kiosk.service`` gives the door (``MALLOC_ARENA_MAX=2``).

It prints the median and 90th-percentile time the door spent per frame (camera to relay, as ``--stats`` counts
it; other programs on the machine make this noisy), the CPU time of the loop thread per frame (steadier), and the
resident memory at the end, and the differences. Issue 15's budget: within 5% per frame, +40 MB.

    python -m bench.neighbours                 # 3 rounds of 450 frames (30 s at 15 fps) each
    python -m bench.neighbours --frames 150 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import numpy as np

from bench.soak import rss_mb

PASSWORD = "benchmark password"
SERVICE_ENVIRONMENT = {"MALLOC_ARENA_MAX": "2"}
"""The memory setting deploy/kiosk.service runs the door with (without it the neighbours' threads add ~40 MB)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def browse(base: str, stop: threading.Event) -> int:
    """A logged-in admin with the status page open: the page and its JSON every second. Returns the page loads."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    page = opener.open(f"{base}/login").read()
    token = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
    opener.open(f"{base}/login", data=urllib.parse.urlencode({"password": PASSWORD, "csrf": token}).encode()).read()
    loads = 0
    while not stop.wait(1.0):
        opener.open(f"{base}/").read()
        opener.open(f"{base}/status.json").read()
        loads += 2
    return loads


def run_door(mode: str, frames: int, broker_port: int | None) -> dict:
    """One run in this process: the door for ``frames`` frames, with or without its neighbours."""
    from kiosk import assemble
    from kiosk.api import ApiServer
    from kiosk.camera import PlaylistCamera, ReconnectingCamera
    from kiosk.config import Config
    from kiosk.control import DoorControl
    from kiosk.demo import demo_data
    from kiosk.enroll import enroll_from_images
    from kiosk.notify import SystemdNotifier
    from kiosk.service import DoorService, StopFlag

    data = demo_data()
    manifest = json.loads((data / "demo.json").read_text())
    files = [data / f for segment in manifest["segments"] for f in segment["frames"]]
    with tempfile.TemporaryDirectory(prefix="kiosk-neighbours-") as state:
        config = Config()
        config.storage.state_dir = state
        config.gpio.pin_factory = "mock"
        config.decision.max_denied = 1_000_000  # the scene's photos are refused as spoofs: no lockout in a benchmark
        config.web.listen, config.web.port = "127.0.0.1", free_port()
        pipeline = assemble.pipeline(config)
        gallery = assemble.gallery(config)
        enroll_from_images("owner", [data / p for p in manifest["enrol"]["images"]], pipeline, gallery)
        camera = ReconnectingCamera(lambda: PlaylistCamera(files, loop=True))
        door = assemble.door(config, face_pipeline=pipeline, door_gallery=gallery, door_camera=camera)
        control = DoorControl()
        servers: list = [ApiServer(Path(state) / "kiosk.sock", control, config)]
        stop_browsing = threading.Event()
        browser = None
        if mode == "full":
            from kiosk.mqtt import HomeAssistantBridge
            from kiosk.web import WebServer, set_password

            set_password(config.web_password, PASSWORD)
            config.mqtt.enabled, config.mqtt.host, config.mqtt.port = True, "127.0.0.1", broker_port
            servers += [WebServer(config, control), HomeAssistantBridge(config, control)]
        for server in servers:
            server.start()
        if mode == "full":
            browser = threading.Thread(target=browse, args=(f"http://127.0.0.1:{config.web.port}", stop_browsing))
            browser.start()
        times: list[float] = []
        stop = StopFlag()
        door_step = door.step

        cpu: list[float] = []

        def step():  # the door's own time per frame, as --stats counts it; stop after ``frames``
            started = time.thread_time()
            report = door_step()
            cpu.append(1000 * (time.thread_time() - started))
            times.append(sum(report.timings.values()))
            if len(times) >= frames:
                stop.reason = "done"
            return report

        door.step = step
        try:
            DoorService(door, config, SystemdNotifier({}), out=lambda line: None, err=lambda line: None,
                        control=control).run(stop)
        finally:
            stop_browsing.set()
            if browser is not None:
                browser.join(10)
            for server in servers:
                server.stop()
            door.close()
            gallery.close()
        connected = mode == "full" and "connected" in servers[-1].note()
        warm = np.array(times[len(times) // 10:])  # the first pass decodes and caches the frames
        return {"mode": mode, "frames": len(times), "median_ms": float(np.median(warm)),
                "p90_ms": float(np.percentile(warm, 90)), "cpu_ms": float(np.median(cpu[len(cpu) // 10:])),
                "rss_mb": rss_mb(), "mqtt_connected": connected}


def start_broker(port: int) -> subprocess.Popen:
    code = ("import asyncio\nfrom amqtt.broker import Broker\n"
            "async def main():\n"
            f"    await Broker({{'listeners': {{'default': {{'type': 'tcp', 'bind': '127.0.0.1:{port}'}}}}}}).start()\n"
            "    await asyncio.Event().wait()\n"
            "asyncio.run(main())\n")
    broker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return broker
        except OSError:
            time.sleep(0.2)
    broker.kill()
    raise SystemExit("the MQTT broker (amqtt) did not start: pip install amqtt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=450, help="frames per run (default 450: 30 s at 15 fps)")
    parser.add_argument("--rounds", type=int, default=3, help="bare/full pairs, alternating (default 3)")
    parser.add_argument("--one", choices=["bare", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--broker-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the runs here")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_door(args.one, args.frames, args.broker_port)))
        return 0
    port = free_port()
    broker = start_broker(port)
    runs = []
    try:
        for round_ in range(args.rounds):
            for mode in ("bare", "full"):
                out = subprocess.run([sys.executable, "-m", "bench.neighbours", "--one", mode, "--frames", str(args.frames),
                                      "--broker-port", str(port)], capture_output=True, text=True, check=True,
                                     env={**os.environ, **SERVICE_ENVIRONMENT})
                run = json.loads(out.stdout.strip().splitlines()[-1])
                runs.append(run)
                print(f"round {round_ + 1} {mode:4s}: {run['median_ms']:6.2f} ms median, {run['p90_ms']:6.2f} ms p90 per "
                      f"frame ({run['cpu_ms']:5.2f} ms of the loop thread's CPU), RSS {run['rss_mb']:6.1f} MB"
                      + (", MQTT connected" if run["mqtt_connected"] else ""), flush=True)
    finally:
        broker.kill()
    summary = {mode: {key: float(np.median([r[key] for r in runs if r["mode"] == mode]))
                      for key in ("median_ms", "p90_ms", "cpu_ms", "rss_mb")} for mode in ("bare", "full")}
    bare, full = summary["bare"], summary["full"]
    print(f"\nper frame (median of the runs' medians): bare {bare['median_ms']:.2f} ms, with web page + MQTT "
          f"{full['median_ms']:.2f} ms ({100 * (full['median_ms'] / bare['median_ms'] - 1):+.1f}%); p90 "
          f"{bare['p90_ms']:.2f} -> {full['p90_ms']:.2f} ms; the loop thread's CPU per frame {bare['cpu_ms']:.2f} -> "
          f"{full['cpu_ms']:.2f} ms ({100 * (full['cpu_ms'] / bare['cpu_ms'] - 1):+.1f}%)")
    print(f"resident memory: bare {bare['rss_mb']:.1f} MB, full {full['rss_mb']:.1f} MB "
          f"({full['rss_mb'] - bare['rss_mb']:+.1f} MB)")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
