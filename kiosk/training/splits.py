"""Which identities train the encoder, which calibrate its threshold, which test it.

- LFW: people in the View 1 test pairs (``lfw_pairsDevTest.txt``) are never
  used for training or calibration; they are the LFW test.
- LFW (other people) and ``celeba_aligned``: a seeded ``holdout`` fraction of
  identities is kept aside to calibrate the threshold; the rest trains.
- ``celeba`` (in the wild, 100 identities) is only used for evaluation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from kiosk.training.datasets import identity_folders, pair_people, read_pairs


@dataclass
class Split:
    """(path, identity label) lists for training and for threshold calibration."""

    train: list[tuple[Path, int]]
    calibrate: list[tuple[Path, int]]
    train_people: list[str]


def make_split(data: Path, holdout: float = 0.1, seed: int = 0, limit: int | None = None) -> Split:
    """Split the shared data by identity (see module docstring)."""
    data = Path(data)
    excluded = pair_people(read_pairs(data / "lfw_pairsDevTest.txt", data / "lfw"))
    people: dict[str, list[Path]] = {}
    for source in ("lfw", "celeba_aligned"):
        for name, paths in identity_folders(data / source).items():
            if source == "lfw" and name in excluded:
                continue
            people[f"{source}/{name}"] = paths
    names = sorted(people)
    random.Random(seed).shuffle(names)
    if limit:
        names = names[:limit]
    cut = int(len(names) * holdout)
    calibrate_names, train_names = sorted(names[:cut]), sorted(names[cut:])
    label = {name: i for i, name in enumerate(train_names)}
    train = [(p, label[n]) for n in train_names for p in people[n]]
    calibrate = [(p, i) for i, n in enumerate(calibrate_names) for p in people[n]]
    return Split(train, calibrate, train_names)
