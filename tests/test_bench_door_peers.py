"""bench.door_peers' pure parts on tiny synthetic embeddings: thresholds, shared galleries, what counts as an attempt."""

from __future__ import annotations

import numpy as np
import pytest

from bench.door_peers import curve_info, draw_galleries, measure, oracle_threshold, union_threshold
from kiosk.training.calibrate import FaceSet


def face_set(identities: list[str], vectors: np.ndarray) -> FaceSet:
    """Photos named by row; a row of NaN is a photo without a usable face."""
    return FaceSet([f"photo{row}.jpg" for row in range(len(identities))], np.array(identities), vectors.astype(np.float32))


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def people_photos(people: int, photos: int, size: int = 16, noise: float = 0.1, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``photos`` photos of each of ``people`` people: one direction per person, plus a little noise."""
    rng = np.random.default_rng(seed)
    identities = [f"p{person}" for person in range(people) for _ in range(photos)]
    centres = unit(rng.normal(size=(people, size)))
    vectors = np.repeat(centres, photos, axis=0) + noise * rng.normal(size=(people * photos, size))
    return identities, unit(vectors)


def test_union_threshold_holds_the_target_on_a_synthetic_impostor_sample() -> None:
    scores = np.tanh(np.random.default_rng(0).normal(0.0, 0.2, 400_000))
    info = curve_info(scores, embedding_size=16)
    assert np.mean(scores > info.threshold) == pytest.approx(1e-3, rel=0.1)  # the per-comparison cosine at 1e-3
    one_person = union_threshold(info, 1e-3, 1)
    per_comparison = 1 - (1 - 1e-3) ** (1 / 3)  # 1 - (1 - F)^3 = 1e-3: three templates, each independent
    assert np.mean(scores > one_person) == pytest.approx(per_comparison, rel=0.15)
    for people in (1, 5, 20):
        assert union_threshold(info, 1e-3, people) < union_threshold(info, 1e-3, people * 2)
        assert union_threshold(info, 1e-3, people) < union_threshold(info, 1e-4, people)
    widened = curve_info(scores, embedding_size=16, widening=1.5)  # only the extrapolated tail (below 1e-4) moves
    assert union_threshold(widened, 1e-3, 1) == union_threshold(info, 1e-3, 1)
    assert union_threshold(widened, 1e-4, 20) > union_threshold(info, 1e-4, 20)


def test_galleries_are_one_set_for_every_pipeline_with_photos_every_pipeline_would_enrol() -> None:
    identities, first = people_photos(people=8, photos=5)
    second = first[:, ::-1].copy()
    second[[0, 6, 12]] = np.nan  # the second pipeline finds no face in three photos
    identities[35:40] = ["short"] * 5
    identities[38:40] = ["two", "two"]  # 3 photos of "short": nobody left to try, never enrolled
    strengths = np.full(len(identities), 9.0)
    strengths[[1, 7, 13]] = 6.0  # usable for an attempt, too weak for the first pipeline's enrolment gate
    pipelines = [FaceSet(face_set(identities, first).paths, np.array(identities), first.astype(np.float32), strengths, 7.0),
                 face_set(identities, second)]
    galleries = draw_galleries(pipelines, [0.5, 0.5], people=4, draws=5, seed=3)
    assert [list(map(list, g.values())) for g in galleries] == \
        [list(map(list, g.values())) for g in draw_galleries(pipelines, [0.5, 0.5], people=4, draws=5, seed=3)]
    for gallery in galleries:
        assert len(gallery) == 4 and "short" not in gallery and "two" not in gallery
        for rows in gallery.values():
            assert len(rows) == 3 and all(pipeline.enrollable[rows].all() for pipeline in pipelines)
            assert all((pipeline.embeddings[rows] @ pipeline.embeddings[rows].T).min() > 0.5 for pipeline in pipelines)
    with pytest.raises(SystemExit):
        draw_galleries(pipelines, [0.5, 0.5], people=8, draws=1)


def test_a_photo_without_a_face_is_a_failed_genuine_attempt_and_no_stranger_attempt() -> None:
    identities, vectors = people_photos(people=3, photos=4, noise=0.02)
    vectors[3] = np.nan  # the resident's fourth photo: no usable face
    vectors[11] = np.nan  # one stranger photo: no usable face
    faces = face_set(identities, vectors)
    gallery = {"p0": np.array([0, 1, 2])}
    strangers_in, strangers, genuine_in, genuine, worst = measure(faces, [gallery], 0.5, None, margin=0.05)
    assert (genuine_in, genuine, worst) == (0, 1, 0.0)
    assert (strangers_in, strangers) == (0, 7)
    vectors[3] = vectors[0]
    assert measure(face_set(identities, vectors), [gallery], 0.5, None, margin=0.05)[2:] == (1, 1, 1.0)


def test_oracle_threshold_lets_in_at_most_its_share_of_the_strangers() -> None:
    template = np.eye(4)[0]
    cosines = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    strangers = np.column_stack([cosines, np.sqrt(1 - cosines ** 2), np.zeros(10), np.zeros(10)])
    faces = face_set(["me"] * 4 + [f"s{k}" for k in range(10)], np.vstack([np.tile(template, (4, 1)), strangers]))
    threshold = oracle_threshold(faces, [{"me": np.array([0, 1, 2])}], margin=0.05, share=0.2)
    assert threshold == pytest.approx(0.7)
    assert measure(faces, [{"me": np.array([0, 1, 2])}], threshold, None, margin=0.05)[:2] == (2, 10)
