"""Face detection and cropping: the one preprocessing path of face-kiosk.

The door, enrolment, ``kiosk embed``, training and evaluation all call
:func:`FaceFinder.find` and :func:`crop_face` from here, so the encoder sees
exactly the same kind of crop at the door as it saw in training.

Detection is OpenCV's Haar cascade (``haarcascade_frontalface_default.xml``
from ``cv2.data``) on a histogram-equalised grayscale image. Haar misses
faces in hard light, faces that fill the photo, heads tilted by more than
~15 degrees and heads turned aside, so when the first pass finds nothing,
further passes try a contrast-limited (CLAHE) image, the self-quotient
image, the image with a border, the image rotated by small angles, and
OpenCV's alt2 and profile cascades (see :meth:`FaceFinder.find`). The crop
is a square around the detection, shifted and scaled so that on average the
eyes, nose and mouth land where the encoder's training faces had them (see
``CROP_GEOMETRY``), rotated upright when the face was found in a rotated
pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from kiosk.errors import FaceKioskError

ENCODER_SIZE = 112
"""Side in pixels of the square RGB face crop the encoder takes."""


@dataclass(frozen=True)
class CropGeometry:
    """Where the encoder crop sits relative to a Haar detection box.

    ``dx``/``dy`` move the crop centre by that fraction of the box width,
    ``scale`` is the crop side as a multiple of the box width.
    """

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0


CROP_GEOMETRY = CropGeometry(dx=0.0, dy=-0.083, scale=1.205)
"""Fitted on 1,490 LFW faces by ``python -m bench.fit_crop`` (dx 0.010 rounded to 0):
the crop is 1.2 box widths, centred 8% of a width above the box centre."""


@dataclass(frozen=True)
class Face:
    """One detected face.

    ``x, y, w, h`` is the detection box in the upright frame the face was
    found in; ``angle`` is the rotation in degrees (OpenCV convention,
    counter-clockwise) that was applied to the image to make the face
    upright, and ``center`` the box centre in original image coordinates.
    """

    x: float
    y: float
    w: float
    h: float
    angle: float
    center: tuple[float, float]
    pass_name: str

    @property
    def size(self) -> float:
        """Side length of the (square) detection box in pixels."""
        return self.w


@dataclass
class DetectorSettings:
    """Tuning of the Haar cascade passes (the ``[detector]`` config section).

    One set of defaults for every path (the door, enrolment, ``kiosk embed``,
    calibration), so the threshold is calibrated on the front end the door runs.
    """

    work_width: int = 320  # frames are downscaled to this width for detection (speed)
    min_face_fraction: float = 0.15  # smallest face, as a fraction of the working image's shorter side
    rotations: tuple[float, ...] = (-20.0, 20.0)  # tilted passes (degrees) when the upright ones find nothing
    scale_factor: float = 1.1  # Haar pyramid step
    min_neighbors: int = 5  # Haar overlapping detections needed for a face
    use_clahe: bool = True  # a contrast-limited pass when the first finds nothing (hard light)
    use_quotient: bool = True  # a self-quotient pass when those find nothing (backlight)
    use_border: bool = True  # a small pass with a border added, for photos the face fills (ID photos, avatars)
    use_turned: bool = True  # last passes for heads turned aside: the alt2 and profile cascades


@dataclass(frozen=True)
class BorderPass:
    """How a pass looks for a face that fills the photo: the photo shrunk to ``width`` pixels, ``pad`` of that width
    added on each side (``border``: OpenCV's border mode, its edge pixels repeated or the photo mirrored)."""

    width: int
    pad: float
    border: int
    name: str


QUICK_BORDER = BorderPass(96, 0.35, cv2.BORDER_REPLICATE, "haar+border")
"""The frontal cascade's border pass (pad measured best among 0.2 and 0.35 on tight LFW crops)."""
TURNED_BORDER = BorderPass(64, 0.6, cv2.BORDER_REFLECT, "alt2+border")
"""The alt2 cascade's border pass, for crops that cut into the brows and chin: a mirrored border continues the
hair and jaw where repeated edge pixels smear them. Chosen among widths 64/96, pads 0.35/0.6, repeated, mirrored
or flat borders and the three frontal cascades on the 15 of 500 photos cropped to 0.8x the face that no pass found
(`python -m bench.tight_faces`, 2026-12-01): it found 6 of them with no more false boxes on 736 face-free photos
(the repeated border at width 96, pad 0.35 had found none of them)."""
BORDER_PASS_MIN_FACE = 0.35
"""Smallest face a border pass accepts, as a fraction of the image's shorter side: only faces that fill it."""
BORDER_PASS_EDGE = 0.15
"""A border pass's box is kept only when its centre lies at least this fraction of the photo's side from every edge
(the faces it found in photos cropped to 0.8x the face were centred between 0.44 and 0.64 of the side)."""


class FaceFinder:
    """Finds faces with OpenCV's Haar cascades: the frontal-face default one, then alt2 and profile."""

    CASCADE = "haarcascade_frontalface_default.xml"
    TURNED_CASCADES = ("haarcascade_frontalface_alt2.xml", "haarcascade_profileface.xml")
    """The cascades of the turned-head passes: alt2 (trained on other faces than the default) on the
    CLAHE image, the CLAHE'd self-quotient image and with a border, then the profile cascade on the
    image and its mirror (it knows one side only)."""
    TURNED_NEIGHBORS = 3
    """Overlapping detections those passes need: they run last, on images where nothing else was found."""

    def __init__(self, settings: DetectorSettings | None = None) -> None:
        self.settings = settings or DetectorSettings()
        self._cascade = load_cascade(self.CASCADE)
        self._alt, self._profile = (load_cascade(name) for name in self.TURNED_CASCADES)
        self._clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))

    def find(self, image: np.ndarray, extra: int | None = None) -> list[Face]:
        """Return the faces in a BGR (or grayscale) image, largest first: those of the first of
        :meth:`passes` that finds any."""
        return next(self.passes(image, extra), [])

    def passes(self, image: np.ndarray, extra: int | None = None) -> Iterator[list[Face]]:
        """The faces of each pass that finds any (largest first), pass after pass, computed as they are asked for.

        The quick passes: equalised grayscale, CLAHE, the self-quotient image
        (for backlight), the border pass for faces that fill the image. Then
        the extra passes (:meth:`extra_pass_names`): each rotation in the
        settings and the turned-head passes (:attr:`TURNED_CASCADES`); all of
        them for a photo (``extra`` None), only the ``extra``-th (modulo their
        number) for a door frame. A caller that finds a pass's boxes unusable
        (:meth:`kiosk.pipeline.FacePipeline.embed_largest`) looks on.

        The border pass runs before the tilted ones: on a tight crop a tilted
        pass can find a poor box first. The tilted passes (default +-20
        degrees) find a head held at an angle, which the frontal cascade
        misses: on wild CelebA (100 unseen people) failure to acquire fell
        from 10.7% to 8.2% and TAR at FAR 1e-3 rose from 70.5% to 73.5%
        (shipped encoder, 2026-12-01). The turned-head passes find heads
        turned aside and faces in backlight: with them, and the later passes
        looking on past unusable boxes, failure to acquire on wild CelebA fell
        to 3.0% and TAR at FAR 1e-3 rose to 79.9%; backlit LFW View 1 rose
        from 74.3% to 88.5% (2026-12-01).
        """
        gray, factor = self._working_gray(image)
        equalised = cv2.equalizeHist(gray)
        yield from _found(self._detect(equalised, 0.0, factor, "haar"))
        contrast = self._clahe.apply(gray)
        if self.settings.use_clahe:
            yield from _found(self._detect(contrast, 0.0, factor, "haar+clahe"))
        quotient = self_quotient(gray) if self.settings.use_quotient else None
        if quotient is not None:
            yield from _found(self._detect(quotient, 0.0, factor, "haar+quotient"))
        if self.settings.use_border:
            yield from _found(self._detect_filling(gray, factor))
        extras = self._extra_passes(equalised, contrast, quotient, gray, factor)
        if extras and extra is not None:
            extras = extras[extra % len(extras):][:1]
        for _, run in extras:
            yield from _found(run())

    def extra_pass_names(self) -> list[str]:
        """Names of the extra passes, in the order :meth:`passes` runs them (the door cycles through them)."""
        blank = np.zeros((8, 8), np.uint8)
        return [name for name, _ in self._extra_passes(blank, blank, blank if self.settings.use_quotient else None, blank, 1.0)]

    def _extra_passes(self, equalised: np.ndarray, contrast: np.ndarray, quotient: np.ndarray | None, gray: np.ndarray,
                      factor: float) -> list[tuple[str, Callable[[], list[Face]]]]:
        """(name, pass) of the tilted and turned-head passes, not yet run."""
        passes: list[tuple[str, Callable[[], list[Face]]]] = [
            (f"haar@{angle:+.0f}", partial(self._detect, equalised, angle, factor, f"haar@{angle:+.0f}"))
            for angle in self.settings.rotations]
        if not self.settings.use_turned:
            return passes
        turned = partial(self._detect, cascade=self._alt, neighbors=self.TURNED_NEIGHBORS)
        passes.append(("alt2+clahe", partial(turned, contrast, 0.0, factor, "alt2+clahe")))
        if quotient is not None:
            passes.append(("alt2+quotient", lambda: turned(self._clahe.apply(quotient), 0.0, factor, "alt2+quotient")))
        if self.settings.use_border:
            passes.append((TURNED_BORDER.name, partial(self._detect_filling, gray, factor, TURNED_BORDER, self._alt,
                                                       self.TURNED_NEIGHBORS)))
        profile = partial(self._detect, equalised, 0.0, factor, "profile", self._profile, self.TURNED_NEIGHBORS)
        return passes + [("profile", profile), ("profile mirrored", partial(profile, mirrored=True))]

    def find_larger(self, image: np.ndarray, min_width: float) -> list[Face]:
        """The faces at least ``min_width`` pixels wide that the first pass (the equalised image) finds, largest
        first: the same boxes as that pass for faces that large, at a fraction of its time (most of the cascade's
        work is at the small scales, left out)."""
        gray, factor = self._working_gray(image)
        return drop_enclosing(self._detect(cv2.equalizeHist(gray), 0.0, factor, "haar", min_side=int(min_width * factor)))

    def _working_gray(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """``image`` in grayscale at most :attr:`DetectorSettings.work_width` wide, and the factor it was scaled by."""
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if gray.shape[1] <= self.settings.work_width:
            return gray, 1.0
        factor = self.settings.work_width / gray.shape[1]
        return cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA), factor

    def largest(self, image: np.ndarray) -> Face | None:
        """The largest face in ``image``, or None when there is none."""
        faces = self.find(image)
        return faces[0] if faces else None

    def _detect(self, gray: np.ndarray, angle: float, factor: float, name: str, cascade: cv2.CascadeClassifier | None = None,
                neighbors: int | None = None, mirrored: bool = False, min_side: int = 0) -> list[Face]:
        height, width = gray.shape
        if mirrored:
            gray = cv2.flip(gray, 1)
        rotation = None
        if angle:
            rotation = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
            gray = cv2.warpAffine(gray, rotation, (width, height), borderMode=cv2.BORDER_REPLICATE)
        min_side = max(20, int(self.settings.min_face_fraction * min(height, width)), min_side)
        boxes = (cascade or self._cascade).detectMultiScale(
            gray,
            scaleFactor=self.settings.scale_factor,
            minNeighbors=neighbors or self.settings.min_neighbors,
            minSize=(min_side, min_side),
        )
        inverse = cv2.invertAffineTransform(rotation) if rotation is not None else None
        faces = []
        for x, y, w, h in np.asarray(boxes).reshape(-1, 4):
            if mirrored:
                x = width - x - w
            cx, cy = x + w / 2, y + h / 2
            if inverse is not None:
                cx, cy = inverse @ np.array([cx, cy, 1.0])
            faces.append(
                Face(
                    x=x / factor,
                    y=y / factor,
                    w=w / factor,
                    h=h / factor,
                    angle=angle,
                    center=(float(cx) / factor, float(cy) / factor),
                    pass_name=name,
                )
            )
        return faces

    def _detect_filling(self, gray: np.ndarray, factor: float, how: BorderPass = QUICK_BORDER,
                        cascade: cv2.CascadeClassifier | None = None, neighbors: int | None = None) -> list[Face]:
        """Faces that fill the image: Haar needs some head and background around a face, which a tight
        crop (an ID photo, an avatar) cuts off, so the image is shrunk, given a border (``how``) and searched
        for one large face only (a few milliseconds; never a small one). A face that fills the photo is centred in
        it: a box centred within :data:`BORDER_PASS_EDGE` of an edge is part of a face and its mirror image (a half
        face at the edge of a mirrored border makes a whole one), and is dropped."""
        shrink = min(1.0, how.width / gray.shape[1])
        small = cv2.resize(gray, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA) if shrink < 1 else gray
        pad = int(round(how.pad * small.shape[1]))
        framed = cv2.equalizeHist(cv2.copyMakeBorder(small, pad, pad, pad, pad, how.border))
        min_side = int(BORDER_PASS_MIN_FACE * min(small.shape))
        boxes = (cascade or self._cascade).detectMultiScale(framed, scaleFactor=self.settings.scale_factor,
                                                            minNeighbors=neighbors or self.settings.min_neighbors,
                                                            minSize=(min_side, min_side))
        scale = factor * shrink
        faces = []
        height, width = small.shape
        for x, y, w, h in np.asarray(boxes).reshape(-1, 4):
            cx, cy = x - pad + w / 2, y - pad + h / 2
            if BORDER_PASS_EDGE <= cx / width <= 1 - BORDER_PASS_EDGE and BORDER_PASS_EDGE <= cy / height <= 1 - BORDER_PASS_EDGE:
                faces.append(Face(x=(x - pad) / scale, y=(y - pad) / scale, w=w / scale, h=h / scale, angle=0.0,
                                  center=(cx / scale, cy / scale), pass_name=how.name))
        return faces


def _found(faces: list[Face]) -> list[list[Face]]:
    """A pass's faces as :meth:`FaceFinder.passes` yields them: nothing when it found none."""
    return [drop_enclosing(faces)] if faces else []


def load_cascade(name: str) -> cv2.CascadeClassifier:
    """One of OpenCV's Haar cascades from ``cv2.data``, or an error that says what to install."""
    path = Path(cv2.data.haarcascades) / name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise FaceKioskError(
            f"OpenCV could not load its Haar cascade {path}. Install "
            "opencv-python-headless 4.x (OpenCV 5 wheels no longer ship the cascades)."
        )
    return cascade


def self_quotient(gray: np.ndarray) -> np.ndarray:
    """The image divided by its own blur (log domain), stretched to 0..255.

    Removes slow changes of light across the image, such as a face in shadow
    against a bright window, which histogram equalisation and CLAHE cannot
    undo. On a quarter of the backlit LFW test images it found 62 of the 98
    faces the other passes missed, and it fired on fewer face-free images
    (faces blurred out) than they did: 18 of 387, against 147 and 187.
    """
    sigma = gray.shape[1] / 16
    logged = np.log1p(gray.astype(np.float32))
    quotient = logged - cv2.GaussianBlur(logged, (0, 0), sigma)
    return cv2.normalize(quotient, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


class FaceTracker:
    """Frame-to-frame detection for the door: search near the last face first.

    A face at the door moves little between frames, so after a detection the
    next frame is searched only in a window around it (twice the box size)
    and at scales close to it: a few milliseconds instead of a full-frame
    scan. Every ``full_every`` frames, and whenever the window finds nothing,
    the whole frame is scanned (for faces that could replace the tracked one
    while the door uses it: :attr:`RESCAN_SIZE`), so a new or larger face is
    never missed for long. The boxes are ordinary Haar boxes: the crop is the
    same as in training.

    The window search settings were chosen on 300 NUAA webcam frames against a
    full-frame scan of each frame: 2.6 ms per tracked frame on 1 thread (4.6 ms
    with the full scan's settings), box centres within 1.3% of the face width
    (median; 2.5% p90), box sizes within -3%/+5% (p10/p90), a rescan on 2% of frames.

    Most frames at a door are empty, and all the extra passes (tilted, turned;
    :meth:`FaceFinder.extra_pass_names`) would make each of them cost about
    4x: a full scan runs the quick passes and one extra pass, the next one
    after each empty scan, so a tilted or turned head is found within as many
    frames as there are extra passes (half a second at 15 fps), an empty
    doorstep costs about 1.3x, and no frame waits for all of them. A face an
    extra pass found is looked for with that pass again.
    """

    WINDOW_WIDTH = 128
    """The search window (twice the last face's size) is scanned at most this wide."""
    SIZE_RANGE = (0.8, 1.25)
    """Face sizes searched, relative to the last face."""
    SCALE_FACTOR = 1.15
    """Scale step of the window search (the full scan uses the finder's own)."""
    RESCAN_SIZE = 0.7
    """While the door uses the tracked face, the periodic full scan looks only for faces at least this fraction
    of its width (:meth:`FaceFinder.find_larger`): the door takes the largest usable face, so a smaller one could not
    replace it. When it finds nothing, or the door did not use the last face (a box that was no face), the whole
    scan runs. Leaving out the small scales took the scan from 28 to 10 ms on 1 thread (AVX2 paths, NUAA frames;
    0.6: 13 ms, 0.8: 8 ms); on 52 NUAA frames (21 sequences, live and photo, the tracked width off by up to 10%)
    the box was the full scan's in 41 and within 2.2% of its size in all (0.8: 14 and 7.4%, too far off: the box
    size decides whether a face is close enough to judge)."""

    def __init__(self, finder: FaceFinder, full_every: int = 5) -> None:
        self.finder = finder
        self.full_every = full_every
        self._last: Face | None = None
        self._since_full = 0
        self._extra = 0
        self._used = False
        self._helper: tuple[ThreadPoolExecutor, cv2.CascadeClassifier] | None = None

    def find(self, image: np.ndarray) -> list[Face]:
        """Faces in ``image``, largest first (like :meth:`FaceFinder.find`)."""
        faces: list[Face] = []
        last, used = self._last, self._used
        self._used = False
        if last is not None and self._since_full < self.full_every:
            faces = self._near(image, last)
            self._since_full += 1
        elif last is not None and used and _upright_haar(last):
            faces = self.finder.find_larger(image, self.RESCAN_SIZE * last.w)
            self._since_full = 0
        if not faces:
            faces = self.finder.find(image, extra=self._extra)
            self._since_full = 0
            self._extra += not faces
        self._last = faces[0] if faces else None
        return faces

    def follow(self, face: Face) -> None:
        """The door used ``face`` (its embedding was usable; perhaps a smaller box than the largest, which was no
        face): search near it in the next frame, and let the next full scan look for faces that could replace it."""
        self._last = face
        self._used = True

    def _near(self, image: np.ndarray, last: Face) -> list[Face]:
        if not _upright_haar(last):
            return []  # tilted and turned faces are re-found by the full scan (the window search is upright, frontal)
        height, width = image.shape[:2]
        cx, cy, side = last.center[0], last.center[1], last.w
        x0, y0 = int(max(0, cx - side)), int(max(0, cy - side))
        x1, y1 = int(min(width, cx + side)), int(min(height, cy + side))
        window = image[y0:y1, x0:x1]
        if window.size == 0:
            return []
        if window.ndim == 3:  # only the window turns gray: the same pixels as the whole frame's conversion
            window = cv2.cvtColor(window, cv2.COLOR_BGR2GRAY)
        factor = min(1.0, self.WINDOW_WIDTH / max(1, window.shape[1]))
        if factor < 1.0:
            window = cv2.resize(window, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        small, large = (int(side * bound * factor) for bound in self.SIZE_RANGE)
        boxes = self._scan(cv2.equalizeHist(window), small, large)
        faces = [
            Face(x=x0 + x / factor, y=y0 + y / factor, w=w / factor, h=h / factor, angle=0.0,
                 center=(x0 + (x + w / 2) / factor, y0 + (y + h / 2) / factor), pass_name="haar-track")
            for x, y, w, h in np.asarray(boxes).reshape(-1, 4)
        ]
        return drop_enclosing(faces)

    def _scan(self, window: np.ndarray, small: int, large: int) -> np.ndarray:
        """The frontal cascade's boxes in ``window`` for faces ``small``..``large`` pixels wide: OpenCV's
        ``detectMultiScale``, or, where OpenCV may use more than one thread, the same scan with its scales split
        between this thread and a helper (OpenCV's own threads split each scale's rows, too few in a window
        this small to gain). Each half's raw detections come from the same scales, positions and image sizes,
        and are grouped together as ``detectMultiScale`` groups them, so the boxes are the same either way."""
        cascade, neighbors = self.finder._cascade, self.finder.settings.min_neighbors
        base = cascade.getOriginalWindowSize()
        sizes = cascade_window_sizes(base, self.SCALE_FACTOR, small, large, window.shape)
        if len(sizes) < 2 or cv2.getNumThreads() < 2:
            return cascade.detectMultiScale(window, scaleFactor=self.SCALE_FACTOR, minNeighbors=neighbors,
                                            minSize=(small, small), maxSize=(large, large))
        if self._helper is None:
            self._helper = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="haar-window"), load_cascade(self.finder.CASCADE))
        pool, twin = self._helper
        split = balanced_split(window.shape, sizes, base[0])
        first, second = sizes[:split], sizes[split:]
        later = pool.submit(twin.detectMultiScale, window, scaleFactor=self.SCALE_FACTOR, minNeighbors=0,
                            minSize=second[0], maxSize=(large, large))
        raw = [*np.asarray(cascade.detectMultiScale(window, scaleFactor=self.SCALE_FACTOR, minNeighbors=0,
                                                     minSize=(small, small), maxSize=first[-1])).reshape(-1, 4),
               *np.asarray(later.result()).reshape(-1, 4)]
        boxes, _ = cv2.groupRectangles([[int(v) for v in box] for box in raw], neighbors, GROUP_EPS)
        return np.asarray(boxes)


def _upright_haar(face: Face) -> bool:
    """Whether the frontal cascade found ``face`` upright (the tracker's window and rescan look for such faces)."""
    return not face.angle and face.pass_name.startswith("haar")


GROUP_EPS = 0.2
"""How close detections must be to count as one face: OpenCV's ``detectMultiScale`` groups with this."""


def cascade_window_sizes(base: tuple[int, int], scale_factor: float, min_size: int, max_size: int,
                         shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """The detection window sizes ``detectMultiScale`` scans for these settings, in its order: its loop
    (``factor *= scale_factor`` from 1, rounded half to even as ``cvRound``), so a scan split by size scans the same."""
    sizes, factor = [], 1.0
    while True:
        size = (round(base[0] * factor), round(base[1] * factor))
        if size[0] > max_size or size[1] > max_size or size[0] > shape[1] or size[1] > shape[0]:
            return sizes
        if size[0] >= min_size and size[1] >= min_size:
            sizes.append(size)
        factor *= scale_factor


def balanced_split(shape: tuple[int, ...], sizes: list[tuple[int, int]], base: int) -> int:
    """Where to split the window sizes (at least one on each side) so both halves take about as long: each
    size's work is the number of positions it scans in the image scaled to it (every row and column when
    scaled down more than twice, every other one otherwise, as ``detectMultiScale`` steps)."""
    work = []
    for width, _ in sizes:
        factor = width / base
        step = 1 if factor > 2 else 2
        positions = max(0.0, shape[1] / factor - base) * max(0.0, shape[0] / factor - base) / step ** 2
        work.append(positions + 1)
    total, running = sum(work), 0.0
    for index, cost in enumerate(work[:-1], start=1):
        running += cost
        if running >= total / 2:
            return index
    return len(sizes) - 1


TRACK_MAX_SHIFT = 0.5
"""A face whose centre moved more than this many face widths since the last frame is another face."""
TRACK_SIZE_RATIO = 1.5
"""... as is one that grew or shrank by more than this factor."""


def same_track(previous: Face, current: Face) -> bool:
    """Whether ``current`` continues ``previous`` (the next frame of the same face), not a jump to another.

    A person moves a fraction of a face width between frames at the door's frame
    rate; a photo swapped in, a second face that became the largest, or a jump
    in size breaks the track, so the door starts a new attempt.
    """
    shift = np.hypot(current.center[0] - previous.center[0], current.center[1] - previous.center[1])
    ratio = current.w / max(previous.w, 1e-6)
    return shift <= TRACK_MAX_SHIFT * previous.w and 1 / TRACK_SIZE_RATIO <= ratio <= TRACK_SIZE_RATIO


class AttemptBoundary:
    """Where one attempt at the door ends and the next begins (see :mod:`kiosk.decision`).

    :meth:`update` takes each frame's faces (largest first), the embedding of
    the largest (None when unusable) and the person recognised in it, and
    answers (new attempt, restart). A new attempt starts when a face appears
    after more than ``gap_seconds`` without one, jumps (:func:`same_track`),
    or stops looking like the face of the previous frames: its embedding's
    cosine with the track's last one is below ``same_face_min`` (a photo of
    someone else raised where a live face was, even within a frame), or it is
    recognised as someone else than earlier in the track. A second face in
    view restarts the attempt's evidence.
    """

    def __init__(self, gap_seconds: float, same_face_min: float) -> None:
        self.gap_seconds = gap_seconds
        self.same_face_min = same_face_min
        self._face: Face | None = None
        self._seen = float("-inf")
        self._person: str | None = None
        self._embedding: np.ndarray | None = None

    def forget(self) -> None:
        """The next face starts a new attempt, whatever it is."""
        self._face = None

    def update(self, now: float, faces: list[Face], embedding: np.ndarray | None, person: str | None) -> tuple[bool, bool]:
        if not faces:
            return False, False
        face = faces[0]
        continues = self._face is not None and now - self._seen <= self.gap_seconds and same_track(self._face, face)
        other_face = (embedding is not None and self._embedding is not None
                      and float(embedding @ self._embedding) < self.same_face_min)
        switched = person is not None and self._person is not None and person != self._person
        new_attempt = not continues or other_face or switched
        if new_attempt:
            self._person, self._embedding = None, None
        self._face, self._seen = face, now
        self._person = person or self._person
        self._embedding = embedding if embedding is not None else self._embedding
        return new_attempt, len(faces) > 1 and not new_attempt


def drop_enclosing(faces: list[Face]) -> list[Face]:
    """Largest first, without boxes that enclose a smaller face.

    At coarse scales the cascade sometimes fires on a head together with its
    surroundings, giving a second, much larger box around the real face;
    two real faces cannot contain one another, so the enclosing box goes.
    """
    kept = []
    for face in faces:
        inner = [o for o in faces if o is not face and o.w < 0.65 * face.w
                 and np.hypot(o.center[0] - face.center[0], o.center[1] - face.center[1]) < 0.35 * face.w]
        if not inner:
            kept.append(face)
    return sorted(kept, key=lambda f: f.size, reverse=True)


def crop_transform(face: Face, geometry: CropGeometry = CROP_GEOMETRY, size: int = ENCODER_SIZE) -> np.ndarray:
    """The 2x3 affine matrix that maps the original image to the face crop."""
    side = geometry.scale * face.w
    theta = np.deg2rad(face.angle)
    # The offset is defined in the upright frame; rotate it back into the image.
    ox, oy = geometry.dx * face.w, geometry.dy * face.w
    cos, sin = np.cos(theta), np.sin(theta)
    cx = face.center[0] + cos * ox + sin * oy
    cy = face.center[1] - sin * ox + cos * oy
    matrix = cv2.getRotationMatrix2D((float(cx), float(cy)), face.angle, size / side)
    matrix[0, 2] += size / 2 - cx
    matrix[1, 2] += size / 2 - cy
    return matrix


ALIGNED_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
"""Where the eyes, nose tip and mouth corners go in an aligned 112x112 face (SFace's and ArcFace's template)."""


def crop_points_to_image(face: Face, points: np.ndarray, size: int) -> np.ndarray:
    """Points given as fractions of a ``size`` crop of ``face`` (:func:`crop_face`), in image pixels."""
    return points_from_crop(crop_transform(face, size=size), points, size)


def points_from_crop(matrix: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """Points given as fractions of a ``size`` crop cut by the 2x3 ``matrix`` (image to crop), in image pixels."""
    inverse = cv2.invertAffineTransform(matrix)
    pixels = np.asarray(points, np.float64) * size
    return (inverse[:, :2] @ pixels.T).T + inverse[:, 2]


def aligned_crop(image: np.ndarray, points: np.ndarray, size: int = ENCODER_SIZE, context: float = 1.0) -> np.ndarray:
    """The face with its five points (image pixels) moved onto :data:`ALIGNED_TEMPLATE` by a similarity
    transform, as ``size`` x ``size`` RGB: the input of an encoder that expects aligned faces.

    ``context`` > 1 shows that much more around the same centre (the training tool's context crops,
    whose central ``size / context`` pixels are the plain aligned crop).
    """
    target = (ALIGNED_TEMPLATE - ENCODER_SIZE / 2) / context * (size / ENCODER_SIZE) + size / 2
    return similarity_crop(image, points, target, size)[0]


def similarity_crop(image: np.ndarray, points: np.ndarray, target: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (BGR or gray) moved by the similarity transform that takes ``points`` (image pixels) closest to
    ``target`` (crop pixels): the ``size`` x ``size`` RGB crop and the 2x3 matrix from image to crop."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(points, np.float32), np.asarray(target, np.float32), method=cv2.LMEDS)
    if matrix is None:  # degenerate points (all on one spot): no similarity transform exists
        raise ValueError("the five face points do not define an alignment")
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), matrix


def crop_face(image: np.ndarray, face: Face, geometry: CropGeometry = CROP_GEOMETRY, size: int = ENCODER_SIZE) -> np.ndarray:
    """Cut the encoder's input out of a BGR image: ``size`` x ``size`` RGB uint8."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    matrix = crop_transform(face, geometry, size)
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
