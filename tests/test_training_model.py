"""The encoder network's export form (kiosk.training.model)."""

from __future__ import annotations

import numpy as np
import pytest


def test_split_prelu_computes_the_prelu_network_and_clips_slopes_above_one():
    # Imported here, not at collection: TensorFlow in the test process breaks tflite-runtime 2.14's model loading
    # (vector::reserve) for the tests that compare the two runtimes.
    keras = pytest.importorskip("keras")

    from kiosk.training.model import build_encoder, split_prelu

    keras.utils.set_random_seed(0)
    model = build_encoder(input_size=48, width=0.25, activation="prelu")
    rng = np.random.default_rng(0)
    prelus = [layer for layer in model.layers if isinstance(layer, keras.layers.PReLU)]
    for layer in prelus:  # SFace's slopes run from about -0.4 to 1.05
        layer.set_weights([rng.uniform(-0.5, 1.0, layer.get_weights()[0].shape).astype(np.float32)])
    faces = rng.uniform(0, 255, (3, 48, 48, 3)).astype(np.float32)
    split = split_prelu(model)
    assert not any(isinstance(layer, keras.layers.PReLU) for layer in split.layers)
    np.testing.assert_allclose(split.predict(faces, verbose=0), model.predict(faces, verbose=0), rtol=1e-4, atol=1e-4)

    steep = prelus[0].get_weights()[0].copy()
    steep[..., 0] = 1.5
    prelus[0].set_weights([steep])
    split = split_prelu(model)
    prelus[0].set_weights([np.minimum(steep, 1.0)])
    np.testing.assert_allclose(split.predict(faces, verbose=0), model.predict(faces, verbose=0), rtol=1e-4, atol=1e-4)


def test_stride_two_stem_keeps_every_layer_shape_and_runs_the_first_blocks_at_half_size():
    """SFace's weights must load into the stem network unchanged; only where the first downsampling happens moves."""
    keras = pytest.importorskip("keras")

    from kiosk.training.model import STEM_BLOCK, build_encoder

    plain = build_encoder(input_size=48, width=0.25)
    stem = build_encoder(input_size=48, width=0.25, stem_stride=2)
    shapes = lambda model: {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers if layer.weights}  # noqa: E731
    assert shapes(plain) == shapes(stem)
    assert plain.get_layer("conv_2").output.shape[1:3] == (48, 48)
    assert stem.get_layer("conv_2").output.shape[1:3] == (24, 24)
    after_stem = f"conv_{STEM_BLOCK}"
    assert stem.get_layer(after_stem).output.shape == plain.get_layer(after_stem).output.shape
    assert stem.output.shape == plain.output.shape
    with pytest.raises(ValueError, match="stem_stride"):
        build_encoder(input_size=48, stem_stride=4)
    del keras


def test_multiply_accumulates_of_the_stem_network():
    from kiosk.training.report import count_macs

    assert round(count_macs(112) / 1e6) == 574  # SFace's published figure
    # conv_1 and block 2 at 56x56 instead of 112x112 (a quarter of the positions); block 3's depthwise gives 56x56 either way
    saved = 3 / 4 * (112 * 112 * 27 * 32 + 112 * 112 * 32 * 9 + 112 * 112 * 32 * 64)
    assert count_macs(112, stem_stride=2) == pytest.approx(count_macs(112) - saved)


def test_a_factored_pointwise_convolution_keeps_the_directions_its_responses_use():
    from kiosk.training.model import factor_pointwise

    rng = np.random.default_rng(0)
    weight, scale = rng.normal(size=(16, 12)), rng.uniform(0.5, 2.0, 16)
    first, second = factor_pointwise(weight, np.eye(12), scale, 12)  # full rank: the same map
    np.testing.assert_allclose(second @ first, weight, atol=1e-5)
    inputs = rng.normal(size=(400, 3)) @ rng.normal(size=(3, 12))  # inputs in a 3-dimensional subspace
    first, second = factor_pointwise(weight, inputs, scale, 3)
    assert first.shape == (3, 12) and second.shape == (16, 3)
    np.testing.assert_allclose(inputs @ (second @ first).T, inputs @ weight.T, atol=1e-4)
    first, second = factor_pointwise(weight, rng.normal(size=(400, 12)), scale, 3)  # full-rank inputs: an approximation
    assert np.linalg.matrix_rank(second @ first) == 3


def test_rank_divisor_factors_the_square_pointwise_convolutions_and_counts_their_cost():
    keras = pytest.importorskip("keras")

    from kiosk.training.model import LOW_RANK_BLOCKS, block_layout, build_encoder
    from kiosk.training.report import count_macs

    model = build_encoder(input_size=48, width=0.25, stem_stride=2, rank_divisor=4)
    names = {layer.name for layer in model.layers}
    assert {f"conv_{b}_reduce" for b in LOW_RANK_BLOCKS} <= names and "conv_5_reduce" not in names
    assert model.get_layer("conv_8_reduce").filters == 128 // 4 and model.get_layer("conv_8").filters == 128
    assert model.output.shape == build_encoder(input_size=48, width=0.25, stem_stride=2).output.shape
    ranks = {block: rank for block, _, _, rank in block_layout(2, rank_divisor=4)}
    assert ranks[8] == 128 and ranks[14] == 256 and ranks[5] == 0
    # blocks 4, 6, 8-12 and 14 at 2/4 of their pointwise cost
    square = sum(side * side * c * c for side, c in [(56, 128), (28, 256)] + [(14, 512)] * 5 + [(7, 1024)])
    assert count_macs(112, 2, rank_divisor=4) == pytest.approx(count_macs(112, 2) - square / 2)
    with pytest.raises(ValueError, match="rank_divisor"):
        block_layout(2, rank_divisor=2)
    del keras


def test_full_rank_blocks_keep_their_whole_pointwise_convolution_when_the_others_are_factored():
    keras = pytest.importorskip("keras")

    from kiosk.training.model import block_layout, build_encoder, layout_of
    from kiosk.training.report import count_macs

    model = build_encoder(input_size=48, width=0.25, stem_stride=2, rank_divisor=8, full_rank_blocks=(14,))
    names = {layer.name for layer in model.layers}
    assert "conv_14_reduce" not in names and "conv_12_reduce" in names
    assert model.get_layer("conv_14").kernel.shape == (1, 1, 256, 256)
    ranks = {block: rank for block, _, _, rank in block_layout(2, rank_divisor=8, full_rank_blocks=(14,))}
    assert ranks[14] == 0 and ranks[12] == 512 // 8
    # block 14 (7x7, 1024 channels) at its full cost instead of 2/8 of it
    assert count_macs(112, 2, rank_divisor=8, full_rank_blocks=(14,)) == pytest.approx(
        count_macs(112, 2, rank_divisor=8) + 7 * 7 * 1024 * 1024 * (1 - 2 / 8))
    recorded = {"network": "SFace", "stem_stride": 2, "block4_stride": 1, "drop_blocks": [], "rank_divisor": 8,
                "stem_activation": "prelu", "full_rank_blocks": [14]}  # encoder.json's architecture
    assert count_macs(112, **layout_of(recorded)) == count_macs(112, 2, rank_divisor=8, full_rank_blocks=(14,))
    assert count_macs(112, **layout_of({"stem_stride": 2})) == count_macs(112, 2)  # a file from before the options
    for bad in ({"rank_divisor": 8, "full_rank_blocks": (5,)}, {"full_rank_blocks": (14,)}):
        with pytest.raises(ValueError, match="full_rank_blocks"):
            block_layout(2, **bad)
    del keras


def test_stem_activation_sets_the_activation_of_the_blocks_a_stem_student_retrains():
    keras = pytest.importorskip("keras")

    from kiosk.errors import TrainingError
    from kiosk.training.model import STEM_TRAINED_BLOCKS, build_encoder
    from kiosk.training.train import TrainSettings, _block_of, build_student

    model = build_encoder(input_size=48, width=0.25, stem_stride=2, stem_activation="relu")
    kinds = {layer.name: type(layer) for layer in model.layers if isinstance(layer, (keras.layers.ReLU, keras.layers.PReLU))}
    assert {_block_of(name) for name, kind in kinds.items() if kind is keras.layers.ReLU} == set(range(1, STEM_TRAINED_BLOCKS + 1))
    assert {_block_of(name) for name, kind in kinds.items() if kind is keras.layers.PReLU} == set(range(STEM_TRAINED_BLOCKS + 1, 15))
    shapes = lambda m: {layer.name: [tuple(w.shape) for w in layer.weights] for layer in m.layers  # noqa: E731
                        if layer.weights and not isinstance(layer, keras.layers.PReLU)}
    assert shapes(model) == shapes(build_encoder(input_size=48, width=0.25, stem_stride=2)), "SFace's other weights still load"
    with pytest.raises(ValueError, match="activation"):
        build_encoder(input_size=48, stem_activation="swish")
    with pytest.raises(TrainingError, match="stride-2 stem"):
        build_student(TrainSettings(activation="prelu", stem_activation="relu"))
