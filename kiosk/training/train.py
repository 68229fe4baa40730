"""Fine-tune the encoder by distillation, with Keras 3 on any backend.

Objective: ``1 - cos(student(augmented Haar crop), teacher(aligned face))``.
The student starts from SFace's weights (or random weights with
``--from-scratch``); the teacher is SFace on the YuNet-aligned face. So the
student keeps SFace's embedding space (the same threshold logic, the same
quality) and learns to give it from the cheaper, noisier Haar front end, and
under the door-camera augmentations of :mod:`kiosk.training.augment`.
Batch norm statistics stay frozen (small batches on a CPU), and the first
``freeze_blocks`` blocks keep SFace's weights, which halves the step time.

Changing the activation (``--activation relu``, from SFace or ``--init-from
RUN/encoder.keras``): LiteRT runs int8 PReLU about 25x slower than ReLU, so
the shipped network uses ReLU. Swapping PReLU for ReLU in a trained network
breaks it (validation 1 - cos 0.81), and the embedding loss alone recovers
slowly (0.69 after an epoch). So the ReLU student starts from the PReLU
network's weights and also learns, block by block, that network's
pre-activation outputs (normalised mean squared error, weight
``feature_weight``): every block gets its own signal. Its batch norms train
(they must follow the shifted activations); the head's stay frozen.
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
    activation: str = "relu"
    init_from: str | None = None
    feature_weight: float = 1.0


def distillation_loss(teacher, student):
    """Mean ``1 - cosine`` between teacher and student embeddings."""
    from keras import ops

    student = student / ops.maximum(ops.norm(student, axis=-1, keepdims=True), 1e-12)
    return 1.0 - ops.sum(teacher * student, axis=-1)


def make_sequence(cache: Cache, settings: TrainSettings, with_features: bool = False):
    """A ``keras.utils.PyDataset`` of augmented batches, reshuffled every epoch.

    With ``with_features`` the targets are ``{"embedding": teacher, "features": 0}``
    for :func:`feature_model`.
    """
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
            return images, targets(cache.teacher[picks], with_features)

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = np.random.default_rng([settings.seed, self.epoch]).permutation(len(cache.crops))

    return Batches()


def targets(teacher: np.ndarray, with_features: bool):
    """Training targets: the teacher embeddings, plus a dummy for the feature loss."""
    if not with_features:
        return teacher
    return {"embedding": teacher, "features": np.zeros((len(teacher), 1), np.float32)}


FEATURE_TAPS = [f"conv_{index}_bn" for index in range(2, 15)]
"""Pre-activation outputs matched block by block when the activation changes."""


def feature_model(student, teacher):
    """One model giving the student's embedding and its block-wise feature error against ``teacher``.

    ``features`` is the mean over :data:`FEATURE_TAPS` of
    ``mean((s - t)^2) / mean(t^2)`` per sample; its loss is the value itself.
    """
    import keras
    from keras import ops

    taps_of = lambda model: [model.get_layer(name).output for name in FEATURE_TAPS]  # noqa: E731
    student_taps = keras.Model(student.input, [*taps_of(student), student.output])
    teacher_taps = keras.Model(teacher.input, taps_of(teacher))
    teacher_taps.trainable = False
    face = keras.Input(student.input.shape[1:], name="face")
    *ours, embedding = student_taps(face)
    theirs = teacher_taps(face)
    errors = [ops.mean(ops.square(s - t), axis=(1, 2, 3)) / (ops.mean(ops.square(t), axis=(1, 2, 3)) + 1e-3)
              for s, t in zip(ours, theirs)]
    features = ops.mean(ops.stack(errors, axis=1), axis=1, keepdims=True)
    return keras.Model(face, {"embedding": keras.layers.Identity(name="embedding")(embedding),
                              "features": keras.layers.Identity(name="features")(features)})


def feature_loss(_, features):
    return features[:, 0]


def build_student(settings: TrainSettings):
    """The encoder to train, and the network whose block outputs it also learns (None: the embedding only).

    From SFace (the default): SFace's weights. A PReLU student keeps SFace's
    batch norms and early blocks frozen. A ReLU student also learns, block by
    block, SFace's own (PReLU) pre-activation outputs, with its batch norms
    training (they must follow the changed activations) except the head's.
    With ``init_from``: that trained model's weights (its PReLU slopes dropped
    when the student uses ReLU), the same rule when the activation changes.
    """
    import keras

    from kiosk.training.model import build_encoder, load_sface_weights, sface_encoder

    keras.utils.set_random_seed(settings.seed)
    model = build_encoder(activation=settings.activation)
    if settings.from_scratch:
        return model, None
    if settings.init_from:
        start = keras.saving.load_model(settings.init_from, compile=False)
        for layer in model.layers:
            if layer.weights:
                layer.set_weights(start.get_layer(layer.name).get_weights())
    else:
        from kiosk.training.teacher import SFACE_FILE, model_path

        start = sface_encoder()
        load_sface_weights(model, model_path(SFACE_FILE))
    changed = any(isinstance(layer, keras.layers.PReLU) for layer in start.layers) != (settings.activation == "prelu")
    for layer in model.layers:
        if changed:
            layer.trainable = layer.name not in ("bn1", "fc1")
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        elif not settings.init_from:
            block = layer.name.split("_")
            layer.trainable = not (block[0] == "conv" and block[1].isdigit() and int(block[1]) <= settings.freeze_blocks)
    return model, (start if changed else None)


def train(cache: Cache, out_dir: Path, settings: TrainSettings, validation=None) -> Path:
    """Train, save ``encoder.keras`` and ``history.json`` in ``out_dir``; returns the model path.

    ``validation`` is an optional ``(crops, teacher)`` pair evaluated each epoch.
    """
    import keras

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, start = build_student(settings)
    with_features = start is not None
    batches = make_sequence(cache, settings, with_features)
    total = settings.epochs * len(batches)
    schedule = keras.optimizers.schedules.CosineDecay(settings.learning_rate, decay_steps=total, warmup_target=None, alpha=0.05)
    if with_features:
        trained = feature_model(model, start)
        trained.compile(optimizer=keras.optimizers.Adam(schedule), loss={"embedding": distillation_loss, "features": feature_loss},
                        loss_weights={"embedding": 1.0, "features": settings.feature_weight})
    else:
        trained = model
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss=distillation_loss)
    if validation is not None:
        validation = (validation[0], targets(validation[1], with_features))

    class SaveEncoder(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None) -> None:
            model.save(out_dir / "encoder.keras")

    started = time.time()
    history = trained.fit(batches, epochs=settings.epochs, validation_data=validation, verbose=2, callbacks=[SaveEncoder()])
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
