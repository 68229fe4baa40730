"""MiniFASNet (minivision-ai's Silent-Face-Anti-Spoofing, Apache-2.0) from ONNX to Keras 3 to full-int8 TFLite.

The two ONNX files in ``../shared/models/minifasnet`` are read with the
``onnx`` package and rebuilt node by node as a Keras model (channels last,
so the runtime feeds it an NHWC BGR 0..255 crop like any other TFLite model).
Only the ops those graphs use are converted; any other op is a
:class:`~kiosk.errors.TrainingError` naming it. The Keras model is checked
against OpenCV's own ONNX importer (``cv2.dnn.readNetFromONNX``) before it
is exported, and the int8 file against the Keras model after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kiosk.errors import TrainingError

DEFAULT_ONNX_DIR = Path("../shared/models/minifasnet")
INPUT_SIZE = 80
WORK_WIDTH = 320
"""The frame is brought to this width before cropping, as when the issue measured MiniFASNet on Haar boxes."""


@dataclass(frozen=True)
class MiniFASNetFile:
    """One of the two networks: its ONNX file, its crop scale and the name of the shipped int8 file."""

    onnx_name: str
    crop_scale: float
    tflite_name: str


NETWORKS = (
    MiniFASNetFile("2.7_80x80_MiniFASNetV2.onnx", 2.7, "liveness-minifasnet-v2.tflite"),
    MiniFASNetFile("4_0_0_80x80_MiniFASNetV1SE.onnx", 4.0, "liveness-minifasnet-v1se.tflite"),
)


def context_crop_settings() -> tuple:
    """The runtime's :class:`kiosk.liveness.ContextCrop` for each network, in ``NETWORKS`` order."""
    from kiosk.liveness import ContextCrop

    return tuple(ContextCrop(input_name(n), n.crop_scale) for n in NETWORKS)


def load_onnx(path: Path):
    """The ONNX model at ``path``, or a TrainingError saying where the files come from."""
    import onnx

    if not Path(path).is_file():
        raise TrainingError(f"MiniFASNet ONNX file {path} is missing: pass the folder holding "
                            f"{', '.join(n.onnx_name for n in NETWORKS)} with --minifasnet")
    return onnx.load(str(path))


ACTIVATIONS = ("prelu", "relu", "relu6", "leaky_relu")
"""What each PRelu node becomes: itself (the converted teacher) or a fixed activation (a student fast in int8)."""


def onnx_to_keras(model, name: str = "minifasnet", activation: str = "prelu"):
    """A Keras model computing the same logits as the ONNX ``model``, NHWC float input [1, H, W, 3].

    ``activation`` other than ``"prelu"`` replaces every PRelu node by that
    activation (the rest of the weights unchanged): the start of a student
    whose int8 file runs in XNNPACK's fast kernels (int8 PReLU does not).
    """
    if activation not in ACTIVATIONS:
        raise TrainingError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    import keras
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    (source,) = [i for i in graph.input if i.name not in weights]
    _, channels, height, width = (d.dim_value for d in source.type.tensor_type.shape.dim)
    inputs = keras.Input((height, width, channels), name="crop")
    tensors: dict[str, object] = {source.name: inputs}
    for index, node in enumerate(graph.node):
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant":
            weights[node.output[0]] = numpy_helper.to_array(attributes["value"])
            continue
        convert = _CONVERTERS.get(node.op_type)
        if node.op_type == "PRelu" and activation != "prelu":
            convert = _activation(activation)
        if convert is None:
            raise TrainingError(f"the ONNX graph uses {node.op_type} (node {node.name or index}), which "
                                f"kiosk.training.liveness.minifasnet does not convert (it knows Constant, "
                                f"{', '.join(sorted(_CONVERTERS))})")
        tensors[node.output[0]] = convert(tensors, weights, node, attributes, f"n{index}_{node.op_type.lower()}")
    (output,) = graph.output
    return keras.Model(inputs, tensors[output.name], name=name)


def _conv(tensors, weights, node, attributes, name):
    from keras import layers

    kernel = weights[node.input[1]]
    bias = weights[node.input[2]] if len(node.input) > 2 else None
    out_channels, in_per_group, kh, kw = kernel.shape
    group = attributes.get("group", 1)
    strides = tuple(attributes.get("strides", (1, 1)))
    if tuple(attributes.get("dilations", (1, 1))) != (1, 1):
        raise TrainingError(f"dilated Conv {node.name} is not converted")
    top, left, bottom, right = attributes.get("pads", (0, 0, 0, 0))
    x = tensors[node.input[0]]
    if strides == (1, 1) and top == bottom == (kh - 1) // 2 and left == right == (kw - 1) // 2 and kh % 2 and kw % 2:
        padding = "same"  # equal to ONNX's symmetric pads at stride 1
    else:
        padding = "valid"
        if top or left or bottom or right:
            x = layers.ZeroPadding2D(((top, bottom), (left, right)), name=f"{name}_pad")(x)
    in_channels = x.shape[-1]
    if group == 1:
        layer = layers.Conv2D(out_channels, (kh, kw), strides, padding, use_bias=bias is not None, name=name)
        values = [kernel.transpose(2, 3, 1, 0)]
    elif group == in_channels == out_channels and in_per_group == 1:
        layer = layers.DepthwiseConv2D((kh, kw), strides, padding, use_bias=bias is not None, name=name)
        values = [kernel.transpose(2, 3, 0, 1)]
    else:
        raise TrainingError(f"grouped Conv {node.name} (group {group}, {in_channels} -> {out_channels}) is not converted")
    y = layer(x)
    layer.set_weights(values + ([bias] if bias is not None else []))
    return y


def _prelu(tensors, weights, node, attributes, name):
    from keras import layers

    slope = weights[node.input[1]].reshape(-1)
    layer = layers.PReLU(shared_axes=[1, 2], name=name)
    y = layer(tensors[node.input[0]])
    layer.set_weights([slope.reshape(1, 1, -1)])
    return y


def _batch_norm(tensors, weights, node, attributes, name):
    from keras import layers

    gamma, beta, mean, variance = (weights[i] for i in node.input[1:5])
    layer = layers.BatchNormalization(axis=-1, epsilon=attributes.get("epsilon", 1e-5), name=name)
    y = layer(tensors[node.input[0]])
    layer.set_weights([gamma, beta, mean, variance])
    return y


def _matmul(tensors, weights, node, attributes, name):
    from keras import layers

    matrix = weights[node.input[1]]
    layer = layers.Dense(matrix.shape[1], use_bias=False, name=name)
    y = layer(tensors[node.input[0]])
    layer.set_weights([matrix])
    return y


def _reshape(tensors, weights, node, attributes, name):
    from keras import layers

    shape = tuple(int(v) for v in weights[node.input[1]])
    if shape != (1, -1):
        raise TrainingError(f"Reshape {node.name} to {shape} is not converted (only flattening, [1, -1])")
    x = tensors[node.input[0]]
    if len(x.shape) == 4 and x.shape[1] * x.shape[2] > 1:
        x = layers.Permute((3, 1, 2), name=f"{name}_nchw")(x)  # flatten in ONNX's channel-first order
    return layers.Flatten(name=name)(x)


def _binary(operation: str):
    def convert(tensors, weights, node, attributes, name):
        from keras import ops

        a, b = (tensors[i] for i in node.input)
        return ops.add(a, b) if operation == "add" else ops.multiply(a, b)

    return convert


def _activation(function: str):
    def convert(tensors, weights, node, attributes, name):
        from keras import layers

        return layers.Activation(function, name=name)(tensors[node.input[0]])

    return convert


def _global_average_pool(tensors, weights, node, attributes, name):
    from keras import layers

    return layers.GlobalAveragePooling2D(keepdims=True, name=name)(tensors[node.input[0]])


_CONVERTERS: dict[str, Callable] = {
    "Conv": _conv, "PRelu": _prelu, "BatchNormalization": _batch_norm, "MatMul": _matmul, "Reshape": _reshape,
    "Add": _binary("add"), "Mul": _binary("mul"), "Relu": _activation("relu"), "Sigmoid": _activation("sigmoid"),
    "GlobalAveragePool": _global_average_pool,
}


def onnx_logits_opencv(path: Path, crops: np.ndarray) -> np.ndarray:
    """Logits of ``crops`` ([N, H, W, 3] uint8 BGR) from the ONNX file run by OpenCV's importer (the reference)."""
    net = cv2.dnn.readNetFromONNX(str(path))
    out = []
    for crop in crops:
        net.setInput(cv2.dnn.blobFromImage(crop.astype(np.float32)))  # NCHW, no scaling, no channel swap
        out.append(net.forward().reshape(-1))
    return np.array(out, np.float32)


def build_pair(onnx_dir: Path = DEFAULT_ONNX_DIR, activation: str = "prelu"):
    """One Keras model running both networks: one 80x80 BGR crop per network in, their 3 + 3 logits out.

    One file and one interpreter call per face instead of two; inputs are
    named ``crop_<scale>`` so the runtime can tell them apart. ``activation``:
    see :func:`onnx_to_keras`.
    """
    import keras

    inputs, outputs = [], []
    for network in NETWORKS:
        net = onnx_to_keras(load_onnx(Path(onnx_dir) / network.onnx_name), name=network.onnx_name.split("_")[-1][:-5].lower(),
                            activation=activation)
        crop = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name=input_name(network))
        inputs.append(crop)
        outputs.append(net(crop))
    return keras.Model(inputs, keras.layers.Concatenate(name="logits")(outputs), name=f"minifasnet_pair_{activation}")


def input_name(network: MiniFASNetFile) -> str:
    """The pair model's input name for ``network``'s crop, e.g. ``crop_2_7``."""
    return "crop_" + f"{network.crop_scale:g}".replace(".", "_")


def tflite_logits(path: Path, crops: np.ndarray, num_threads: int = 1) -> tuple[np.ndarray, float]:
    """(logits [N, 6], median ms per face) of a pair TFLite file on ``crops`` [N, 2, 80, 80, 3] (networks in ``NETWORKS`` order)."""
    import time

    from kiosk.encoder import choose_interpreter

    _, interpreter_class = choose_interpreter("ai-edge-litert")
    interpreter = interpreter_class(model_path=str(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    details = {d["name"]: d for d in interpreter.get_input_details()}
    inputs = [next(d for name, d in details.items() if name.split(":")[0].endswith(input_name(n))) for n in NETWORKS]
    output = interpreter.get_output_details()[0]
    logits, times = [], []
    for pair in crops:
        started = time.perf_counter()
        for detail, crop in zip(inputs, pair):
            data = crop.astype(np.float32)
            if detail["dtype"] == np.int8:
                scale, zero = detail["quantization"]
                data = np.clip(np.round(data / scale + zero), -128, 127).astype(np.int8)
            interpreter.set_tensor(detail["index"], data[None])
        interpreter.invoke()
        raw = interpreter.get_tensor(output["index"])[0].astype(np.float32)
        times.append(1000 * (time.perf_counter() - started))
        if output["dtype"] == np.int8:
            scale, zero = output["quantization"]
            raw = (raw - zero) * scale
        logits.append(raw)
    return np.array(logits), float(np.median(times))


def reference_logits(onnx_dir: Path, crops: np.ndarray) -> np.ndarray:
    """The ONNX files' logits [N, 6] on ``crops`` [N, 2, 80, 80, 3], run by OpenCV (the reference)."""
    return np.concatenate([onnx_logits_opencv(Path(onnx_dir) / n.onnx_name, crops[:, i]) for i, n in enumerate(NETWORKS)], axis=1)


def agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Logit error and decision agreement (the runtime's rule, real logit >= 0) of ``other`` against ``reference``."""
    from kiosk.liveness import real_logit

    decided = [(real_logit(a) >= 0) == (real_logit(b) >= 0) for a, b in zip(reference, other)]
    return {"faces": len(reference), "max_abs_logit_error": float(np.abs(other - reference).max()),
            "mean_abs_logit_error": float(np.abs(other - reference).mean()), "decision_agreement": float(np.mean(decided))}
