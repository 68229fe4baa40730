"""The landmark stage's tool: augmentation moves the points with the pixels; the error measure."""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.training.landmarks import INPUT_SIZE, augment, normalised_error


def test_augmentation_moves_the_points_with_the_pixels():
    rng = np.random.default_rng(0)
    points = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32)
    crop = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    for (x, y), colour in zip(points * INPUT_SIZE, colours):
        cv2.circle(crop, (int(round(x)), int(round(y))), 3, colour, -1)
    for _ in range(20):
        moved_crop, moved = augment(rng, crop, points)
        brightness = moved_crop.max(axis=2)
        for (x, y) in moved * INPUT_SIZE:
            if 3 <= x < INPUT_SIZE - 3 and 3 <= y < INPUT_SIZE - 3:
                patch = brightness[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2]
                assert patch.max() >= np.percentile(brightness, 95), "a point must stay on its dot"
        # After a mirror image the left eye (index 0) is still the one on the image's left.
        assert moved[0, 0] < moved[1, 0] and moved[3, 0] < moved[4, 0]


def test_normalised_error_is_a_fraction_of_the_eye_distance():
    truth = np.array([[[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]])
    shifted = truth + [0.02, 0.0]  # every point 0.02 off; the eyes are 0.4 apart
    assert np.allclose(normalised_error(shifted, truth), 0.05)
