"""Fine-tune the encoder by distillation, with Keras 3 on any backend.

Objective: ``1 - cos(student(augmented Haar crop), teacher(aligned face))``.
The student starts from SFace's weights (or random weights with
``--from-scratch``); the teacher is SFace on the YuNet-aligned face. So the
student keeps SFace's embedding space (the same threshold logic, the same
quality) and learns to give it from the cheaper, noisier Haar front end, and
under the door-camera augmentations of :mod:`kiosk.training.augment`.
Batch norm statistics stay frozen (small batches on a CPU), and the first
``freeze_blocks`` blocks keep SFace's weights, which halves the step time.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kiosk.training.augment import augment
from kiosk.training.prepare import Cache


@dataclass
class TrainSettings:
    """Hyper-parameters of one training run."""

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 2e-4
    freeze_blocks: int = 6
    seed: int = 0
    from_scratch: bool = False
    steps_per_epoch: int | None = None
    activation: str = "prelu"


def distillation_loss(teacher, student):
    """Mean ``1 - cosine`` between teacher and student embeddings."""
    from keras import ops

    student = student / ops.maximum(ops.norm(student, axis=-1, keepdims=True), 1e-12)
    return 1.0 - ops.sum(teacher * student, axis=-1)


def make_sequence(cache: Cache, settings: TrainSettings):
    """A ``keras.utils.PyDataset`` of augmented batches, reshuffled every epoch."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0
            self.order = np.random.default_rng(settings.seed).permutation(len(cache.crops))

        def __len__(self) -> int:
            full = len(cache.crops) // settings.batch_size
            return min(full, settings.steps_per_epoch) if settings.steps_per_epoch else full

        def __getitem__(self, index: int):
            rng = np.random.default_rng([settings.seed, self.epoch, index])
            picks = self.order[index * settings.batch_size : (index + 1) * settings.batch_size]
            images = np.stack([augment(rng, cache.crops[i]) for i in picks]).astype(np.float32)
            return images, cache.teacher[picks]

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = np.random.default_rng([settings.seed, self.epoch]).permutation(len(cache.crops))

    return Batches()


def build_student(settings: TrainSettings):
    """The encoder to train: SFace's weights, frozen batch norm and early blocks."""
    import keras

    from kiosk.training.model import build_encoder, load_sface_weights

    keras.utils.set_random_seed(settings.seed)
    model = build_encoder(activation=settings.activation)
    if not settings.from_scratch:
        from kiosk.training.teacher import SFACE_FILE, model_path

        load_sface_weights(model, model_path(SFACE_FILE))
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
            block = layer.name.split("_")
            if block[0] == "conv" and block[1].isdigit() and int(block[1]) <= settings.freeze_blocks:
                layer.trainable = False
    return model


def train(cache: Cache, out_dir: Path, settings: TrainSettings, validation=None) -> Path:
    """Train, save ``encoder.keras`` and ``history.json`` in ``out_dir``; returns the model path.

    ``validation`` is an optional ``(crops, teacher)`` pair evaluated each epoch.
    """
    import keras

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_student(settings)
    batches = make_sequence(cache, settings)
    total = settings.epochs * len(batches)
    schedule = keras.optimizers.schedules.CosineDecay(settings.learning_rate, decay_steps=total, warmup_target=None, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=distillation_loss)
    started = time.time()
    history = model.fit(
        batches,
        epochs=settings.epochs,
        validation_data=validation,
        verbose=2,
        callbacks=[keras.callbacks.ModelCheckpoint(str(out_dir / "encoder.keras"))],
    )
    record = {
        "settings": asdict(settings),
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        "seconds": round(time.time() - started, 1),
        "samples": int(len(cache.crops)),
        "backend": keras.backend.backend(),
        "steps": total,
    }
    (out_dir / "history.json").write_text(json.dumps(record, indent=2))
    if not math.isfinite(record["history"]["loss"][-1]):
        raise RuntimeError("training diverged (loss is not finite); lower --learning-rate")
    return out_dir / "encoder.keras"
