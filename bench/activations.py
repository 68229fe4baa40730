"""What each activation (and the stride-2 stem, and factored pointwise convolutions) costs the encoder in int8 LiteRT.

Builds the encoder (SFace's architecture, SFace's weights where they fit) with each activation of
:data:`kiosk.training.model.ACTIVATIONS`, exports it fully int8 the way the shipped model is exported (PReLU
written as XNNPACK ops by :func:`kiosk.training.model.split_prelu`; LiteRT's own int8 PRELU took 48 ms here),
and times one embedding on 1 and 2 threads with every installed runtime. Prints a table and the
CPU's int8 features (timings differ a lot between CPUs with and without int8 dot products)::

    python -m bench.activations            # needs the train extra (TensorFlow for the converter)
    python -m bench.activations --activations prelu relu --stem-strides 2 --rank-divisors 1 4 8   # cheaper layouts
    python -m bench.activations --files kiosk/models/encoder.tflite runs/x/encoder.tflite   # exported files, in turns
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import cpu_int8_features
from kiosk.encoder import run_interpreter, runtime_interpreters
from kiosk.training.export import export_int8
from kiosk.training.model import ACTIVATIONS, build_encoder, fold_head, load_sface_weights, split_prelu
from kiosk.training.teacher import SFACE_FILE, model_path


def time_model(path: Path, interpreter_class: type, threads: int, crops: np.ndarray, repeats: int) -> float:
    """Median milliseconds of one embedding."""
    interpreter = interpreter_class(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    for crop in crops[:5]:
        run_interpreter(interpreter, crop)
    timings = []
    for index in range(repeats):
        started = time.perf_counter()
        run_interpreter(interpreter, crops[index % len(crops)])
        timings.append(1000 * (time.perf_counter() - started))
    return float(np.median(timings))


def time_files(paths: list[Path], interpreter_class: type, crops: np.ndarray, repeats: int, rounds: int = 5) -> None:
    """Print the median milliseconds of one embedding per file on 1 and 2 threads, runs taken in turns (a shared
    machine drifts: alternating keeps the files' comparison fair)."""
    runs: dict[tuple[Path, int], list[float]] = {(path, t): [] for path in paths for t in (1, 2)}
    for _ in range(rounds):
        for path in paths:
            for t in (1, 2):
                runs[path, t].append(time_model(path, interpreter_class, t, crops, repeats))
    print("| file | 1 thread (ms) | 2 threads (ms) |\n|---|---|---|")
    for path in paths:
        cells = [f"{np.median(runs[path, t]):.2f} ({min(runs[path, t]):.2f}-{max(runs[path, t]):.2f})" for t in (1, 2)]
        print(f"| {path} | " + " | ".join(cells) + " |")


def layouts(activations: list[str], stem_strides: list[int], rank_divisors: list[int]) -> list[tuple[str, int, int]]:
    """(activation, stem stride, rank divisor) of each network to time: factored convolutions exist only with the
    stride-2 stem (as in ``kiosk-train train``)."""
    return [(activation, stem, rank) for activation in activations for stem in stem_strides for rank in rank_divisors
            if rank == 1 or stem == 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50, help="timed embeddings per model and setting")
    parser.add_argument("--activations", nargs="+", choices=ACTIVATIONS, default=list(ACTIVATIONS))
    parser.add_argument("--stem-strides", nargs="+", type=int, choices=(1, 2), default=[1, 2],
                        help="1: SFace's layout; 2: its first downsampling moved into the first convolution (default both)")
    parser.add_argument("--rank-divisors", nargs="+", type=int, choices=(1, 4, 8), default=[1],
                        help="with stem stride 2: the square pointwise convolutions factored through C/DIVISOR channels "
                             "(kiosk-train train --rank-divisor; default 1, not factored)")
    parser.add_argument("--files", type=Path, nargs="+", help="time these exported encoder files instead (ai-edge-litert, "
                        "five runs of each taken in turns; median, and the runs' range)")
    args = parser.parse_args(argv)
    crops = np.random.default_rng(0).integers(0, 256, (16, 112, 112, 3), dtype=np.uint8)
    runtimes = runtime_interpreters()
    print(f"CPU int8 features: {cpu_int8_features()}")
    if args.files:
        time_files(args.files, runtimes["ai-edge-litert"], crops, args.repeats)
        return 0
    print("| activation | stem stride | rank divisor | "
          + " | ".join(f"{name}, {t} thread{'s' * (t > 1)} (ms)" for name in runtimes for t in (1, 2)) + " |")
    print("|---|---|---|" + "---|" * (2 * len(runtimes)))
    with tempfile.TemporaryDirectory() as tmp:
        for activation, stem_stride, rank_divisor in layouts(args.activations, args.stem_strides, args.rank_divisors):
            model = build_encoder(activation=activation, stem_stride=stem_stride, rank_divisor=rank_divisor)
            load_sface_weights(model, model_path(SFACE_FILE))  # realistic weight ranges for the int8 calibration
            path = export_int8(split_prelu(fold_head(model)), crops,  # as kiosk-train exports
                               Path(tmp) / f"{activation}-{stem_stride}-{rank_divisor}.tflite")
            cells = [f"{time_model(path, cls, t, crops, args.repeats):.2f}" for cls in runtimes.values() for t in (1, 2)]
            print(f"| {activation} | {stem_stride} | {rank_divisor} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
