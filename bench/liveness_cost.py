"""What the door's liveness rules cost live people, and what they stop: before and after issue 11.

Plays every NUAA recording (one subject, glasses, position, session) as
attempts of up to ``--frames`` frames (at least 7), and applies two rules to
each. NUAA keeps a sparse subset of each recording (frames 0.55-2.8 s apart
at the data set's 20 fps), so neither timing is a door's 15 fps: by default
the frames are played at their recorded times (few frames fall in the 1.5 s
window: pessimistic for the new rule); ``--fps 15`` plays them back to back
(the motion between frames is larger than at a door: optimistic). A person
stays at the door until it opens, so an attempt that ends undecided is
played on forward and backward (its frames reflected) until
``liveness_wait_seconds`` have passed.

- **before**: one liveness verdict per attempt, on its 3rd frame (the first
  frame that can vote an unlock), from all its frames so far, texture alone
  until the motion cue has measured twice;
- **after** (the door now): only the frames inside the decision window
  (1.5 s) count, and in mode ``both`` a face whose motion has not been
  measured twice in that window is PENDING; the attempt is refused if the
  first verdict from its 3rd frame on is SPOOF, or if it is still PENDING
  after ``liveness_wait_seconds`` (4 s).

Prints refused live attempts (BPCER) and accepted print attempts (APCER),
overall and per subject (worst case), for both rules, and the share of live
attempts the door's rule judges live within ``WITHIN_SECONDS``::

    python -m bench.liveness_cost --data ../shared/data/nuaa_train
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

from tqdm import tqdm

from kiosk.decision import DecisionSettings, Liveness
from kiosk.encoder import DEFAULT_MODEL_DIR
from kiosk.face import FaceFinder
from kiosk.images import read_image
from kiosk.liveness import LivenessChecker
from kiosk.training.liveness.data import scan_nuaa, sessions

WITHIN_SECONDS = 2.0
"""Issue 14's measure of the door's speed for live people: judged live within this long of walking up."""
RECORDED_FPS = 20.0
"""NUAA's frame numbers count frames of a 20 fps recording."""


def stay_in_view(frames: list, seconds: float) -> list:
    """The attempt's frames played forward, backward, forward ... until ``seconds`` have passed (times continue)."""
    out, forward = list(frames), False
    while out[-1][0] - out[0][0] < seconds:
        run = frames if forward else frames[::-1]
        for (t0, _, _), (t1, image, face) in pairwise(run):
            out.append((out[-1][0] + abs(t1 - t0), image, face))
        forward = not forward
    return out


def before(checker: LivenessChecker, frames, k: int) -> bool:
    """The old rule: the verdict on the k-th frame, from every frame so far (texture alone without motion)."""
    checker.reset()
    for _, image, face in frames[:k]:
        checker.check(image, face)
    return checker.scores().texture >= checker.threshold


def after(checker: LivenessChecker, frames, k: int, wait: float) -> float | None:
    """The door's rule now (see the module docstring): seconds from the attempt's first frame to LIVE, None if refused."""
    checker.reset()
    start = frames[0][0]
    for index, (time, image, face) in enumerate(frames):
        verdict = checker.check(image, face, time)
        if index + 1 < k:
            continue
        if verdict in (Liveness.LIVE, Liveness.OFF):
            return time - start
        if verdict is Liveness.SPOOF or time - start >= wait:
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/nuaa_train",
                        help="NUAA root with live/ and spoof/ (default: ../shared/data/nuaa_train)")
    parser.add_argument("--frames", type=int, default=30, help="frames per attempt (default 30)")
    parser.add_argument("--mode", choices=["both", "texture"], default="both")
    parser.add_argument("--fps", type=float, help="play the frames back to back at this rate (default: recorded times)")
    args = parser.parse_args(argv)
    settings = DecisionSettings()
    finder = FaceFinder()
    old = LivenessChecker(args.mode, DEFAULT_MODEL_DIR)
    new = LivenessChecker(args.mode, DEFAULT_MODEL_DIR, window_seconds=settings.window_seconds)
    passed: dict[tuple[str, str, str], list[bool]] = defaultdict(list)  # (rule, kind, subject) -> passed per attempt
    live_seconds: list[float | None] = []  # the door's rule: seconds until a live attempt is judged live (None: refused)
    for _, records in tqdm(sorted(sessions(scan_nuaa(args.data)).items()), desc="recordings"):
        kind, subject = "live" if records[0].live else "spoof", records[0].subject
        for start in range(0, len(records), args.frames):
            chunk = records[start:start + args.frames]
            if len(chunk) < 7:
                continue
            attempt = []
            for index, record in enumerate(chunk):
                time = index / args.fps if args.fps else record.frame / RECORDED_FPS
                image = read_image(record.path)
                face = finder.largest(image)
                if face is not None:
                    attempt.append((time, image, face))
            if len(attempt) < settings.k:
                continue
            attempt = stay_in_view(attempt, settings.liveness_wait_seconds)
            passed[("before", kind, subject)].append(before(old, attempt, settings.k))
            seconds = after(new, attempt, settings.k, settings.liveness_wait_seconds)
            passed[("after", kind, subject)].append(seconds is not None)
            if kind == "live":
                live_seconds.append(seconds)
    timing = f"played at {args.fps:g} fps" if args.fps else "at their recorded times"
    print(f"mode {args.mode}, attempts of 7-{args.frames} NUAA frames {timing}; live refused = BPCER, prints accepted = APCER")
    print("| rule | live attempts refused | worst subject | printed-photo attempts accepted | worst subject |")
    print("|---|---|---|---|---|")
    for rule in ("before", "after"):
        cells = []
        for kind, bad in (("live", False), ("spoof", True)):
            per_subject = {s: v for (r, c, s), v in passed.items() if r == rule and c == kind}
            total = sum(len(v) for v in per_subject.values())
            failed = sum(sum(x == bad for x in v) for v in per_subject.values())
            worst_subject, worst = max(((s, sum(x == bad for x in v) / len(v)) for s, v in per_subject.items()),
                                       key=lambda item: item[1])
            cells += [f"{failed}/{total} ({100 * failed / max(total, 1):.1f}%)", f"{worst_subject}: {100 * worst:.0f}%"]
        print(f"| {rule} | " + " | ".join(cells) + " |")
    within = [t is not None and t <= WITHIN_SECONDS for t in live_seconds]
    print(f"after: live attempts judged live within {WITHIN_SECONDS:g} s of their first frame: {sum(within)}/{len(within)} "
          f"({100 * sum(within) / max(len(within), 1):.1f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
