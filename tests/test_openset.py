"""False accepts per door, not per comparison: the door threshold from the model's impostor curve."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest

from bench import openset as bench_openset
from kiosk.config import RecognitionConfig
from kiosk.encoder import ModelInfo, sha256_of
from kiosk.errors import ConfigError, ModelError
from kiosk.openset import Cohort, GalleryMapping, comparison_far, comparison_threshold, door_threshold, expected_far
from kiosk.training.calibrate import (
    FaceSet,
    build_cohort,
    door_critical_cosines,
    fit_gallery_mapping,
    impostor_curve,
    tail_check,
    tail_widening,
    wild_celeba_halves,
    write_cohort_section,
)
from tests.conftest import FACES, MODELS

# log10 F falls linearly from -1 at cosine 0.2 to -8.5 at 0.95: a curve whose inverse is known exactly.
SYNTHETIC_COSINES = np.linspace(0.2, 0.95, 16)
SYNTHETIC = ModelInfo(input_size=112, embedding_size=128, threshold=0.43, target_far=1e-3, sha256="0" * 64,
                      impostor_curve=tuple((float(c), float(10 ** (-1 - 10 * (c - 0.2)))) for c in SYNTHETIC_COSINES))


def synthetic_far(cosine: float) -> float:
    return 10 ** (-1 - 10 * (cosine - 0.2))


@pytest.mark.parametrize("target", [1e-2, 1e-3, 1e-4, 1e-6])
@pytest.mark.parametrize("people", [1, 5, 20, 50])
def test_the_automatic_threshold_meets_the_target_exactly_unless_the_model_floor_is_higher(target, people):
    door = door_threshold(SYNTHETIC, RecognitionConfig(false_accept_rate=target), people, 3 * people)
    per_comparison = 1 - (1 - synthetic_far(door.value)) ** (3 * people)
    assert door.value >= SYNTHETIC.threshold
    assert door.expected_far == pytest.approx(per_comparison, rel=1e-6)
    if door.value > SYNTHETIC.threshold:
        assert door.expected_far == pytest.approx(target, rel=1e-6)
        people_text = f"{people} {'person' if people == 1 else 'people'}"
        assert f"false_accept_rate {target:g} with {people_text} / {3 * people} templates" in door.source
    else:
        assert door.expected_far <= target and "floor" in door.source


def test_the_threshold_rises_with_people_and_templates_and_falls_with_the_allowed_rate():
    thresholds = [door_threshold(SYNTHETIC, RecognitionConfig(false_accept_rate=1e-4), n, 3 * n).value for n in (1, 2, 5, 20, 50, 200)]
    assert thresholds == sorted(thresholds) and len(set(thresholds)) == len(thresholds)
    by_templates = [door_threshold(SYNTHETIC, RecognitionConfig(false_accept_rate=1e-4), 5, m).value for m in (5, 10, 15, 50)]
    assert by_templates == sorted(by_templates) and len(set(by_templates)) == len(by_templates)
    by_rate = [door_threshold(SYNTHETIC, RecognitionConfig(false_accept_rate=r), 20, 60).value for r in (1e-2, 1e-3, 1e-4, 1e-5)]
    assert by_rate == sorted(by_rate) and len(set(by_rate)) == len(by_rate)


def test_expected_far_grows_with_the_gallery_and_falls_with_the_threshold():
    by_templates = [expected_far(SYNTHETIC, 0.6, n, 3 * n) for n in (0, 1, 5, 20, 50)]
    assert by_templates == sorted(by_templates) and by_templates[0] < by_templates[-1]
    by_threshold = [expected_far(SYNTHETIC, t, 20, 60) for t in (0.3, 0.5, 0.7, 0.9)]
    assert by_threshold == sorted(by_threshold, reverse=True)
    assert expected_far(SYNTHETIC, 0.5, 1, 1) == pytest.approx(synthetic_far(0.5), rel=1e-9)
    assert expected_far(SYNTHETIC, 0.1, 1, 1) == 1.0  # below the curve: no claim
    assert expected_far(SYNTHETIC, 0.99, 1, 1) == pytest.approx(synthetic_far(0.95))  # beyond it: the last point, an upper bound


def test_an_empty_gallery_gets_the_one_template_threshold():
    empty = door_threshold(SYNTHETIC, RecognitionConfig(false_accept_rate=1e-4), 0, 0)
    one = door_threshold(SYNTHETIC, RecognitionConfig(false_accept_rate=1e-4), 1, 1)
    assert empty.value == one.value and empty.expected_far == pytest.approx(1e-4)


def test_comparison_threshold_inverts_comparison_far():
    for rate in (1e-2, 1e-4, 1e-7):
        assert comparison_far(SYNTHETIC, comparison_threshold(SYNTHETIC, rate)) == pytest.approx(rate, rel=1e-9)
    with pytest.raises(ValueError, match="beyond the model's impostor curve"):
        comparison_threshold(SYNTHETIC, 1e-12)


def test_a_manual_threshold_below_the_automatic_one_is_refused_without_the_override():
    automatic = door_threshold(SYNTHETIC, RecognitionConfig(false_accept_rate=1e-4), 20, 60).value
    low = round(automatic - 0.05, 3)
    with pytest.raises(ConfigError, match="recognition.threshold") as refused:
        door_threshold(SYNTHETIC, RecognitionConfig(false_accept_rate=1e-4, threshold=low), 20, 60)
    assert "recognition.allow_threshold_below_model" in str(refused.value) and f"{automatic:.4f}" in str(refused.value)
    override = RecognitionConfig(false_accept_rate=1e-4, threshold=low, allow_threshold_below_model=True)
    allowed = door_threshold(SYNTHETIC, override, 20, 60)
    assert allowed.value == low and allowed.expected_far > 1e-4 and allowed.source == f"recognition.threshold {low:g} (manual)"
    stricter = door_threshold(SYNTHETIC, RecognitionConfig(false_accept_rate=1e-4, threshold=0.9), 20, 60)
    assert stricter.value == 0.9 and stricter.expected_far < 1e-4


def test_a_manual_threshold_below_the_model_per_comparison_threshold_is_always_refused():
    with pytest.raises(ConfigError, match="recognition.threshold 0.3 is below the model's per-comparison threshold"):
        door_threshold(SYNTHETIC, RecognitionConfig(threshold=0.3, allow_threshold_below_model=True), 1, 3)


def test_a_rate_beyond_the_curve_is_a_config_error_naming_the_key():
    short = replace(SYNTHETIC, impostor_curve=SYNTHETIC.impostor_curve[:6])
    with pytest.raises(ConfigError, match="recognition.false_accept_rate 1e-07 with 50 people / 150 templates needs"):
        door_threshold(short, RecognitionConfig(false_accept_rate=1e-7), 50, 150)


def test_a_model_without_a_curve_is_refused_with_the_command_that_makes_one():
    uncurved = replace(SYNTHETIC, impostor_curve=())
    with pytest.raises(ModelError, match="kiosk-train calibrate-openset"):
        door_threshold(uncurved, RecognitionConfig(), 1, 3)


def test_a_gallery_with_fewer_templates_than_people_is_a_programming_error():
    with pytest.raises(ValueError, match="at least one template per person"):
        door_threshold(SYNTHETIC, RecognitionConfig(), 3, 2)


def test_the_shipped_curve_loads_and_gives_sane_door_thresholds():
    info = ModelInfo.load(MODELS / "encoder.json")
    metadata = json.loads((MODELS / "encoder.json").read_text())
    assert metadata["tflite_sha256"] == sha256_of(MODELS / "encoder.tflite")
    assert len(info.impostor_curve) >= 50 and info.impostor_curve[-1][1] <= 1e-9
    # roughly what the per-comparison calibration found at its threshold
    assert info.target_far / 2 < comparison_far(info, info.threshold) < 3 * info.target_far
    for check in metadata["open_set"]["tail_check"]:
        assert check["pairs"] > 1e6 and check["observed"] <= 3 * check["predicted"]
    previous = info.threshold
    for people in (0, 1, 5, 20, 50):
        door = door_threshold(info, RecognitionConfig(), people, 3 * people)
        assert previous <= door.value < 1 and door.expected_far == pytest.approx(RecognitionConfig().false_accept_rate, rel=1e-3)
        previous = door.value


@pytest.fixture
def metadata_copy(tmp_path):
    shutil.copy(MODELS / "encoder.json", tmp_path / "encoder.json")
    return tmp_path / "encoder.json"


@pytest.mark.parametrize(
    ("field", "mangle"),
    [
        ("threshold.value", lambda m: m["threshold"].update(value=1.5)),
        ("threshold.value", lambda m: m["threshold"].update(value=0.0)),
        ("threshold.value", lambda m: m["threshold"].update(value=float("nan"))),
        ("threshold.value", lambda m: m["threshold"].update(value="0.5")),
        ("threshold.target_far", lambda m: m["threshold"].update(target_far=0)),
        ("embedding_size", lambda m: m.update(embedding_size=0)),
        ("input.size", lambda m: m["input"].update(size=112.5)),
        ("quality.min_strength", lambda m: m["quality"].update(min_strength=-1)),
        ("tflite_sha256", lambda m: m.update(tflite_sha256="")),
        ("open_set.curve", lambda m: m["open_set"].update(curve=[[0.5, 1e-3]])),
        ("open_set.curve", lambda m: m["open_set"].update(curve="steep")),
        ("open_set.curve", lambda m: m["open_set"]["curve"].reverse()),
        ("open_set.curve", lambda m: m["open_set"]["curve"][3].__setitem__(1, 0.5)),
        ("open_set.curve[0] cosine", lambda m: m["open_set"]["curve"][0].__setitem__(0, -1.0)),
        ("open_set.curve[2] rate", lambda m: m["open_set"]["curve"][2].__setitem__(1, 0)),
        ("open_set.curve[1] rate", lambda m: m["open_set"]["curve"][1].__setitem__(1, float("inf"))),
        ("threshold", lambda m: m.pop("threshold")),
    ],
)
def test_bad_metadata_is_refused_naming_the_field(metadata_copy, field, mangle):
    metadata = json.loads(metadata_copy.read_text())
    mangle(metadata)
    metadata_copy.write_text(json.dumps(metadata))
    with pytest.raises(ModelError, match=f"{metadata_copy}: .*{field.replace('[', '.').replace(']', '.')}"):
        ModelInfo.load(metadata_copy)


def test_metadata_without_a_curve_still_loads(metadata_copy):
    metadata = json.loads(metadata_copy.read_text())
    del metadata["open_set"]
    metadata_copy.write_text(json.dumps(metadata))
    assert ModelInfo.load(metadata_copy).impostor_curve == ()


def test_a_curve_fitted_on_impostor_scores_is_valid_metadata_and_predicts_held_out_pairs():
    rng = np.random.default_rng(0)
    people = np.repeat(np.arange(400), 4)
    centres = rng.normal(size=(400, 32))
    embeddings = centres[people] + rng.normal(scale=1.0, size=(1600, 32))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    faces = FaceSet([f"{p}.jpg" for p in range(1600)], np.array([f"person{p}" for p in people]), embeddings.astype(np.float32))
    scores = (embeddings @ embeddings.T)[np.triu_indices(1600, 1)][(people[:, None] != people[None, :])[np.triu_indices(1600, 1)]]
    curve = impostor_curve(scores)
    info = replace(SYNTHETIC, impostor_curve=tuple(map(tuple, curve)))
    assert [c for c, _ in curve] == sorted(c for c, _ in curve) and curve[0][1] == pytest.approx(0.1)
    assert comparison_far(info, float(np.quantile(scores, 0.99))) == pytest.approx(0.01, rel=0.05)
    for check in tail_check(faces, (1e-3, 1e-4)):
        assert check["pairs"] > 5e5 and 0.3 < check["observed"] / check["predicted"] < 3


def test_the_tail_is_widened_until_held_out_identities_are_predicted_safely():
    """A tail heavier than exponential (a few identities that resemble many): the fit under-predicts, the widening fixes it."""
    rng = np.random.default_rng(1)
    people = np.repeat(np.arange(500), 3)
    centres = rng.normal(size=(500, 24))
    centres[:40] = centres[:40] * 0.35 + rng.normal(size=24)  # 40 people near one point: the far tail is theirs
    embeddings = centres[people] + rng.normal(scale=0.9, size=(1500, 24))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    faces = FaceSet([f"{p}.jpg" for p in range(1500)], np.array([f"person{p}" for p in people]), embeddings.astype(np.float32))
    rates = (3e-5, 1e-5, 3e-6)
    plain = tail_check(faces, rates)
    widening = tail_widening(faces, rates)
    assert any(c["observed"] > c["predicted"] for c in plain if c["pairs_above"] >= 5) == (widening > 1)
    assert 1 <= widening < 2
    assert all(c["observed"] <= c["predicted"] for c in tail_check(faces, rates, widening) if c["pairs_above"] >= 5)


def test_the_wild_celeba_split_is_fixed_disjoint_and_even():
    names = [f"celeb{n:05d}" for n in range(7201, 7501, 3)]
    halves = wild_celeba_halves(names)
    assert halves == wild_celeba_halves(list(reversed(names)))
    assert not halves["calibrate"] & halves["evaluate"] and len(halves["calibrate"]) == len(halves["evaluate"]) == 50


def test_the_benchmark_runs_on_the_fixture_faces(capsys, tmp_path):
    doc = tmp_path / "security.md"
    doc.write_text(f"before\n{bench_openset.MARK_START}\nold\n{bench_openset.MARK_END}\nafter\n")
    assert bench_openset.main(["--faces", str(FACES), "--people", "1", "2", "--draws", "2", "--doc", str(doc)]) == 0
    printed = capsys.readouterr().out
    # 5 settings per gallery size: before, and union bound / empirical M_eff at both rates
    assert printed.count("| 1 |") == 5 and printed.count("| 2 |") == 5
    assert f"false_accept_rate {RecognitionConfig().false_accept_rate:g} (default), empirical M_eff" in printed
    assert "union bound" in printed
    assert "old" in doc.read_text()  # only the full run on the evaluation identities rewrites the document
    bench_openset.write_block("new table", doc)
    assert doc.read_text() == f"before\n{bench_openset.MARK_START}\nnew table\n{bench_openset.MARK_END}\nafter\n"


def test_the_stranger_bound_for_zero_accepts_is_the_clopper_pearson_one():
    assert bench_openset.upper_bound_95(1000) == pytest.approx(1 - 0.05 ** (1 / 1000))
    assert math.isclose(bench_openset.upper_bound_95(100_000), 3 / 100_000, rel_tol=0.01)


# --- Per-template thresholds from the cohort shipped with the model ---------------------------------


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def hubby_cohort(rank: int = 3, allowance: float = 0.1) -> tuple[Cohort, np.ndarray]:
    """2,000 background faces spread around a common direction ``centre``, as an encoder's are around its mean."""
    rng = np.random.default_rng(7)
    centre = unit(rng.normal(size=128))[0]
    faces = unit(0.25 * centre + rng.normal(size=(2000, 128)) / np.sqrt(128))
    return Cohort(faces, rank, reference=0.3, allowance=allowance, path=MODELS / "synthetic.npy"), centre


def test_a_template_with_many_look_alikes_gets_a_stricter_threshold_and_an_ordinary_one_keeps_the_door_threshold():
    cohort, centre = hubby_cohort()
    rng = np.random.default_rng(8)
    ordinary = unit(rng.normal(size=(5, 128)))  # far from every background face
    hub = unit(centre)  # close to the mean: scores high with many background faces
    for door in (0.4266, 0.6, 0.87):
        bars = cohort.template_thresholds(np.vstack([ordinary, hub]), door)
        assert bars.shape == (6,) and np.all(bars[:5] == door)  # exactly, not approximately
        assert np.arctanh(bars[5]) - np.arctanh(door) > 0.1 and bars[5] < 1
    # the bar rises with the door's and with how far the k-th closest face is above the reference
    kth = np.sort(cohort.faces @ hub[0])[-3]
    expected = np.tanh(np.arctanh(0.6) + np.arctanh(kth) - np.arctanh(0.3) - 0.1)
    assert cohort.template_thresholds(hub, 0.6)[0] == pytest.approx(expected, rel=1e-5)
    assert cohort.template_thresholds(hub, 0.5)[0] < cohort.template_thresholds(hub, 0.7)[0]
    looser = Cohort(cohort.faces, 3, reference=0.3, allowance=10.0, path=cohort.path)
    assert looser.template_thresholds(hub, 0.6)[0] == 0.6  # an allowance beyond its excess: no change
    assert cohort.template_thresholds(np.zeros((0, 128)), 0.6).shape == (0,)
    with pytest.raises(ValueError, match=r"\(n, 128\)"):
        cohort.template_thresholds(np.zeros((2, 64)), 0.6)


def test_the_shipped_cohort_loads_verified_and_is_compact():
    cohort = Cohort.load(MODELS)
    metadata = json.loads((MODELS / "encoder.json").read_text())
    section = metadata["cohort"]
    assert cohort.path == MODELS / section["file"] and sha256_of(cohort.path) == section["sha256"]
    assert section["encoder_sha256"] == metadata["tflite_sha256"] == sha256_of(MODELS / "encoder.tflite")
    assert cohort.faces.shape == tuple(section["shape"]) and cohort.faces.shape[1] == metadata["embedding_size"]
    assert cohort.faces.shape[0] >= 1000 and cohort.path.stat().st_size <= 1_100_000
    assert np.allclose(np.linalg.norm(cohort.faces, axis=1), 1, atol=1e-5)
    assert cohort.rank == section["rank"] and 0 < cohort.allowance and section["noise_sd"] < cohort.allowance / 2
    assert 0 < section["calibration_faces_raised"] < 0.1  # a few templates, not the door's threshold for everyone
    # the encoder's mean direction is the archetypal hub; a random direction resembles nobody
    hub = unit(cohort.faces.mean(axis=0))
    ordinary = unit(np.random.default_rng(0).normal(size=(3, 128)))
    bars = cohort.template_thresholds(np.vstack([hub, ordinary]), 0.7651)
    assert bars[0] > 0.7651 + 0.01 and np.all(bars[1:] == 0.7651)


@pytest.fixture
def model_copy(tmp_path):
    """encoder.json and the cohort file in a scratch model folder (the .tflite is not needed to load the cohort)."""
    folder = tmp_path / "models"
    folder.mkdir()
    section = json.loads((MODELS / "encoder.json").read_text())["cohort"]
    for name in ("encoder.json", section["file"]):
        shutil.copy(MODELS / name, folder / name)
    return folder


def edit_section(folder, change) -> None:
    metadata = json.loads((folder / "encoder.json").read_text())
    change(metadata)
    (folder / "encoder.json").write_text(json.dumps(metadata))


def test_a_missing_cohort_file_is_a_model_error_naming_it(model_copy):
    (model_copy / "cohort.npy").unlink()
    with pytest.raises(ModelError, match=f"cohort {model_copy / 'cohort.npy'} is missing; run kiosk-train cohort"):
        Cohort.load(model_copy)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_cohort_file_is_a_model_error_naming_it(model_copy, damage):
    path = model_copy / "cohort.npy"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "truncate":
        data = data[: len(data) // 3]
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=f"cohort {path} is damaged or was replaced"):
        Cohort.load(model_copy)


def test_a_replaced_cohort_whose_hash_was_updated_is_still_checked_for_shape_and_values(model_copy):
    path = model_copy / "cohort.npy"
    np.save(path, np.ones((10, 128), np.float16))
    edit_section(model_copy, lambda m: m["cohort"].update(sha256=sha256_of(path)))
    with pytest.raises(ModelError, match=f"cohort {path} holds float16 \\(10, 128\\)"):
        Cohort.load(model_copy)
    np.save(path, np.ones(tuple(json.loads((model_copy / "encoder.json").read_text())["cohort"]["shape"]), np.float16))
    edit_section(model_copy, lambda m: m["cohort"].update(sha256=sha256_of(path)))
    with pytest.raises(ModelError, match=f"cohort {path} holds rows that are not unit vectors"):
        Cohort.load(model_copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("cohort"), "has no cohort section"),
        (lambda m: m["cohort"].pop("sha256"), "cohort section is incomplete"),
        (lambda m: m["cohort"].update(file="../encoder.json"), "cohort.file must be a plain file name"),
        (lambda m: m["cohort"].update(shape=[3434, 64]), "cohort section out of range"),
        (lambda m: m["cohort"].update(rank=0), "cohort section out of range"),
        (lambda m: m["cohort"].update(reference_cosine=1.5), "cohort section out of range"),
        (lambda m: m["cohort"].update(encoder_sha256="0" * 64), "was embedded with another encoder"),
    ],
)
def test_a_bad_cohort_section_is_a_model_error(model_copy, change, message):
    edit_section(model_copy, change)
    with pytest.raises(ModelError, match=message) as refused:
        Cohort.load(model_copy)
    assert "kiosk-train cohort" in str(refused.value) or "plain file name" in str(refused.value)


def test_build_cohort_writes_a_cohort_the_door_accepts(model_copy):
    rng = np.random.default_rng(3)
    people = np.repeat(np.arange(300), 4)
    embeddings = unit(rng.normal(size=(300, 128))[people] + rng.normal(size=(1200, 128)))
    embeddings[::50] = np.nan  # no usable face: left out
    faces = FaceSet([f"{n}.jpg" for n in range(1200)], np.array([f"person{p}" for p in people]), embeddings)
    info = ModelInfo.load(model_copy / "encoder.json")
    section = build_cohort(faces, info, model_copy)
    cohort = write_cohort_section(model_copy, section)
    assert cohort.faces.shape == (1200 - 24, 128) and section["shape"] == [1176, 128] and section["identities"] == 300
    assert section["reference_cosine"] == pytest.approx(comparison_threshold(info, 2.5 / 1176), abs=1e-6)
    assert np.allclose(cohort.faces, embeddings[np.isfinite(embeddings[:, 0])], atol=2e-3)
    assert Cohort.load(model_copy).faces.shape == cohort.faces.shape


def test_the_bench_applies_each_template_its_own_threshold():
    # person a: templates 0-2; a stranger (row 3) scores 0.9 with template 0 and 0.5 with the others
    rng = np.random.default_rng(5)
    base = unit(rng.normal(size=(4, 128)))
    embeddings = np.zeros((5, 128), np.float32)
    embeddings[0] = base[0]
    embeddings[1] = embeddings[2] = base[1]
    embeddings[3] = unit(0.9 * base[0] + np.sqrt(1 - 0.81) * base[2])[0]
    embeddings[4] = base[1]  # a genuine photo matching templates 1-2 exactly
    faces = FaceSet([str(n) for n in range(5)], np.array(["a", "a", "a", "s", "a"]), embeddings)
    gallery = {"a": np.array([0, 1, 2])}
    let_in, _ = bench_openset.door_decisions(faces, gallery, np.array([0.7, 0.7, 0.7]), 0.05)
    assert let_in[3] == 0  # the stranger clears template 0's shared threshold
    let_in, shows = bench_openset.door_decisions(faces, gallery, np.array([0.95, 0.7, 0.7]), 0.05)
    assert let_in[3] == -1 and let_in[4] == 0 and list(shows) == [0, 0, 0, -1, 0]
    # the enrolment-time alternative: a person whose every photo is refused keeps no template
    refused = bench_openset.refuse(faces, {"a": np.array([0, 1, 2]), "s": np.array([3])},
                                   np.array([False, False, False, True, False]), np.random.default_rng(0), 0.4)
    assert list(refused["a"]) == [0, 1, 2] and len(refused["s"]) == 0
    let_in, shows = bench_openset.door_decisions(faces, refused, np.array([0.7, 0.7, 0.7]), 0.05)
    assert list(shows) == [0, 0, 0, 1, 0] and let_in[3] == 0  # with no template, s is a stranger to the door


def test_the_door_camera_rows_enrol_in_one_session_and_try_the_other(tmp_path):
    rng = np.random.default_rng(6)
    subjects = unit(rng.normal(size=(3, 128)))
    paths, names, rows = [], [], []
    for s, subject in enumerate(("0001", "0002", "0003")):
        for session in ("01", "02") if s < 2 else ("01",):
            for frame in range(6):
                paths.append(f"{subject}/{subject}_00_00_{session}_{frame}.jpg")
                names.append(subject)
                rows.append(unit(subjects[s] + 0.1 * rng.normal(size=128) / np.sqrt(128))[0])
    faces = FaceSet(paths, np.array(names), np.array(rows))
    sessions = bench_openset.camera_sessions(faces)
    assert sorted(sessions) == ["0001", "0002", "0003"] and sorted(sessions["0001"]) == ["01", "02"]
    cohort, _ = hubby_cohort()
    info = ModelInfo.load(MODELS / "encoder.json")
    results = bench_openset.door_camera(faces, info, cohort, sizes=(1,), draws=2)
    assert len(results) == 5 and {row.people for row in results} == {1}  # before, union / empirical at 2 rates
    for row in results:
        assert sorted(row.per_subject) == ["0001", "0002"]  # one session only: never enrolled
        assert row.genuine_attempts == 2 * 2 * 2 * 6 and row.genuine_accepted == row.genuine_attempts
        assert row.strangers_accepted == 0 and row.stranger_attempts == 2 * 2 * 2 * 18  # 8 enrolments, the 18 frames of the others
    assert "| 1 |" in bench_openset.camera_table(results, faces)


# --- The empirical gallery mapping: M_eff(people, templates per person, F) ------------------------------

FITTED_GALLERY = {"a": 2.0, "b": 0.6, "c": 0.4, "d": 0.5}
FITTED = replace(SYNTHETIC, extra={"open_set": {"gallery": FITTED_GALLERY}})


def fitted_m(people: int, templates: int, far: float) -> float:
    g = FITTED_GALLERY
    return min(templates, max(1.0, g["a"] * people ** g["b"] * (templates / people) ** g["c"] * (far / 1e-3) ** g["d"]))


@pytest.mark.parametrize("target", [1e-2, 1e-3, 1e-4, 1e-6])
@pytest.mark.parametrize("people", [1, 5, 20, 50])
def test_the_fitted_mapping_meets_a_synthetic_target_and_is_never_stricter_than_the_union_bound(target, people):
    config = RecognitionConfig(false_accept_rate=target)
    door = door_threshold(FITTED, config, people, 3 * people)
    far = synthetic_far(door.value)
    assert door.expected_far == pytest.approx(1 - (1 - far) ** fitted_m(people, 3 * people, far), rel=1e-6)
    assert door.expected_far <= target * (1 + 1e-6)
    if door.value > FITTED.threshold:
        assert door.expected_far == pytest.approx(target, rel=1e-6)
    union = door_threshold(FITTED, config, people, 3 * people, union_bound=True)
    assert union.value == door_threshold(SYNTHETIC, config, people, 3 * people).value  # no section: the union bound
    assert door.value <= union.value + 1e-12


def test_the_fitted_threshold_rises_with_people_and_at_most_weakly_with_templates_per_person():
    config = RecognitionConfig(false_accept_rate=1e-4)
    by_people = [door_threshold(FITTED, config, n, 3 * n).value for n in (1, 2, 5, 20, 50, 200)]
    assert by_people == sorted(by_people) and len(set(by_people)) == len(by_people)
    by_templates = [door_threshold(FITTED, config, 5, m).value for m in (5, 10, 15, 25, 50)]
    assert by_templates == sorted(by_templates)
    # a sixth photo of each of 5 people moves the door less than a sixth person does
    assert by_templates[-1] - by_templates[0] < door_threshold(FITTED, config, 50, 50).value - by_templates[0]
    flat = replace(SYNTHETIC, extra={"open_set": {"gallery": {**FITTED_GALLERY, "c": 0.0}}})
    assert len({door_threshold(flat, config, 5, m).value for m in (5, 15, 50)}) == 1  # c = 0: photos cost nothing
    by_threshold = [expected_far(FITTED, t, 20, 60) for t in (0.3, 0.5, 0.7, 0.9)]
    assert by_threshold == sorted(by_threshold, reverse=True)


def test_the_shipped_model_carries_a_fitted_mapping_capped_by_the_union_bound():
    """The fitted M_eff is used, and never counts more comparisons than there are templates (min(templates, fit)):
    a person's photos count at most as independent ones (c <= 1; the shipped fit for SFace has c = 1)."""
    info = ModelInfo.load(MODELS / "encoder.json")
    mapping = GalleryMapping.load(info)
    assert mapping.source == "open_set.gallery" and 0 < mapping.c <= 1
    for people in (1, 5, 20, 50):
        for rate in (1e-3, 1e-4):
            config = RecognitionConfig(false_accept_rate=rate)
            fitted = door_threshold(info, config, people, 3 * people)
            assert fitted.value <= door_threshold(info, config, people, 3 * people, union_bound=True).value
            assert fitted.expected_far == pytest.approx(rate, rel=1e-3)


@pytest.mark.parametrize(("field", "value"), [("a", 0.0), ("a", 1e3), ("b", 0.0), ("b", 3.0), ("c", -0.1), ("c", 1.5),
                                              ("d", -0.5), ("d", 2.0), ("a", "2"), ("b", float("nan")), ("c", None),
                                              ("d", True)])
def test_a_gallery_mapping_out_of_range_is_a_model_error_naming_the_field(metadata_copy, field, value):
    metadata = json.loads(metadata_copy.read_text())
    metadata["open_set"]["gallery"][field] = value
    metadata_copy.write_text(json.dumps(metadata))
    info = ModelInfo.load(metadata_copy)
    with pytest.raises(ModelError, match=rf"open_set\.gallery\.{field}\b"):
        door_threshold(info, RecognitionConfig(), 5, 15)


def test_without_a_gallery_mapping_the_door_falls_back_to_the_union_bound(metadata_copy):
    metadata = json.loads(metadata_copy.read_text())
    del metadata["open_set"]["gallery"]
    metadata_copy.write_text(json.dumps(metadata))
    info = ModelInfo.load(metadata_copy)
    assert GalleryMapping.load(info).source == "union bound"
    far = comparison_far(info, 0.6)
    assert expected_far(info, 0.6, 5, 15) == pytest.approx(1 - (1 - far) ** 15, rel=1e-9)


def test_the_fit_recovers_a_known_mapping_and_bounds_every_point():
    # exact counts from M = 1.5 * N^0.7 * T^0.3 * (F / 1e-3)^0.6 on the synthetic curve
    measured = []
    grid = np.round(np.arange(0.40, 0.75, 0.005), 4)
    for n in (1, 5, 20, 50):
        for t in (1, 3, 5):
            attempts = 10 ** 7
            accepted = []
            for threshold in grid:
                far = synthetic_far(threshold)
                m = 1.5 * n ** 0.7 * t ** 0.3 * (far / 1e-3) ** 0.6
                accepted.append(int(round(attempts * -math.expm1(m * math.log1p(-far)))))
            measured.append({"people": n, "templates": t, "galleries": 1, "attempts": attempts,
                             "thresholds": [float(g) for g in grid], "accepted": accepted})
    fit = fit_gallery_mapping(SYNTHETIC, measured, safety=2.0, fit_rate=True)
    assert fit["b"] == pytest.approx(0.7, abs=0.02) and fit["c"] == pytest.approx(0.3, abs=0.02)
    assert fit["d"] == pytest.approx(0.6, abs=0.02) and fit["envelope_a"] == pytest.approx(1.5, rel=0.2)
    assert fit["a"] == pytest.approx(2 * fit["envelope_a"], rel=1e-3)
    GalleryMapping.load(replace(SYNTHETIC, extra={"open_set": {"gallery": fit}}))  # within the door's ranges
    # d = 0 (the shipped choice): one M_eff per gallery that bounds every point it was fitted on
    flat = fit_gallery_mapping(SYNTHETIC, measured, safety=1.0)
    assert flat["d"] == 0 and 0 < flat["c"] <= 1 and flat["b"] > 0
    mapping = GalleryMapping.load(replace(SYNTHETIC, extra={"open_set": {"gallery": flat}}))
    for entry in measured:
        n, t = entry["people"], entry["templates"]
        for threshold, accepted in zip(entry["thresholds"], entry["accepted"]):
            rate = accepted / entry["attempts"]
            if 3 <= accepted and rate <= 2e-3:
                bound = -math.expm1(mapping.comparisons(n, n * t, 0.0) * math.log1p(-synthetic_far(threshold)))
                assert bound >= rate * (1 - 1e-3) or mapping.comparisons(n, n * t, 0.0) == n * t


def test_the_simulated_door_lets_an_attempt_in_below_its_best_persons_corrected_score():
    base = np.eye(128, dtype=np.float32)[:4]  # orthonormal
    embeddings = np.vstack([base[0], base[1], base[2],
                            unit(0.8 * base[0] + 0.6 * base[3]),  # close to person 0 only
                            unit(0.6 * base[1] + 0.6 * base[2] + 0.5 * base[3])])  # a tie between 1 and 2
    enrolled = [np.array([0]), np.array([1]), np.array([2])]
    critical = door_critical_cosines(embeddings, enrolled, np.array([0.0, 0.0, 0.0]), np.array([3, 4]), 0.05)
    assert critical[0] == pytest.approx(0.8, abs=1e-5) and critical[1] == -1.0  # no lead: never let in
    raised = door_critical_cosines(embeddings, enrolled, np.array([0.2, 0.0, 0.0]), np.array([3]), 0.05)
    assert raised[0] == pytest.approx(np.tanh(np.arctanh(0.8) - 0.2), abs=1e-5)


def _row(people: int, target: float, accepted: int) -> bench_openset.Row:
    return bench_openset.Row(people, f"false_accept_rate {target:g}", target, 0.5, target, accepted, 100_000, 90, 100, 0, 0.9,
                             mapping="empirical")


def _camera(people: int, target: float, share: float) -> bench_openset.CameraRow:
    return bench_openset.CameraRow(people, f"false_accept_rate {target:g}, empirical M_eff", 0.5, int(1000 * share), 1000,
                                   {"0001": share}, 0, 1000, 0.0)


def test_the_recommended_default_follows_what_residents_pay_at_the_door_camera():
    rows = [_row(n, target, 0) for n in (1, 20) for target in (1e-3, 1e-4)]
    cheap = [_camera(n, 1e-3, 1.0) for n in (1, 20)] + [_camera(1, 1e-4, 1.0), _camera(20, 1e-4, 0.97)]
    assert "costs residents at most 3.0 points" in bench_openset.supported_default(rows, cheap)
    assert "the numbers support 0.0001" in bench_openset.supported_default(rows, cheap)
    dear = cheap[:3] + [_camera(20, 1e-4, 0.40)]
    assert "the numbers support 0.001 for a household" in bench_openset.supported_default(rows, dear)
    broken = [_row(n, 1e-4, 50) for n in (1, 20)] + [_row(n, 1e-3, 0) for n in (1, 20)]
    assert "Only 0.001 held its target" in bench_openset.supported_default(broken, cheap)
