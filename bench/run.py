"""Benchmark face-kiosk beside face_recognition (dlib) and OpenCV YuNet + SFace: same data, same run.

Measures, for face-kiosk and every installed peer (a missing peer is skipped with a note):

  accuracy  each pipeline end to end from the raw image (its own detector and alignment) on
            LFW View 1 test pairs (10-fold accuracy, TAR at FAR 1e-3 and 1e-4, EER,
            failure to acquire) and on the held-aside CelebA identities (all pairs).
            A face not found is a failed comparison for every pipeline.
  speed     per-frame time on 640x480 camera frames (detection as the pipeline runs it, plus the
            embedding of the largest face), median and p90 on 1 thread and all cores, each
            pipeline in its own process; peak resident memory; model sizes on disk.
  liveness  APCER/BPCER/ACER of face-kiosk's liveness check on the NUAA subjects kept out of
            its training (no peer has a liveness check).

Writes OUT/benchmarks.md with OUT/benchmarks/*.png (DET curves, speed chart) and
results.json, and prints the tables; the full run into docs/ also rewrites the summary
that README.md quotes. Run it from the repository root. Peers: pip install -e '.[bench]'.

  python -m bench                      # the full run, into docs/ (about 15 minutes on 2 cores)
  python -m bench --quick              # a few dozen images, under a minute: checks the code
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench.pipelines import LABELS, PIPELINES, embedder, missing, model_files
from bench.speed import ROOT, ROUNDS, measure_all, table
from kiosk.encoder import DEFAULT_MODEL_DIR

SECTIONS = ("accuracy", "speed", "liveness")


@dataclass(frozen=True)
class Sizes:
    """How much of the data the quick run uses (the full run uses all of it)."""

    lfw_pairs: int  # per class (same / different)
    celeba_people: int
    celeba_images: int  # per person
    nuaa_frames: int  # per liveness test subject and class, from its first session
    frames: int  # camera frames for the speed runs


QUICK = Sizes(lfw_pairs=10, celeba_people=4, celeba_images=4, nuaa_frames=10, frames=20)
FULL_FRAMES = 100


def quick_data(data: Path, into: Path, sizes: Sizes) -> Path:
    """A small tree of links into ``data`` with the same layout, so the quick run executes the full run's code."""
    from kiosk.training.datasets import identity_folders
    from kiosk.training.liveness.data import TEST_SUBJECTS, scan_nuaa

    lines = (data / "lfw_pairsDevTest.txt").read_text().split("\n")[1:]
    same = [line for line in lines if len(line.split()) == 3][:sizes.lfw_pairs]
    different = [line for line in lines if len(line.split()) == 4][:sizes.lfw_pairs]
    (into / "lfw_pairsDevTest.txt").write_text("\n".join([str(len(same))] + same + different) + "\n")
    (into / "lfw").symlink_to((data / "lfw").resolve())
    links = [(path, path.relative_to(data)) for person, paths in sorted(identity_folders(data / "celeba").items())[:sizes.celeba_people]
             for path in paths[:sizes.celeba_images]]
    sessions: dict[tuple[bool, str], list] = defaultdict(list)
    for record in scan_nuaa(data / "nuaa_train"):
        if record.subject in TEST_SUBJECTS:
            sessions[record.live, record.subject].append(record)
    for records in sessions.values():
        first = [r for r in records if r.session == records[0].session][:sizes.nuaa_frames]
        links += [(r.path, r.path.relative_to(data)) for r in first]
    for source, relative in links:
        (into / relative).parent.mkdir(parents=True, exist_ok=True)
        (into / relative).symlink_to(source.resolve())
    return into


def accuracy(names: list[str], data: Path, models: Path) -> dict:
    """LFW View 1 and CelebA all-pairs scores of each pipeline, and seconds per image."""
    from kiosk.training.datasets import identity_folders
    from kiosk.training.evaluate import all_pairs, lfw_view1

    found: dict = {"lfw": {}, "celeba": {}, "seconds_per_image": {}, "celeba_people": len(identity_folders(data / "celeba"))}
    for name in names:
        run = embedder(name, models, os.cpu_count() or 1)
        started = time.monotonic()
        found["lfw"][name] = lfw_view1(run, data, f"LFW {name}")
        found["celeba"][name] = all_pairs(run, data / "celeba", f"CelebA {name}")
        images = found["lfw"][name].images + found["celeba"][name].images
        found["seconds_per_image"][name] = (time.monotonic() - started) / images
        print(f"accuracy: {LABELS[name]} done, {images} images in {time.monotonic() - started:.0f} s", flush=True)
    return found


def liveness(nuaa: Path, models: Path) -> dict:
    """face-kiosk's liveness check at its shipped threshold on NUAA subjects TEST_SUBJECTS (per attempt)."""
    from kiosk.liveness import METADATA_FILE, LivenessInfo
    from kiosk.training.liveness.data import ATTEMPT_FRAMES, TEST_SUBJECTS
    from kiosk.training.liveness.evaluate import evaluate
    from kiosk.training.liveness.metrics import equal_error_rate, error_rates

    info = LivenessInfo.load(models / METADATA_FILE)
    print(f"liveness: NUAA subjects {', '.join(TEST_SUBJECTS)} through LivenessChecker ...", flush=True)
    result = evaluate(nuaa, models)
    live = result.table.live
    scores = {"texture": (result.table.texture, info.texture_threshold)}
    return {"subjects": list(TEST_SUBJECTS), "attempt_frames": ATTEMPT_FRAMES,
            "modes": {mode: error_rates(live, s, t) | {"threshold": t, "eer": equal_error_rate(live, s),
                                                       "ms_per_face": result.timing[mode]["median_ms"]}
                      for mode, (s, t) in scores.items()}}


def sizes_on_disk(names: list[str], models: Path) -> dict[str, dict[str, int]]:
    """Bytes of each pipeline's weight files, plus face-kiosk's liveness model on its own."""
    from kiosk.liveness import MODEL_FILE

    found = {name: {path.name: path.stat().st_size for path in model_files(name, models)} for name in names}
    found["face-kiosk liveness"] = {MODEL_FILE: (models / MODEL_FILE).stat().st_size}
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="the shared data folder with lfw/, lfw_pairsDevTest.txt, celeba/ and nuaa_train/ "
                             "(default: ../shared/data beside the checkout)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help="face-kiosk's model folder (default: the shipped one)")
    parser.add_argument("--out", type=Path, help="where benchmarks.md and benchmarks/ (plots, results.json) go (default: docs/, "
                                                 "the published copy, whose summary the README quotes; with --quick: runs/bench-quick/)")
    parser.add_argument("--quick", action="store_true",
                        help=f"CI-sized run: {QUICK.lfw_pairs}+{QUICK.lfw_pairs} LFW pairs, {QUICK.celeba_people}x{QUICK.celeba_images} "
                             f"CelebA images, {QUICK.nuaa_frames} NUAA frames per subject and class, {QUICK.frames} speed frames")
    parser.add_argument("--peers", nargs="*", choices=PIPELINES[1:], default=list(PIPELINES[1:]),
                        help="peers to run beside face-kiosk (default: all; none: face-kiosk alone)")
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="sections to leave out")
    return parser


def main(argv: list[str] | None = None) -> int:
    from bench.report import PUBLISHED, duration, print_and_write

    args = build_parser().parse_args(argv)
    args.peers = list(dict.fromkeys(args.peers))
    args.out = args.out or (ROOT / "runs" / "bench-quick" if args.quick else PUBLISHED)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for needed in ("lfw", "lfw_pairsDevTest.txt", "celeba", "nuaa_train"):
        if not (args.data / needed).exists():
            raise SystemExit(f"{args.data / needed} not found: pass --data, the folder that holds lfw/, celeba/ and nuaa_train/")
    started = time.monotonic()
    skipped = {name: "not requested (`--peers`)" for name in PIPELINES[1:] if name not in args.peers}
    if note := missing("face-kiosk", args.models):
        raise SystemExit(f"face-kiosk cannot run: {note}")
    skipped |= {name: note for name in args.peers if (note := missing(name, args.models))}
    for name, note in skipped.items():
        print(f"note: {LABELS[name]} skipped: {note}")
    names = ["face-kiosk"] + [name for name in args.peers if name not in skipped]
    results: dict = {"sizes": sizes_on_disk(names, args.models), "seconds": {}}
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as scratch:
        data = quick_data(args.data, Path(scratch), QUICK) if args.quick else args.data
        for section in (s for s in SECTIONS if s not in args.skip):
            section_started = time.monotonic()
            if section == "accuracy":
                results["accuracy"] = accuracy(names, data, args.models)
            elif section == "speed":
                frames = QUICK.frames if args.quick else FULL_FRAMES
                results["speed"], failed = measure_all(names, data / "nuaa_train" / "live", frames, args.models,
                                                         1 if args.quick else ROUNDS)
                skipped |= failed
                print(table(results["speed"]))
            else:
                results["liveness"] = liveness(data / "nuaa_train", args.models)
            results["seconds"][section] = time.monotonic() - section_started
    results["seconds"]["total"] = time.monotonic() - started
    print_and_write(results, names, skipped, args, command)
    print(f"total duration: {duration(results['seconds']['total'])}")
    return 0
