"""face-kiosk: a face-recognition door lock for the Raspberry Pi.

Start with 'kiosk demo' (no camera or Pi needed). On the Pi the service
runs 'kiosk run'; people are managed with 'kiosk enroll' and
'kiosk people'. 'kiosk COMMAND --help' explains each command.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import tomllib
from pathlib import Path

from kiosk.config import Config, default_state_dir, load_config
from kiosk.errors import ConfigError, FaceKioskError, ServiceRunning
from kiosk.gpio import GpioSettings

DEFAULT_CONFIG = Path("/etc/kiosk/kiosk.toml")


def _config(args: argparse.Namespace) -> Config:
    """The config file (or the defaults) with this command line's overrides."""
    path = getattr(args, "config", None)
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    config = load_config(path)
    if getattr(args, "state_dir", None):
        config.storage.state_dir = str(args.state_dir)
    if getattr(args, "simulate", False):
        config.gpio.pin_factory = "mock"
    if isinstance(getattr(args, "camera", None), str):
        config.camera.source = args.camera
    if getattr(args, "models", None):
        config.recognition.model_dir = str(args.models)
    return config


def _lock_or_service(config: Config) -> int | None:
    """The service lock for a command that needs the camera or pins, or None when the running door owns them.

    With None the command asks the running door over its local API
    (:mod:`kiosk.api`) instead of touching the camera or pins itself.
    """
    from kiosk.service import lock_state_dir

    try:
        return lock_state_dir(config)
    except ServiceRunning:
        return None


def _ask_door(config: Config, command: str, **arguments):
    """A running door's answer over its local API (its progress lines printed); :class:`DoorNotRunning` if none runs."""
    from kiosk import api

    return api.request(config.api_socket, command, progress=print, **arguments)


def _ask_locked_door(config: Config, command: str, usage: str, **arguments):
    """:func:`_ask_door` for a command that found the service lock held: a silent API there is an error that says
    what to do."""
    from kiosk.errors import DoorNotRunning

    try:
        return _ask_door(config, command, **arguments)
    except DoorNotRunning as error:
        raise FaceKioskError(f"the door is running (it holds {config.service_lock}) and owns the camera and pins, but "
                             f"its local API {config.api_socket} does not answer (is it still starting?): try again, or "
                             f"stop it first (sudo systemctl stop kiosk), run 'kiosk {usage}', then sudo systemctl "
                             "start kiosk") from error


def cmd_demo(args: argparse.Namespace) -> int:
    from kiosk.demo import run_demo

    config = Config()  # the demo's own door: never the system's config, state folder or pins
    if args.models:
        config.recognition.model_dir = str(args.models)
    return 0 if run_demo(config) else 1


def cmd_run(args: argparse.Namespace) -> int:
    from kiosk.service import run_service

    run_service(_config(args), stats=args.stats)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from kiosk import assemble
    from kiosk.service import lock_state_dir
    from kiosk.stage_bench import recorded_scene, run_bench

    config = _config(args)
    lock = None
    if args.camera is not None:
        try:
            lock = lock_state_dir(config)  # the running door owns the camera
        except ServiceRunning as error:
            raise FaceKioskError(f"the door is running ({error}) and owns the camera: stop it first (sudo systemctl stop kiosk), "
                                 "run 'kiosk bench --camera', then sudo systemctl start kiosk; plain 'kiosk bench' needs no "
                                 "camera") from error
        camera, source = assemble.frames(config), f"the camera {config.camera.source!r}"
    else:
        camera, source = recorded_scene(), "the demo's recorded scene (640x480)"
    try:
        result = run_bench(config, camera, source, count=args.count, num_threads=args.threads)
    finally:
        camera.close()
        if lock is not None:
            os.close(lock)
    print(result.report())
    if args.json:
        args.json.write_text(result.as_json())
    print("Please report these figures from a Pi: see 'Pi speed: report yours' in the README.")
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from kiosk.selftest import run_selftest

    config = _config(args)
    lock = _lock_or_service(config)  # it drives the camera and the relay the running door owns
    if lock is None:
        print("the door is running: checking it through its local API")
        if args.button:
            print("SKIP  button             the running door owns it: press it and watch the LED show enrol mode, "
                  "or stop the door (sudo systemctl stop kiosk) and run this again")
        results = _ask_locked_door(config, "selftest", "selftest", relay=args.relay)
        failed = [c["name"] for c in results if c["status"] == "FAIL"]
        print(f"{len(results) - len(failed)} of {len(results)} checks passed or skipped"
              + (f"; FAILED: {', '.join(failed)}" if failed else ""))
        return 1 if failed else 0
    try:
        checks = run_selftest(config, args.relay, args.button)
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

    running = _running_door(args)
    if running is not None:
        from kiosk.errors import ApiError

        try:
            print(_ask_door(running, "relay-off"))
            return 0
        except ApiError as error:  # never give up: try the pin itself
            print(f"kiosk relay-off: warning: the running door did not switch it off ({error}); driving the pin",
                  file=sys.stderr)
    targets, factory_name = _relay_off_targets(args)
    try:
        factory = make_pin_factory(factory_name)
    except HardwareError as error:
        print(f"kiosk relay-off: error: {error}", file=sys.stderr)
        return 2
    failed = False
    for source, pin, active_high in targets:
        try:
            switch_relay_off(pin, active_high, factory)
        except HardwareError as error:
            failed = True
            print(f"kiosk relay-off: error: {error}", file=sys.stderr)
            continue
        print(f"relay on GPIO {pin} ({'active-high' if active_high else 'active-low'}, from {source}) is off")
    return 2 if failed else 0


def _running_door(args: argparse.Namespace) -> Config | None:
    """The config, when it is usable and a door answers on its local API; else None."""
    from kiosk.errors import ApiError

    try:
        config = _config(args)
        _ask_door(config, "status")
    except (ConfigError, OSError, ApiError):
        return None
    return config


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from kiosk.control import DoorStatus
    from kiosk.errors import DoorNotRunning

    config = _config(args)
    try:
        if args.end_lockout:
            print(_ask_door(config, "end-lockout"))
        status = _ask_door(config, "status")
    except DoorNotRunning as error:
        print(error)
        return 3
    print(json.dumps(status, indent=2) if args.json else DoorStatus.from_dict(status).summary())
    return 0


def cmd_web_password(args: argparse.Namespace) -> int:
    import getpass

    from kiosk.web import MIN_PASSWORD_LENGTH, set_password

    config = _config(args)
    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"new web admin password (at least {MIN_PASSWORD_LENGTH} characters): ")
        if getpass.getpass("the same again: ") != password:
            raise ConfigError("the two passwords differ; nothing was changed")
    set_password(config.web_password, password)
    print(f"web admin password set ({config.web_password}); restart the door to serve the page on port "
          f"{config.web.port}: sudo systemctl restart kiosk")
    return 0


def _relay_off_targets(args: argparse.Namespace) -> tuple[list[tuple[str, int, bool]], str]:
    """(where it came from, relay pin, active high) for each relay ``kiosk relay-off`` switches off, and the pin factory."""
    from kiosk.service import read_relay_record

    try:
        config = _config(args)
    except (ConfigError, OSError) as error:
        print(f"kiosk relay-off: warning: the config cannot be used ({error})", file=sys.stderr)
        record_path = _state_dir_despite_config(args) / "relay.json"
        record = read_relay_record(record_path)
        defaults = GpioSettings(pin_factory="mock" if args.simulate else "auto")
        if record is not None:
            return [(f"the record of the last good start, {record_path}", *record)], defaults.pin_factory
        print(f"kiosk relay-off: warning: no usable {record_path} either; using the defaults", file=sys.stderr)
        return [("the built-in defaults", defaults.relay_pin, defaults.relay_active_high)], defaults.pin_factory
    gpio = config.gpio
    targets = [("the config", gpio.relay_pin, gpio.relay_active_high)]
    record = read_relay_record(config.relay_record)
    if record is not None and record[0] not in (gpio.relay_pin, gpio.led_pin, gpio.button_pin):
        targets.append((f"the last good start, {config.relay_record}, which the config no longer names", *record))
    return targets, gpio.pin_factory


def _state_dir_despite_config(args: argparse.Namespace) -> Path:
    """The state folder when the config is invalid: --state-dir, else storage.state_dir if it can be read, else the default."""
    if getattr(args, "state_dir", None):
        return Path(args.state_dir)
    path = getattr(args, "config", None) or DEFAULT_CONFIG
    try:
        state_dir = tomllib.loads(Path(path).read_text(encoding="utf-8"))["storage"]["state_dir"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        state_dir = None
    return Path(state_dir) if isinstance(state_dir, str) and state_dir else default_state_dir()


def cmd_enroll(args: argparse.Namespace) -> int:
    from kiosk import assemble
    from kiosk.enroll import enroll_from_images, image_paths

    config = _config(args)
    pipeline = assemble.pipeline(config)
    gallery = assemble.gallery(config)
    try:
        if args.images:
            person, notes = enroll_from_images(args.name, image_paths(args.images), pipeline, gallery, args.role,
                                               force=args.force)
            for note in notes:
                print(note, file=sys.stderr)
        else:
            lock = _lock_or_service(config)
            if lock is None:
                print(f"the door is running: it enrols {args.name!r} with its camera; look at it and turn your head a little")
                result = _ask_locked_door(config, "enroll", "enroll --camera", name=args.name, role=args.role)
                print(f"enrolled {result['name']!r} as {result['role']} with {result['embeddings']} face embeddings")
                return 0
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
    from kiosk import assemble
    from kiosk.enroll import ButtonEnrollment, capture_from_camera

    liveness = assemble.liveness(config)
    camera = assemble.frames(config)
    print(f"look at the camera and turn your head a little, for up to {config.enrollment.capture_seconds:g} s ...")
    try:
        session = ButtonEnrollment(gallery, config.enrollment, config.decision, time.monotonic(),
                                   name=args.name, trusted=True, role=args.role)
        return capture_from_camera(session, camera.read, pipeline, liveness, time.monotonic)
    finally:
        camera.close()


def _threshold_line(config: Config, gallery) -> str:
    """The door's effective threshold for this gallery, and the strangers it expects to let in."""
    from kiosk import assemble
    from kiosk.openset import door_threshold

    templates = gallery.templates()
    threshold = door_threshold(assemble.model_info(config), config.recognition, len(set(templates.names)),
                               len(templates.names))
    return (f"door threshold {threshold.value:.3f} ({threshold.source}): expected strangers let in "
            f"{threshold.expected_far:.1e} per attempt")


def schedule_help() -> str:
    from kiosk import schedule

    return (schedule.__doc__ or "").split("\n\n", 1)[1].replace("``", "'").replace("::", ":")


def cmd_people(args: argparse.Namespace) -> int:
    from kiosk import assemble

    config = _config(args)
    gallery = assemble.gallery(config, must_exist=True)
    try:
        if args.action == "list":
            people = gallery.people()
            if not people:
                print("nobody is enrolled yet: enrol the first admin with kiosk enroll NAME --camera --role admin "
                      "(or --images PHOTOS)")
            for p in people:
                created = datetime.datetime.fromtimestamp(p.created).strftime("%Y-%m-%d %H:%M")
                print(f"{p.name:24s} {p.role:6s} {p.embeddings:3d} embeddings  enrolled {created}  schedule: {p.schedule}")
            print(_threshold_line(config, gallery))
            for message in gallery.damaged_templates():
                print(f"warning: {message}", file=sys.stderr)
        elif args.action == "rename":
            gallery.rename(args.name, args.new_name)
            print(f"renamed {args.name!r} to {args.new_name!r}")
        elif args.action == "remove":
            from kiosk.gallery import remove_face_images

            person_id = gallery.person(args.name).id
            gallery.remove(args.name)
            pictures = remove_face_images(config.snapshot_dir, config.thumbnail_dir, person_id)
            print(f"removed {args.name!r}: every embedding, their name on past events, and {pictures} pictures "
                  "(snapshots, thumbnail)")
        elif args.action == "set-role":
            gallery.set_role(args.name, args.role)
            print(f"{args.name!r} is now {args.role}")
        elif args.action == "schedule":
            schedule = gallery.set_schedule(args.name, args.schedule)
            print(f"{args.name!r} may be let in: {schedule} (the door's local time; outside it the door refuses them "
                  "and logs 'outside schedule')")
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
    from kiosk import assemble

    config = _config(args)
    gallery = assemble.gallery(config, must_exist=True)
    try:
        target = gallery.backup(args.file)
        print(f"backed up {len(gallery.people())} people to {target} (it holds biometric data: keep it safe)")
        return 0
    finally:
        gallery.close()


def cmd_restore(args: argparse.Namespace) -> int:
    from kiosk import assemble
    from kiosk.gallery import Gallery
    from kiosk.service import lock_state_dir

    config = _config(args)
    info = assemble.model_info(config)
    try:
        lock = lock_state_dir(config)
    except ServiceRunning as error:
        raise FaceKioskError(f"the door is running ({error}): stop the service first: sudo systemctl stop kiosk; "
                             "then restore, then sudo systemctl start kiosk") from error
    try:
        people = Gallery.restore(args.file, config.database, info.sha256)
        gallery = assemble.gallery(config)
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
    from kiosk import assemble

    config = _config(args)
    gallery = assemble.gallery(config, must_exist=True)
    try:
        for e in gallery.events(since=args.since, limit=args.limit):
            when = datetime.datetime.fromtimestamp(e.time).strftime("%Y-%m-%d %H:%M:%S")
            score = "" if e.score is None else f"{e.score:.3f}"
            print(f"{when}  {e.kind:8s} {e.person or '-':20s} {score:6s} {e.detail}")
        return 0
    finally:
        gallery.close()


def cmd_embed(args: argparse.Namespace) -> int:
    from kiosk import assemble
    from kiosk.embed import embed_tree

    pipeline = assemble.pipeline(_config(args))
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
        # SUPPRESS: given before or after a sub-action (kiosk people --state-dir X list / list --state-dir X), never reset.
        p.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                       help=f"TOML config file (default: {DEFAULT_CONFIG} if it exists, else built-in defaults)")
        p.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS,
                       help="folder of the gallery database (overrides storage.state_dir; default: /var/lib/kiosk if "
                            "it exists, else ~/.local/state/kiosk)")

    p = sub.add_parser("demo", help="watch the door work on a recorded scene (no camera or Pi needed)",
                       description="Run the real door loop on shipped frames: enrol a person, let them in, keep a stranger out.")
    p.add_argument("--models", type=Path, help=argparse.SUPPRESS)
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

    p = sub.add_parser("bench", help="time each stage of the door on this machine (report it from your Pi)",
                       description="Run the door's per-frame work (capture, detect, align, encode, liveness, match, decide) "
                                   "on the demo's recorded frames, or the camera, and print per-stage times, frames per "
                                   "second, CPU temperature and throttling. Touches no pins or gallery.")
    with_config(p)
    p.add_argument("--camera", nargs="?", const=True, metavar="SOURCE",
                   help="use the configured camera (or SOURCE) instead of the recorded frames; stop the service first")
    p.add_argument("--count", type=int, default=200, help="frames to time (default 200)")
    p.add_argument("--threads", type=int, default=2, help="encoder threads (default 2, as the door runs)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.set_defaults(handler=cmd_bench)

    p = sub.add_parser("status", help="what the running door is doing (lock, camera, speed, last decision, lockout)",
                       description="Ask the running door (kiosk run, the service) over its local API what it is doing. "
                                   "Exit 3 when it is not running.")
    with_config(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--end-lockout", action="store_true", help="first end a lockout (logged with your user name)")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("web-password", help="set the web admin page's password (the page is off until one is set)",
                       description="Set the password of the web admin page (stored as a salted scrypt hash in "
                                   "<state_dir>/web-password.json). Run it as the kiosk user: sudo -u kiosk kiosk web-password")
    with_config(p)
    p.add_argument("--stdin", action="store_true", help="read the password from the first line of standard input")
    p.set_defaults(handler=cmd_web_password)

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

    p = sub.add_parser("people", help="list, rename or remove enrolled people, change their role or schedule")
    with_config(p)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="everyone enrolled")
    with_config(a)
    a = actions.add_parser("rename", help="give a person a new name (e.g. person-3 -> Alice)")
    with_config(a)
    a.add_argument("name")
    a.add_argument("new_name")
    a = actions.add_parser("remove", help="delete a person and all their embeddings")
    with_config(a)
    a.add_argument("name")
    a = actions.add_parser("set-role", help="make a person admin or user")
    with_config(a)
    a.add_argument("name")
    a.add_argument("role", choices=["admin", "user"])
    a = actions.add_parser("schedule", help="when a person may be let in, e.g. 'mon-fri 07:00-19:00; sat 09:00-12:00'",
                           description=schedule_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    with_config(a)
    a.add_argument("name")
    a.add_argument("schedule", help="days and HH:MM-HH:MM windows, rules separated by ';', or 'always'")
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
    with_config(p)
    p.add_argument("--models", type=Path, help="folder with encoder.tflite and encoder.json (default: the shipped model)")
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
