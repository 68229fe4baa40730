"""Augmentation that looks like a door camera: light, blur, noise, pose jitter, IR.

Works on the context crops of :mod:`kiosk.training.prepare` with NumPy and
OpenCV only, so it runs the same under every Keras backend.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.face import ENCODER_SIZE


def random_geometry(rng: np.random.Generator, context: np.ndarray) -> np.ndarray:
    """Encoder-size crop from a context crop with small rotation, zoom, shift and flip.

    The context crop's central ``ENCODER_SIZE`` pixels are the plain encoder
    crop, aligned by the door's landmark stage, so it already carries that
    stage's own errors; the ranges add about as much again (its median error
    is 8-9% of the eye distance, some 3 pixels).
    """
    side = context.shape[0]
    angle = rng.uniform(-5, 5)
    zoom = rng.uniform(0.95, 1.05)
    shift = rng.uniform(-0.03, 0.03, size=2) * ENCODER_SIZE
    center = (side / 2 + shift[0], side / 2 + shift[1])
    matrix = cv2.getRotationMatrix2D(center, angle, zoom)
    matrix[:, 2] += (ENCODER_SIZE / 2 - center[0], ENCODER_SIZE / 2 - center[1])
    out = cv2.warpAffine(context, matrix, (ENCODER_SIZE, ENCODER_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def random_photometric(rng: np.random.Generator, crop: np.ndarray) -> np.ndarray:
    """Lighting, gamma, blur, noise and grayscale/infrared-like variations of a uint8 RGB crop."""
    image = crop.astype(np.float32) / 255.0
    if rng.random() < 0.2:
        # Infrared / monochrome camera: one channel, often washed-out contrast.
        gray = image @ np.array([0.299, 0.587, 0.114], np.float32)
        image = np.repeat(gray[..., None], 3, axis=2)
    if rng.random() < 0.8:
        image = image ** rng.uniform(0.5, 2.0)  # dusk (>1) or over-exposure (<1)
    if rng.random() < 0.8:
        image = image * rng.uniform(0.6, 1.3) + rng.uniform(-0.12, 0.12)
    if rng.random() < 0.3:
        # Light from one side: a horizontal brightness ramp.
        ramp = np.linspace(rng.uniform(0.4, 1.0), rng.uniform(1.0, 1.4), ENCODER_SIZE, dtype=np.float32)
        image = image * (ramp if rng.random() < 0.5 else ramp[::-1])[None, :, None]
    image = np.clip(image, 0, 1)
    if rng.random() < 0.3:
        sigma = rng.uniform(0.5, 1.6)
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    if rng.random() < 0.3:
        image = image + rng.normal(0, rng.uniform(0.01, 0.04), image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def augment(rng: np.random.Generator, context: np.ndarray) -> np.ndarray:
    """One training sample from one context crop."""
    return random_photometric(rng, random_geometry(rng, context))
