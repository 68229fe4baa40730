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


def test_the_tool_writes_the_metadata_the_door_checks(tmp_path):
    import json
    import shutil

    from kiosk.encoder import DEFAULT_MODEL_DIR, sha256_of
    from kiosk.landmarks import LANDMARK_FILE, LandmarkInfo
    from kiosk.training.landmarks import metadata

    tflite = shutil.copy(DEFAULT_MODEL_DIR / LANDMARK_FILE, tmp_path / LANDMARK_FILE)
    error = {"faces": 10, "median": 0.08, "mean": 0.09, "under_5%": 0.1, "under_10%": 0.7, "p99": 0.3}
    template = [[0.35, 0.47], [0.66, 0.47], [0.5, 0.65], [0.37, 0.8], [0.64, 0.8]]
    summary = {"train_faces": 100, "epochs": 2, "test": {"held-aside": error}, "int8": {"nme_median_int8": 0.085}, "crop_template": template,
               "sface_on_wild_celeba": {"Haar + landmark CNN": {"faces": 10, "tar_at_0.001": 0.8}}}
    (tmp_path / "landmarks.json").write_text(json.dumps(metadata(summary, tflite)))
    info = LandmarkInfo.load(tmp_path / "landmarks.json")
    assert info.input_size == INPUT_SIZE and info.sha256 == sha256_of(tflite)
    assert info.crop_template.tolist() == template
