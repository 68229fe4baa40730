"""Face datasets as the training tool reads them.

Two layouts: folder-per-identity (``ROOT/<person>/<image>``) and LFW pairs
files (first line a count, then ``name n1 n2`` for a same-person pair or
``name1 n1 name2 n2`` for a different-person pair).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiosk.images import image_files


def identity_folders(root: Path) -> dict[str, list[Path]]:
    """Map each identity folder under ``root`` to its sorted images."""
    people: dict[str, list[Path]] = {}
    for path in image_files(root):
        people.setdefault(path.relative_to(root).parts[0], []).append(path)
    return people


@dataclass(frozen=True)
class Pair:
    """Two images of a pairs file and whether they show the same person."""

    first: Path
    second: Path
    same: bool


def lfw_image(root: Path, name: str, number: int) -> Path:
    """Path of LFW image ``number`` of ``name`` (``Name/Name_0001.jpg``)."""
    return Path(root) / name / f"{name}_{number:04d}.jpg"


def read_pairs(pairs_file: Path, root: Path) -> list[Pair]:
    """Read an LFW pairs file, resolving images under ``root``."""
    lines = Path(pairs_file).read_text().split("\n")
    pairs = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 3:
            pairs.append(Pair(lfw_image(root, fields[0], int(fields[1])), lfw_image(root, fields[0], int(fields[2])), True))
        elif len(fields) == 4:
            pairs.append(Pair(lfw_image(root, fields[0], int(fields[1])), lfw_image(root, fields[2], int(fields[3])), False))
        else:
            raise ValueError(f"{pairs_file}:{number}: expected 3 or 4 fields, got {len(fields)}")
    return pairs


def pair_people(pairs: list[Pair]) -> set[str]:
    """Names of everyone who appears in ``pairs`` (LFW layout)."""
    return {p.parent.name for pair in pairs for p in (pair.first, pair.second)}
