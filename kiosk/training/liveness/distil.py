"""Distil MiniFASNet into ReLU students whose full-int8 file runs in XNNPACK's fast kernels.

MiniFASNet's 66 PReLU layers make its int8 export several times slower than
float32 on x86 (int8 PReLU has no fast kernel). A student is the same two
networks with every PReLU replaced by ReLU (``STUDENT_ACTIVATION``), started
from the converted weights and trained to match the float teacher's logits
(temperature-softened KL per network, plus a small logit MSE) on the
teacher's own inputs: NUAA context crops, live faces from many cameras
(LFW, CelebA: guards against learning "the NUAA webcam = spoof") and
synthetic screen replays of those faces (screens.py). No hard label is used:
the teacher's outputs are the only target, so the student learns the
teacher's rule, not NUAA's. Both crops of a face get the same light, white
balance, contrast, gamma, blur and noise (one scene), each its own small
zoom and shift (the Haar box wobbles from frame to frame); the teacher sees
exactly what the student sees. Batch norm stays in inference mode (short
fine-tune, batches of mixed sources), so the student exports like the teacher.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.errors import TrainingError
from kiosk.face import FaceFinder
from kiosk.images import read_image
from kiosk.training.liveness.data import ArrayRecord

STUDENT_ACTIVATION = "relu"
"""int8 ReLU runs in XNNPACK's kernels (see the report for ReLU6 / LeakyReLU beside it)."""
FACE_SOURCES = ("lfw", "celeba")
"""Folders of ``--faces`` with genuine photos from many cameras (``<person>/<file>.jpg``)."""
FACES_PER_SOURCE = 900
HELD_OUT_FACES = 0.3
"""Share of the photos (by person) never distilled on: the check that live faces from other cameras stay live."""
REPLAY_SCALE = 640
"""Photos are brought to this width before a replay is rendered, so the phone holds a face of door size."""
STEPS = 120
BATCH = 32
LEARNING_RATE = 3e-4
TEMPERATURE = 2.0
MSE_WEIGHT = 0.05
MIX = {"nuaa": 0.5, "faces": 0.3, "replays": 0.2}
"""Share of each batch drawn from each pool of training crops."""


@dataclass
class Faces(ArrayRecord):
    """Context crops of photos from LFW and CelebA and of their synthetic screen replays."""

    crops: np.ndarray  # [N, networks, 80, 80, 3] uint8 BGR
    source: np.ndarray  # "lfw" or "celeba"
    replay: np.ndarray  # True: a synthetic screen replay of the photo, False: the photo itself (a live face)
    held_out: np.ndarray  # True: never distilled on



def prepare_faces(root: Path, seed: int) -> Faces:
    """Up to ``FACES_PER_SOURCE`` photos per source through the door's front end, each also as a screen replay."""
    import cv2
    from tqdm import tqdm

    from kiosk.liveness import context_crops
    from kiosk.training.liveness.minifasnet import INPUT_SIZE, WORK_WIDTH, context_crop_settings
    from kiosk.training.liveness.screens import render_replay

    rng = np.random.default_rng(seed)
    settings = context_crop_settings()
    finder = FaceFinder()
    columns: dict[str, list] = {name: [] for name in Faces.__dataclass_fields__}
    for source in FACE_SOURCES:
        people = sorted(p for p in (Path(root) / source).glob("*") if p.is_dir())
        if not people:
            raise TrainingError(f"no photos under {Path(root) / source}: expected <person>/<file>.jpg (pass the folder "
                                "holding lfw/ and celeba/ with --faces)")
        held_out = set(rng.permutation(len(people))[:int(HELD_OUT_FACES * len(people))].tolist())
        photos = [(path, i in held_out) for i, person in enumerate(people) for path in sorted(person.glob("*.jpg"))]
        for index in tqdm(rng.permutation(len(photos))[:FACES_PER_SOURCE], desc=f"prepare {source}", unit="photo"):
            path, is_held_out = photos[index]
            image = read_image(path)
            big = cv2.resize(image, (REPLAY_SCALE, round(image.shape[0] * REPLAY_SCALE / image.shape[1])))
            for replay, frame in ((False, image), (True, render_replay(big, rng))):
                face = finder.largest(frame)
                if face is None:
                    continue
                for name, value in (("crops", np.stack(context_crops(frame, face, settings, WORK_WIDTH, INPUT_SIZE))),
                                    ("source", source), ("replay", replay), ("held_out", is_held_out)):
                    columns[name].append(value)
    return Faces(**{name: np.array(values) for name, values in columns.items()})


def load_or_prepare_faces(root: Path, cache_file: Path, seed: int) -> Faces:
    """The prepared photos from ``cache_file`` when it exists, else :func:`prepare_faces` and save them there."""
    if cache_file.exists():
        print(f"using the prepared photos in {cache_file} (delete it to prepare again)")
        return Faces.load(cache_file)
    faces = prepare_faces(root, seed)
    faces.save(cache_file)
    return faces


def augment(crops, seed):
    """Light, white balance, contrast, gamma, blur and noise shared by a face's crops; zoom and shift per crop.

    ``crops``: [B, networks, 80, 80, 3] float32 BGR 0..255; ``seed``: a
    [2] int32 tensor (stateless random ops: the same seed, the same batch).
    """
    import tensorflow as tf

    batch, networks, size = tf.shape(crops)[0], crops.shape[1], crops.shape[2]
    seeds = tf.random.experimental.stateless_split(seed, 10)

    def uniform(i, shape, low, high):
        return tf.random.stateless_uniform(shape, seeds[i], low, high)

    scene = [batch, 1, 1, 1, 1]
    x = crops * tf.exp(uniform(0, scene, -0.5, 0.4))  # light
    x = x * tf.exp(uniform(1, [batch, 1, 1, 1, 3], -0.15, 0.15))  # white balance
    mean = tf.reduce_mean(x, axis=[2, 3, 4], keepdims=True)
    x = tf.clip_by_value((x - mean) * tf.exp(uniform(2, scene, -0.3, 0.2)) + mean, 0.0, 255.0)  # contrast
    x = 255.0 * (x / 255.0) ** tf.exp(uniform(3, scene, -0.3, 0.3))  # gamma
    flat = tf.reshape(x, [-1, size, size, 3])
    kernel = tf.constant(np.outer(*[np.array([1, 2, 1], np.float32) / 4] * 2)[:, :, None, None] * np.ones((1, 1, 3, 1), np.float32))
    blurred = tf.reshape(tf.nn.depthwise_conv2d(flat, kernel, [1, 1, 1, 1], "SAME"), tf.shape(x))
    amount = tf.cast(uniform(4, scene, 0, 1) < 0.3, tf.float32) * uniform(5, scene, 0.5, 1.0)
    x = x + amount * (blurred - x)  # a little defocus or motion blur
    x = x + tf.random.stateless_normal(tf.shape(x), seeds[6]) * uniform(7, scene, 0, 3)  # sensor noise
    # Zoom and shift: a random sub-box (88-100% of the side) of each crop brought back to its size.
    side = tf.random.stateless_uniform([batch * networks, 1], seeds[8], 0.88, 1.0)
    offset = tf.random.stateless_uniform([batch * networks, 2], seeds[9], 0, 1) * (1 - side)
    boxes = tf.concat([offset, offset + side], axis=1)
    flat = tf.image.crop_and_resize(tf.reshape(x, [-1, size, size, 3]), boxes, tf.range(batch * networks), [size, size])
    return tf.round(tf.clip_by_value(tf.reshape(flat, tf.shape(x)), 0.0, 255.0))


def distil(teacher, student, pools: dict[str, np.ndarray], seed: int, steps: int = STEPS, label: str = "") -> dict:
    """Train ``student`` in place on ``pools`` (name in ``MIX`` -> crops [N, networks, 80, 80, 3] uint8); the loss curve.

    Each batch takes ``MIX`` shares from the pools, is augmented
    (:func:`augment`) and scored by ``teacher``; the loss is, per network,
    KL(teacher || student) of the softmax at ``TEMPERATURE`` (times its square)
    plus ``MSE_WEIGHT`` times the logits' mean squared difference.
    """
    import keras
    import tensorflow as tf

    if any(len(pools.get(name, ())) == 0 for name in MIX):
        raise TrainingError(f"distillation needs crops in every pool ({', '.join(MIX)}); got "
                            + ", ".join(f"{name}: {len(pools.get(name, ()))}" for name in MIX))
    rng = np.random.default_rng(seed)
    counts = {name: round(share * BATCH) for name, share in MIX.items()}
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps, warmup_target=None)
    optimizer = keras.optimizers.Adam(schedule)
    networks = pools["nuaa"].shape[1]

    def per_network(logits):
        return tf.reshape(logits, [-1, networks, 3])

    augmented = tf.function(augment)

    @tf.function
    def step(x):
        inputs = [x[:, i] for i in range(networks)]
        target = per_network(teacher(inputs, training=False))
        with tf.GradientTape() as tape:
            logits = per_network(student(inputs, training=False))
            kl = tf.reduce_sum(tf.nn.softmax(target / TEMPERATURE) * (tf.nn.log_softmax(target / TEMPERATURE)
                                                                     - tf.nn.log_softmax(logits / TEMPERATURE)), axis=-1)
            loss = tf.reduce_mean(kl) * TEMPERATURE ** 2 + MSE_WEIGHT * tf.reduce_mean(tf.square(logits - target))
        gradients = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(gradients, student.trainable_variables))
        return loss

    started, losses = time.time(), []
    for index in range(steps):
        batch = np.concatenate([pools[name][rng.integers(0, len(pools[name]), count)] for name, count in counts.items()])
        losses.append(float(step(augmented(tf.constant(batch, tf.float32), tf.constant([seed, index], tf.int32)))))
        if (index + 1) % 25 == 0 or index + 1 == steps:
            print(f"distil {label}: step {index + 1}/{steps}, loss {np.mean(losses[-100:]):.4f}, "
                  f"{time.time() - started:.0f} s", flush=True)
    return {"steps": steps, "batch": BATCH, "first_loss": float(np.mean(losses[:20])),
            "last_loss": float(np.mean(losses[-100:])), "seconds": round(time.time() - started)}
