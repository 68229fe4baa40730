"""The liveness training's pure parts on tiny hand-made inputs: attempt scores, ISO/IEC 30107-3 metrics, NUAA attempts, CLI."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from kiosk.errors import TrainingError
from kiosk.training import TRAIN_EXTRA
from kiosk.training.liveness import cli
from kiosk.training.liveness.attempts import MIN_MOVEMENTS, attempt_table
from kiosk.training.liveness.data import ATTEMPT_FRAMES, FrameRecord, Prepared, scan_nuaa, split_attempts
from kiosk.training.liveness.metrics import choose_threshold, equal_error_rate, error_rates, rates_by_subject

REST_ROLES = re.compile(r"``|:(func|class|mod|meth|attr):`")


def test_attempt_table_averages_texture_and_counts_movements() -> None:
    """Per attempt: the mean texture logit of its frames with a face, and how often the face moved (a finite motion)."""
    nan = np.nan
    prepared = Prepared(crops=np.zeros((6, 2, 1, 1, 3), np.uint8), found=np.array([True, True, False, True, True, True]),
                        live=np.array([True, True, True, False, False, False]), subject=np.array(["0001"] * 6),
                        capture_session=np.array(["01"] * 6), attempt=np.array([0, 0, 0, 1, 1, 1]),
                        motion=np.array([nan, 0.02, 0.5, nan, nan, 0.03]), paths=np.array([""] * 6))
    table = attempt_table(prepared, np.array([1.0, 3.0, 100.0, -2.0, -4.0, -6.0]), np.arange(6))
    assert table.live.tolist() == [True, False]
    assert table.texture.tolist() == [2.0, -4.0]  # the frame without a face (texture 100) is not counted
    assert table.movements.tolist() == [1, 1]  # nor its movement
    assert MIN_MOVEMENTS == 2 and table.moved.tolist() == [False, False]


def test_error_rates_count_attacks_accepted_and_live_rejected() -> None:
    live = np.array([True, True, True, False, False])
    rates = error_rates(live, np.array([0.9, 0.4, 0.5, 0.6, 0.1]), 0.5)  # a score at the threshold is accepted
    assert rates == pytest.approx({"apcer": 1 / 2, "bpcer": 1 / 3, "acer": 5 / 12,
                                   "attack_presentations": 2, "bona_fide_presentations": 3})


def test_chosen_threshold_is_the_centre_of_the_lowest_acer_interval() -> None:
    assert choose_threshold(np.array([True, True, False, False]), np.array([3.0, 2.0, 1.0, 0.0])) == 1.5
    # A live and a print attempt share the score 1: ACER is 1/4 on both sides of it, from 0.5 up to 2.
    assert choose_threshold(np.array([True, False, True, False]), np.array([1.0, 1.0, 3.0, 0.0])) == 1.25


def test_equal_error_rate() -> None:
    live = np.array([True, True, False, False])
    assert equal_error_rate(live, np.array([3.0, 2.0, 1.0, 0.0])) == 0.0
    assert equal_error_rate(live, np.array([2.0, 0.0, 1.0, -1.0])) == 0.5


def test_rates_by_subject_keep_each_subject_apart() -> None:
    live = np.array([True, False, True, False])
    subjects = np.array(["0003", "0003", "0006", "0006"])
    rates = rates_by_subject(live, subjects, {"texture": np.array([1.0, -1.0, -1.0, 1.0])}, {"texture": 0.0})
    assert {s: (r["texture"]["apcer"], r["texture"]["bpcer"]) for s, r in rates.items()} == {"0003": (0.0, 0.0),
                                                                                             "0006": (1.0, 1.0)}


def test_sessions_are_cut_into_attempts_of_consecutive_frames() -> None:
    long = [FrameRecord(Path(f"{i}.jpg"), True, "0001", "live/0001/00_01_001", i) for i in range(2 * ATTEMPT_FRAMES + 2)]
    short = [FrameRecord(Path(f"s{i}.jpg"), False, "0001", "spoof/0001/00_01_001", i) for i in range(ATTEMPT_FRAMES - 1)]
    cut = split_attempts(long + short)
    assert [len(a) for a in cut] == [ATTEMPT_FRAMES + 1, ATTEMPT_FRAMES + 1, ATTEMPT_FRAMES - 1]
    assert [r.frame for a in cut[:2] for r in a] == [r.frame for r in long]


def test_nuaa_frames_come_in_frame_number_order(tmp_path: Path) -> None:
    folder = tmp_path / "live" / "0001"
    folder.mkdir(parents=True)
    for frame in (10, 9, 100):
        (folder / f"0001_00_00_01_{frame}.jpg").touch()
    records = scan_nuaa(tmp_path)
    assert [r.frame for r in records] == [9, 10, 100]
    assert {(r.live, r.subject, r.session) for r in records} == {(True, "0001", "live/0001/00_00_01")}


def test_an_empty_nuaa_tree_is_a_training_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="--data"):
        scan_nuaa(tmp_path)


def test_help_is_plain_text() -> None:
    text = cli.build_parser().format_help()
    assert "--data" in text and "TEST_SUBJECTS" in text
    assert not REST_ROLES.search(text), text


def test_missing_train_extra_is_a_message_and_exit_status_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow now raises ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "keras", None)
    assert cli.main(["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"{cli.PROG}: tensorflow cannot be imported") and TRAIN_EXTRA in error
    assert not (tmp_path / "cache").exists()  # refused before any step ran


# The MiniFASNet conversion ------------------------------------------------------------------------------


def _tiny_graph(path: Path, extra_op: str | None = None) -> Path:
    """An ONNX graph with every op MiniFASNet uses (strided padded conv, depthwise conv, PRelu, SE block, flatten, MatMul, BN)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int, scale: float = 0.2) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    initializers = [weight("w1", 4, 3, 3, 3, scale=0.01), weight("b1", 4), weight("a1", 4, 1, 1),
                    weight("wd", 4, 1, 3, 3), weight("bd", 4), weight("ws1", 2, 4, 1, 1), weight("bs1", 2),
                    weight("ws2", 4, 2, 1, 1), weight("bs2", 4), weight("wm", 64, 5),
                    numpy_helper.from_array(np.abs(rng.standard_normal(5)).astype(np.float32) + 0.5, "gamma"),
                    weight("beta", 5), weight("mean", 5), numpy_helper.from_array(np.full(5, 2.0, np.float32), "var"),
                    weight("wo", 5, 3)]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["c1", "a1"], ["p1"]),
        helper.make_node("Conv", ["p1", "wd", "bd"], ["d1"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], group=4),
        helper.make_node("GlobalAveragePool", ["d1"], ["g"]),
        helper.make_node("Conv", ["g", "ws1", "bs1"], ["s1"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["s1"], ["r"]),
        helper.make_node("Conv", ["r", "ws2", "bs2"], ["s2"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["s2"], ["sg"]),
        helper.make_node("Mul", ["d1", "sg"], ["m"]),
        helper.make_node("Add", ["m", "p1"], ["sum"]),
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([1, -1], np.int64))),
        helper.make_node("Reshape", ["sum", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "wm"], ["fc"]),
        helper.make_node("BatchNormalization", ["fc", "gamma", "beta", "mean", "var"], ["bn"], epsilon=1e-5),
        helper.make_node("MatMul", ["bn", "wo"], ["logits"]),
    ]
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["logits"], ["extra"]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("extra" if extra_op else "logits", TensorProto.FLOAT, [1, 3])],
                              initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_converted_graph_matches_opencv_on_the_onnx_file(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    from kiosk.training.liveness.minifasnet import load_onnx, onnx_logits_opencv, onnx_to_keras

    path = _tiny_graph(tmp_path / "tiny.onnx")
    crops = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)  # BGR 0..255, NHWC
    converted = np.asarray(onnx_to_keras(load_onnx(path)).predict(crops.astype(np.float32), verbose=0))
    reference = onnx_logits_opencv(path, crops)
    assert np.abs(reference).max() > 0.1  # the graph computes something
    assert np.abs(converted - reference).max() < 1e-4


def test_an_op_the_converter_does_not_know_is_a_training_error_naming_it(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    from kiosk.training.liveness.minifasnet import load_onnx, onnx_to_keras

    with pytest.raises(TrainingError, match="Softmax"):
        onnx_to_keras(load_onnx(_tiny_graph(tmp_path / "tiny.onnx", extra_op="Softmax")))
    with pytest.raises(TrainingError, match="--minifasnet"):
        load_onnx(tmp_path / "missing.onnx")


def test_int8_export_is_full_integer_and_agrees_with_the_float_model(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from kiosk.training.export import export_tflite
    from kiosk.training.liveness.minifasnet import agreement, load_onnx, onnx_to_keras

    model = onnx_to_keras(load_onnx(_tiny_graph(tmp_path / "tiny.onnx")))
    crops = np.random.default_rng(2).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    tflite = export_tflite(model, tmp_path / "tiny.tflite", [{"crop": crop} for crop in crops])
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    assert {op["op_name"] for op in interpreter._get_ops_details()}.isdisjoint({"DEQUANTIZE", "QUANTIZE"})
    quantised = []
    for crop in crops:
        scale, zero = inp["quantization"]
        interpreter.set_tensor(inp["index"], np.clip(np.round(crop / scale + zero), -128, 127).astype(np.int8)[None])
        interpreter.invoke()
        scale, zero = out["quantization"]
        quantised.append((interpreter.get_tensor(out["index"])[0].astype(np.float32) - zero) * scale)
    float_logits = np.asarray(model.predict(crops.astype(np.float32), verbose=0))
    check = agreement(float_logits, np.array(quantised))
    assert check["mean_abs_logit_error"] < 0.1 * np.abs(float_logits).mean()


# The ReLU students -------------------------------------------------------------------------------------


def test_student_replaces_every_prelu_and_keeps_the_other_weights(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    import keras

    from kiosk.training.liveness.minifasnet import load_onnx, onnx_to_keras

    model = load_onnx(_tiny_graph(tmp_path / "tiny.onnx"))
    teacher, student = onnx_to_keras(model), onnx_to_keras(model, activation="relu")
    assert any(isinstance(layer, keras.layers.PReLU) for layer in teacher.layers)
    assert not any(isinstance(layer, keras.layers.PReLU) for layer in student.layers)
    weighted = [layer for layer in teacher.layers if layer.weights and not isinstance(layer, keras.layers.PReLU)]
    assert weighted and all(np.array_equal(a, b) for layer in weighted
                            for a, b in zip(layer.get_weights(), student.get_layer(layer.name).get_weights()))
    with pytest.raises(TrainingError, match="unknown activation"):
        onnx_to_keras(model, activation="swish")


def test_augment_keeps_shape_and_pixel_range_and_is_reproducible() -> None:
    tf = pytest.importorskip("tensorflow")
    from kiosk.training.liveness.distil import augment

    crops = tf.constant(np.random.default_rng(3).integers(0, 256, (4, 2, 80, 80, 3)), tf.float32)
    first, again = (augment(crops, tf.constant([1, 2], tf.int32)).numpy() for _ in range(2))
    assert first.shape == (4, 2, 80, 80, 3) and first.min() >= 0 and first.max() <= 255
    assert np.array_equal(first, np.round(first)) and np.array_equal(first, again)
    assert not np.array_equal(first, crops.numpy())


def test_distil_without_crops_in_a_pool_is_a_training_error() -> None:
    from kiosk.training.liveness.distil import distil

    crops, live = np.zeros((2, 2, 80, 80, 3), np.uint8), np.ones(2, bool)
    with pytest.raises(TrainingError, match="replays: 0"):
        distil(None, None, {"nuaa": (crops, live), "faces": (crops, live), "replays": (crops[:0], live[:0]),
                            "prints": (crops, live)}, seed=0)


def _pair_model(seed: int):
    """A tiny stand-in for the MiniFASNet pair: two 80x80 BGR inputs, three logits each (all equal at the start)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = [keras.Input((80, 80, 3)) for _ in range(2)]
    outputs = [keras.layers.Dense(3, kernel_initializer="zeros")(keras.layers.GlobalAveragePooling2D()(x)) for x in inputs]
    return keras.Model(inputs, keras.layers.Concatenate()(outputs))


def test_the_truth_term_teaches_what_the_teacher_gets_wrong() -> None:
    """A teacher that finds bright and dark crops equally live: the student learns that dark ones are attacks."""
    pytest.importorskip("tensorflow")
    from kiosk.liveness import real_logit
    from kiosk.training.liveness.distil import MIX, distil

    teacher, student = _pair_model(0), _pair_model(0)
    rng = np.random.default_rng(4)
    bright = rng.integers(180, 256, (16, 2, 80, 80, 3)).astype(np.uint8)
    dark = rng.integers(0, 60, (16, 2, 80, 80, 3)).astype(np.uint8)
    pools = {name: (bright, np.ones(16, bool)) if name in ("nuaa", "faces") else (dark, np.zeros(16, bool)) for name in MIX}

    def gap(model) -> float:
        def mean_logit(crops):
            return np.mean([real_logit(v) for v in np.asarray(model.predict([crops[:, 0], crops[:, 1]], verbose=0))])
        return mean_logit(bright.astype(np.float32)) - mean_logit(dark.astype(np.float32))

    before = gap(student)
    distil(teacher, student, pools, seed=0, steps=60)
    after = gap(student)
    assert after > before + 0.5  # measured: 0 -> 1.1; with the truth term off the student stays at 0 (the teacher)


def test_a_rendered_print_has_paper_ink_and_the_room_around_it() -> None:
    from kiosk.training.liveness.screens import render_print

    black_photo, white_room = np.zeros((240, 320, 3), np.uint8), np.full((240, 320, 3), 255, np.uint8)
    for seed in range(5):
        frame = render_print(black_photo, white_room, np.random.default_rng(seed))
        assert frame.shape == black_photo.shape and frame.dtype == np.uint8
        assert frame.min() >= 8  # ink on paper is never black
        assert (frame.mean(axis=2) < 100).mean() > 0.05 and (frame.mean(axis=2) > 150).mean() > 0.02  # sheet and room
