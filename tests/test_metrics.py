"""Verification metrics and threshold calibration on synthetic scores."""

from __future__ import annotations

import numpy as np

from kiosk.metrics import accept_rate, equal_error_rate, tar_at_far, ten_fold_accuracy, threshold_for_far
from kiosk.training.calibrate import calibrate_threshold, pair_scores


def test_threshold_meets_the_target_far_on_synthetic_scores():
    rng = np.random.default_rng(1)
    impostor = rng.normal(0.0, 0.1, 200_000)
    for far in (1e-2, 1e-3, 1e-4):
        threshold = threshold_for_far(impostor, far)
        measured = accept_rate(impostor, threshold)
        assert measured <= far
        assert measured >= far * 0.8  # not needlessly strict
    # For a normal(0, 0.1) impostor distribution the 1e-3 quantile is about 0.309.
    assert abs(threshold_for_far(impostor, 1e-3) - 0.309) < 0.01


def test_too_few_impostors_for_the_target_means_above_all_of_them():
    impostor = np.array([0.1, 0.5, 0.2])
    assert threshold_for_far(impostor, 1e-3) == 0.5
    assert accept_rate(impostor, 0.5) == 0.0


def test_tar_and_eer_of_separated_distributions():
    rng = np.random.default_rng(2)
    genuine, impostor = rng.normal(0.7, 0.05, 5000), rng.normal(0.0, 0.05, 5000)
    tar, _ = tar_at_far(genuine, impostor, 1e-3)
    assert tar > 0.999
    assert equal_error_rate(genuine, impostor) < 1e-3


def test_failed_comparisons_count_as_errors():
    genuine = np.array([0.9, 0.9, np.nan, np.nan])
    assert accept_rate(genuine, 0.5) == 0.5
    scores = np.array([0.9] * 5 + [np.nan] * 5 + [0.1] * 10)
    same = np.array([True] * 10 + [False] * 10)
    accuracy = ten_fold_accuracy(scores, same)
    assert abs(accuracy.mean - 0.75) < 1e-9


def test_ten_fold_accuracy_perfect_and_chance():
    same = np.array([True] * 500 + [False] * 500)
    perfect = np.where(same, 0.8, 0.1) + np.linspace(0, 0.01, 1000)
    assert ten_fold_accuracy(perfect, same).mean == 1.0
    rng = np.random.default_rng(3)
    assert abs(ten_fold_accuracy(rng.random(1000), same).mean - 0.5) < 0.08


def test_calibration_on_synthetic_identities():
    rng = np.random.default_rng(4)
    centers = rng.normal(size=(60, 16))
    labels = np.repeat(np.arange(60), 5)
    embeddings = centers[labels] + rng.normal(scale=0.35, size=(300, 16))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings[7] = 0  # one image without a face
    genuine, impostor = pair_scores(embeddings, labels)
    assert genuine.size == 60 * 10 and impostor.size == 300 * 299 // 2 - 600
    assert np.isnan(genuine).sum() == 4
    result = calibrate_threshold(embeddings, labels, 1e-3)
    assert result.measured_far <= 1e-3
    assert result.tar > 0.9
    assert result.identities == 60 and result.images == 300
