"""Bioluminescence (IVIS): calibrated radiance, ROIs per mouse, total flux.

An acquisition folder as Living Image writes it holds the raw luminescent counts
(``luminescent.TIF``), a photograph, read-bias and dark-charge images, often Living Image's own
corrected radiance (``luminescentFloatCorrected.TIF``), and two text files of blocks (lines
beginning ``***``, one block per image plus the camera's and the user's) of ``Key:<TAB>Value``
lines; ``AnalyzedClickInfo.txt`` also keeps the ROIs drawn in Living Image.

Counts are corrected as Living Image does: the read bias (``readbiasonly.TIF``, else
``readbias.TIF`` divided by its ``Data Multiplier``, else the luminescent block's ``Read Bias
Level``) and the dark charge (``background.TIF``: divided by its multiplier, less its own read
bias, scaled by exposure and binning²) are subtracted. Radiance (p/s/cm²/sr) is
``L = C · (I − bias − dark) / t / b²`` with the C-ccd coefficient of the acquisition's field of
view and f-number; flat field and cosmic-ray corrections need Living Image's lens calibration,
so where Living Image's corrected radiance is in the folder it is what is measured, and each ROI
says how far exotrack's own calibration is from it. An ROI's total flux (p/s) is
``4π · Σ L · A_px`` with ``A_px = (FOV / W)²``. Pixels below zero after subtraction stay negative:
clipping them would bias every dim ROI upwards.

ROIs come from ``rois.csv`` in the folder, else from ``AnalyzedClickInfo.txt``, else
automatically: the mice from the photograph (split left to right, one subject each), hotspots as
contours at a fraction of their own peak (as Living Image's auto-ROI). The background under an
ROI is the mouse's autoluminescence where the ROI covers the body (the body away from hotspots)
and the stage's residual elsewhere, unless Living Image links the ROI to a background ROI.
"""

from __future__ import annotations

import io as _io
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, transform

from . import io, qc
from .background import pixel_noise

ROI_COLUMNS = ["subject", "roi", "total_flux_p_s", "avg_radiance", "max_radiance", "area_cm2",
               "bkg_corrected_flux_p_s", "detection_limit_p_s", "below_detection", "saturated", "shape", "yc",
               "xc", "height", "width", "angle_deg", "roi_source", "source", "raw_calibration_error"]
SPECIAL_ROIS = ("tumor", "lymph_node")
FLOAT_CORRECTED = "luminescentFloatCorrected.TIF"

DEFAULTS = {
    "radiance_tiff": None,  # plain radiance TIFFs: {"fov_cm": ...}
    "hotspot_fraction": 0.05,
    "hotspot_margin_cm": 0.3,
    "hotspot_min_snr": 5.0,
    "hotspot_names": ["tumor", "lymph_node"],
    "min_mouse_area_cm2": 2.0,
    "background_margin_cm": 1.0,
    "saturation_counts": None,
    "detection_sd": 3.0,  # an ROI's detection limit: this many sd of its background flux
}

_COEF = re.compile(r"Coef C-ccd at FOV\s*([0-9.]+)\s*,\s*f\s*([0-9.]+)\s*:\s*([-+0-9.eE]+)")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SHAPES = {"circle": "circle", "ellipse": "ellipse", "oval": "ellipse", "square": "rect", "rectangle": "rect",
           "rect": "rect"}
# Blocks of the images Living Image writes, by the first words of their title.
_IMAGE_KINDS = {"luminescent": ("luminescent",), "photograph": ("photograph", "photographic"),
                "readbiasonly": ("readbiasonly",), "readbias": ("readbias",),
                "darkcharge": ("darkcharge", "dark charge")}
# Keys of image blocks that exotrack reads, or knows change nothing in the counts' meaning.
_KNOWN_KEYS = {"binning factor", "luminescent exposure (seconds)", "f number", "field of view", "read bias level",
               "data multiplier", "background exposure (seconds)", "background corrected", "flat field corrected",
               "cosmic corrected", "photo exposure (seconds)", "luminescent exposure units"}
# Unknown keys with these words may change what the counts mean: the user is told.
_SUSPECT_KEY = re.compile(r"correct|multipl|offset|gain|scale|calibrat|flat|cosmic|dark|bias|unit", re.I)
TESTED_VERSIONS = ("4.",)  # Living Image major versions whose folders the reader was built on


# --- the acquisition folder ---------------------------------------------------------------------

def read_text(path) -> str:
    """A Living Image text file (or a CSV) as text: UTF-16 (with or without a byte-order mark, as
    some Windows tools save it), UTF-8 (with or without BOM), else Windows-1252."""
    data = Path(path).read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16")
    if data[:3] == b"\xef\xbb\xbf":
        return data[3:].decode("utf-8", errors="replace")
    if len(data) > 3 and data.count(b"\x00") > len(data) // 4:  # UTF-16 without a byte-order mark
        return data.decode("utf-16-le" if data[1:2] == b"\x00" else "utf-16-be", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def parse_click_info(text: str) -> dict[str, dict[str, str]]:
    """Blocks of a ClickInfo file: ``{block title: {key: value}}`` (titles as written after
    ``***``; keys and values stripped; the last of repeated keys wins)."""
    blocks: dict[str, dict[str, str]] = {}
    current = blocks.setdefault("", {})
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("***"):
            title = line.lstrip("*").strip()
            current = blocks.setdefault(title, {})
            continue
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(":")
        current[key.strip()] = value.strip()
    return blocks


def image_block(blocks: dict, kind: str) -> tuple[dict | None, str | None]:
    """The block of one image (``luminescent``, ``photograph``, ``readbiasonly``, ``readbias``,
    ``darkcharge``) and the file name it gives, from titles such as ``readbias image:<TAB>readbias.TIF``
    or ``Luminescent Image``."""
    for title, entries in blocks.items():
        head, _, name = title.partition(":")
        head = head.strip().lower()
        if any(head == alias or head.startswith(alias + " ") for alias in _IMAGE_KINDS[kind]):
            if not name.strip():
                name = next((v for k, v in entries.items() if k.lower().endswith(" image")
                             and v.lower().endswith((".tif", ".tiff"))), "")
            return entries, name.strip() or None
    return None, None


def _value(entries: dict, key: str):
    return next((v for k, v in entries.items() if k.lower() == key.lower()), None)


def read_number(entries: dict | None, key: str, what: str, *, block: str, source: str, default=None) -> float:
    """A number of one image's block, read exactly: a value with a decimal comma or trailing text
    is refused rather than cut (``1,500`` is not 1); a missing key is refused unless ``default``."""
    value = _value(entries or {}, key)
    if value is None:
        if default is not None:
            return default
        raise io.InputError(f"{source}: the {block} block has no '{key}' line ({what}); a value from another "
                            "image's block would not describe this one")
    if re.fullmatch(r"[-+]?\d+,\d+", value):
        raise io.InputError(f"{source}: '{key}' is {value!r}, with a decimal comma ({what}); Living Image writes "
                            "a decimal point: correct the file or export it again with a point")
    if not _NUMBER.fullmatch(value):
        raise io.InputError(f"{source}: '{key}' is {value!r}, not a number ({what})")
    return float(value)


def coefficients(blocks) -> list[tuple[float, float, float]]:
    """``(fov_cm, f_number, coefficient)`` of every C-ccd calibration line."""
    found = []
    for entries in blocks.values():
        for key, value in entries.items():
            match = _COEF.search(f"{key}: {value}")
            if match:
                found.append(tuple(float(g) for g in match.groups()))
    return found


def parse_animals(text: str | None) -> list[str]:
    """Animal numbers as a user label gives them: ``"3"``, ``"1,2,3"``, ``"1-3"``, ``"M1 M2"``."""
    if not text:
        return []
    animals = []
    for part in re.split(r"[,;\s]+", text.strip()):
        span = re.fullmatch(r"(\d+)-(\d+)", part)
        if span:
            animals += [str(i) for i in range(int(span.group(1)), int(span.group(2)) + 1)]
        elif part:
            animals.append(part)
    return animals


@dataclass
class ROI:
    name: str
    shape: str  # circle | ellipse | rect | contour
    yc: float
    xc: float
    height: float
    width: float
    source: str = ""
    subject: str = ""
    mask: np.ndarray | None = field(default=None, repr=False)  # automatic ROIs: the contour's pixels
    angle_deg: float = 0.0  # rotation of the ROI's width axis from the image's x axis, towards +y
    kind: str = "measurement"  # measurement | background | subject (Living Image's ROI Type)
    key: str = ""  # Living Image's ROI key (``ROI 3``)
    bkg_roi: str = ""  # Living Image's link to this ROI's background ROI
    subject_roi: str = ""  # Living Image's link to the subject ROI it belongs to

    def pixels(self, image_shape) -> np.ndarray:
        """Pixels whose centre lies inside the ROI (pixel centres at integer coordinates)."""
        if self.mask is not None:
            return self.mask
        yy, xx = np.indices(image_shape, dtype=np.float64)
        dy, dx = yy - self.yc, xx - self.xc
        angle = np.deg2rad(self.angle_deg)
        u = dx * np.cos(angle) + dy * np.sin(angle)  # along the width
        v = -dx * np.sin(angle) + dy * np.cos(angle)  # along the height
        half_w, half_h = max(self.width / 2, 0.5), max(self.height / 2, 0.5)
        if self.shape == "rect":
            return (np.abs(u) <= half_w) & (np.abs(v) <= half_h)
        return (u / half_w) ** 2 + (v / half_h) ** 2 <= 1


@dataclass
class Acquisition:
    """One IVIS acquisition, calibrated."""

    radiance: np.ndarray  # p/s/cm²/sr per luminescent pixel: the image measured
    counts: np.ndarray  # raw luminescent counts
    photograph: np.ndarray | None  # registered to the luminescent grid
    fov_cm: float
    saturation_counts: float
    exposure_s: float = np.nan
    binning: int = 1
    f_number: float = np.nan
    coefficient: float = np.nan
    bias: float = 0.0  # mean read bias subtracted, counts
    labels: dict = field(default_factory=dict)
    rois: list[ROI] = field(default_factory=list)  # from AnalyzedClickInfo.txt
    own_radiance: np.ndarray | None = None  # exotrack's calibration of the counts, where another image is measured
    image_name: str = "luminescent.TIF"
    corrections: dict = field(default_factory=dict)  # what was corrected, and from which file or key
    warnings: list[str] = field(default_factory=list)
    version: str | None = None  # Living Image's version, as the folder states it

    @property
    def pixel_area_cm2(self) -> float:
        return (self.fov_cm / self.radiance.shape[1]) ** 2


def _find(folder: Path, name: str) -> Path | None:
    for path in folder.iterdir():
        if path.name.lower() == name.lower():
            return path
    return None


def _read_tiff(path: Path, what: str) -> np.ndarray:
    if path.stat().st_size == 0:
        raise io.InputError(f"{path.name} ({what}) is empty (0 bytes)")
    try:
        data = tifffile.imread(path)
    except Exception as exc:
        raise io.unreadable(path, "TIFF image", exc, what=what) from exc
    if data.size == 0:
        raise io.InputError(f"cannot read {path.name} ({what}) as a TIFF image: it holds no pixels")
    data = np.squeeze(data)
    if data.ndim == 3 and data.shape[-1] in (3, 4):  # an RGB photograph
        data = data[..., :3].mean(axis=-1)
    if data.ndim != 2:
        raise io.InputError(f"{path.name} ({what}) should be one 2-D image, not shape {data.shape}")
    return data.astype(data.dtype.newbyteorder("="))  # big-endian TIFFs (as Living Image writes some) in native order


def _read_bias(folder: Path, blocks: dict, lum: dict, shape, *, source: str, warnings: list) -> tuple:
    """The read bias to subtract (an image or a level, in counts) and where it came from."""
    level = read_number(lum, "Read Bias Level", "read bias", block="luminescent image", source=source,
                        default=np.nan)
    for kind, default_name in (("readbiasonly", "readbiasonly.TIF"), ("readbias", "readbias.TIF")):
        entries, name = image_block(blocks, kind)
        path = _find(folder, name or default_name) or _find(folder, default_name)
        if path is None:
            continue
        multiplier = read_number(entries, "Data Multiplier", "scale of the stored pixels", block=f"{kind} image",
                                 source=source, default=1.0)
        if multiplier <= 0:
            raise io.InputError(f"{source}: the {kind} block's Data Multiplier is {multiplier:g}, not positive")
        image = _read_tiff(path, "read bias").astype(np.float64) / multiplier
        mean = float(image.mean())
        if np.isfinite(level) and abs(mean - level) > max(2.0, 0.01 * level):
            warnings.append(f"{path.name} / Data Multiplier {multiplier:g} averages {mean:.1f} counts but the "
                            f"luminescent block's Read Bias Level is {level:.1f}; {path.name} was used")
        described = f"{path.name}" + (f" / Data Multiplier {multiplier:g}" if multiplier != 1 else "")
        # An average of many frames (stored with a multiplier) removes the bias pattern pixel by
        # pixel; a single frame would add its own read noise to every pixel, so its mean is used.
        if multiplier > 1 and image.shape == shape:
            return image, described
        if image.shape != shape and multiplier > 1:
            warnings.append(f"{path.name} is {image.shape[0]} x {image.shape[1]} pixels, the luminescent image "
                            f"{shape[0]} x {shape[1]}: its mean level was subtracted")
        return mean, described + " (mean)"
    if np.isfinite(level):
        return level, "Read Bias Level"
    raise io.InputError(f"{source}: no read bias (no readbiasonly.TIF or readbias.TIF, no 'Read Bias Level' in the "
                        "luminescent block): the counts cannot be calibrated; copy the whole acquisition folder")


def _dark_charge(folder: Path, blocks: dict, lum: dict, bias, *, exposure_s: float, binning: int, shape,
                 source: str, warnings: list, corrections: dict):
    """Dark charge to subtract from the luminescent counts (0 where the folder has none)."""
    entries, name = image_block(blocks, "darkcharge")
    path = _find(folder, name) if name else None
    path = path or _find(folder, "background.TIF")
    if path is None:
        corrections["dark_charge"] = "none (no background.TIF)"
        return 0.0
    if read_number(lum, "Background Corrected", "", block="luminescent image", source=source, default=0) == 1:
        corrections["dark_charge"] = "none: luminescent.TIF states Background Corrected 1"
        return 0.0
    if entries is None:
        raise io.InputError(f"{source}: {path.name} (dark charge) has no darkcharge block, so its exposure and "
                            "binning are unknown; copy the acquisition's ClickInfo.txt with it")
    block = "darkcharge image"
    multiplier = read_number(entries, "Data Multiplier", "scale of the stored pixels", block=block, source=source,
                             default=1.0)
    dark_exposure = read_number(entries, "Background Exposure (Seconds)", "dark exposure", block=block,
                                source=source)
    dark_binning = read_number(entries, "Binning Factor", "dark binning", block=block, source=source)
    if multiplier <= 0 or dark_exposure <= 0 or dark_binning < 1:
        raise io.InputError(f"{source}: the darkcharge block's multiplier {multiplier:g}, exposure "
                            f"{dark_exposure:g} s or binning {dark_binning:g} is not positive")
    dark = _read_tiff(path, "dark charge").astype(np.float64) / multiplier
    # The dark frame holds its own read bias: its block's level, with the bias image's pattern.
    pattern = bias - np.mean(bias) if np.ndim(bias) else 0.0
    own_level = read_number(entries, "Read Bias Level", "the dark frame's read bias", block=block, source=source,
                            default=np.nan)
    if not np.isfinite(own_level):
        own_level = float(np.mean(bias))
        warnings.append(f"the darkcharge block states no Read Bias Level: the luminescent image's "
                        f"({own_level:.1f} counts) was taken for {path.name}")
    if dark.shape != shape:
        warnings.append(f"{path.name} is {dark.shape[0]} x {dark.shape[1]} pixels, the luminescent image "
                        f"{shape[0]} x {shape[1]}: its mean dark charge was subtracted")
        pattern = 0.0
        dark = np.full(shape, float(dark.mean()))
    charge = dark - pattern - own_level
    scale = exposure_s / dark_exposure * (binning / dark_binning) ** 2
    corrections["dark_charge"] = (f"{path.name} / Data Multiplier {multiplier:g} - Read Bias Level {own_level:g}, "
                                  f"x {scale:.4g} (exposure {exposure_s:g}/{dark_exposure:g} s, binning "
                                  f"({binning}/{dark_binning:g})²): mean {float(charge.mean()) * scale:.3g} counts")
    return charge * scale


def _register_photograph(photo: np.ndarray, shape, *, fov_cm: float, photo_fov_cm: float | None,
                         name: str) -> np.ndarray:
    """The photograph on the luminescent grid: resized where both images span the same field,
    else placed by each one's field of view (both centred on the camera's axis)."""
    same_aspect = abs(photo.shape[0] / photo.shape[1] / (shape[0] / shape[1]) - 1) < 0.01
    same_fov = photo_fov_cm is None or abs(photo_fov_cm / fov_cm - 1) < 0.01
    if same_aspect and same_fov:
        return transform.resize(photo, shape, order=1, anti_aliasing=True, preserve_range=True)
    if photo_fov_cm is None:
        raise io.InputError(f"{name} is {photo.shape[0]} x {photo.shape[1]} pixels and the luminescent image "
                            f"{shape[0]} x {shape[1]}: another aspect ratio, and the photograph block states no "
                            "Field of View to register them by; export the photograph with the luminescent image")
    lum_cm, photo_cm = fov_cm / shape[1], photo_fov_cm / photo.shape[1]
    factor = lum_cm / photo_cm
    smooth = ndi.gaussian_filter(photo, max((factor - 1) / 2, 0)) if factor > 1 else photo
    rows = ((np.arange(shape[0]) + 0.5 - shape[0] / 2) * lum_cm) / photo_cm + photo.shape[0] / 2 - 0.5
    cols = ((np.arange(shape[1]) + 0.5 - shape[1] / 2) * lum_cm) / photo_cm + photo.shape[1] / 2 - 0.5
    yy, xx = np.meshgrid(rows, cols, indexing="ij")
    border = np.concatenate([photo[0], photo[-1], photo[:, 0], photo[:, -1]])
    return ndi.map_coordinates(smooth, [yy, xx], order=1, cval=float(np.median(border)))


def remove_cosmic_rays(signal: np.ndarray, *, threshold_sd: float = 10.0, ratio: float = 5.0):
    """Cosmic-ray hits replaced by the median of their eight neighbours: pixels that exceed it by
    ``threshold_sd`` sd of the image's neighbour differences and are ``ratio`` times it (or its
    noise). A source blurred over a pixel or more is never that much above its neighbours.
    Returns the image and the number of pixels replaced."""
    footprint = np.ones((3, 3), bool)
    footprint[1, 1] = False
    around = ndi.median_filter(signal, footprint=footprint, mode="nearest")
    excess = signal - around
    sd = 1.4826 * float(np.median(np.abs(excess - np.median(excess))))
    hits = (excess > threshold_sd * sd) & (signal > ratio * np.maximum(around, sd))
    return np.where(hits, around, signal), int(hits.sum())


def _check_keys(blocks: dict, warnings: list) -> str | None:
    """Living Image's version; a warning for unknown keys of image blocks that may change what the
    counts mean, and for versions the reader was not built on."""
    version = next((v for entries in blocks.values() for k, v in entries.items()
                    if k.lower() == "living image version"), None)
    if version and not version.startswith(TESTED_VERSIONS):
        warnings.append(f"Living Image version {version}: this reader was built on 4.x folders; check the flux "
                        "against Living Image's")
    unknown = set()
    for kind in _IMAGE_KINDS:
        entries, _ = image_block(blocks, kind)
        for key in entries or {}:
            if key.lower() not in _KNOWN_KEYS and not key.lower().endswith(" image") and _SUSPECT_KEY.search(key):
                unknown.add(key)
    if unknown:
        warnings.append(f"unknown key(s) {', '.join(sorted(unknown))} in the image blocks: not applied; check they "
                        "do not change the counts' meaning")
    return version


def read_acquisition(folder, *, saturation_counts: float | None = None) -> Acquisition:
    """Read and calibrate an IVIS acquisition folder.

    Per-image settings come from that image's own block only. The luminescent counts are
    corrected for read bias and dark charge and calibrated to radiance; where the folder holds
    Living Image's corrected radiance (``luminescentFloatCorrected.TIF``), that is the image
    measured and exotrack's own calibration is kept beside it (``own_radiance``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise io.InputError(f"IVIS acquisition folder not found: {folder}" if not folder.exists() else
                            f"{folder.name} is a file, but a BLI sample is an IVIS acquisition folder")
    texts = [p for p in (_find(folder, "ClickInfo.txt"), _find(folder, "AnalyzedClickInfo.txt")) if p]
    if not texts:
        raise io.InputError(f"{folder.name} has neither ClickInfo.txt nor AnalyzedClickInfo.txt")
    blocks: dict[str, dict[str, str]] = {}
    for path in texts:  # AnalyzedClickInfo.txt (read last) holds the analysis: its values win
        for title, entries in parse_click_info(read_text(path)).items():
            blocks.setdefault(title, {}).update(entries)
    source = " / ".join(p.name for p in texts)
    warnings: list[str] = []
    version = _check_keys(blocks, warnings)
    lum, lum_name = image_block(blocks, "luminescent")
    if lum is None and not any(image_block(blocks, kind)[0] for kind in _IMAGE_KINDS):
        lum = blocks.get("")  # a file of one untitled block describes the luminescent image alone
    if not lum:
        raise io.InputError(f"{source} has no luminescent image block ('*** luminescent image'): the exposure, "
                            "binning and f-number of luminescent.TIF are unknown")
    lum_path = _find(folder, lum_name or "luminescent.TIF") or _find(folder, "luminescent.TIF")
    if lum_path is None:
        raise io.InputError(f"{folder.name} has no luminescent.TIF (the luminescent image)")
    counts = _read_tiff(lum_path, "luminescent image")
    block = "luminescent image"
    exposure = read_number(lum, "Luminescent Exposure (Seconds)", "exposure time", block=block, source=source)
    units = (_value(lum, "Luminescent Exposure Units") or "sec").strip().lower()
    if not units.startswith("s"):
        raise io.InputError(f"{source}: the luminescent exposure is in {units!r}, not seconds")
    binning = int(round(read_number(lum, "Binning Factor", "binning", block=block, source=source)))
    f_number = read_number(lum, "f Number", "aperture", block=block, source=source)
    fov = read_number(lum, "Field of View", "field of view in cm", block=block, source=source)
    if exposure <= 0 or binning < 1 or fov <= 0:
        raise io.InputError(f"{source}: exposure {exposure:g} s, binning {binning}, field of view {fov:g} cm "
                            "are not all positive")
    coefficient = next((c for v, f, c in coefficients(blocks)
                        if abs(v - fov) < 0.05 and abs(f - f_number) < 0.05), None)
    if coefficient is None:
        raise io.InputError(f"{source} has no calibration line 'Coef C-ccd at FOV {fov:g}, f{f_number:g}' "
                            "for this acquisition's field of view and f-number")
    if saturation_counts is None:
        saturation_counts = float(np.iinfo(counts.dtype).max) if np.issubdtype(counts.dtype, np.integer) else np.inf
    try:  # a few saturated pixels are flagged on their ROI; a mostly saturated image is refused
        io.check_pixels(counts, ceiling=saturation_counts)
    except io.InputError as exc:
        raise io.InputError(f"{lum_path.name} (luminescent image): {exc}") from None
    counts = counts.astype(np.float64)
    corrections: dict = {}
    bias, corrections["read_bias"] = _read_bias(folder, blocks, lum, counts.shape, source=source, warnings=warnings)
    dark = _dark_charge(folder, blocks, lum, bias, exposure_s=exposure, binning=binning, shape=counts.shape,
                        source=source, warnings=warnings, corrections=corrections)
    signal = counts - bias - dark
    for flag, what in (("Flat Field Corrected", "flat_field"), ("Cosmic Corrected", "cosmic")):
        done = read_number(lum, flag, "", block=block, source=source, default=0) == 1
        corrections[what] = "in luminescent.TIF" if done else "none in luminescent.TIF"
    if corrections["cosmic"] != "in luminescent.TIF":
        signal, hits = remove_cosmic_rays(signal)
        corrections["cosmic"] = f"{hits} pixel(s) replaced by their neighbours' median (exotrack)"
    radiance = coefficient * signal / exposure / binning ** 2
    own, image_name = None, lum_path.name
    float_path = _find(folder, FLOAT_CORRECTED)
    if float_path is not None:
        corrected = _read_tiff(float_path, "Living Image's corrected radiance").astype(np.float64)
        if corrected.shape != counts.shape:
            raise io.InputError(f"{float_path.name} is {corrected.shape[0]} x {corrected.shape[1]} pixels but "
                                f"luminescent.TIF {counts.shape[0]} x {counts.shape[1]}")
        try:
            io.check_pixels(corrected, ceiling=np.inf)
        except io.InputError as exc:
            raise io.InputError(f"{float_path.name} (Living Image's corrected radiance): {exc}") from None
        bright = radiance > np.percentile(radiance, 99)
        ratio = float(np.median(corrected[bright] / radiance[bright])) if bright.any() else np.nan
        if not 0.5 < ratio < 2:  # flat field and cosmic corrections change radiance by tens of %, not x2
            warnings.append(f"{float_path.name} is {ratio:.3g} x exotrack's calibration of the raw counts on the "
                            "brightest pixels: is it radiance (p/s/cm²/sr)? It was measured as such")
        corrections["flat_field"] = f"by Living Image ({float_path.name})"
        corrections["cosmic"] = f"by Living Image ({float_path.name}); raw counts: {corrections['cosmic']}"
        own, radiance, image_name = radiance, corrected, float_path.name
    photograph = None
    photo_block, photo_name = image_block(blocks, "photograph")
    photo_path = _find(folder, photo_name or "photograph.TIF") or _find(folder, "photograph.TIF")
    if photo_path is not None:
        photo = _read_tiff(photo_path, "photograph").astype(np.float32)
        photo_fov = read_number(photo_block, "Field of View", "", block="photograph", source=source, default=np.nan)
        photograph = _register_photograph(photo, counts.shape, fov_cm=fov, name=photo_path.name,
                                          photo_fov_cm=photo_fov if np.isfinite(photo_fov) else None)
    labels = next((entries for title, entries in blocks.items() if "user label" in title.lower()), {})
    acquisition = Acquisition(radiance, counts, photograph, fov, saturation_counts, exposure, binning, f_number,
                              coefficient, float(np.mean(bias)), dict(labels), own_radiance=own,
                              image_name=image_name, corrections=corrections, warnings=warnings, version=version)
    acquisition.rois = _click_info_rois(blocks, fov_cm=fov, width_px=counts.shape[1])
    return acquisition


def read_radiance_tiff(path, *, fov_cm: float) -> Acquisition:
    """A plain radiance image (p/s/cm²/sr per pixel) whose field of view comes from the config."""
    data = _read_tiff(io.check_file(path), "radiance image")
    try:
        io.check_pixels(data, ceiling=np.inf)  # calibrated radiance has no camera ceiling
    except io.InputError as exc:
        raise io.InputError(f"{Path(path).name} (radiance image): {exc}") from None
    data = data.astype(np.float64)
    return Acquisition(data, data, None, fov_cm, np.inf, image_name=Path(path).name)


def _link(value: str | None) -> str:
    value = (value or "").strip()
    return "" if value.lower() in ("", "_none_", "none") else value


def _click_info_rois(blocks, *, fov_cm: float, width_px: int) -> list[ROI]:
    """ROIs stored by Living Image: ``ROI n:Key=Value;...`` lines; positions in pixels of
    ``cm per pixel`` (the luminescent image's pixels where that is absent), continuous
    coordinates with the first pixel spanning 0 to 1, the frame's origin at the image's corner."""
    rois = []
    pixel_cm = fov_cm / width_px
    for entries in blocks.values():
        for key, value in entries.items():
            if not re.fullmatch(r"ROI\s*\d+", key):
                continue
            fields = {k.strip(): v.strip() for k, v in
                      (part.split("=", 1) for part in value.split(";") if "=" in part)}
            try:
                scale = float(fields.get("cm per pixel", pixel_cm)) / pixel_cm
                shape = _SHAPES.get(fields.get("Shape", "").strip().lower())
                if shape is None:
                    raise ValueError(f"shape {fields.get('Shape')!r}")
                kind = fields.get("ROI Type", "Measurement").lower()
                kind = "background" if "bkg" in kind or "background" in kind else (
                    "subject" if "subject" in kind else "measurement")
                # Living Image's positions are continuous (a pixel's centre at +0.5), ours are
                # pixel centres from 0.
                rois.append(ROI(fields.get("Label", "").strip() or key, shape, float(fields["Yc"]) * scale - 0.5,
                                float(fields["Xc"]) * scale - 0.5, float(fields["Height"]) * scale,
                                float(fields["Width"]) * scale, source="AnalyzedClickInfo.txt",
                                subject=fields.get("Subject ID", "").strip(),
                                angle_deg=float(fields.get("Angle", 0) or 0), kind=kind, key=key,
                                bkg_roi=_link(fields.get("Bkg ROI")), subject_roi=_link(fields.get("Subject ROI"))))
            except (KeyError, ValueError) as exc:
                raise io.InputError(f"AnalyzedClickInfo.txt: cannot read {key} ({exc})") from None
    return rois


def _read_csv(path) -> pd.DataFrame:
    """A small CSV as people save it: comma-, semicolon- (European Excel, decimal comma) or
    tab-separated, in UTF-8, UTF-16 or Windows-1252."""
    text = read_text(path)
    header = text.splitlines()[0] if text.strip() else ""
    if ";" in header and "," not in header:
        return pd.read_csv(_io.StringIO(text), sep=";", decimal=",", index_col=False)
    if "\t" in header and "," not in header:
        return pd.read_csv(_io.StringIO(text), sep="\t", index_col=False)
    return pd.read_csv(_io.StringIO(text), index_col=False)


def read_roi_table(path) -> tuple[list[ROI], dict]:
    """``rois.csv``: either ROIs, ``roi, shape, yc, xc, height, width`` (luminescent pixels),
    optional ``subject`` and ``angle_deg``; or names for Living Image's ROIs, ``label, roi``
    (``ROI 1, tumor``), optional ``subject``. Returns the ROIs and the names."""
    table = _read_csv(path)
    table.columns = [str(c).strip() for c in table.columns]
    if {"label", "roi"} <= set(table.columns) and "shape" not in table.columns:
        names = {}
        for row in table.itertuples():
            subject = str(getattr(row, "subject", "") or "").strip()
            names[(subject if subject != "nan" else "", str(row.label).strip())] = str(row.roi).strip()
        return [], names
    missing = {"roi", "shape", "yc", "xc", "height", "width"} - set(table.columns)
    if missing:
        raise io.InputError(f"rois.csv lacks column(s) {', '.join(sorted(missing))} (it has "
                            f"{', '.join(map(repr, table.columns))}); or give 'label, roi' to name Living Image's ROIs")
    rois = []
    for row in table.itertuples():
        shape = _SHAPES.get(str(row.shape).strip().lower())
        if shape is None:
            raise io.InputError(f"rois.csv row {row.Index + 2}: shape {row.shape!r} is not circle, ellipse or rect")
        subject = getattr(row, "subject", "")
        rois.append(ROI(str(row.roi), shape, float(row.yc), float(row.xc), float(row.height), float(row.width),
                        source="rois.csv", subject="" if pd.isna(subject) else str(subject).strip(),
                        angle_deg=float(getattr(row, "angle_deg", 0) or 0),
                        kind="background" if str(row.roi) == "background" else "measurement"))
    return rois, {}

# --- automatic ROIs -------------------------------------------------------------------------------

def find_mice(photograph: np.ndarray | None, *, pixel_cm: float, min_area_cm2: float) -> list[np.ndarray]:
    """Masks of the animals in a photograph, left to right.

    The stage's level is the median of the image border; animals are what differs from it by
    more than Otsu's threshold on that difference (bright or dark fur alike). Without a
    photograph the whole field is one animal.
    """
    if photograph is None:
        return []
    smooth = ndi.gaussian_filter(photograph.astype(np.float64), 1.0)
    border = np.concatenate([smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1]])
    contrast = np.abs(smooth - np.median(border))
    if contrast.max() <= 0:
        return []
    mask = contrast > filters.threshold_otsu(contrast)
    mask = ndi.binary_fill_holes(morphology.opening(mask, morphology.disk(1)))
    labels = measure.label(mask)
    min_px = min_area_cm2 / pixel_cm ** 2
    regions = [r for r in measure.regionprops(labels) if r.area >= min_px]
    regions.sort(key=lambda r: r.centroid[1])
    return [labels == r.label for r in regions]


def find_hotspots(radiance: np.ndarray, body: np.ndarray, *, fraction: float, min_snr: float,
                  pixel_cm: float, margin_cm: float = 0.0) -> list[np.ndarray]:
    """Hotspot masks inside ``body``, highest peak first: each a contour at ``fraction`` of its own
    (lightly smoothed) peak above the body's background, widened by ``margin_cm`` (light
    scattered in tissue reaches beyond the contour), kept where the peak stands ``min_snr``
    noise levels above that background."""
    smooth = ndi.gaussian_filter(radiance, 1.0)
    inside = smooth[body]
    if inside.size == 0:
        return []
    background = float(np.median(inside))
    # Noise of a sigma-1 Gaussian average: 0.28 of the pixel noise.
    noise = max(pixel_noise(radiance) * 0.28, 1e-30)
    signal = np.where(body, smooth - background, 0)
    hotspots, taken = [], np.zeros(body.shape, bool)
    separation = max(int(round(0.5 / pixel_cm)), 2)  # peaks at least 0.5 cm apart
    peaks = _local_peaks(signal, separation)
    for y, x in peaks:
        peak = signal[y, x]
        if peak < min_snr * noise or taken[y, x]:
            continue
        region = measure.label(signal >= fraction * peak)
        mask = region == region[y, x]
        if margin_cm > 0:
            mask = ndi.binary_dilation(mask, morphology.disk(max(1, round(margin_cm / pixel_cm))))
        mask &= body & ~taken
        if not mask.any():
            continue
        hotspots.append(mask)
        taken |= mask
    return hotspots


def _local_peaks(signal: np.ndarray, separation: int):
    maximum = ndi.maximum_filter(signal, size=2 * separation + 1)
    ys, xs = np.nonzero((signal == maximum) & (signal > 0))
    order = np.argsort(signal[ys, xs])[::-1]
    return list(zip(ys[order], xs[order]))


def _circle_of(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    return float(ys.mean()), float(xs.mean()), float(np.ptp(ys) + 1), float(np.ptp(xs) + 1)


def automatic_rois(acq: Acquisition, *, options: dict, subjects: list[str],
                   mice: list[np.ndarray] | None = None) -> list[ROI]:
    """Mice (from the photograph unless given), named by ``subjects`` left to right; each mouse's
    hotspots named by ``hotspot_names`` from the largest total flux down (then ``hotspot_3``,
    ...), and its ``background``: the farther half of the body beyond ``background_margin_cm``
    from every hotspot."""
    pixel_cm = acq.fov_cm / acq.radiance.shape[1]
    if mice is None:
        mice = find_mice(acq.photograph, pixel_cm=pixel_cm, min_area_cm2=options["min_mouse_area_cm2"])
    if not mice:
        mice = [np.ones(acq.radiance.shape, bool)]
    if len(subjects) > 1 and len(subjects) != len(mice):
        raise io.InputError(f"the photograph shows {len(mice)} animal(s) but {len(subjects)} are named "
                            f"({', '.join(subjects)})")
    names = list(options["hotspot_names"])
    rois = []
    for index, body in enumerate(mice):
        subject = subjects[index] if index < len(subjects) else f"animal{index + 1}"
        spots = find_hotspots(acq.radiance, body, fraction=options["hotspot_fraction"],
                              min_snr=options["hotspot_min_snr"], pixel_cm=pixel_cm,
                              margin_cm=options["hotspot_margin_cm"])
        # Named by total signal, not peak: a small lymph node can outshine a larger tumour at its peak.
        spots.sort(key=lambda mask: -acq.radiance[mask].sum())
        for rank, mask in enumerate(spots):
            name = names[rank] if rank < len(names) else f"hotspot_{rank + 1}"
            rois.append(ROI(name, "contour", *_circle_of(mask), source="auto", subject=subject, mask=mask))
        # The background is the half of the body farthest from every hotspot (and at least the
        # margin away): the tails of light scattered from a bright tumour reach far, and a mean
        # (a median is biased where counts are few) must not pick them up.
        distance = ndi.distance_transform_edt(~np.any(spots, axis=0)) * pixel_cm if spots else np.full(
            body.shape, np.inf)
        background = body & (distance >= options["background_margin_cm"])
        if spots and background.any():
            background &= distance >= np.median(distance[background])
        if background.any():
            rois.append(ROI("background", "contour", *_circle_of(background), source="auto", subject=subject,
                            mask=background, kind="background"))
    return rois


def stage_level(radiance: np.ndarray, mice: list[np.ndarray], *, pixel_cm: float, margin_cm: float) -> float:
    """Mean radiance of the stage beyond ``margin_cm`` of every mouse (the dark-charge and bias
    residual, light reflected off the stage); 0 where no such stage is in view."""
    if not mice:
        return 0.0
    far = ndi.distance_transform_edt(~np.any(mice, axis=0)) * pixel_cm >= margin_cm
    return float(radiance[far].mean()) if far.sum() >= 50 else 0.0


def measure_rois(acq: Acquisition, rois: list[ROI], *, body: np.ndarray | None = None,
                 stage: float = 0.0, detection_sd: float = 3.0) -> pd.DataFrame:
    """``rois.csv``: per ROI total flux (``4π Σ L A_px``), mean and max radiance, area,
    background-corrected flux, its detection limit, and whether any pixel reached the camera's
    ceiling.

    The background under an ROI is its linked background ROI's mean radiance (Living Image's
    ``Bkg ROI``) over the whole ROI; otherwise its mouse's ``background`` ROI's mean where the ROI
    covers ``body`` (every pixel without a body mask) and ``stage`` elsewhere. The detection limit
    is ``detection_sd`` sd of that background's flux over the ROI: pixel noise of the background
    ROI over the ROI's pixels plus the uncertainty of the background's mean. An ROI whose
    corrected flux is below it is ``below_detection``, its corrected flux left empty.
    """
    shape = acq.radiance.shape
    area_px = acq.pixel_area_cm2
    masks = [roi.pixels(shape) for roi in rois]
    stats = {}
    for roi, mask in zip(rois, masks):
        values = acq.radiance[mask]
        stats[id(roi)] = (values.mean(), values.std(), values.size) if values.size else (np.nan, np.nan, 0)
    by_subject = {roi.subject: stats[id(roi)] for roi in rois if roi.kind == "background"}
    by_link = {name: stats[id(roi)] for roi in rois for name in (roi.key, roi.name) if name}
    rows = []
    for roi, mask in zip(rois, masks):
        values = acq.radiance[mask]
        total = 4 * np.pi * values.sum() * area_px if values.size else np.nan
        row = {"subject": roi.subject, "roi": roi.name, "shape": roi.shape, "yc": roi.yc, "xc": roi.xc,
               "height": roi.height, "width": roi.width, "angle_deg": roi.angle_deg, "roi_source": roi.source,
               "source": acq.image_name, "area_cm2": mask.sum() * area_px, "total_flux_p_s": total,
               "avg_radiance": values.mean() if values.size else np.nan,
               "max_radiance": values.max() if values.size else np.nan,
               "saturated": bool(values.size and (acq.counts[mask] >= acq.saturation_counts).any()),
               "below_detection": False, "detection_limit_p_s": np.nan, "raw_calibration_error": np.nan}
        if acq.own_radiance is not None and values.size:
            row["raw_calibration_error"] = 4 * np.pi * acq.own_radiance[mask].sum() * area_px / total - 1
        linked = roi.bkg_roi and roi.bkg_roi in by_link
        level, sd, n_bg = by_link[roi.bkg_roi] if linked else by_subject.get(
            roi.subject, by_subject.get("", (np.nan, np.nan, 0)))
        if not values.size or not np.isfinite(level):
            row["bkg_corrected_flux_p_s"] = np.nan
            rows.append(row)
            continue
        on_body = mask if linked or body is None else mask & body
        under = level * on_body.sum() + stage * (mask.sum() - on_body.sum())
        row["bkg_corrected_flux_p_s"] = total - 4 * np.pi * under * area_px
        if roi.kind != "background" and n_bg:
            n = mask.sum()
            limit = detection_sd * 4 * np.pi * area_px * sd * np.sqrt(n + n ** 2 / n_bg)
            row["detection_limit_p_s"] = limit
            if row["bkg_corrected_flux_p_s"] < limit:
                row["below_detection"], row["bkg_corrected_flux_p_s"] = True, np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=ROI_COLUMNS)


def subjects_of(acq: Acquisition, sheet_subject: str, sample: str) -> list[str]:
    """Animals of an acquisition, left to right: the sheet's subject column (``m1;m2;m3``),
    else the ``Animal Number`` label, else the sample id (one animal)."""
    if sheet_subject and re.search(r"[;,]", sheet_subject):
        return [s.strip() for s in re.split(r"[;,]", sheet_subject) if s.strip()]
    animals = parse_animals(acq.labels.get("Animal Number"))
    if len(animals) > 1:
        return animals
    return [sheet_subject or (animals[0] if animals else sample)]


def assign_subjects(rois: list[ROI], mice: list[np.ndarray], subjects: list[str], shape) -> list[ROI]:
    """Each ROI that names no subject (Living Image's ``Subject ROI=_none_``) given to the mouse
    it lies on (most pixels, else the nearest), or to its linked subject ROI's mouse."""
    def on(roi):
        if len(subjects) == 1 or not mice:
            return subjects[0]
        mask = roi.pixels(shape)
        overlap = [int((mask & body).sum()) for body in mice]
        if max(overlap) > 0:
            return subjects[int(np.argmax(overlap))]
        ys, xs = np.nonzero(mask) if mask.any() else ([roi.yc], [roi.xc])
        distance = [ndi.distance_transform_edt(~body)[int(np.mean(ys)), int(np.mean(xs))]
                    if 0 <= np.mean(ys) < shape[0] and 0 <= np.mean(xs) < shape[1] else np.inf for body in mice]
        return subjects[int(np.argmin(distance))]

    placed = {}
    for roi in rois:
        if roi.kind == "subject":
            placed[roi.key] = placed[roi.name] = roi.subject or on(roi)
    out = []
    for roi in rois:
        subject = roi.subject or placed.get(roi.subject_roi) or (placed[roi.key] if roi.kind == "subject" else on(roi))
        out.append(replace(roi, subject=subject))
    return out


def analyse_acquisition(acq: Acquisition, *, rois: list[ROI] | None, subjects: list[str], options: dict,
                        names: dict | None = None):
    """ROI table, per-animal headline metrics, the ROIs drawn and warnings of an acquisition.

    Given ROIs (``rois.csv`` or Living Image's) are used as they are, renamed by ``names``
    (``{(subject, label): name}``, subject ``""`` for any), each mouse's background the given
    one where there is one, else the automatic one; otherwise all ROIs are automatic. When the
    photograph shows several mice and one name is known, the mice are that name ``_1``, ``_2``, ...
    left to right.
    """
    options = {**DEFAULTS, **options}
    warnings = []
    shape = acq.radiance.shape
    pixel_cm = acq.fov_cm / shape[1]
    mice = find_mice(acq.photograph, pixel_cm=pixel_cm, min_area_cm2=options["min_mouse_area_cm2"])
    if len(mice) > 1 and len(subjects) == 1:
        subjects = [f"{subjects[0]}_{k + 1}" for k in range(len(mice))]
        warnings.append(f"the photograph shows {len(mice)} mice but one subject is named: they are "
                        f"{', '.join(subjects)} left to right (name them in the sheet's subject column, a;b;c)")
    auto = automatic_rois(acq, options=options, subjects=subjects, mice=mice or None)
    if rois:
        outside = [r.name for r in rois if not r.pixels(shape).any()]
        if outside:
            raise io.InputError(f"ROI(s) {', '.join(map(repr, outside))} lie outside the luminescent image "
                                f"({shape[0]} x {shape[1]} pixels)")
        stray = sorted({r.subject for r in rois if r.subject and r.subject not in subjects and r.kind != "background"})
        if stray:  # measured, they would belong to no mouse and leave its flux silently empty
            raise io.InputError(
                f"the ROIs name subject(s) {', '.join(map(repr, stray))}, but this acquisition's animal(s) are "
                f"{', '.join(map(repr, subjects))} (from the sheet's subject column, else the Animal Number "
                "label, else the sample id); make the two agree")
        given = assign_subjects(rois, mice, subjects, shape)
        names = names or {}
        given = [replace(r, name=names.get((r.subject, r.name), names.get(("", r.name), r.name))) for r in given]
        have = {r.subject for r in given if r.kind == "background"}
        given += [r for r in auto if r.kind == "background" and r.subject not in have]
        rois = given
    else:
        rois = auto
    body = np.any(mice, axis=0) if mice else None
    stage = stage_level(acq.radiance, mice, pixel_cm=pixel_cm, margin_cm=options["background_margin_cm"])
    table = measure_rois(acq, rois, body=body, stage=stage, detection_sd=options["detection_sd"])
    animals = []
    for subject in subjects:
        own = table[table["subject"] == subject]
        metrics = {"subject": subject, "warnings": []}
        for name in SPECIAL_ROIS:
            hit = own[own["roi"] == name]
            metrics[f"{name}_total_flux_p_s"] = float(hit["total_flux_p_s"].sum()) if len(hit) else np.nan
            metrics[f"{name}_avg_radiance"] = float(hit["avg_radiance"].mean()) if len(hit) else np.nan
            metrics[f"{name}_saturated"] = bool(hit["saturated"].any()) if len(hit) else False
            below = bool(hit["below_detection"].any()) if len(hit) else False
            metrics[f"{name}_bkg_corrected_flux_p_s"] = (
                float(hit["bkg_corrected_flux_p_s"].sum()) if len(hit) and not below else np.nan)
            metrics[f"{name}_detection_limit_p_s"] = float(hit["detection_limit_p_s"].sum()) if len(hit) else np.nan
            metrics[f"{name}_below_detection"] = below
            if below:
                metrics["warnings"].append(
                    f"{subject} {name}: below the detection limit ({metrics[f'{name}_detection_limit_p_s']:.2e} p/s "
                    "over autoluminescence); its background-corrected flux is left empty")
        animals.append(metrics)
    return table, animals, rois, warnings


def process_sample(*, sample: str, path, options: dict, outputs: dict, subject: str = "") -> dict:
    """Read, analyse and write one BLI acquisition (``rois``, ``radiance``, ``metrics``, ``qc``).

    ``metrics["animals"]`` holds one entry per mouse (a multi-mouse acquisition has several).
    """
    options = {**DEFAULTS, **options}
    try:
        path = Path(path)
        if path.is_file() and path.suffix.lower() in (".tif", ".tiff"):
            if not options.get("radiance_tiff"):
                raise io.InputError("a plain radiance TIFF needs bli.radiance_tiff.fov_cm in the config")
            acq = read_radiance_tiff(path, fov_cm=float(options["radiance_tiff"]["fov_cm"]))
            rois_csv = path.with_name(path.stem + ".rois.csv")
        else:
            acq = read_acquisition(path, saturation_counts=options["saturation_counts"])
            rois_csv = path / "rois.csv"
        rois, names = read_roi_table(rois_csv) if rois_csv.exists() else ([], {})
        rois = rois or acq.rois
        subjects = subjects_of(acq, subject or "", sample)
        table, animals, drawn, found = analyse_acquisition(acq, rois=rois, subjects=subjects, options=options,
                                                           names=names)
    except Exception as exc:  # any failure is this sample's status; the run goes on
        return _write_failure(sample, qc.failure_reason(sample, exc), outputs)
    io.write_table(table, outputs["rois"])
    pixel_um = acq.fov_cm / acq.radiance.shape[1] * 1e4
    io.write_tiff(acq.radiance.astype(np.float32), outputs["radiance"], pixel_size_um=(None, pixel_um, pixel_um))
    # A saturated ROI's flux is too low by an unknown amount: reported, but kept out of statistics.
    saturated = []
    for animal in animals:
        hit = [name for name in table.loc[table["saturated"] & (table["subject"] == animal["subject"]), "roi"]
               if name != "background"]
        animal["status"] = "ok" if not hit else (
            f"saturated: raw counts at the camera's ceiling in {', '.join(hit)}; flux underestimated "
            "(acquire again with a shorter exposure or more binning)")
        saturated += [f"{animal['subject']} {name}" for name in hit]
    status = "ok" if not saturated else f"saturated: {', '.join(saturated)}"
    title = f"{sample}: " + ", ".join(
        f"{a['subject']} tumor {a['tumor_total_flux_p_s']:.2e} p/s" for a in animals)
    warnings = acq.warnings + found
    overlay = qc.bli_overlay(acq.radiance, acq.photograph, drawn, table, pixel_area_cm2=acq.pixel_area_cm2,
                             title=title.replace("nan", "-"))
    io.write_png(qc.with_warnings(overlay, warnings + [w for a in animals for w in a["warnings"]]), outputs["qc"])
    metrics = {"sample": sample, "status": status, "warnings": warnings, "path": str(path), "animals": animals,
               "saturated_rois": saturated, "exposure_s": acq.exposure_s, "binning": acq.binning,
               "f_number": acq.f_number, "fov_cm": acq.fov_cm, "c_ccd": acq.coefficient, "bias": acq.bias,
               "bias_source": acq.corrections.get("read_bias"), "corrections": acq.corrections,
               "measured_image": acq.image_name, "living_image_version": acq.version, "labels": acq.labels}
    io.write_json(_finite(metrics), outputs["metrics"])
    return metrics


def _finite(value):
    """NaN as null: strict JSON readers refuse NaN literals."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value


def _write_failure(sample: str, reason: str, outputs: dict) -> dict:
    return qc.write_failure(sample, reason, outputs, tables={"rois": ROI_COLUMNS}, images=("radiance",))


# --- time courses ---------------------------------------------------------------------------------

def timecourse(rois: pd.DataFrame) -> pd.DataFrame:
    """``timecourse.csv`` from the ROI rows of every acquisition (with ``subject, group,
    timepoint, roi, total_flux_p_s``): per subject and ROI, flux over time and the fold change
    from the subject's first timepoint."""
    columns = ["subject", "group", "roi", "timepoint", "total_flux_p_s", "bkg_corrected_flux_p_s",
               "avg_radiance", "fold_change", "saturated", "sample"]
    if rois.empty:
        return pd.DataFrame(columns=columns)
    rois = rois[rois["roi"] != "background"].copy()
    rois["timepoint"] = pd.to_numeric(rois["timepoint"], errors="coerce")
    rois = rois.sort_values(["subject", "roi", "timepoint"])
    first = rois.groupby(["subject", "roi"])["total_flux_p_s"].transform("first")
    rois["fold_change"] = rois["total_flux_p_s"] / first.where(first > 0)
    return rois[columns].reset_index(drop=True)
