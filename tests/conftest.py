"""Shared fixtures: the tiny credited face set and scratch images."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every CI run (a flaky test blocks every landing);
# locally they explore new random examples each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

FIXTURES = Path(__file__).parent / "fixtures"
FACES = FIXTURES / "faces"
MODELS = Path(__file__).resolve().parent.parent / "kiosk" / "models"


@pytest.fixture
def face_tree(tmp_path: Path) -> Path:
    """A writable copy of the fixture faces (ROOT/<person>/<image>)."""
    root = tmp_path / "faces"
    shutil.copytree(FACES, root)
    return root
