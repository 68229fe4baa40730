"""The shipped int8 encoder and its metadata; a damaged, swapped or wrong model is refused."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from kiosk.encoder import Encoder, run_interpreter, runtime_interpreters
from kiosk.errors import ModelError
from kiosk.images import read_image
from kiosk.pipeline import FacePipeline
from tests.conftest import FACES, MODELS


@pytest.fixture
def model_copy(tmp_path):
    target = tmp_path / "models"
    target.mkdir()
    for name in ("encoder.tflite", "encoder.json"):
        shutil.copy(MODELS / name, target / name)
    return target


def test_shipped_model_loads_and_embeds():
    encoder = Encoder()
    metadata = json.loads((MODELS / "encoder.json").read_text())
    assert encoder.info.embedding_size == 128 and encoder.input_size == 112
    assert 0 < encoder.threshold < 1 and metadata["threshold"]["target_far"] == 1e-3
    assert (MODELS / "encoder.tflite").stat().st_size <= 12e6
    crop = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    vector = encoder.embed(crop)
    assert vector.dtype == np.float32 and vector.shape == (128,)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5


def test_same_person_scores_above_threshold_and_strangers_below():
    pipeline = FacePipeline()
    embed = {p.parent.name + p.stem[-1]: pipeline.embed_largest(read_image(p)).embedding for p in sorted(FACES.rglob("*.jpg"))}
    threshold = pipeline.encoder.threshold
    assert embed["Colin_Powell1"] @ embed["Colin_Powell2"] > threshold
    assert embed["Colin_Powell1"] @ embed["Hugo_Chavez1"] < threshold
    assert embed["George_W_Bush1"] @ embed["Hugo_Chavez2"] < threshold


class RecordingInterpreter:
    """Takes what run_interpreter feeds a model with the given input quantisation; returns a fixed raw output."""

    def __init__(self, quantization: tuple[float, int]) -> None:
        self.quantization, self.fed = quantization, None

    def get_input_details(self):
        return [{"index": 0, "dtype": np.int8, "quantization": self.quantization}]

    def get_output_details(self):
        return [{"index": 1, "dtype": np.int8, "quantization": (0.5, 2)}]

    def set_tensor(self, index, data):
        self.fed = data.copy()

    def invoke(self):
        pass

    def get_tensor(self, index):
        return np.array([[4, -6]], np.int8)


@pytest.mark.parametrize("quantization", [(1.0, -128), (2.0, 0), (1.0, 0)])
def test_int8_input_is_each_pixel_quantised_exactly(quantization):
    """Every pixel value goes in as round(pixel / scale + zero point), clipped to int8, whichever way it is computed
    (the export's scale 1 / zero point -128 takes a bit flip)."""
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    interpreter = RecordingInterpreter(quantization)
    output = run_interpreter(interpreter, pixels)
    scale, zero = quantization
    expected = np.clip(np.round(np.arange(256) / scale + zero), -128, 127).reshape(16, 16, 1).repeat(3, axis=2)
    assert interpreter.fed.dtype == np.int8 and interpreter.fed.shape == (1, 16, 16, 3)
    assert np.array_equal(interpreter.fed[0].astype(int), expected)
    assert np.allclose(output, [(4 - 2) * 0.5, (-6 - 2) * 0.5])


def test_every_installed_runtime_gives_the_same_embeddings_and_decisions():
    """The Pi may run tflite-runtime, a desktop ai-edge-litert: the threshold must mean the same in both.

    int8 kernels round differently between runtimes (a few output steps), so the
    embeddings agree closely, not bit for bit; every same/different decision agrees.
    """
    runtimes = runtime_interpreters()
    if len(runtimes) < 2:
        why = f"only {', '.join(runtimes) or 'no TFLite runtime'} is installed; compare needs ai-edge-litert and tflite-runtime"
        if os.environ.get("CI"):
            pytest.fail(why + " (CI installs both: pip install -e '.[tflite]' on Python <= 3.11)")
        pytest.skip(why)
    pipeline = FacePipeline()
    crops = [pipeline.embed_largest(read_image(path)).crop for path in sorted(FACES.rglob("*.jpg"))]
    embeddings = {}
    for name, interpreter_class in runtimes.items():
        interpreter = interpreter_class(model_path=str(MODELS / "encoder.tflite"), num_threads=1)
        interpreter.allocate_tensors()
        raw = np.stack([run_interpreter(interpreter, crop) for crop in crops])
        embeddings[name] = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    (reference_name, reference), *others = embeddings.items()
    threshold = pipeline.encoder.threshold
    for name, vectors in others:
        scores, reference_scores = vectors @ vectors.T, reference @ reference.T
        # SFace's PReLUs run as an add and a 1x1 depthwise convolution each (split_prelu): more rounding steps, so
        # the runtimes' embeddings of these faces agree to cosine 0.988 or better (0.99 for the ReLU students) and
        # pair scores differ by up to 0.04 (0.02).
        assert np.all(np.sum(reference * vectors, axis=1) > 0.98), f"{name} and {reference_name} embed a face differently"
        assert np.abs(scores - reference_scores).max() < 0.05, f"{name} and {reference_name} score pairs differently"
        assert np.array_equal(scores > threshold, reference_scores > threshold), f"{name} and {reference_name} decide differently"


def test_missing_model_is_refused(model_copy):
    (model_copy / "encoder.tflite").unlink()
    with pytest.raises(ModelError, match="missing"):
        Encoder(model_copy)


def test_missing_metadata_is_refused(model_copy):
    (model_copy / "encoder.json").unlink()
    with pytest.raises(ModelError, match="metadata .* is missing"):
        Encoder(model_copy)


def test_truncated_model_is_refused(model_copy):
    data = (model_copy / "encoder.tflite").read_bytes()
    (model_copy / "encoder.tflite").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="does not match its metadata"):
        Encoder(model_copy)


def test_swapped_model_is_refused(model_copy):
    data = bytearray((model_copy / "encoder.tflite").read_bytes())
    data[-100] ^= 0xFF
    (model_copy / "encoder.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="damaged or was swapped"):
        Encoder(model_copy)


def test_model_of_the_wrong_shape_is_refused(model_copy):
    metadata = json.loads((model_copy / "encoder.json").read_text())
    metadata["input"]["size"] = 96
    (model_copy / "encoder.json").write_text(json.dumps(metadata))
    with pytest.raises(ModelError, match="takes input"):
        Encoder(model_copy)


def test_garbage_metadata_is_refused(model_copy):
    (model_copy / "encoder.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        Encoder(model_copy)
    (model_copy / "encoder.json").write_text("{}")
    with pytest.raises(ModelError, match="lacks"):
        Encoder(model_copy)


def test_a_larger_box_that_is_no_face_gives_way_to_the_face_behind_it():
    """A Haar box on a pattern, larger than the real face, is refused by the strength gate: the next box is used."""
    from kiosk.face import Face

    pipeline = FacePipeline()
    photo = read_image(FACES / "Colin_Powell" / "Colin_Powell_0001.jpg")
    height, width = photo.shape[:2]
    canvas = np.full((height, 2 * width, 3), 128, np.uint8)
    canvas[:, width:] = photo
    face = pipeline.finder.largest(photo)
    real = Face(face.x + width, face.y, face.w, face.h, 0.0, (face.center[0] + width, face.center[1]), "haar")
    decoy = Face(10, 10, 1.5 * face.w, 1.5 * face.h, 0.0, (10 + 0.75 * face.w, 10 + 0.75 * face.h), "haar")

    assert not pipeline.embed_face(canvas, decoy).usable
    chosen = pipeline.embed_faces(canvas, [decoy, real])
    assert chosen.face is real and chosen.usable
    # the same face (moved 250 px across a wider canvas: the crops' interpolation rounds differently, and the landmark
    # stage's three looks carry it; measured 0.986)
    assert chosen.embedding @ pipeline.embed_largest(photo).embedding > 0.98
    only_decoy = pipeline.embed_faces(canvas, [decoy])
    assert only_decoy.face is decoy and not only_decoy.usable  # nothing usable: the largest box's verdict
    assert pipeline.embed_faces(canvas, []) is None
