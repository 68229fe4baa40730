"""The arm64 check's parts that run without an arm64 root: the script's shape, the parity record and comparison,
and the instruction counts of the Pi estimate."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import arm64_parity, pi_estimate

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "test-arm64.sh"


def test_the_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    done = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_script_explains_itself_and_refuses_unknown_arguments():
    done = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "sudo deploy/test-arm64.sh trixie" in done.stdout
    done = subprocess.run(["bash", str(SCRIPT), "buster"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "unknown argument buster" in done.stderr


@pytest.fixture(scope="module")
def reference() -> dict:
    return arm64_parity.record()


def test_the_record_holds_every_fixture_face(reference):
    faces = reference["faces"]
    assert len([name for name in faces if name.startswith("faces/")]) == 12
    assert len(faces) == 27 and all(f["found"] for f in faces.values())
    for face in faces.values():
        assert np.linalg.norm(face["embedding"]) == pytest.approx(1.0, abs=1e-4)
        assert len(face["points"]) == 5 and len(face["liveness_logits"]) == 6


def test_a_record_matches_itself(reference):
    lines, failures = arm64_parity.compare(reference, reference)
    assert failures == []
    assert any("min cosine 1.0000" in line for line in lines)


def rotated(embedding: list[float], cosine: float) -> list[float]:
    """A unit vector at ``cosine`` to ``embedding``."""
    e = np.asarray(embedding)
    other = np.roll(e, 1) - (np.roll(e, 1) @ e) * e
    other /= np.linalg.norm(other)
    return (cosine * e + np.sqrt(1 - cosine**2) * other).tolist()


def test_an_embedding_that_drifted_fails_naming_the_photo(reference):
    other = copy.deepcopy(reference)
    name = next(n for n, f in other["faces"].items() if f["found"] and not n.startswith("faces/"))
    other["faces"][name]["embedding"] = rotated(other["faces"][name]["embedding"], 0.98)
    _, failures = arm64_parity.compare(reference, other)
    assert len(failures) == 1 and name in failures[0] and "0.9800" in failures[0]
    assert arm64_parity.compare(reference, other, min_cosine=0.97)[1] == []


def test_a_liveness_verdict_that_flips_fails(reference):
    other = copy.deepcopy(reference)
    name, face = next((n, f) for n, f in other["faces"].items() if f["found"])
    face["liveness"] = reference["liveness_threshold"] + (-1 if face["liveness"] >= reference["liveness_threshold"] else 1)
    _, failures = arm64_parity.compare(reference, other)
    assert any(name in f and "verdict" in f for f in failures)


def test_a_same_person_verdict_that_flips_fails(reference):
    other = copy.deepcopy(reference)
    pairs = arm64_parity.same_person(reference["faces"], reference["threshold"])
    pair = next(k for k, same in pairs.items() if same)
    first, second = pair.split(" ~ ")
    other["faces"][second]["embedding"] = rotated(reference["faces"][first]["embedding"], reference["threshold"] - 0.01)
    _, failures = arm64_parity.compare(reference, other, min_cosine=-1)
    assert f"same-person verdict differs: {pair}" in failures


def test_a_face_not_found_fails(reference):
    other = copy.deepcopy(reference)
    name = next(n for n, f in other["faces"].items() if f["found"])
    other["faces"][name] = {"found": False}
    _, failures = arm64_parity.compare(reference, other)
    assert any(name in f and "found False" in f for f in failures)


def test_plugin_marks_become_per_stage_instruction_counts():
    output = "icount 2 1000\nicount 3 1600\nnoise from the guest\nicount 6 2000\nicount 7 9000\nicount 2 10000\nicount 3 10500\n"
    assert pi_estimate.stage_counts(output) == {"detect": [600, 500], "encode": [7000]}


def test_the_estimate_spans_the_ipc_range():
    fast, slow = pi_estimate.estimate_ms(36e6, 1.8, (1.0, 2.0))
    assert fast == pytest.approx(10.0) and slow == pytest.approx(20.0)


def test_a_marked_call_returns_its_value_outside_the_emulator():
    assert pi_estimate.marked(1, lambda x: x + 1)(41) == 42
