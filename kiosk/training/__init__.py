"""The desktop training tools (the ``train`` extra): never imported by the door at run time."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from kiosk.errors import FaceKioskError, TrainingError

TRAIN_EXTRA = "pip install 'face-kiosk[train]'"
"""How a user gets TensorFlow, Keras and the rest of the training tools (in a checkout: pip install -e '.[train]')."""


def require_train_extra(converter: bool = False) -> None:
    """Import the Keras backend and Keras up front (quietly), so a missing extra is reported before any long step runs.

    Training runs on any Keras backend: with ``KERAS_BACKEND=jax`` or ``torch`` (a GPU machine with PyTorch and JAX
    but no TensorFlow wheel) TensorFlow is not needed. The int8 export (``converter``) always needs TensorFlow's
    converter.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if converter or os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        _import("tensorflow")
    _import("keras")


def _import(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise TrainingError(f"{module} cannot be imported ({error}): training needs the train extra, "
                            f"install it with: {TRAIN_EXTRA}") from error


def exit_status(prog: str, command: Callable[[], object]) -> int:
    """Run a training command: 0, or 2 after a one-line message for an error the user can act on."""
    try:
        command()
    except (FaceKioskError, FileNotFoundError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    return 0
