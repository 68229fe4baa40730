"""The texture CNN: its layers, its training augmentation, training and scoring (Keras 3, any backend)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kiosk.training.liveness.data import CONTEXT, INPUT_SIZE, center_crop

FILTERS = (16, 32, 64, 64)
"""Output channels of the four 3x3 convolutions; the first three are followed by 2x2 max pooling."""


@dataclass
class TrainSettings:
    """Hyper-parameters of one texture CNN training run."""

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0


def build_texture_model(size: int = INPUT_SIZE):
    """A small CNN: RGB pixels 0..255 in, one live-vs-photo logit out (> 0: live). About 14 M MACs."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3), name="face")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="normalise")(inputs)
    for index, filters in enumerate(FILTERS, start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv_{index}")(x)
        x = layers.BatchNormalization(name=f"conv_{index}_bn")(x)
        x = layers.ReLU(name=f"conv_{index}_relu")(x)
        if index < len(FILTERS):
            x = layers.MaxPooling2D(2, name=f"pool_{index}")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    outputs = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name="liveness_texture")


def count_macs(size: int = INPUT_SIZE) -> int:
    """Multiply-accumulates of one texture CNN run (convolutions and the final dense layer)."""
    side, channels, macs = size, 3, 0
    for index, filters in enumerate(FILTERS, start=1):
        macs += side * side * 9 * channels * filters
        channels = filters
        if index < len(FILTERS):
            side //= 2
    return macs + channels


def augment(rng: np.random.Generator, context: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """A training crop: small rotation, zoom, shift and flip (how a Haar box wanders), and colour changes.

    White balance, saturation, gamma and brightness are jittered widely: in
    NUAA each subject's live sessions have their own room light and camera
    colour, and without the jitter the CNN learns those instead of the print.
    No blur: softness is a genuine print cue here.
    """
    scale = size * CONTEXT / context.shape[0] * rng.uniform(0.9, 1.1)
    center = np.array(context.shape[:2][::-1]) / 2 + rng.uniform(-0.06, 0.06, 2) * context.shape[0] / CONTEXT
    matrix = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), rng.uniform(-8, 8), scale)
    matrix[:, 2] += (size / 2 - center[0], size / 2 - center[1])
    crop = cv2.warpAffine(context, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    image = crop.astype(np.float32) / 255.0 * rng.uniform(0.8, 1.2, 3)
    gray = image.mean(axis=2, keepdims=True)
    image = np.clip(gray + (image - gray) * rng.uniform(0.5, 1.5), 0, 1) ** rng.uniform(0.6, 1.6)
    image = image * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.2:
        image = image + rng.normal(0, 0.015, image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def train_texture(crops: np.ndarray, live: np.ndarray, settings: TrainSettings):
    """Train the texture CNN on context crops with labels (True: live); returns the Keras model."""
    import keras

    keras.utils.set_random_seed(settings.seed)
    labels = live.astype(np.float32)[:, None]

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0

        def __len__(self) -> int:
            return len(crops) // settings.batch_size

        def __getitem__(self, index: int):
            order = np.random.default_rng([settings.seed, self.epoch]).permutation(len(crops))
            picks = order[index * settings.batch_size:(index + 1) * settings.batch_size]
            rng = np.random.default_rng([settings.seed, self.epoch, index])
            return np.stack([augment(rng, crops[i]) for i in picks]).astype(np.float32), labels[picks]

        def on_epoch_end(self) -> None:
            self.epoch += 1

    model = build_texture_model()
    batches = Batches()
    schedule = keras.optimizers.schedules.CosineDecay(settings.learning_rate, settings.epochs * len(batches))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(batches, epochs=settings.epochs, verbose=0)
    return model


def predict_logits(model, crops: np.ndarray) -> np.ndarray:
    """The float model's logits for context crops (scored at their centre)."""
    centred = np.stack([center_crop(c) for c in crops]).astype(np.float32)
    return np.asarray(model.predict(centred, batch_size=128, verbose=0)).reshape(-1)
