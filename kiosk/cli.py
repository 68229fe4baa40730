"""``kiosk``: the face-kiosk command line.

Run ``kiosk COMMAND --help`` for the options of each command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kiosk.encoder import DEFAULT_MODEL_DIR
from kiosk.face import FaceKioskError


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
    parser = argparse.ArgumentParser(
        prog="kiosk",
        description="face-kiosk: a face-recognition door lock for the Raspberry Pi.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
