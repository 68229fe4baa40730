"""The quality gate against end-to-end accuracy: what ``quality.min_strength`` does to wild CelebA.

Every wild CelebA image (100 identities, 2,208 photos) goes through the door's front end (largest Haar face,
the model's alignment, the int8 encoder); its raw embedding length is kept. For gates from 0.40 to 0.85 times
the median length, on each of the two fixed halves of the identities (``kiosk.training.calibrate.
wild_celeba_halves``: the calibration half, which may choose the gate, and the evaluation half, which reports
it), every pair is scored and a face not found or below the gate is a failed comparison: TAR at FAR 1e-3 and
1e-4 and the failure to acquire.

    python -m bench.quality_gate                              # the shipped model
    python -m bench.quality_gate --models runs/aligned/models
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kiosk import assemble
from kiosk.encoder import DEFAULT_MODEL_DIR
from kiosk.images import read_image

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
FRACTIONS = np.round(np.arange(0.40, 0.86, 0.05), 2)


def embed(models: Path, paths: list[Path]) -> tuple[np.ndarray, np.ndarray, float]:
    """Unit embeddings and raw lengths (0: no face found) of the largest face of each image; the model's gate."""
    pipeline = assemble.pipeline(assemble.default_config(models))
    vectors = np.zeros((len(paths), pipeline.encoder.info.embedding_size), np.float32)
    strengths = np.zeros(len(paths))
    for i, path in enumerate(tqdm(paths, desc="wild CelebA", unit="img")):
        image = read_image(path)
        faces = pipeline.finder.find(image)
        if faces:
            result = pipeline.embed_face(image, faces[0])
            vectors[i], strengths[i] = result.embedding, result.strength
    return vectors, strengths, pipeline.encoder.min_strength


def tar_at(vectors: np.ndarray, strengths: np.ndarray, labels: np.ndarray, gate: float, far: float) -> tuple[float, float]:
    """(TAR at ``far`` over every pair, failures counted; the failure to acquire) with faces below ``gate`` unusable."""
    usable = strengths >= max(gate, 1e-9)
    scores = vectors @ vectors.T
    scores[~usable, :] = -2.0
    scores[:, ~usable] = -2.0
    upper = np.triu_indices(len(labels), 1)
    same = (labels[:, None] == labels[None, :])[upper]
    pairs = scores[upper]
    impostor = np.sort(pairs[~same])[::-1]
    threshold = impostor[int(far * len(impostor))]
    return float(np.mean(pairs[same] > threshold)), float(1 - usable.mean())


def main(argv: list[str] | None = None) -> int:
    from kiosk.training.calibrate import wild_celeba_halves

    parser = argparse.ArgumentParser(prog="python -m bench.quality_gate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help="model folder (default: the shipped one)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (default %(default)s)")
    args = parser.parse_args(argv)
    paths = sorted((args.data / "celeba").glob("*/*.jpg"))
    labels = np.array([path.parent.name for path in paths])
    vectors, strengths, gate = embed(args.models, paths)
    median = float(np.median(strengths[strengths > 0]))
    print(f"{args.models}: {len(paths)} photos; the model's gate {gate:.2f} = {gate / median:.2f} x the median length {median:.2f}")
    for role, identities in wild_celeba_halves(sorted(set(labels))).items():
        rows = np.isin(labels, sorted(identities))
        print(f"{role} half ({rows.sum()} photos): gate (x median) -> TAR@1e-3, TAR@1e-4, failure to acquire")
        for fraction in [*FRACTIONS, round(gate / median, 3)]:
            t3, fta = tar_at(vectors[rows], strengths[rows], labels[rows], fraction * median, 1e-3)
            t4, _ = tar_at(vectors[rows], strengths[rows], labels[rows], fraction * median, 1e-4)
            mark = "  <- the model's gate" if fraction == round(gate / median, 3) else ""
            print(f"  {fraction:.2f}: {t3:6.1%} {t4:6.1%} {fta:6.1%}{mark}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
