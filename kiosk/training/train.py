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

The stride-2 stem (``--stem-stride 2``, :func:`kiosk.training.model.build_encoder`):
the first convolution downsamples, so blocks 1-3 run at 56x56 instead of
112x112. Every layer keeps its shape, so the student starts from SFace's
weights everywhere; blocks 1-4 (convolutions and PReLU slopes; batch norms
frozen) then learn to reproduce SFace's outputs of blocks 3-8 on the same
augmented door crops, and blocks 5 on keep SFace's weights untouched. No
teacher embeddings are needed: the target is SFace's own network on the same
crop, so the student stays in SFace's embedding space.

Factored pointwise convolutions (``--rank-divisor 4``, with the stride-2 stem): the C-to-C pointwise
convolutions (three quarters of the multiply-accumulates) become C to C/4 to C. Their outputs on real
faces are close to low-rank, so each pair is first set by reduced-rank regression from the student's own
input to SFace's output there (:func:`fit_low_rank`, no training step), then those blocks retrain with
the stem's blocks to give SFace's later block outputs and embedding.

ReLU in the stem's blocks (``--stem-activation relu``, with the stride-2 stem): blocks 1-4 retrain anyway, and
at 56x56 they hold half of the network's activation values, so ReLU there saves most of what int8 PReLU costs
(0.7 / 0.5 ms of 12.6 / 6.6 on the AVX2 paths). Their SFace slopes are dropped; the retrained convolutions learn
to give SFace's later block outputs through ReLU. So far that student trails the PReLU one (README, Benchmarks).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kiosk.errors import TrainingError
from kiosk.training.augment import augment
from kiosk.training.model import LOW_RANK_BLOCKS, STEM_BLOCK, STEM_TRAINED_BLOCKS
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
    stem_stride: int = 1
    drop_blocks: tuple[int, ...] = ()
    block4_stride: int = 1
    rank_divisor: int = 1
    stem_activation: str | None = None
    full_rank_blocks: tuple[int, ...] = ()
    train_all_blocks: bool = False
    embedding_weight: float = 1.0

    @property
    def architecture(self) -> dict:
        """The layout :func:`kiosk.training.model.build_encoder` takes (and ``encoder.json`` records)."""
        return {"stem_stride": self.stem_stride, "block4_stride": self.block4_stride, "drop_blocks": list(self.drop_blocks),
                "rank_divisor": self.rank_divisor, "stem_activation": self.stem_activation,
                "full_rank_blocks": list(self.full_rank_blocks)}


def distillation_loss(teacher, student):
    """Mean ``1 - cosine`` between teacher and student embeddings."""
    from keras import ops

    student = student / ops.maximum(ops.norm(student, axis=-1, keepdims=True), 1e-12)
    return 1.0 - ops.sum(teacher * student, axis=-1)


def make_sequence(cache: Cache, settings: TrainSettings, with_features: bool = False, with_embedding: bool = True):
    """A ``keras.utils.PyDataset`` of augmented batches, reshuffled every epoch.

    With ``with_features`` the targets are ``{"embedding": teacher, "features": 0}``
    for :func:`feature_model` (without ``with_embedding``: the features only).
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
            return images, targets(cache.teacher[picks], with_features, with_embedding)

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = np.random.default_rng([settings.seed, self.epoch]).permutation(len(cache.crops))

    return Batches()


def targets(teacher: np.ndarray, with_features: bool, with_embedding: bool = True):
    """Training targets: the teacher embeddings, plus a dummy for the feature loss."""
    if not with_features:
        return teacher
    features = np.zeros((len(teacher), 1), np.float32)
    return {"embedding": teacher, "features": features} if with_embedding else {"features": features}


FEATURE_TAPS = [f"conv_{index}_bn" for index in range(2, 15)]
"""Pre-activation outputs matched block by block when the activation changes."""
STEM_TAPS = [f"conv_{index}_bn" for index in range(STEM_BLOCK, 9)]
"""Pre-activation outputs a stride-2 stem learns: from the first block whose shape matches SFace's to the first
14x14 blocks, so the retrained blocks also answer for what the frozen ones after them make of their output."""
SLIM_TAPS = ["conv_12_bn", "conv_13_bn", "conv_14_bn", "fc1"]
"""What a network with blocks left out of SFace's 14x14 run also learns: SFace's outputs of the run's last block,
of the blocks after it and the embedding itself."""
LOW_RANK_TAPS = [f"conv_{index}_bn" for index in range(9, 15)] + ["fc1"]
"""What a network with factored pointwise convolutions also learns: SFace's later block outputs and embedding."""
MIDDLE_BLOCKS = range(8, 13)
"""SFace's run of five 14x14x512 blocks (half its multiply-accumulates); those left in retrain when some are left out."""


def slim_plan(settings: TrainSettings, student, teacher) -> tuple[set[int], list[str]]:
    """The blocks a stride-2 student retrains and the teacher outputs it learns.

    Blocks 1 to :data:`STEM_TRAINED_BLOCKS` (and block 5 when block 4 downsamples in its place) learn
    :data:`STEM_TAPS`; with blocks of the 14x14 run left out, the run's other blocks retrain too and learn
    :data:`SLIM_TAPS`; with factored pointwise convolutions (``rank_divisor``), those blocks retrain and learn
    :data:`LOW_RANK_TAPS` too. Taps whose shape differs from SFace's (block 4's output when it downsamples) are skipped.
    With ``train_all_blocks`` every block and the head retrain (their batch norms stay frozen).
    """
    blocks = set(range(1, STEM_TRAINED_BLOCKS + 1)) | ({5} if settings.block4_stride == 2 else set())
    taps = list(STEM_TAPS)
    if settings.drop_blocks:
        blocks |= set(MIDDLE_BLOCKS) - set(settings.drop_blocks)
        taps += SLIM_TAPS
    if settings.rank_divisor > 1:
        blocks |= set(LOW_RANK_BLOCKS) - set(settings.drop_blocks)
        taps += [t for t in LOW_RANK_TAPS if t not in taps]
    names = {layer.name for layer in student.layers}
    taps = [t for t in taps if t in names and student.get_layer(t).output.shape == teacher.get_layer(t).output.shape]
    if settings.train_all_blocks:
        blocks = {_block_of(layer.name) for layer in student.layers}
    return blocks, taps


def tap_weights(settings: TrainSettings, taps: list[str]) -> list[float]:
    """Each tap's weight in the feature loss: ``embedding_weight`` for the embedding (``fc1``), 1 for block outputs.
    The embedding is what the door compares; among nine block outputs it would weigh a tenth."""
    return [settings.embedding_weight if tap == "fc1" else 1.0 for tap in taps]


def feature_model(student, teacher, taps: list[str] = FEATURE_TAPS, with_embedding: bool = True,
                  weights: list[float] | None = None):
    """One model giving the student's block-wise feature error against ``teacher`` (and its embedding).

    ``features`` is the mean over ``taps`` (weighted by ``weights``, default equal) of
    ``mean((s - t)^2) / mean(t^2)`` per sample; its loss is the value itself. Without ``with_embedding`` the
    model stops at the last tap (the stem student: nothing later trains).
    """
    import keras
    from keras import ops

    taps_of = lambda model: [model.get_layer(name).output for name in taps]  # noqa: E731
    student_taps = keras.Model(student.input, [*taps_of(student), *([student.output] if with_embedding else [])])
    teacher_taps = keras.Model(teacher.input, taps_of(teacher))
    teacher_taps.trainable = False
    face = keras.Input(student.input.shape[1:], name="face")
    outputs = student_taps(face)
    ours, theirs = outputs[: len(taps)], teacher_taps(face)
    errors = [ops.mean(ops.square(s - t), axis=tuple(range(1, len(t.shape))))
              / (ops.mean(ops.square(t), axis=tuple(range(1, len(t.shape)))) + 1e-3) for s, t in zip(ours, theirs)]
    weights = np.asarray(weights or [1.0] * len(taps), np.float32)
    mean = ops.sum(ops.stack(errors, axis=1) * (weights / weights.sum()), axis=1, keepdims=True)
    named = {"features": keras.layers.Identity(name="features")(mean)}
    if with_embedding:
        named["embedding"] = keras.layers.Identity(name="embedding")(outputs[-1])
    return keras.Model(face, named)


def feature_loss(_, features):
    return features[:, 0]


def build_student(settings: TrainSettings):
    """The encoder to train, and the network whose block outputs it also learns (None: the embedding only).

    From SFace (the default): SFace's weights. A PReLU student keeps SFace's
    batch norms and early blocks frozen. A ReLU student also learns, block by
    block, SFace's own (PReLU) pre-activation outputs, with its batch norms
    training (they must follow the changed activations) except the head's.
    With ``init_from``: that trained model's weights (its PReLU slopes dropped
    when the student uses ReLU), the same rule when the activation changes; a block of ``full_rank_blocks`` that
    run factored starts from SFace's own convolution (the factored student grown back where it lost most).
    A stride-2 stem student (``stem_stride`` 2, PReLU, from SFace, or with
    ``init_from`` from an earlier run of the same layout, to train on) trains
    only the convolutions and slopes of the blocks :func:`slim_plan` names;
    its teacher is SFace either way.
    """
    import keras

    from kiosk.training.model import build_encoder, load_sface_weights, sface_encoder

    keras.utils.set_random_seed(settings.seed)
    if settings.stem_stride != 1 and (settings.activation != "prelu" or settings.from_scratch):
        raise TrainingError("a stride-2 stem student starts from SFace's own weights (or an earlier run of the same "
                            "layout) with its PReLU activation (--activation prelu, without --from-scratch)")
    if settings.stem_stride == 1 and (settings.drop_blocks or settings.block4_stride != 1 or settings.rank_divisor != 1
                                      or settings.stem_activation or settings.train_all_blocks
                                      or settings.embedding_weight != 1):
        raise TrainingError("blocks are left out, block 4 downsamples, pointwise convolutions are factored, the stem "
                            "blocks change their activation, every block retrains or the embedding is weighted only "
                            "in a stride-2 stem student (--stem-stride 2)")
    if settings.full_rank_blocks and settings.rank_divisor == 1:
        raise TrainingError("--full-rank-blocks names blocks kept whole when --rank-divisor factors the others")
    model = build_encoder(activation=settings.activation, **settings.architecture)
    if settings.from_scratch:
        return model, None
    from kiosk.training.teacher import SFACE_FILE, model_path

    if settings.init_from:
        start = keras.saving.load_model(settings.init_from, compile=False)
        theirs = {layer.name: layer for layer in start.layers}
        differ = [layer.name for layer in model.layers if layer.weights and (
            layer.name not in theirs or [w.shape for w in layer.weights] != [w.shape for w in theirs[layer.name].weights])]
        grown = [name for name in differ if name == f"conv_{_block_of(name)}" and _block_of(name) in settings.full_rank_blocks]
        if set(differ) - set(grown):
            raise TrainingError(f"--init-from {settings.init_from} has another layout than this student (layers "
                                f"{', '.join(sorted(set(differ) - set(grown))[:3])} differ or are missing); give the same "
                                "--stem-stride, --block4-stride, --drop-blocks and --rank-divisor it was trained with "
                                "(--full-rank-blocks may name blocks it factored)")
        if grown:
            load_sface_weights(model, model_path(SFACE_FILE))
            print(f"grown back to full rank, from SFace: {', '.join(grown)}")
        for layer in model.layers:
            if layer.weights and layer.name not in grown:
                layer.set_weights(start.get_layer(layer.name).get_weights())
    else:
        start = sface_encoder()
        load_sface_weights(model, model_path(SFACE_FILE))
    if settings.stem_stride != 1:
        start = sface_encoder() if settings.init_from else start
        blocks, _ = slim_plan(settings, model, start)
        for layer in model.layers:
            layer.trainable = _block_of(layer.name) in blocks and not isinstance(layer, keras.layers.BatchNormalization)
        return model, start
    changed = any(isinstance(layer, keras.layers.PReLU) for layer in start.layers) != (settings.activation == "prelu")
    for layer in model.layers:
        if changed:
            layer.trainable = layer.name not in ("bn1", "fc1")
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        elif not settings.init_from:
            layer.trainable = _block_of(layer.name) > settings.freeze_blocks
    return model, (start if changed else None)


LOW_RANK_FIT_FACES = 600
"""Training faces the factored convolutions are first fitted on (before any training step)."""


def fit_low_rank(student, teacher, crops: np.ndarray, ridge: float = 1e-3) -> dict[str, float]:
    """Set each factored pointwise convolution of ``student`` (``conv_N_reduce`` then ``conv_N``), in block order,
    to the rank-limited map that best gives ``teacher``'s output of that convolution from the student's own input
    there (so each block also makes up for the error of those before it). A start for training far closer to
    SFace than factoring its weights alone (embedding cosine on aligned faces 0.92 with every square block at a
    quarter of its rank). ``crops`` are door crops (a few hundred are enough). Returns each block's remaining
    error (normalised squared error after its batch norm)."""
    import keras

    from kiosk.training.model import batch_norm_gain, factor_pointwise

    errors = {}
    for layer in student.layers:
        if not layer.name.endswith("_reduce"):
            continue
        name = layer.name.removesuffix("_reduce")
        inputs = keras.Model(student.input, layer.input).predict(crops, batch_size=64, verbose=0)
        outputs = keras.Model(teacher.input, teacher.get_layer(name).output).predict(crops, batch_size=64, verbose=0)
        x = inputs.reshape(-1, inputs.shape[-1]).astype(np.float64)
        y = outputs.reshape(-1, outputs.shape[-1]).astype(np.float64)
        pick = np.random.default_rng(0).permutation(len(x))[:150_000]
        x, y = x[pick], y[pick]
        gram = x.T @ x
        gram += ridge * np.trace(gram) / len(gram) * np.eye(len(gram))
        weight = np.linalg.solve(gram, x.T @ y).T
        bn = student.get_layer(f"{name}_bn")
        scale, mean = batch_norm_gain(bn), bn.get_weights()[2]
        first, second = factor_pointwise(weight, x, scale, layer.filters)
        layer.set_weights([first.T[None, None]])
        student.get_layer(name).set_weights([second.T[None, None]])
        errors[name] = float(np.mean(((x @ first.T @ second.T - y) * scale) ** 2) / np.mean(((y - mean) * scale) ** 2))
    return errors


def _block_of(layer_name: str) -> int:
    """The block a layer belongs to (``conv_3_dw_bn``: 3); layers after the blocks (the head) count as block 99."""
    parts = layer_name.split("_")
    return int(parts[1]) if parts[0] == "conv" and len(parts) > 1 and parts[1].isdigit() else 99


def train(cache: Cache, out_dir: Path, settings: TrainSettings, validation=None) -> Path:
    """Train, save ``encoder.keras`` and ``history.json`` in ``out_dir``; returns the model path.

    ``validation`` is an optional ``(crops, teacher)`` pair evaluated each epoch.
    """
    import keras

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, start = build_student(settings)
    if settings.rank_divisor > 1 and not settings.init_from:
        from kiosk.training.prepare import center_crops

        pick = np.random.default_rng(settings.seed).permutation(len(cache.crops))[:LOW_RANK_FIT_FACES]
        errors = fit_low_rank(model, start, center_crops(cache.crops[pick]).astype(np.float32))
        print("factored pointwise convolutions fitted (remaining error): "
              + ", ".join(f"{name} {error:.3f}" for name, error in errors.items()))
    with_features, with_embedding = start is not None, settings.stem_stride == 1
    batches = make_sequence(cache, settings, with_features, with_embedding)
    total = settings.epochs * len(batches)
    schedule = keras.optimizers.schedules.CosineDecay(settings.learning_rate, decay_steps=total, warmup_target=None, alpha=0.05)
    if not with_embedding:
        taps = slim_plan(settings, model, start)[1]
        trained = feature_model(model, start, taps, with_embedding=False, weights=tap_weights(settings, taps))
        trained.compile(optimizer=keras.optimizers.Adam(schedule), loss={"features": feature_loss})
    elif with_features:
        trained = feature_model(model, start)
        trained.compile(optimizer=keras.optimizers.Adam(schedule), loss={"embedding": distillation_loss, "features": feature_loss},
                        loss_weights={"embedding": 1.0, "features": settings.feature_weight})
    else:
        trained = model
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss=distillation_loss)
    if validation is not None:
        validation = (validation[0], targets(validation[1], with_features, with_embedding))

    class SaveEncoder(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None) -> None:
            model.save(out_dir / "encoder.keras")

    started = time.time()
    history = trained.fit(batches, epochs=settings.epochs, validation_data=validation, verbose=1, callbacks=[SaveEncoder()])
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
