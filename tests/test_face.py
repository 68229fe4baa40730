"""The shared preprocessing: Haar detection, fallbacks, crop geometry, image reading."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from kiosk.errors import ImageError
from kiosk.face import ENCODER_SIZE, DetectorSettings, FaceFinder, crop_face
from kiosk.images import read_image
from kiosk.pipeline import FacePipeline
from tests.conftest import FACES, FIXTURES, png_header_only

PHOTO = FACES / "Colin_Powell" / "Colin_Powell_0001.jpg"


def test_finds_the_face_in_a_portrait():
    image = read_image(PHOTO)
    face = FaceFinder().largest(image)
    assert face is not None
    # LFW deep-funneled photos are centred on the face.
    assert abs(face.center[0] - 125) < 20 and abs(face.center[1] - 125) < 25
    assert 60 < face.w < 160
    assert face.angle == 0 and face.pass_name == "haar"


def test_no_face_in_a_blank_image():
    assert FaceFinder().find(np.full((240, 320, 3), 128, np.uint8)) == []


def test_rotated_face_is_found_by_a_rotated_pass_and_cropped_upright():
    image = read_image(PHOTO)
    upright = crop_face(image, FaceFinder().largest(image))
    tilted = cv2.warpAffine(image, cv2.getRotationMatrix2D((125, 125), -35, 1.0), (250, 250), borderMode=cv2.BORDER_REPLICATE)
    plain = FaceFinder(DetectorSettings(rotations=(), use_turned=False)).largest(tilted)
    face = FaceFinder(DetectorSettings(rotations=(-35.0, 35.0))).largest(tilted)
    assert plain is None, "the plain cascade should miss a face tilted by 35 degrees"
    assert face is not None and face.angle == 35.0

    def likeness(crop):
        gray = [cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) for c in (crop, upright)]
        return cv2.matchTemplate(gray[0], gray[1], cv2.TM_CCOEFF_NORMED).max()

    # The crop of the tilted photo is turned upright: it looks like the original's crop,
    # far more than the same box cut without the rotation.
    unrotated = dataclasses.replace(face, angle=0.0)
    assert likeness(crop_face(tilted, face)) > 0.5
    assert likeness(crop_face(tilted, face)) > likeness(crop_face(tilted, unrotated)) + 0.2


def test_large_frames_are_downscaled_for_detection_but_boxes_are_in_frame_pixels():
    image = read_image(PHOTO)
    big = cv2.resize(image, (1000, 1000))
    face = FaceFinder(DetectorSettings(work_width=320)).largest(big)
    assert face is not None
    assert abs(face.center[0] - 500) < 80 and face.w > 240


def test_crop_is_encoder_sized_rgb():
    image = read_image(PHOTO)
    crop = crop_face(image, FaceFinder().largest(image))
    assert crop.shape == (ENCODER_SIZE, ENCODER_SIZE, 3) and crop.dtype == np.uint8


def test_dark_photo_found_through_clahe_pass():
    image = (read_image(PHOTO) * 0.12).astype(np.uint8)
    face = FaceFinder().largest(image)
    assert face is not None


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty"), (b"not an image at all", "cannot decode"), (PHOTO.read_bytes()[:300], "cannot decode")],
)
def test_bad_files_raise_image_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match="bad.jpg"):
        read_image(path)


def test_missing_file_raises_image_error(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        read_image(tmp_path / "nope.jpg")


def test_grayscale_16bit_and_alpha_images_become_8bit_bgr(tmp_path):
    gray = cv2.cvtColor(read_image(PHOTO), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    cv2.imwrite(str(tmp_path / "deep.png"), gray.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "alpha.png"), cv2.cvtColor(read_image(PHOTO), cv2.COLOR_BGR2BGRA))
    for name in ("gray.png", "deep.png", "alpha.png"):
        image = read_image(tmp_path / name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert FaceFinder().largest(image) is not None


def test_tracker_follows_a_moving_face_and_rescans_when_it_is_lost():
    from kiosk.face import FaceTracker

    image = read_image(PHOTO)
    frame = np.full((480, 640, 3), 120, np.uint8)
    tracker = FaceTracker(FaceFinder(), full_every=5)
    passes, centers = [], []
    for step in range(8):
        moved = frame.copy()
        moved[100:350, 150 + 10 * step:400 + 10 * step] = image
        faces = tracker.find(moved)
        assert faces, f"lost the face at step {step}"
        passes.append(faces[0].pass_name)
        centers.append(faces[0].center[0])
    assert passes[0] == "haar" and passes[1:6] == ["haar-track"] * 5 and passes[6] == "haar"
    assert all(b > a for a, b in zip(centers, centers[1:])), "the box follows the face"
    assert tracker.find(frame) == []  # face gone: the full scan finds nothing


def _two_faces() -> np.ndarray:
    """A frame with one face photo large (face about 170 px wide) and the same photo small (about 100 px)."""
    image = read_image(FACES / "George_W_Bush" / "George_W_Bush_0001.jpg")
    frame = np.full((480, 640, 3), 120, np.uint8)
    frame[40:415, 20:395] = cv2.resize(image, (375, 375))
    frame[20:210, 430:620] = cv2.resize(image, (190, 190))
    return frame


def test_find_larger_gives_the_first_pass_boxes_of_faces_that_large_only():
    finder = FaceFinder()
    frame = _two_faces()
    faces = finder.find(frame)
    assert [f.pass_name for f in faces] == ["haar", "haar"] and faces[1].w < 0.7 * faces[0].w
    assert finder.find_larger(frame, 0.7 * faces[0].w) == faces[:1], "the large face's box, the small one left out"
    assert finder.find_larger(frame, 0.3 * faces[0].w) == faces


def test_while_the_door_uses_a_face_the_periodic_scan_looks_only_for_faces_that_could_replace_it(monkeypatch):
    from kiosk.face import FaceTracker

    frame = _two_faces()
    tracker = FaceTracker(FaceFinder(), full_every=2)
    full_scans = []
    whole = tracker.finder.find
    monkeypatch.setattr(tracker.finder, "find", lambda image, extra=None: full_scans.append(1) or whole(image, extra))
    seen = []
    for _ in range(4):  # a full scan, two window searches, the periodic scan: the door uses the large face each time
        faces = tracker.find(frame)
        seen.append([(f.pass_name, round(f.w)) for f in faces])
        tracker.follow(faces[0])
    large, small = seen[0][0][1], seen[0][1][1]
    assert [len(s) for s in seen] == [2, 1, 1, 1] and len(full_scans) == 1
    assert seen[3] == [("haar", large)], "the periodic scan finds the large face's box, not the smaller face"
    for _ in range(3):  # two window searches, then the periodic scan of a face the door did not use: the whole scan
        faces = tracker.find(frame)
    assert [(f.pass_name, round(f.w)) for f in faces] == [("haar", large), ("haar", small)] and len(full_scans) == 2


def test_the_window_scan_split_between_two_threads_finds_the_same_boxes_as_one_scan(monkeypatch):
    """The door's window search with OpenCV on 2 threads (scales split with a helper thread) against one
    ``detectMultiScale`` call, on the demo's camera frames with the face shifted around its last box."""
    from kiosk.demo import demo_data
    from kiosk.face import FaceTracker, balanced_split, cascade_window_sizes

    assert cascade_window_sizes((24, 24), 1.15, 51, 79, (123, 128)) == [(56, 56), (64, 64), (73, 73)]
    assert cascade_window_sizes((24, 24), 1.1, 20, 200, (30, 40)) == [(24, 24), (26, 26), (29, 29)]  # the image bounds it
    sizes = [(56, 56), (64, 64), (73, 73)]
    assert 1 <= balanced_split((123, 128), sizes, 24) < len(sizes)
    finder = FaceFinder()
    tracker = FaceTracker(finder)
    frames = sorted((demo_data() / "frames").glob("*.jpg"))[::4]
    compared = 0
    for path in frames:
        frame = read_image(path)
        faces = finder.find(frame)
        if not faces:
            continue
        for dx in (-0.2, 0.0, 0.15):
            last = dataclasses.replace(faces[0], center=(faces[0].center[0] + dx * faces[0].w, faces[0].center[1]))
            results = []
            for threads in (1, 2):
                monkeypatch.setattr(cv2, "getNumThreads", lambda threads=threads: threads)
                results.append(sorted((f.x, f.y, f.w, f.h) for f in tracker._near(frame, last)))
            one, split = results
            assert one == split, f"{path.name} shifted {dx}: {one} != {split}"
            compared += bool(one)
    assert compared >= 10, "the face is found in most of the compared windows"
    assert tracker._helper is not None, "the split scan ran"


def test_a_box_enclosing_a_smaller_face_is_dropped():
    from kiosk.face import Face, drop_enclosing

    real = Face(274, 158, 148, 148, 0.0, (348.0, 232.0), "haar")
    around = Face(220, 16, 276, 276, 0.0, (358.0, 154.0), "haar")
    other_person = Face(20, 20, 100, 100, 0.0, (70.0, 70.0), "haar")
    assert drop_enclosing([around, real, other_person]) == [real, other_person]


def test_cmyk_jpeg_is_read_as_bgr(tmp_path):
    from PIL import Image

    rgb = cv2.cvtColor(read_image(PHOTO), cv2.COLOR_BGR2RGB)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    image = read_image(tmp_path / "cmyk.jpg")
    assert image.shape == (250, 250, 3) and image.dtype == np.uint8
    assert FaceFinder().largest(image) is not None


@pytest.mark.parametrize("width, height", [(9000, 8000), (100_000, 100_000)])
def test_enormous_images_are_refused_before_decoding(tmp_path, width, height):
    path = tmp_path / "huge.png"
    png_header_only(path, width, height)
    assert path.stat().st_size < 200
    with pytest.raises(ImageError, match="huge.png is too large to read safely"):
        read_image(path)


def test_a_large_but_reasonable_photo_is_read(tmp_path):
    big = cv2.resize(read_image(PHOTO), (4000, 3000))  # 12 MP, like a phone photo
    cv2.imwrite(str(tmp_path / "phone.jpg"), big)
    assert read_image(tmp_path / "phone.jpg").shape == (3000, 4000, 3)


def test_backlit_face_is_found_by_the_self_quotient_pass_at_the_right_place():
    from kiosk.training.evaluate import backlight

    photo = FACES / "Colin_Powell" / "Colin_Powell_0004.jpg"
    lit = FaceFinder().largest(read_image(photo))
    backlit = backlight(read_image(photo))
    assert FaceFinder(DetectorSettings(use_quotient=False, use_turned=False)).find(backlit) == []
    face = FaceFinder().largest(backlit)
    assert face is not None and face.pass_name == "haar+quotient"
    assert abs(face.center[0] - lit.center[0]) < 0.2 * lit.w and abs(face.center[1] - lit.center[1]) < 0.2 * lit.w
    assert 0.7 < face.w / lit.w < 1.4


def test_a_face_that_fills_the_photo_is_found_by_the_border_pass_where_it_is():
    """ID photos and avatars: cropped to the face, Haar alone misses most of them."""
    from kiosk.images import image_files

    plain = FaceFinder(DetectorSettings(use_border=False, use_turned=False))
    missed_before = missed_after = 0
    for path in image_files(FACES):
        image = read_image(path)
        face = plain.largest(image)
        if face is None:
            continue
        (cx, cy), side = face.center, 0.8 * face.w
        tight = cv2.resize(image[int(cy - side / 2):int(cy + side / 2), int(cx - side / 2):int(cx + side / 2)], (200, 200))
        missed_before += not plain.find(tight)
        found = FaceFinder().largest(tight)
        missed_after += found is None
        if found is not None and found.pass_name == "haar+border":
            # The box lies on the face: centred in the photo and about as large as it (it may reach past the edges).
            assert abs(found.center[0] - 100) < 25 and abs(found.center[1] - 100) < 30
            assert 120 < found.w < 300
    assert missed_before >= 5 and missed_after == 0


def test_a_head_turned_aside_is_found_by_a_turned_pass_where_it_is():
    photo = read_image(FIXTURES / "turned" / "Frank_Cassell_0001.jpg")
    assert FaceFinder(DetectorSettings(use_turned=False)).find(photo) == []
    finder = FaceFinder()
    assert finder.find(photo, extra=finder.extra_pass_names().index("haar@-20")) == [], "a door frame runs one extra pass"
    face = FaceFinder().largest(photo)
    assert face is not None and face.pass_name.startswith(("alt2", "profile"))
    yunet_center = (152.4, 140.8)  # YuNet's box for this photo, measured once (OpenCV Zoo 2023mar)
    assert np.hypot(face.center[0] - yunet_center[0], face.center[1] - yunet_center[1]) < 0.2 * face.w
    assert 100 < face.w < 200


def test_later_passes_look_on_when_a_pass_finds_only_boxes_that_are_no_face():
    from kiosk.face import Face

    finder = FaceFinder()
    photo = read_image(FIXTURES / "turned" / "Frank_Cassell_0001.jpg")
    decoy = [Face(0, 0, 60, 60, 0.0, (30.0, 30.0), "haar")]
    original = finder.passes
    finder.passes = lambda image, extra=None: iter([decoy, *original(image, extra)])
    pipeline = FacePipeline(detector=finder.settings)
    pipeline.finder = finder
    found = pipeline.embed_largest(photo)
    assert not pipeline.embed_face(photo, decoy[0]).usable
    assert found is not None and found.usable and found.face.pass_name.startswith(("alt2", "profile"))


def test_the_border_pass_finds_no_face_in_an_empty_scene():
    from kiosk.demo import demo_data

    empty = read_image(demo_data() / "frames" / "empty_00.jpg")
    assert FaceFinder().find(empty) == []
    assert FaceFinder().find(cv2.resize(empty, (200, 200))) == []


def test_points_of_a_crop_map_back_to_the_image_and_align_onto_the_template():
    from kiosk.face import ALIGNED_TEMPLATE, aligned_crop, crop_points_to_image, crop_transform

    image = read_image(PHOTO)
    face = FaceFinder().largest(image)
    in_crop = ALIGNED_TEMPLATE / ENCODER_SIZE  # points where an aligned face has them, as crop fractions
    in_image = crop_points_to_image(face, in_crop, 64)
    matrix = crop_transform(face, size=64)
    assert np.allclose((matrix[:, :2] @ in_image.T).T + matrix[:, 2], in_crop * 64, atol=1e-6)
    # Dots drawn at the five image points land on the template's pixels after alignment.
    marked = image.copy()
    for x, y in in_image:
        cv2.circle(marked, (int(round(x)), int(round(y))), 2, (0, 0, 255), -1)
    aligned = aligned_crop(marked, in_image)
    assert aligned.shape == (ENCODER_SIZE, ENCODER_SIZE, 3)
    for x, y in ALIGNED_TEMPLATE:
        assert aligned[int(round(y)), int(round(x)), 0] > 200  # red, now in RGB order


def test_a_context_aligned_crop_holds_the_aligned_crop_at_its_centre():
    from kiosk.face import ALIGNED_TEMPLATE, aligned_crop, crop_points_to_image

    image = read_image(PHOTO)
    face = FaceFinder().largest(image)
    points = crop_points_to_image(face, ALIGNED_TEMPLATE / ENCODER_SIZE, 64)
    plain = aligned_crop(image, points).astype(np.float32)
    wide = aligned_crop(image, points, size=140, context=1.25)
    centre = cv2.resize(wide[14:126, 14:126], (ENCODER_SIZE, ENCODER_SIZE)).astype(np.float32)
    assert np.abs(centre - plain).mean() < 6  # the same face, resampled once more
    with pytest.raises(ValueError, match="alignment"):
        aligned_crop(image, np.zeros((5, 2)))


def test_the_door_runs_one_extra_pass_per_empty_frame_and_finds_a_tilted_head_within_a_cycle():
    from kiosk.face import FaceTracker

    image = read_image(PHOTO)
    tilted = cv2.warpAffine(image, cv2.getRotationMatrix2D((125, 125), -35, 1.0), (250, 250), borderMode=cv2.BORDER_REPLICATE)
    finder = FaceFinder(DetectorSettings(rotations=(-35.0, 35.0)))
    names = finder.extra_pass_names()
    assert names[:2] == ["haar@-35", "haar@+35"] and "alt2+quotient" in names and len(names) == 7
    assert finder.find(tilted, extra=0) == [] and finder.find(tilted, extra=1)  # the +35 degree pass finds it, not -35
    assert finder.find(tilted, extra=1 + len(names)), "the index runs modulo the number of extra passes"
    seen = []
    original = finder.find
    finder.find = lambda frame, extra=None: seen.append(extra) or original(frame, extra)
    tracker = FaceTracker(finder)
    blank = np.full((250, 250, 3), 128, np.uint8)
    for _ in range(3):
        assert tracker.find(blank) == []
    assert seen == [0, 1, 2], "each empty frame tries the next extra pass"
    found = [bool(tracker.find(tilted)) for _ in range(len(names) - 1)]
    assert found == [False] * (len(names) - 2) + [True], "the head arrives mid-cycle: found when the cycle comes round"
    assert seen[-1] % len(names) == 1
    assert tracker.find(tilted) and seen[-1] % len(names) == 1, "a tilted face is looked for with the pass that found it"


def test_a_photo_cropped_into_the_brows_and_chin_is_found_by_the_mirrored_border_pass():
    """An LFW photo cropped to 0.8x YuNet's face box (``python -m bench.tight_faces``): only the alt2 cascade with a
    mirrored border finds it, on the face."""
    photo = read_image(FIXTURES / "tight" / "David_Kelly_0001.jpg")
    assert FaceFinder(DetectorSettings(use_turned=False)).find(photo) == []
    face = FaceFinder().largest(photo)
    assert face is not None and face.pass_name == "alt2+border"
    assert abs(face.center[0] - 100) < 25 and abs(face.center[1] - 100) < 30 and 150 < face.w < 300


def test_half_a_face_at_the_edge_is_not_made_whole_by_the_mirrored_border():
    """The mirrored border turns a half face at the photo's edge into a whole, symmetric one; that box is dropped."""
    from kiosk.face import TURNED_BORDER
    from kiosk.images import image_files

    finder = FaceFinder()
    for path in image_files(FACES):
        image = read_image(path)
        face = finder.largest(image)
        (cx, cy), w = face.center, face.w
        half = cv2.cvtColor(image[int(cy - 0.7 * w):int(cy + 0.7 * w), int(cx):int(cx + 0.8 * w)], cv2.COLOR_BGR2GRAY)
        assert finder._detect_filling(half, 1.0, TURNED_BORDER, finder._alt, finder.TURNED_NEIGHBORS) == [], path.name
