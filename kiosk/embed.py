"""``kiosk embed``: embeddings of every image under a folder, as an ``.npz``.

The file holds ``paths`` (POSIX, relative to the root, so the first part is
the identity), ``embeddings`` (float32 [N, D], L2-normalised, zeros where no
face was found) and ``found`` (bool [N]). Unreadable files are reported and
left out; they never stop the run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kiosk.errors import ImageError
from kiosk.images import image_files, read_image
from kiosk.pipeline import FacePipeline


@dataclass
class EmbedResult:
    """What :func:`embed_tree` found."""

    paths: list[str]
    embeddings: np.ndarray
    found: np.ndarray
    errors: list[str] = field(default_factory=list)

    def save(self, out: Path) -> None:
        """Write the ``.npz`` (via a temporary file, so a full disk never leaves half a file)."""
        out = Path(out)
        tmp = out.with_name(out.name + ".part")
        with open(tmp, "wb") as stream:
            np.savez(stream, paths=np.array(self.paths, dtype=str), embeddings=self.embeddings, found=self.found)
        tmp.replace(out)


def embed_tree(root: Path, pipeline: FacePipeline, progress: bool = True) -> EmbedResult:
    """Run the door's detection and encoder on every image under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    paths, vectors, found, errors = [], [], [], []
    size = pipeline.encoder.info.embedding_size
    for path in tqdm(image_files(root), desc="embedding", unit="img", disable=not progress, file=sys.stderr):
        try:
            image = read_image(path)
        except ImageError as error:
            errors.append(str(error))
            continue
        result = pipeline.embed_largest(image)
        paths.append(path.relative_to(root).as_posix())
        vectors.append(result.embedding if result else np.zeros(size, np.float32))
        found.append(result is not None)
    embeddings = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, size), np.float32)
    return EmbedResult(paths, embeddings, np.array(found, dtype=bool), errors)
