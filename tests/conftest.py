"""Shared fixtures: the tiny credited face set and scratch images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
FACES = FIXTURES / "faces"
MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture
def face_tree(tmp_path: Path) -> Path:
    """A writable copy of the fixture faces (ROOT/<person>/<image>)."""
    root = tmp_path / "faces"
    shutil.copytree(FACES, root)
    return root
