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
