"""``python -m kiosk.training.liveness``: arguments in, one training run, errors out as messages and exit status 2."""

from __future__ import annotations

import argparse
from pathlib import Path

import kiosk.training.liveness
from kiosk.training import exit_status, require_train_extra
from kiosk.training.liveness.minifasnet import DEFAULT_ONNX_DIR
from kiosk.training.liveness.run import run

PROG = "python -m kiosk.training.liveness"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=kiosk.training.liveness.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/nuaa_train"),
                        help="the NUAA training tree with live/ and spoof/ (default %(default)s)")
    parser.add_argument("--faces", type=Path, default=Path("../shared/data"),
                        help="the folder holding lfw/ and celeba/: live faces from many cameras for the distillation "
                             "(default %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("kiosk/models"), help="where to write liveness.tflite, .json and the report")
    parser.add_argument("--cache", type=Path, default=Path("cache/liveness"), help="prepared frames (reused when present)")
    parser.add_argument("--minifasnet", type=Path, default=DEFAULT_ONNX_DIR,
                        help="the folder with MiniFASNet's two ONNX files (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="the run's one seed (default %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def train() -> None:
        require_train_extra(converter=True)  # it trains and exports the int8 file in one run
        run(args.data, args.faces, args.out, args.cache, args.minifasnet, args.seed)

    return exit_status(PROG, train)
