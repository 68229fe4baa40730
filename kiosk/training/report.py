"""The encoder's evaluation report: Markdown, DET plots, metrics into ``encoder.json``.

Everything in the report is measured in the run that writes it: face-kiosk's
int8 model through the Haar front end, and beside it on the same images
OpenCV YuNet + SFace (its own detector and landmark alignment), SFace fed
the same Haar crops, and dlib/face_recognition when installed.
"""

from __future__ import annotations

import datetime
import json
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kiosk import assemble
from kiosk.encoder import METADATA_FILE, MODEL_FILE
from kiosk.face import crop_face
from kiosk.training.evaluate import HARD_LIGHT, Scores, all_pairs, lfw_view1, plot_roc, time_encoder

PI4_BASIS = (
    "Estimate for a Raspberry Pi 4 (4x Cortex-A72 at 1.5-1.8 GHz, XNNPACK int8, 4 threads): the encoder's "
    "multiply-accumulates divided by ~15 GMAC/s, the sustained int8 rate implied by published TFLite timings of "
    "MobileNet-v1-224 int8 (0.57 GMAC, about 35-40 ms) on that board."
)


def count_macs(size: int = 112, stem_stride: int = 1, block4_stride: int = 1, drop_blocks: tuple[int, ...] = (),
               rank_divisor: int = 1, full_rank_blocks: tuple[int, ...] = ()) -> float:
    """Multiply-accumulates of one embedding, from the architecture (``encoder.json``'s, no TF needed)."""
    from kiosk.training.model import EMBEDDING_SIZE, block_layout

    side = size // stem_stride
    channels, macs = 32, side * side * 27 * 32
    for _, filters, stride, rank in block_layout(stem_stride, block4_stride, drop_blocks, rank_divisor, full_rank_blocks):
        side //= stride
        macs += side * side * channels * 9 + side * side * (rank * (channels + filters) if rank else channels * filters)
        channels = filters
    return macs + side * side * channels * EMBEDDING_SIZE


def pipelines(models: Path, peers: bool) -> dict[str, Callable]:
    """Name -> callable(BGR image) -> embedding or None."""

    kiosk = assemble.pipeline(assemble.default_config(models))

    def face_kiosk(image):
        result = kiosk.embed_largest(image)
        return None if result is None else result.embedding

    found = {"face-kiosk (int8, Haar)": face_kiosk}
    if not peers:
        return found
    try:
        from kiosk.training.teacher import Teacher

        teacher = Teacher()
    except Exception as error:  # noqa: BLE001 - a missing peer is reported, not fatal
        print(f"note: OpenCV YuNet + SFace skipped ({error})")
        return found

    def sface_on_haar(image):
        face = kiosk.finder.largest(image)
        return None if face is None else teacher.embed_crop(crop_face(image, face))

    found["YuNet + SFace (OpenCV Zoo)"] = teacher.embed_image
    found["SFace on the same Haar crops"] = sface_on_haar
    try:
        import face_recognition

        def dlib(image):
            rgb = np.ascontiguousarray(image[:, :, ::-1])
            encodings = face_recognition.face_encodings(rgb)
            return None if not encodings else (encodings[0] / np.linalg.norm(encodings[0])).astype(np.float32)

        found["dlib / face_recognition"] = dlib
    except ImportError:
        print("note: dlib / face_recognition not installed; skipped (pip install dlib-bin face-recognition-models; "
              "pip install --no-deps face-recognition)")
    return found


def detection_rates(data: Path) -> dict[str, tuple[float, float]]:
    """Share of LFW View 1 test images with a face found, plain Haar vs the full front end."""
    from kiosk.face import DetectorSettings, FaceFinder
    from kiosk.images import read_image
    from kiosk.training.datasets import read_pairs

    pairs = read_pairs(Path(data) / "lfw_pairsDevTest.txt", Path(data) / "lfw")
    paths = sorted({p for pair in pairs for p in (pair.first, pair.second)})
    plain = FaceFinder(DetectorSettings(rotations=(), use_clahe=False, use_quotient=False, use_border=False, use_turned=False))
    ours = FaceFinder()
    images = [read_image(p) for p in paths]
    rates = {}
    for condition, transform in {"normal": None, **HARD_LIGHT}.items():
        shown = [transform(i) if transform else i for i in images]
        rates[condition] = (float(np.mean([bool(plain.find(i)) for i in shown])), float(np.mean([bool(ours.find(i)) for i in shown])))
    return rates


def _percent(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.2f}%"


def evaluate_and_report(models: Path, data: Path, report: Path, peers: bool = True) -> dict:
    """Run every evaluation, write the report and plots, store metrics in ``encoder.json``."""
    from kiosk.training.model import layout_of

    models, data, report = Path(models), Path(data), Path(report)
    report.parent.mkdir(parents=True, exist_ok=True)
    threshold = json.loads((models / METADATA_FILE).read_text())["threshold"]["value"]
    runs = pipelines(models, peers)

    lfw: dict[str, Scores] = {name: lfw_view1(fn, data, f"LFW {name}") for name, fn in runs.items()}
    celeba: dict[str, Scores] = {name: all_pairs(fn, data / "celeba", f"CelebA {name}") for name, fn in runs.items()}
    kiosk_name, kiosk_fn = next(iter(runs.items()))
    compare = [kiosk_name] + [n for n in runs if n.startswith("YuNet")]
    light: dict[str, dict[str, Scores]] = {
        condition: {n: lfw_view1(runs[n], data, f"{condition} {n}", transform) for n in compare}
        for condition, transform in HARD_LIGHT.items()
    }

    detection = detection_rates(data)

    encoder = assemble.pipeline(assemble.default_config(models)).encoder
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (16, encoder.input_size, encoder.input_size, 3), dtype=np.uint8)
    speed = {}
    for threads in (1, 2):
        speed[threads] = time_encoder(assemble.pipeline(assemble.default_config(models), num_threads=threads).encoder, crops)
    architecture = json.loads((models / METADATA_FILE).read_text()).get("architecture", {})
    macs = count_macs(encoder.input_size, **layout_of(architecture))
    size_mb = (models / MODEL_FILE).stat().st_size / 1e6

    lfw_png, celeba_png = report.with_name("encoder-lfw-det.png"), report.with_name("encoder-celeba-det.png")
    plot_roc(lfw, "LFW View 1 test pairs (1,000)", lfw_png)
    plot_roc(celeba, "CelebA in the wild, 100 held-aside identities, all pairs", celeba_png)

    metrics = {
        "lfw_view1": lfw[kiosk_name].summary(threshold),
        "celeba_wild_all_pairs": celeba[kiosk_name].summary(threshold),
        "hard_light_lfw": {c: light[c][kiosk_name].summary(threshold) for c in light},
        "embedding_ms_ai_edge_litert": {f"{t}_thread{'s' if t > 1 else ''}": v for t, v in speed.items()},
        "model_mb": round(size_mb, 2),
        "macs": int(macs),
        "pi4_estimate_ms": round(macs / 15e9 * 1000, 1),
        "measured": datetime.date.today().isoformat(),
    }
    metadata = json.loads((models / METADATA_FILE).read_text())  # as it is now: other steps may have written it meanwhile
    metadata["metrics"] = metrics

    lines = [
        "# face-kiosk encoder: evaluation report",
        "",
        f"Measured {metrics['measured']} on {platform.machine()} ({platform.processor() or 'CPU'}), "
        f"Python {platform.python_version()}, by `kiosk-train evaluate --models {models} --data {data}"
        f"{'' if peers else ' --no-peers'}`.",
        "Every pipeline runs from the raw image with its own detector; a face not found is a failed comparison."
        + ("" if peers else " The peers (OpenCV YuNet + SFace, dlib) on the same data: "
           "[docs/benchmarks.md](../docs/benchmarks.md), made by `python -m bench`."),
        f"Shipped threshold: cosine > {threshold:.4f} (target FAR {metadata['threshold']['target_far']:g} per comparison, "
        "calibrated on held-aside identities).",
        "",
        "## LFW View 1 test (`lfw_pairsDevTest.txt`, 500 same + 500 different pairs, 10-fold)",
        "",
        "| pipeline | accuracy | TAR@FAR 1e-2 | TAR@FAR 1e-3 | EER | failure to acquire | TAR / FAR at shipped threshold |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, scores in lfw.items():
        s = scores.summary(threshold)
        shipped = f"{_percent(s['tar@shipped'])} / {_percent(s['far@shipped'])}" if name == kiosk_name else "-"
        lines.append(
            f"| {name} | {_percent(s['accuracy'])} ± {100 * s['accuracy_std']:.2f} | {_percent(s.get('tar@far=0.01'))} | "
            f"{_percent(s.get('tar@far=0.001'))} | {_percent(s['eer'])} | {_percent(s['fta'])} ({scores.misses}/{scores.images}) | {shipped} |"
        )
    lines += ["", "(With 500 impostor pairs, TAR at FAR 1e-3 and 1e-4 is not measurable on LFW View 1; see CelebA.)", "",
              f"![LFW DET]({lfw_png.name})", "",
              "## CelebA in the wild: 100 identities never used for training, all pairs", "",
              "| pipeline | TAR@FAR 1e-2 | TAR@FAR 1e-3 | TAR@FAR 1e-4 | EER | failure to acquire | TAR / FAR at shipped threshold |",
              "|---|---|---|---|---|---|---|"]
    for name, scores in celeba.items():
        s = scores.summary(threshold)
        shipped = f"{_percent(s['tar@shipped'])} / {_percent(s['far@shipped'])}" if name == kiosk_name else "-"
        lines.append(
            f"| {name} | {_percent(s.get('tar@far=0.01'))} | {_percent(s.get('tar@far=0.001'))} | {_percent(s.get('tar@far=0.0001'))} | "
            f"{_percent(s['eer'])} | {_percent(s['fta'])} ({scores.misses}/{scores.images}) | {shipped} |"
        )
    lines += ["", f"{celeba[kiosk_name].genuine.size} genuine and {celeba[kiosk_name].impostor.size} impostor pairs.", "",
              f"![CelebA DET]({celeba_png.name})", "",
              "## Hard light (LFW View 1 test images relit)", "",
              "`dusk`: gamma 1.8 and 45% exposure; `backlight`: face under-exposed, bright surround; "
              "`side light`: brightness falling from 130% to 25% across the image. Code: `kiosk/training/evaluate.py`.", "",
              "| condition | pipeline | accuracy | failure to acquire |", "|---|---|---|---|"]
    for condition, by_name in light.items():
        for name, scores in by_name.items():
            s = scores.summary()
            lines.append(f"| {condition} | {name} | {_percent(s['accuracy'])} | {_percent(s['fta'])} |")
    lines += ["", "### Detection rate of the front end on the same 1,000 LFW test images", "",
              "Plain Haar is one cascade pass on the equalised image; face-kiosk's default front end adds a CLAHE "
              "pass, a self-quotient-image pass, a pass with a border added (for faces that fill the photo), passes "
              "on the image turned by -20 and +20 degrees (`detector.rotations`) and the turned-head passes (OpenCV's "
              "alt2 and profile cascades, `detector.use_turned`), each tried only when the previous passes found "
              "nothing.", "",
              "| condition | plain Haar | face-kiosk front end |", "|---|---|---|"]
    for condition, (plain, ours) in detection.items():
        lines.append(f"| {condition} | {_percent(plain)} | {_percent(ours)} |")
    metrics["detection_rate_lfw"] = {c: {"plain_haar": p, "face_kiosk": o} for c, (p, o) in detection.items()}
    (models / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    lines += ["", "## Size and speed", "",
              f"- Model file: {size_mb:.2f} MB int8 TFLite; {macs / 1e6:.0f} M multiply-accumulates per embedding.",
              f"- One embedding with ai-edge-litert on this machine: median {speed[1]['median_ms']:.2f} ms (p90 {speed[1]['p90_ms']:.2f}) "
              f"on 1 thread, {speed[2]['median_ms']:.2f} ms (p90 {speed[2]['p90_ms']:.2f}) on 2 threads.",
              f"- Raspberry Pi 4 estimate: about {metrics['pi4_estimate_ms']:.0f} ms. {PI4_BASIS}", ""]
    report.write_text("\n".join(lines))
    print("\n".join(lines))
    return metrics
