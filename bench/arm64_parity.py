"""Does the door compute the same numbers on ARM as on x86? (``deploy/test-arm64.sh`` runs this.)

The door's thresholds were calibrated, and its tests pass, on x86; a Pi runs
other int8 kernels (XNNPACK's NEON paths round differently) and another build
of OpenCV's Haar cascade, so a face could score differently at the door than
here. ``record`` writes what this machine makes of a fixed set of faces (the
photos of ``tests/fixtures``): the Haar box, the five landmark points, the
int8 embedding and its strength, and the liveness CNNs' logits and texture score. ``compare``
holds another machine's record to the reference: every embedding within
cosine ``--min-cosine`` (0.99) of the reference's, and the same decisions
(the same faces found and usable, the same same-person verdicts between the
photos at the model's threshold, the same live verdicts at the liveness
threshold). It exits 1 when any check fails.

    python -m bench.arm64_parity record --out x86.json
    python -m bench.arm64_parity compare x86.json arm64.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
FACE_FOLDERS = ("faces", "liveness/enrol", "liveness/live", "liveness/spoof")
"""The fixed set: 12 LFW photos of 3 people, and NUAA webcam frames of one subject, live and printed."""


def versions() -> dict[str, str]:
    """The machine and the versions of what computes the numbers."""
    found = {"machine": platform.machine(), "python": platform.python_version()}
    for package in ("numpy", "opencv-python-headless", "ai-edge-litert", "tflite-runtime"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def record(fixtures: Path = FIXTURES) -> dict:
    """This machine's box, points, embedding, strength and liveness score of each fixture photo, with the thresholds."""
    from kiosk import assemble
    from kiosk.images import image_files, read_image
    from kiosk.landmarks import Landmarker

    config = assemble.default_config()
    config.liveness.mode = "texture"
    pipeline = assemble.pipeline(config, num_threads=1)
    landmarker = pipeline.landmarker or Landmarker(assemble.model_dir(config), runtime=config.recognition.runtime)
    texture = assemble.liveness(config).texture
    faces = {}
    for folder in FACE_FOLDERS:
        for path in image_files(fixtures / folder):
            image = read_image(path)
            face = pipeline.finder.largest(image)
            entry: dict = {"found": face is not None}
            if face is not None:
                embedded = pipeline.embed_face(image, face)
                entry |= {"box": [face.x, face.y, face.w, face.h], "points": landmarker.points(image, face).tolist(),
                          "embedding": embedded.embedding.tolist(), "strength": embedded.strength, "usable": embedded.usable,
                          "liveness": texture.score(image, face),
                          "liveness_logits": texture.logits(texture.crops(image, face)).tolist()}
            faces[path.relative_to(fixtures).as_posix()] = entry
    return {"versions": versions() | {"runtime": pipeline.encoder.runtime}, "threshold": pipeline.encoder.threshold,
            "liveness_threshold": texture.info.texture_threshold, "faces": faces}


def same_person(faces: dict, threshold: float) -> dict[str, bool]:
    """For each pair of LFW photos with a usable embedding: does the door take them for the same person?"""
    usable = {name: np.asarray(f["embedding"]) for name, f in faces.items() if name.startswith("faces/") and f.get("usable")}
    return {f"{a} ~ {b}": bool(usable[a] @ usable[b] >= threshold) for a, b in combinations(sorted(usable), 2)}


def compare(reference: dict, other: dict, min_cosine: float = 0.99) -> tuple[list[str], list[str]]:
    """(report lines, failures) of ``other`` held to ``reference``; no failures means the door decides alike on both."""
    lines, failures = [], []
    ref_faces, faces = reference["faces"], other["faces"]
    if set(ref_faces) != set(faces):
        failures.append(f"different photo sets: {sorted(set(ref_faces) ^ set(faces))}")
    cosines, shifts, point_shifts, score_gaps = [], [], [], []
    lines.append(f"{'photo':44s} {'cosine':>7s} {'box px':>6s} {'points px':>9s} {'liveness':>15s}")
    for name in sorted(set(ref_faces) & set(faces)):
        ref, got = ref_faces[name], faces[name]
        for key in ("found", "usable"):
            if ref.get(key) != got.get(key):
                failures.append(f"{name}: {key} {got.get(key)} here, {ref.get(key)} in the reference")
        if not (ref["found"] and got["found"]):
            lines.append(f"{name:44s} {'no face':>7s}")
            continue
        cosine = float(np.dot(ref["embedding"], got["embedding"]))
        shift = float(np.max(np.abs(np.subtract(ref["box"], got["box"]))))
        point_shift = float(np.max(np.abs(np.subtract(ref["points"], got["points"]))))
        cosines.append(cosine)
        shifts.append(shift)
        point_shifts.append(point_shift)
        score_gaps.append(float(np.max(np.abs(np.subtract(ref["liveness_logits"], got["liveness_logits"])))))
        lines.append(f"{name:44s} {cosine:7.4f} {shift:6.1f} {point_shift:9.2f} {ref['liveness']:7.3f}>{got['liveness']:7.3f}")
        if cosine < min_cosine:
            failures.append(f"{name}: embedding cosine {cosine:.4f} to the reference, below {min_cosine}")
        threshold = reference["liveness_threshold"]
        if (ref["liveness"] >= threshold) != (got["liveness"] >= threshold):
            failures.append(f"{name}: liveness score {got['liveness']:.3f} here, {ref['liveness']:.3f} in the reference: "
                            f"the verdict at threshold {threshold:.3f} differs")
    ref_pairs, pairs = same_person(ref_faces, reference["threshold"]), same_person(faces, reference["threshold"])
    flipped = sorted(k for k in ref_pairs.keys() & pairs.keys() if ref_pairs[k] != pairs[k])
    failures += [f"same-person verdict differs: {pair}" for pair in flipped]
    if cosines:
        lines.append(f"embeddings: min cosine {min(cosines):.4f}, mean {np.mean(cosines):.4f} over {len(cosines)} faces; "
                     f"boxes within {max(shifts):.1f} px, landmarks within {max(point_shifts):.2f} px, "
                     f"liveness CNN logits within {max(score_gaps):.3f}")
    lines.append(f"decisions: {len(ref_pairs) - len(flipped)} of {len(ref_pairs)} same-person verdicts alike; "
                 f"reference {_describe(reference['versions'])}; here {_describe(other['versions'])}")
    return lines, failures


def _describe(found: dict[str, str]) -> str:
    return ", ".join(f"{key} {value}" for key, value in found.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.arm64_parity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("record", help="write this machine's numbers for the fixed faces")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("compare", help="hold another machine's record to the reference")
    p.add_argument("reference", type=Path)
    p.add_argument("other", type=Path)
    p.add_argument("--min-cosine", type=float, default=0.99)
    args = parser.parse_args(argv)
    if args.command == "record":
        args.out.write_text(json.dumps(record()))
        return 0
    lines, failures = compare(json.loads(args.reference.read_text()), json.loads(args.other.read_text()), args.min_cosine)
    print("\n".join(lines))
    for failure in failures:
        print(f"DIFFERS: {failure}")
    print("parity: the same decisions" if not failures else f"parity FAILED: {len(failures)} difference(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
