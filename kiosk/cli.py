"""face-kiosk: a face-recognition door lock for the Raspberry Pi.

Start with 'kiosk demo' (no camera or Pi needed). On the Pi the service
runs 'kiosk run'; people are managed with 'kiosk enroll' and
'kiosk people'. 'kiosk COMMAND --help' explains each command.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import signal
import sys
import time
import tomllib
from pathlib import Path

from kiosk.config import Config, GpioConfig, StorageConfig, load_config
from kiosk.encoder import DEFAULT_MODEL_DIR, ModelInfo
from kiosk.errors import ConfigError, FaceKioskError, ServiceRunning

DEFAULT_CONFIG = Path("/etc/kiosk/kiosk.toml")
MAX_CONSECUTIVE_ERRORS = 10
"""``kiosk run`` exits (door locked; systemd restarts it) after this many failed frames in a row."""


def _config(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    config = load_config(path)
    if getattr(args, "state_dir", None):
        config.storage.state_dir = str(args.state_dir)
    return config


def _model_dir(config: Config) -> Path:
    return Path(config.recognition.model_dir) if config.recognition.model_dir else DEFAULT_MODEL_DIR


def _gallery(config: Config):
    from kiosk.gallery import Gallery

    info = ModelInfo.load(_model_dir(config) / "encoder.json")
    return Gallery(config.database, info.sha256)


def _lock_service(config: Config) -> int:
    """Take ``<state_dir>/kiosk.lock`` exclusively, without waiting; the returned descriptor holds it until closed.

    The kernel drops the lock when the holder dies, even by SIGKILL. The file
    is readable by all (it is empty) so that one created by root does not
    keep the service user from locking it.
    """
    path = config.service_lock
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # read-only file system: the file of an earlier start
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
        os.close(handle)
        raise ServiceRunning(f"{path} is held by a running 'kiosk run' or 'kiosk restore'") from error
    return handle


def _lock_while_stopped(config: Config, command: str) -> int:
    """The service lock for a command that needs the camera or pins the running door owns; refused while it runs."""
    try:
        return _lock_service(config)
    except ServiceRunning as error:
        raise FaceKioskError(f"the door is running ({error}) and owns the camera and pins: stop it first "
                             f"(sudo systemctl stop kiosk), run 'kiosk {command}', then sudo systemctl start kiosk") from error


def read_relay_record(path: Path) -> tuple[int, bool] | None:
    """(relay pin, active high) recorded by the last good start, or None if there is no usable record."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        pin, active_high = record["relay_pin"], record["relay_active_high"]
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError):
        return None
    if isinstance(pin, bool) or not isinstance(pin, int) or not 0 <= pin <= 27 or not isinstance(active_high, bool):
        return None
    return pin, active_high


def _record_relay(config: Config) -> None:
    """Remember this good start's relay pin and polarity for ``kiosk relay-off`` (written only when they change)."""
    from kiosk.gallery import write_private_file

    relay = (config.gpio.relay_pin, config.gpio.relay_active_high)
    if read_relay_record(config.relay_record) == relay:
        return
    record = {"relay_pin": relay[0], "relay_active_high": relay[1]}
    try:
        write_private_file(config.relay_record, (json.dumps(record) + "\n").encode())
    except OSError as error:
        print(f"warning: cannot record the relay pin in {config.relay_record} ({error}); 'kiosk relay-off' uses the "
              "config, or the defaults if the config breaks", file=sys.stderr)


def _prune_events(gallery, config: Config) -> None:
    """Delete old events; a full disk must not stop the door, so a failure is only reported."""
    from kiosk.errors import GalleryError

    try:
        gallery.prune_events(config.storage.event_retention_days)
    except GalleryError as error:
        print(f"warning: old events not pruned: {error}", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    from kiosk.demo import run_demo

    return 0 if run_demo(args.models) else 1


def cmd_run(args: argparse.Namespace) -> int:
    from kiosk.camera import ReconnectingCamera, open_camera
    from kiosk.door import Door, stage_summary
    from kiosk.errors import EndOfStream
    from kiosk.face import DetectorSettings
    from kiosk.gallery import Gallery
    from kiosk.gpio import DoorHardware, Pins, make_pin_factory
    from kiosk.notify import SystemdNotifier
    from kiosk.pipeline import FacePipeline

    config = _config(args)
    notifier = SystemdNotifier()
    if args.camera:
        config.camera.source = args.camera
    stop = {"signal": None}

    def on_signal(number, _frame):
        stop["signal"] = signal.Signals(number).name

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        lock = _lock_service(config)  # before any GPIO: a second 'kiosk run' must not touch the running door's relay
    except ServiceRunning as error:
        raise FaceKioskError(f"the door is already running ({error}); see: systemctl status kiosk") from error
    except OSError as error:
        lock = None
        print(f"warning: cannot lock {config.service_lock} ({error}); 'kiosk restore' cannot tell that the door runs",
              file=sys.stderr)
    pins = Pins(config.gpio.relay_pin, config.gpio.led_pin, config.gpio.button_pin, config.gpio.relay_active_high)
    try:
        hardware = DoorHardware(pins, make_pin_factory(args.simulate))
    except BaseException:
        if lock is not None:
            os.close(lock)
        raise
    _record_relay(config)
    door = gallery = None
    try:
        detector = DetectorSettings(work_width=config.detector.work_width, min_face_fraction=config.detector.min_face_fraction,
                                    rotations=tuple(config.detector.rotations))
        pipeline = FacePipeline(_model_dir(config), detector)
        gallery = Gallery(config.database, pipeline.encoder.info.sha256)
        _prune_events(gallery, config)
        for message in gallery.damaged_templates():
            print(f"warning: {message}", file=sys.stderr)
        if gallery.read_only:
            print(f"warning: gallery {config.database} is read-only (disk full or read-only file system): the door runs "
                  "with the people enrolled now, events wait in memory until it can be written, enrolling fails; "
                  f"free space (df -h {config.database.parent})", file=sys.stderr)
        camera = ReconnectingCamera(lambda: open_camera(config.camera.source, config.camera.width, config.camera.height))
        from kiosk.liveness import make_liveness

        liveness = make_liveness(config.liveness.mode, _model_dir(config), window_seconds=config.decision.window_seconds)
        door = Door(config, camera, pipeline, gallery, hardware, liveness=liveness)
        stale = gallery.stale_people()
        if stale:
            print(f"warning: {len(stale)} people were enrolled with another model and cannot be recognised until "
                  f"re-enrolled: {', '.join(stale)}", file=sys.stderr)
        print(f"kiosk: watching {config.camera.source} with {len(gallery.people())} people enrolled "
              f"({'simulated GPIO' if args.simulate else 'GPIO'}); Ctrl-C to stop", flush=True)
        print(f"kiosk: similarity threshold {door.threshold:.3f} from {door.door_threshold.source}: expected strangers "
              f"let in {door.door_threshold.expected_far:.1e} per attempt", flush=True)
        period = 1.0 / config.camera.max_fps
        reports, failures = [], 0
        last_reload = last_status = last_prune = time.monotonic()
        frames_at_status = 0
        while stop["signal"] is None:
            started = time.monotonic()
            try:
                report = door.step()
            except EndOfStream:
                break
            if report.error is not None:
                failures += 1
                print(f"kiosk: error: {report.error}", file=sys.stderr, flush=True)
                if failures >= MAX_CONSECUTIVE_ERRORS:
                    raise FaceKioskError(f"stopping after {failures} errors in a row (the door is locked); last: {report.error}")
                time.sleep(max(0.0, period - (time.monotonic() - started)))
                continue
            failures = 0
            if report.camera_up and door.frames == 1:
                notifier.ready(f"watching {config.camera.source}, {len(gallery.people())} people enrolled")
            notifier.watchdog()  # from the frame loop itself: a hung camera or loop stops the pings
            if time.monotonic() - last_status >= 5:
                fps = (door.frames - frames_at_status) / (time.monotonic() - last_status)
                last = door.last_event
                notifier.status(f"{fps:.1f} fps, {len(gallery.people())} people enrolled, camera "
                                f"{'up' if report.camera_up else 'DOWN: ' + str(camera.last_error)}, last decision: "
                                + (f"{last.kind} {last.person or ''}".strip() if last else "none")
                                + f", threshold {door.threshold:.3f} (expected strangers let in "
                                f"{door.door_threshold.expected_far:.0e} per attempt)")
                last_status, frames_at_status = time.monotonic(), door.frames
            for e in report.events:
                print(f"{datetime.datetime.now():%H:%M:%S} {e.kind} {e.person or '-'} "
                      f"{'' if e.score is None else f'{e.score:.3f}'} {e.detail}", flush=True)
            if args.stats:
                reports.append(report)
                if len(reports) >= 100:
                    _print_stats(stage_summary(reports))
                    reports.clear()
            if time.monotonic() - last_reload > 5:
                door.reload_gallery()
                last_reload = time.monotonic()
            if time.monotonic() - last_prune > 86400:
                _prune_events(gallery, config)
                last_prune = time.monotonic()
            time.sleep(max(0.0, period - (time.monotonic() - started)))
        if args.stats and reports:
            _print_stats(stage_summary(reports))
        if stop["signal"]:
            print(f"kiosk: {stop['signal']} received; relay off, stopping", flush=True)
        return 0
    finally:
        notifier.stopping()
        try:
            if door is not None:
                door.close()
            else:
                hardware.close()
        finally:
            if gallery is not None:
                gallery.close()
            if lock is not None:
                os.close(lock)
            notifier.close()


def _print_stats(summary: dict[str, tuple[float, float]]) -> None:
    print("stats (median/p90 ms): " + ", ".join(f"{k} {m:.1f}/{p:.1f}" for k, (m, p) in summary.items()), flush=True)


def cmd_selftest(args: argparse.Namespace) -> int:
    from kiosk.selftest import run_selftest

    config = _config(args)
    if args.camera:
        config.camera.source = args.camera
    lock = _lock_while_stopped(config, "selftest")  # it drives the camera and the relay the running door owns
    try:
        checks = run_selftest(config, _model_dir(config), args.simulate, args.relay, args.button)
    finally:
        os.close(lock)
    failed = [c for c in checks if c.status == "FAIL"]
    print(f"{len(checks) - len(failed)} of {len(checks)} checks passed or skipped" + (f"; FAILED: {', '.join(c.name for c in failed)}" if failed else ""))
    return 1 if failed else 0


def cmd_relay_off(args: argparse.Namespace) -> int:
    """Switch the relay off after any stop (systemd's ExecStopPost); never gives up without trying.

    The pin and polarity come from the config when it is valid, else from the
    record of the last good start, else from the defaults. When the valid
    config names another relay pin than the last good start used (the config
    was edited while the door ran), that recorded pin is switched off too,
    unless the config now gives it to the LED or the button.
    """
    from kiosk.errors import HardwareError
    from kiosk.gpio import make_pin_factory, switch_relay_off

    factory = make_pin_factory(args.simulate)
    failed = False
    for source, pin, active_high in _relay_off_targets(args):
        try:
            switch_relay_off(pin, active_high, factory)
        except HardwareError as error:
            failed = True
            print(f"kiosk relay-off: error: {error}", file=sys.stderr)
            continue
        print(f"relay on GPIO {pin} ({'active-high' if active_high else 'active-low'}, from {source}) is off")
    return 2 if failed else 0


def _relay_off_targets(args: argparse.Namespace) -> list[tuple[str, int, bool]]:
    """(where it came from, relay pin, active high) for each relay ``kiosk relay-off`` switches off."""
    try:
        config = _config(args)
    except (ConfigError, OSError) as error:
        print(f"kiosk relay-off: warning: the config cannot be used ({error})", file=sys.stderr)
        record_path = _state_dir_despite_config(args) / "relay.json"
        record = read_relay_record(record_path)
        if record is not None:
            return [(f"the record of the last good start, {record_path}", *record)]
        defaults = GpioConfig()
        print(f"kiosk relay-off: warning: no usable {record_path} either; using the defaults", file=sys.stderr)
        return [("the built-in defaults", defaults.relay_pin, defaults.relay_active_high)]
    gpio = config.gpio
    targets = [("the config", gpio.relay_pin, gpio.relay_active_high)]
    record = read_relay_record(config.relay_record)
    if record is not None and record[0] not in (gpio.relay_pin, gpio.led_pin, gpio.button_pin):
        targets.append((f"the last good start, {config.relay_record}, which the config no longer names", *record))
    return targets


def _state_dir_despite_config(args: argparse.Namespace) -> Path:
    """The state folder when the config is invalid: --state-dir, else storage.state_dir if it can be read, else the default."""
    if args.state_dir:
        return Path(args.state_dir)
    path = args.config or DEFAULT_CONFIG
    try:
        state_dir = tomllib.loads(Path(path).read_text(encoding="utf-8"))["storage"]["state_dir"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        state_dir = None
    return Path(state_dir) if isinstance(state_dir, str) else Path(StorageConfig().state_dir)


def cmd_enroll(args: argparse.Namespace) -> int:
    from kiosk.enroll import enroll_from_images, image_paths
    from kiosk.pipeline import FacePipeline

    config = _config(args)
    pipeline = FacePipeline(_model_dir(config))
    gallery = _gallery(config)
    try:
        if args.images:
            person, notes = enroll_from_images(args.name, image_paths(args.images), pipeline, gallery, args.role,
                                               force=args.force)
            for note in notes:
                print(note, file=sys.stderr)
        else:
            lock = _lock_while_stopped(config, "enroll --camera")
            try:
                person = _enroll_from_camera(args, config, pipeline, gallery)
            finally:
                os.close(lock)
        print(f"enrolled {person.name!r} as {person.role} with {person.embeddings} face embeddings")
        return 0
    finally:
        gallery.close()


def _enroll_from_camera(args, config: Config, pipeline, gallery):
    """Enrol at the camera; whoever has this shell is trusted (no admin check), so this is how the first admin is made."""
    from kiosk.camera import open_camera
    from kiosk.door import decision_settings
    from kiosk.enroll import ButtonEnrollment, capture_from_camera
    from kiosk.liveness import make_liveness

    liveness = make_liveness(config.liveness.mode, _model_dir(config), window_seconds=config.decision.window_seconds)
    camera = open_camera(config.camera.source, config.camera.width, config.camera.height)
    print(f"look at the camera and turn your head a little, for up to {config.enrollment.capture_seconds:g} s ...")
    try:
        session = ButtonEnrollment(gallery, config.enrollment, decision_settings(config), time.monotonic(),
                                   name=args.name, trusted=True, role=args.role)
        return capture_from_camera(session, camera.read, pipeline, liveness, time.monotonic)
    finally:
        camera.close()


def _threshold_line(config: Config, gallery) -> str:
    """The door's effective threshold for this gallery, and the strangers it expects to let in."""
    from kiosk.openset import door_threshold

    templates = gallery.templates()
    info = ModelInfo.load(_model_dir(config) / "encoder.json")
    threshold = door_threshold(info, config.recognition, len(set(templates.names)), len(templates.names))
    return (f"door threshold {threshold.value:.3f} ({threshold.source}): expected strangers let in "
            f"{threshold.expected_far:.1e} per attempt")


def cmd_people(args: argparse.Namespace) -> int:
    config = _config(args)
    gallery = _gallery(config)
    try:
        if args.action == "list":
            people = gallery.people()
            if not people:
                print("nobody is enrolled yet: enrol the first admin with kiosk enroll NAME --camera --role admin "
                      "(or --images PHOTOS)")
            for p in people:
                created = datetime.datetime.fromtimestamp(p.created).strftime("%Y-%m-%d %H:%M")
                print(f"{p.name:24s} {p.role:6s} {p.embeddings:3d} embeddings  enrolled {created}")
            print(_threshold_line(config, gallery))
            for message in gallery.damaged_templates():
                print(f"warning: {message}", file=sys.stderr)
        elif args.action == "rename":
            gallery.rename(args.name, args.new_name)
            print(f"renamed {args.name!r} to {args.new_name!r}")
        elif args.action == "remove":
            person_id = gallery.person(args.name).id
            gallery.remove(args.name)
            snapshots = list(config.snapshot_dir.glob(f"*_p{person_id}.jpg")) if config.snapshot_dir.is_dir() else []
            for path in snapshots:
                path.unlink()
            print(f"removed {args.name!r}: every embedding, their name on past events, and {len(snapshots)} snapshots")
        elif args.action == "set-role":
            gallery.set_role(args.name, args.role)
            print(f"{args.name!r} is now {args.role}")
        return 0
    finally:
        gallery.close()


def parse_since(text: str) -> float:
    """'30m', '12h', '7d' ago, or an ISO date/time, as a UNIX time."""
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--since takes e.g. 30m, 12h, 7d or 2026-11-28T08:00, not {text!r}") from error


def cmd_backup(args: argparse.Namespace) -> int:
    config = _config(args)
    gallery = _gallery(config)
    try:
        target = gallery.backup(args.file)
        print(f"backed up {len(gallery.people())} people to {target} (it holds biometric data: keep it safe)")
        return 0
    finally:
        gallery.close()


def cmd_restore(args: argparse.Namespace) -> int:
    from kiosk.gallery import Gallery

    config = _config(args)
    info = ModelInfo.load(_model_dir(config) / "encoder.json")
    try:
        lock = _lock_service(config)
    except ServiceRunning as error:
        raise FaceKioskError(f"the door is running ({error}): stop the service first: sudo systemctl stop kiosk; "
                             "then restore, then sudo systemctl start kiosk") from error
    try:
        people = Gallery.restore(args.file, config.database, info.sha256)
        gallery = Gallery(config.database, info.sha256)
        try:
            damaged = gallery.damaged_templates()
        finally:
            gallery.close()
    finally:
        os.close(lock)
    for message in damaged:
        print(f"warning: {message}", file=sys.stderr)
    print(f"restored {people} people into {config.database}; start the service again: sudo systemctl start kiosk")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    config = _config(args)
    gallery = _gallery(config)
    try:
        for e in gallery.events(since=args.since, limit=args.limit):
            when = datetime.datetime.fromtimestamp(e.time).strftime("%Y-%m-%d %H:%M:%S")
            score = "" if e.score is None else f"{e.score:.3f}"
            print(f"{when}  {e.kind:8s} {e.person or '-':20s} {score:6s} {e.detail}")
        return 0
    finally:
        gallery.close()


def cmd_embed(args: argparse.Namespace) -> int:
    from kiosk.embed import embed_tree
    from kiosk.pipeline import FacePipeline

    pipeline = FacePipeline(args.models)
    result = embed_tree(args.root, pipeline, progress=not args.quiet)
    for error in result.errors:
        print(f"skipped: {error}", file=sys.stderr)
    result.save(args.out)
    found = int(result.found.sum())
    print(
        f"{len(result.paths)} images embedded ({found} with a face, {len(result.paths) - found} without), "
        f"{len(result.errors)} unreadable skipped -> {args.out}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiosk", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help=f"TOML config file (default: {DEFAULT_CONFIG} if it exists, else built-in defaults)")
        p.add_argument("--state-dir", type=Path, help="folder of the gallery database (overrides storage.state_dir)")

    p = sub.add_parser("demo", help="watch the door work on a recorded scene (no camera or Pi needed)",
                       description="Run the real door loop on shipped frames: enrol a person, let them in, keep a stranger out.")
    p.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("run", help="run the door (what the systemd service starts)",
                       description="Watch the camera, open the door for enrolled people, enrol with the button.")
    with_config(p)
    p.add_argument("--simulate", action="store_true", help="mock GPIO pins (no relay, LED or button needed)")
    p.add_argument("--camera", help="override camera.source: picamera, 0, rtsp://..., a video file or a folder of images")
    p.add_argument("--stats", action="store_true", help="print per-stage timings (median/p90 ms) every 100 frames")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("selftest", help="check camera, face detection, model, database, LED (and relay, button)",
                       description="Check every part of the door once and print a pass/fail table; exit 1 on any failure.")
    with_config(p)
    p.add_argument("--simulate", action="store_true", help="mock GPIO pins")
    p.add_argument("--camera", help="override camera.source")
    p.add_argument("--relay", action="store_true", help="also click the relay once (the door opens for 0.5 s!)")
    p.add_argument("--button", action="store_true", help="also wait for a press of the enrol button")
    p.set_defaults(handler=cmd_selftest)

    p = sub.add_parser("relay-off", help="force the door relay off (the service runs this after it stops)",
                       description="Drive the relay off: pins from the config, or if it is broken from the record of the "
                                   "last good start (<state_dir>/relay.json), or the defaults; says which.")
    with_config(p)
    p.add_argument("--simulate", action="store_true", help="mock GPIO pins")
    p.set_defaults(handler=cmd_relay_off)

    p = sub.add_parser("enroll", help="enrol a person from photos or the camera",
                       description="Enrol NAME from photos (files or folders) or by looking into the camera.")
    with_config(p)
    p.add_argument("name", metavar="NAME")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", nargs="+", type=Path, metavar="FILE_OR_DIR", help="photos of NAME, one face each")
    source.add_argument("--camera", action="store_true", help="capture NAME's face with the configured camera")
    p.add_argument("--role", choices=["admin", "user"], help="default: admin for the first person, else user")
    p.add_argument("--force", action="store_true",
                   help="enrol even though the face already matches another enrolled person (look-alikes, twins)")
    p.set_defaults(handler=cmd_enroll)

    p = sub.add_parser("people", help="list, rename or remove enrolled people, or change their role")
    with_config(p)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="everyone enrolled")
    a = actions.add_parser("rename", help="give a person a new name (e.g. person-3 -> Alice)")
    a.add_argument("name")
    a.add_argument("new_name")
    a = actions.add_parser("remove", help="delete a person and all their embeddings")
    a.add_argument("name")
    a = actions.add_parser("set-role", help="make a person admin or user")
    a.add_argument("name")
    a.add_argument("role", choices=["admin", "user"])
    p.set_defaults(handler=cmd_people)

    p = sub.add_parser("backup", help="copy the gallery (people and events) to a file")
    with_config(p)
    p.add_argument("file", type=Path, metavar="FILE")
    p.set_defaults(handler=cmd_backup)

    p = sub.add_parser("restore", help="replace the gallery with a backup made by 'kiosk backup' (service stopped)",
                       description="Replace the gallery with a backup; refuses while the service runs, and refuses a "
                                   "damaged file or one made with a different model. Every face in it is checked with "
                                   "the key the backup carries and re-signed with this device's key.")
    with_config(p)
    p.add_argument("file", type=Path, metavar="FILE")
    p.set_defaults(handler=cmd_restore)

    p = sub.add_parser("events", help="show the event log (who was let in, denied, ...)")
    with_config(p)
    p.add_argument("--since", type=parse_since, help="e.g. 30m, 12h, 7d, or 2026-11-28T08:00")
    p.add_argument("--limit", type=int, help="only the last N events")
    p.set_defaults(handler=cmd_events)

    p = sub.add_parser(
        "embed",
        help="embed every image under a folder (check a model on your own photos)",
        description=(
            "Run the door's own face detection and encoder on every image under ROOT (recursively) and "
            "write an .npz with paths (relative to ROOT, so the first folder is the identity), "
            "embeddings (float32, L2-normalised, zeros where no face was found) and found (bool). "
            "Unreadable or corrupt files are reported and skipped."
        ),
    )
    p.add_argument("root", type=Path, metavar="ROOT", help="folder of images, e.g. ROOT/<person>/<photo>.jpg")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.npz", help="where to write the embeddings")
    p.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help="folder with encoder.tflite and encoder.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_embed)

    from kiosk.liveness_cli import add_parser as add_liveness_parser

    add_liveness_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (FaceKioskError, FileNotFoundError, PermissionError, OSError) as error:
        print(f"kiosk {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
