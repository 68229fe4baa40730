"""Evaluation of face pipelines on LFW View 1 and held-aside CelebA identities.

A *pipeline* is any callable ``BGR image -> L2-normalised embedding or None``
(None: no face found). face-kiosk's own pipeline and its peers (OpenCV YuNet +
SFace, SFace on the same Haar crops, dlib when installed) run on the same
images in the same run. A face not found is a failed comparison for every
pipeline: its pairs count as errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kiosk.images import read_image
from kiosk.metrics import accept_rate, equal_error_rate, roc_curve, tar_at_far, ten_fold_accuracy
from kiosk.training.calibrate import pair_scores
from kiosk.training.datasets import identity_folders, read_pairs

Pipeline = Callable[[np.ndarray], "np.ndarray | None"]
FARS = (1e-2, 1e-3, 1e-4)


@dataclass
class Scores:
    """Genuine and impostor scores of one pipeline on one test, and its misses."""

    genuine: np.ndarray
    impostor: np.ndarray
    images: int
    misses: int
    accuracy: tuple[float, float] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def fta(self) -> float:
        """Failure-to-acquire rate: images where no face was found."""
        return self.misses / max(1, self.images)

    def summary(self, threshold: float | None = None) -> dict:
        """Metrics as a flat dict (rates as fractions)."""
        out = {"images": self.images, "fta": self.fta, "eer": equal_error_rate(self.genuine, self.impostor)}
        if self.accuracy:
            out["accuracy"], out["accuracy_std"] = self.accuracy
        for far in FARS:
            if far * self.impostor.size >= 1:
                out[f"tar@far={far:g}"] = tar_at_far(self.genuine, self.impostor, far)[0]
        if threshold is not None:
            out["tar@shipped"] = accept_rate(self.genuine, threshold)
            out["far@shipped"] = accept_rate(self.impostor, threshold)
        return out | self.extra


def embed_images(pipeline: Pipeline, paths: list[Path], desc: str, transform: Callable | None = None) -> np.ndarray:
    """[N, D] embeddings, zero rows where no face was found."""
    vectors: list[np.ndarray | None] = []
    for path in tqdm(paths, desc=desc, unit="img", leave=False):
        image = read_image(path)
        if transform is not None:
            image = transform(image)
        vectors.append(pipeline(image))
    size = next((v.size for v in vectors if v is not None), 128)
    return np.stack([v if v is not None else np.zeros(size, np.float32) for v in vectors]).astype(np.float32)


def lfw_view1(pipeline: Pipeline, data: Path, desc: str = "LFW", transform: Callable | None = None) -> Scores:
    """LFW View 1 test pairs, 10-fold accuracy and ROC."""
    pairs = read_pairs(Path(data) / "lfw_pairsDevTest.txt", Path(data) / "lfw")
    unique = sorted({p for pair in pairs for p in (pair.first, pair.second)})
    index = {p: i for i, p in enumerate(unique)}
    embeddings = embed_images(pipeline, unique, desc, transform)
    valid = np.linalg.norm(embeddings, axis=1) > 0
    first = np.array([index[pair.first] for pair in pairs])
    second = np.array([index[pair.second] for pair in pairs])
    scores = np.sum(embeddings[first] * embeddings[second], axis=1)
    scores[~(valid[first] & valid[second])] = np.nan
    same = np.array([pair.same for pair in pairs])
    accuracy = ten_fold_accuracy(scores, same)
    return Scores(scores[same], scores[~same], len(unique), int((~valid).sum()), (accuracy.mean, accuracy.std))


def all_pairs(pipeline: Pipeline, root: Path, desc: str) -> Scores:
    """All-vs-all pairs of a folder-per-identity set (e.g. CelebA in the wild)."""
    people = identity_folders(Path(root))
    paths = [p for name in sorted(people) for p in people[name]]
    labels = np.array([i for i, name in enumerate(sorted(people)) for _ in people[name]])
    embeddings = embed_images(pipeline, paths, desc)
    genuine, impostor = pair_scores(embeddings, labels)
    misses = int((np.linalg.norm(embeddings, axis=1) == 0).sum())
    return Scores(genuine, impostor, len(paths), misses)


def darken(image: np.ndarray) -> np.ndarray:
    """Dusk: a third of the light and a dark gamma."""
    return (255 * ((image / 255.0) ** 1.8) * 0.45).astype(np.uint8)


def backlight(image: np.ndarray) -> np.ndarray:
    """Bright window behind the person: the face under-exposed, surroundings washed out."""
    height, width = image.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width]
    distance = np.hypot((xx - width / 2) / (width / 2), (yy - height / 2) / (height / 2))
    gain = np.clip(0.35 + 0.9 * distance, 0.35, 1.6)[..., None]
    return np.clip(image * gain + 40 * (distance[..., None] > 0.8), 0, 255).astype(np.uint8)


def side_light(image: np.ndarray) -> np.ndarray:
    """Light from one side: a strong left-to-right falloff."""
    width = image.shape[1]
    ramp = np.linspace(1.3, 0.25, width)[None, :, None]
    return np.clip(image * ramp, 0, 255).astype(np.uint8)


HARD_LIGHT = {"dusk": darken, "backlight": backlight, "side light": side_light}


def time_encoder(encoder, crops: np.ndarray, repeats: int = 200) -> dict:
    """Median and p90 milliseconds of one embedding (crops cycled)."""
    for crop in crops[:10]:
        encoder.embed(crop)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        encoder.embed(crops[i % len(crops)])
        times.append(1000 * (time.perf_counter() - start))
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}


def plot_roc(results: dict[str, Scores], title: str, out: Path) -> None:
    """DET-style plot (false reject vs false accept, log FAR axis) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4.5), dpi=110)
    for name, scores in results.items():
        far, frr = roc_curve(scores.genuine, scores.impostor)
        keep = far > 0
        axis.plot(far[keep], frr[keep], label=name)
    axis.set_xscale("log")
    axis.set_xlim(1e-4, 1)
    axis.set_ylim(0, 0.5)
    axis.set_xlabel("false accept rate (strangers let in), log scale")
    axis.set_ylabel("false reject rate (owners kept out)")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
