"""Distil MiniFASNet into ReLU students whose full-int8 file runs in XNNPACK's fast kernels, and teach them prints at a distance.

MiniFASNet's 66 PReLU layers make its int8 export several times slower than
float32 on x86 (int8 PReLU has no fast kernel). A student is the same two
networks with every PReLU replaced by ReLU (``STUDENT_ACTIVATION``), started
from the converted weights and trained on two targets per network: the float
teacher's logits (temperature-softened KL plus a small logit MSE) and, with
weight ``LABEL_WEIGHT``, the truth (cross-entropy of the "real" probability).
The pools: NUAA context crops (labelled live or print), live faces from many
cameras (LFW, CelebA: guards against learning "the NUAA webcam = spoof"),
synthetic screen replays of those faces, and prints held up at any distance
(screens.py) of those faces and of NUAA live frames (the door camera's own
live picture on paper; never of the subjects the report's synthetic attacks
are rendered from). The truth is what
the teacher lacks: it takes a small print held far away, its edges and the
room around it in view, for a live face (red-team attack 11c). Both crops of
a face get the same light, white balance, contrast, gamma, blur and noise (one
scene), each its own small zoom and shift (the Haar box wobbles from frame to
frame); the teacher sees exactly what the student sees. Batch norm stays in
inference mode (short fine-tune, batches of mixed sources), so the student
exports like the teacher.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.errors import TrainingError
from kiosk.face import FaceFinder
from kiosk.images import read_image
from kiosk.liveness import REAL_CLASS
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
STEPS = 600
BATCH = 32
LEARNING_RATE = 3e-4
TEMPERATURE = 2.0
MSE_WEIGHT = 0.05
LABEL_WEIGHT = 1.0
"""Weight of the cross-entropy against the truth beside the distillation loss."""
MIX = {"nuaa": 0.35, "faces": 0.3, "replays": 0.15, "prints": 0.2}
"""Share of each batch drawn from each pool of training crops."""
RECIPE = "kd-labels-prints2"
"""Names the students' training recipe in their cache file names (a changed recipe distils again)."""


@dataclass
class Faces(ArrayRecord):
    """Context crops of photos from LFW and CelebA, of their synthetic screen replays and of prints of them."""

    crops: np.ndarray  # [N, networks, 80, 80, 3] uint8 BGR
    source: np.ndarray  # "lfw" or "celeba"
    replay: np.ndarray  # True: a synthetic screen replay of the photo
    printed: np.ndarray  # True: the photo printed and held up (neither: the photo itself, a live face)
    held_out: np.ndarray  # True: never distilled on



def prepare_faces(root: Path, seed: int) -> Faces:
    """Up to ``FACES_PER_SOURCE`` photos per source through the door's front end, each also as a replay and a print."""
    import cv2
    from tqdm import tqdm

    from kiosk.liveness import context_crops
    from kiosk.training.liveness.minifasnet import INPUT_SIZE, WORK_WIDTH, context_crop_settings
    from kiosk.training.liveness.screens import render_print, render_replay

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
            room = read_image(photos[int(rng.integers(len(photos)))][0])
            big = cv2.resize(image, (REPLAY_SCALE, round(image.shape[0] * REPLAY_SCALE / image.shape[1])))
            for kind, frame in (("photo", image), ("replay", render_replay(big, rng)), ("print", render_print(big, room, rng))):
                face = finder.largest(frame)
                if face is None:
                    continue
                for name, value in (("crops", np.stack(context_crops(frame, face, settings, WORK_WIDTH, INPUT_SIZE))),
                                    ("source", source), ("replay", kind == "replay"), ("printed", kind == "print"),
                                    ("held_out", is_held_out)):
                    columns[name].append(value)
    return Faces(**{name: np.array(values) for name, values in columns.items()})


@dataclass
class NuaaPrints(ArrayRecord):
    """Context crops of NUAA live frames printed and held up in front of another frame (never of ``TEST_SUBJECTS``)."""

    crops: np.ndarray  # [N, networks, 80, 80, 3] uint8 BGR
    subject: np.ndarray
    capture_session: np.ndarray


def prepare_nuaa_prints(prepared, seed: int) -> NuaaPrints:
    """Every live NUAA frame of the subjects outside ``TEST_SUBJECTS`` as a print (:func:`render_print`), once.

    The door's camera is NUAA's webcam here: the prints teach that a sheet
    showing this camera's live picture is an attack. ``TEST_SUBJECTS`` are
    left out, so that the synthetic attacks of the report, rendered from their
    frames, stay unseen.
    """
    from tqdm import tqdm

    from kiosk.liveness import context_crops
    from kiosk.training.liveness.data import TEST_SUBJECTS
    from kiosk.training.liveness.minifasnet import INPUT_SIZE, WORK_WIDTH, context_crop_settings
    from kiosk.training.liveness.screens import render_print

    rng = np.random.default_rng(seed)
    settings = context_crop_settings()
    finder = FaceFinder()
    rows = np.flatnonzero(prepared.live & prepared.found & ~np.isin(prepared.subject, TEST_SUBJECTS))
    columns: dict[str, list] = {name: [] for name in NuaaPrints.__dataclass_fields__}
    for row in tqdm(rows, desc="prepare NUAA prints", unit="frame"):
        room = read_image(Path(prepared.paths[rng.choice(rows)]))
        frame = render_print(read_image(Path(prepared.paths[row])), room, rng)
        face = finder.largest(frame)
        if face is None:
            continue
        for name, value in (("crops", np.stack(context_crops(frame, face, settings, WORK_WIDTH, INPUT_SIZE))),
                            ("subject", prepared.subject[row]), ("capture_session", prepared.capture_session[row])):
            columns[name].append(value)
    return NuaaPrints(**{name: np.array(values) for name, values in columns.items()})


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


def distil(teacher, student, pools: dict[str, tuple[np.ndarray, np.ndarray]], seed: int, steps: int = STEPS,
           label: str = "") -> dict:
    """Train ``student`` in place on ``pools`` (name in ``MIX`` -> (crops [N, networks, 80, 80, 3] uint8, live [N] bool)).

    Each batch takes ``MIX`` shares from the pools, is augmented
    (:func:`augment`) and scored by ``teacher``; the loss is, per network,
    KL(teacher || student) of the softmax at ``TEMPERATURE`` (times its square),
    plus ``MSE_WEIGHT`` times the logits' mean squared difference, plus
    ``LABEL_WEIGHT`` times the cross-entropy of the student's "real"
    probability against the truth. Returns the loss curve.
    """
    import keras
    import tensorflow as tf

    sizes = {name: len(pools[name][0]) if name in pools else 0 for name in MIX}
    if not all(sizes.values()):
        raise TrainingError(f"distillation needs crops in every pool ({', '.join(MIX)}); got "
                            + ", ".join(f"{name}: {size}" for name, size in sizes.items()))
    rng = np.random.default_rng(seed)
    counts = {name: round(share * BATCH) for name, share in MIX.items()}
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps, warmup_target=None)
    optimizer = keras.optimizers.Adam(schedule)
    networks = pools["nuaa"][0].shape[1]

    def per_network(logits):
        return tf.reshape(logits, [-1, networks, 3])

    augmented = tf.function(augment)

    @tf.function
    def step(x, live):
        inputs = [x[:, i] for i in range(networks)]
        target = per_network(teacher(inputs, training=False))
        with tf.GradientTape() as tape:
            logits = per_network(student(inputs, training=False))
            kl = tf.reduce_sum(tf.nn.softmax(target / TEMPERATURE) * (tf.nn.log_softmax(target / TEMPERATURE)
                                                                     - tf.nn.log_softmax(logits / TEMPERATURE)), axis=-1)
            log_p = tf.nn.log_softmax(logits, axis=-1)
            log_real = log_p[..., REAL_CLASS]
            log_attack = tf.reduce_logsumexp(tf.concat([log_p[..., :REAL_CLASS], log_p[..., REAL_CLASS + 1:]], -1), axis=-1)
            truth = -(live[:, None] * log_real + (1.0 - live[:, None]) * log_attack)
            loss = (tf.reduce_mean(kl) * TEMPERATURE ** 2 + MSE_WEIGHT * tf.reduce_mean(tf.square(logits - target))
                    + LABEL_WEIGHT * tf.reduce_mean(truth))
        gradients = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(gradients, student.trainable_variables))
        return loss

    started, losses = time.time(), []
    for index in range(steps):
        picks = {name: rng.integers(0, len(pools[name][0]), count) for name, count in counts.items()}
        batch = np.concatenate([pools[name][0][rows] for name, rows in picks.items()])
        live = np.concatenate([pools[name][1][rows] for name, rows in picks.items()]).astype(np.float32)
        losses.append(float(step(augmented(tf.constant(batch, tf.float32), tf.constant([seed, index], tf.int32)),
                                 tf.constant(live))))
        if (index + 1) % 25 == 0 or index + 1 == steps:
            print(f"distil {label}: step {index + 1}/{steps}, loss {np.mean(losses[-100:]):.4f}, "
                  f"{time.time() - started:.0f} s", flush=True)
    return {"steps": steps, "batch": BATCH, "first_loss": float(np.mean(losses[:20])),
            "last_loss": float(np.mean(losses[-100:])), "seconds": round(time.time() - started)}
