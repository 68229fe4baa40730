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
