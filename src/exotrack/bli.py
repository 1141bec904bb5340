"""Bioluminescence (IVIS): calibrated radiance, ROIs per mouse, total flux.

An acquisition folder as Living Image writes it holds the raw luminescent counts
(``luminescent.TIF``), a photograph, optionally the read bias, and two text files of blocks
(lines beginning ``***``) of ``Key:<TAB>Value`` lines with the exposure, binning, f-number, field
of view, the camera's C-ccd coefficients and the user's labels; ``AnalyzedClickInfo.txt`` also
keeps the ROIs drawn in Living Image (``ROI n:Shape=...;Xc=...;Yc=...;Width=...;Height=...;``).

Radiance (p/s/cm²/sr) is ``L = C · (I − bias) / t / b²``; an ROI's total flux (p/s) is
``4π · Σ L · A_px`` with ``A_px = (FOV / W)²``. Pixels below the bias after subtraction stay
negative: clipping them would bias every dim ROI upwards. ROIs come from ``rois.csv`` in the
folder, else from ``AnalyzedClickInfo.txt``, else automatically: the mice from the photograph
(split left to right, one subject each), hotspots as contours at a fraction of their own peak
(as Living Image's auto-ROI), and each mouse's background from its body away from hotspots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage as ndi
from skimage import draw, filters, measure, morphology, transform

from . import io, qc
from .background import pixel_noise

ROI_COLUMNS = ["subject", "roi", "total_flux_p_s", "avg_radiance", "max_radiance", "area_cm2",
               "bkg_corrected_flux_p_s", "saturated", "shape", "yc", "xc", "height", "width", "source"]
SPECIAL_ROIS = ("tumor", "lymph_node")

DEFAULTS = {
    "radiance_tiff": None,  # plain radiance TIFFs: {"fov_cm": ...}
    "hotspot_fraction": 0.05,
    "hotspot_margin_cm": 0.3,
    "hotspot_min_snr": 5.0,
    "hotspot_names": ["tumor", "lymph_node"],
    "min_mouse_area_cm2": 2.0,
    "background_margin_cm": 1.0,
    "saturation_counts": None,
}

_COEF = re.compile(r"Coef C-ccd at FOV\s*([0-9.]+)\s*,\s*f\s*([0-9.]+)\s*:\s*([-+0-9.eE]+)")
_SHAPES = {"circle": "circle", "ellipse": "ellipse", "oval": "ellipse", "square": "rect", "rectangle": "rect",
           "rect": "rect"}


# --- the acquisition folder ---------------------------------------------------------------------

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


def _lookup(blocks: dict, key: str, *, prefer: str = "lumin"):
    """A key's value, from the first block whose title contains ``prefer``, else any block."""
    ordered = sorted(blocks.items(), key=lambda item: prefer not in item[0].lower())
    for _, entries in ordered:
        for name, value in entries.items():
            if name.lower() == key.lower():
                return value
    return None


def _number(blocks, key, what, *, source) -> float:
    value = _lookup(blocks, key)
    if value is None:
        raise io.InputError(f"{source} has no '{key}' line ({what})")
    match = re.match(r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?", value)
    if not match:
        raise io.InputError(f"{source}: '{key}' is {value!r}, not a number ({what})")
    return float(match.group(0))


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
    shape: str  # circle | ellipse | rect
    yc: float
    xc: float
    height: float
    width: float
    source: str = ""
    subject: str = ""
    mask: np.ndarray | None = field(default=None, repr=False)  # automatic ROIs: the contour's pixels

    def pixels(self, image_shape) -> np.ndarray:
        if self.mask is not None:
            return self.mask
        mask = np.zeros(image_shape, bool)
        if self.shape == "rect":
            y0, y1 = self.yc - self.height / 2, self.yc + self.height / 2
            x0, x1 = self.xc - self.width / 2, self.xc + self.width / 2
            yy, xx = np.indices(image_shape)
            mask = (yy >= y0) & (yy <= y1) & (xx >= x0) & (xx <= x1)
        else:
            ry, rx = (self.height / 2, self.width / 2) if self.shape == "ellipse" else (
                (self.height + self.width) / 4,) * 2
            rr, cc = draw.ellipse(self.yc, self.xc, max(ry, 0.5), max(rx, 0.5), shape=image_shape)
            mask[rr, cc] = True
        return mask


@dataclass
class Acquisition:
    """One IVIS acquisition, calibrated."""

    radiance: np.ndarray  # p/s/cm²/sr per luminescent pixel
    counts: np.ndarray  # raw luminescent counts
    photograph: np.ndarray | None  # resampled to the luminescent grid
    fov_cm: float
    saturation_counts: float
    exposure_s: float = np.nan
    binning: int = 1
    f_number: float = np.nan
    coefficient: float = np.nan
    bias: float = 0.0
    labels: dict = field(default_factory=dict)
    rois: list[ROI] = field(default_factory=list)  # from AnalyzedClickInfo.txt

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
    return data


def read_acquisition(folder, *, saturation_counts: float | None = None) -> Acquisition:
    """Read and calibrate an IVIS acquisition folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise io.InputError(f"IVIS acquisition folder not found: {folder}" if not folder.exists() else
                            f"{folder.name} is a file, but a BLI sample is an IVIS acquisition folder")
    texts = [p for p in (_find(folder, "ClickInfo.txt"), _find(folder, "AnalyzedClickInfo.txt")) if p]
    if not texts:
        raise io.InputError(f"{folder.name} has neither ClickInfo.txt nor AnalyzedClickInfo.txt")
    blocks: dict[str, dict[str, str]] = {}
    for path in texts:  # AnalyzedClickInfo.txt (read last) holds the analysis: its values win
        for title, entries in parse_click_info(path.read_text(errors="replace")).items():
            blocks.setdefault(title, {}).update(entries)
    source = " / ".join(p.name for p in texts)
    lum_path = _find(folder, "luminescent.TIF")
    if lum_path is None:
        raise io.InputError(f"{folder.name} has no luminescent.TIF (the luminescent image)")
    counts = _read_tiff(lum_path, "luminescent image")
    exposure = _number(blocks, "Luminescent Exposure (Seconds)", "exposure time", source=source)
    binning = int(round(_number(blocks, "Binning Factor", "binning", source=source)))
    f_number = _number(blocks, "f Number", "aperture", source=source)
    fov = _number(blocks, "Field of View", "field of view in cm", source=source)
    if exposure <= 0 or binning < 1 or fov <= 0:
        raise io.InputError(f"{source}: exposure {exposure:g} s, binning {binning}, field of view {fov:g} cm "
                            "are not all positive")
    coefficient = next((c for v, f, c in coefficients(blocks)
                        if abs(v - fov) < 0.05 and abs(f - f_number) < 0.05), None)
    if coefficient is None:
        raise io.InputError(f"{source} has no calibration line 'Coef C-ccd at FOV {fov:g}, f{f_number:g}' "
                            "for this acquisition's field of view and f-number")
    bias_path = _find(folder, "readbiasonly.TIF")
    bias = float(_read_tiff(bias_path, "read bias").mean()) if bias_path else 0.0
    if saturation_counts is None:
        saturation_counts = float(np.iinfo(counts.dtype).max) if np.issubdtype(counts.dtype, np.integer) else np.inf
    try:  # a few saturated pixels are flagged on their ROI; a mostly saturated image is refused
        io.check_pixels(counts, ceiling=saturation_counts)
    except io.InputError as exc:
        raise io.InputError(f"{lum_path.name} (luminescent image): {exc}") from None
    counts = counts.astype(np.float64)
    radiance = coefficient * (counts - bias) / exposure / binning ** 2
    photo_path = _find(folder, "photograph.TIF")
    photograph = None
    if photo_path is not None:
        photo = _read_tiff(photo_path, "photograph").astype(np.float32)
        photograph = transform.resize(photo, counts.shape, order=1, anti_aliasing=True, preserve_range=True)
    labels = next((entries for title, entries in blocks.items() if "user label" in title.lower()), {})
    acquisition = Acquisition(radiance, counts, photograph, fov, saturation_counts, exposure, binning, f_number,
                              coefficient, bias, dict(labels))
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
    return Acquisition(data, data, None, fov_cm, np.inf)


def _click_info_rois(blocks, *, fov_cm: float, width_px: int) -> list[ROI]:
    """ROIs stored by Living Image: ``ROI n:Key=Value;...`` lines; positions in pixels of
    ``cm per pixel`` (the luminescent image's pixels where that is absent), continuous
    coordinates with the first pixel spanning 0 to 1."""
    rois = []
    pixel_cm = fov_cm / width_px
    for entries in blocks.values():
        for key, value in entries.items():
            if not re.fullmatch(r"ROI\s*\d+", key):
                continue
            fields = dict(part.split("=", 1) for part in value.split(";") if "=" in part)
            try:
                scale = float(fields.get("cm per pixel", pixel_cm)) / pixel_cm
                shape = _SHAPES.get(fields.get("Shape", "").strip().lower())
                if shape is None:
                    raise ValueError(f"shape {fields.get('Shape')!r}")
                kind = fields.get("ROI Type", "")
                name = "background" if "bkg" in kind.lower() else fields.get("Label", key).strip()
                # Living Image's positions are continuous (a pixel's centre at +0.5), ours are
                # pixel centres from 0.
                rois.append(ROI(name, shape, float(fields["Yc"]) * scale - 0.5, float(fields["Xc"]) * scale - 0.5,
                                float(fields["Height"]) * scale, float(fields["Width"]) * scale,
                                source="AnalyzedClickInfo.txt"))
            except (KeyError, ValueError) as exc:
                raise io.InputError(f"AnalyzedClickInfo.txt: cannot read {key} ({exc})") from None
    return rois


def read_roi_table(path) -> list[ROI]:
    """``rois.csv``: ``roi, shape, yc, xc, height, width`` (luminescent pixels), optional
    ``subject``."""
    table = pd.read_csv(path)
    missing = {"roi", "shape", "yc", "xc", "height", "width"} - set(table.columns)
    if missing:
        raise io.InputError(f"rois.csv lacks column(s) {', '.join(sorted(missing))}")
    rois = []
    for row in table.itertuples():
        shape = _SHAPES.get(str(row.shape).strip().lower())
        if shape is None:
            raise io.InputError(f"rois.csv row {row.Index + 2}: shape {row.shape!r} is not circle, ellipse or rect")
        rois.append(ROI(str(row.roi), shape, float(row.yc), float(row.xc), float(row.height), float(row.width),
                        source="rois.csv", subject=str(getattr(row, "subject", "") or "")))
    return rois


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


def automatic_rois(acq: Acquisition, *, options: dict, subjects: list[str]) -> list[ROI]:
    """Mice from the photograph, named by ``subjects`` left to right; each mouse's hotspots
    named by ``hotspot_names`` from the largest total flux down (then ``hotspot_3``, ...), and its
    ``background``: the farther half of the body beyond ``background_margin_cm`` from every hotspot."""
    pixel_cm = acq.fov_cm / acq.radiance.shape[1]
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
                            mask=background))
    return rois


# --- measurement ----------------------------------------------------------------------------------

def measure_rois(acq: Acquisition, rois: list[ROI]) -> pd.DataFrame:
    """``rois.csv``: per ROI total flux (``4π Σ L A_px``), mean and max radiance, area,
    background-corrected flux (minus ``4π`` × the mouse's background radiance × area) and
    whether any pixel reached the camera's ceiling."""
    area_px = acq.pixel_area_cm2
    rows, background = [], {}
    for roi in rois:
        mask = roi.pixels(acq.radiance.shape)
        values = acq.radiance[mask]
        row = {"subject": roi.subject, "roi": roi.name, "shape": roi.shape, "yc": roi.yc, "xc": roi.xc,
               "height": roi.height, "width": roi.width, "source": roi.source,
               "area_cm2": mask.sum() * area_px,
               "total_flux_p_s": 4 * np.pi * values.sum() * area_px if values.size else np.nan,
               "avg_radiance": values.mean() if values.size else np.nan,
               "max_radiance": values.max() if values.size else np.nan,
               "saturated": bool(values.size and (acq.counts[mask] >= acq.saturation_counts).any())}
        if roi.name == "background":
            background[roi.subject] = row["avg_radiance"]
        rows.append(row)
    for row in rows:
        level = background.get(row["subject"], background.get("", np.nan))
        row["bkg_corrected_flux_p_s"] = (row["total_flux_p_s"] - 4 * np.pi * level * row["area_cm2"]
                                         if np.isfinite(level) else np.nan)
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


def analyse_acquisition(acq: Acquisition, *, rois: list[ROI] | None, subjects: list[str], options: dict):
    """ROI table and per-animal headline metrics of an acquisition.

    Given ROIs (``rois.csv`` or Living Image's) are used as they are, with a background ROI
    named ``background`` if one is given, else the automatic one; otherwise all ROIs are
    automatic.
    """
    options = {**DEFAULTS, **options}
    auto = automatic_rois(acq, options=options, subjects=subjects)
    if rois:
        given = [replace(r, subject=r.subject or (subjects[0] if len(subjects) == 1 else "")) for r in rois]
        outside = [r.name for r in given if not r.pixels(acq.radiance.shape).any()]
        if outside:
            raise io.InputError(f"ROI(s) {', '.join(map(repr, outside))} lie outside the luminescent image "
                                f"({acq.radiance.shape[0]} x {acq.radiance.shape[1]} pixels)")
        stray = sorted({r.subject for r in given if r.subject not in subjects and r.name != "background"})
        if stray:  # measured, they would belong to no mouse and leave its flux silently empty
            raise io.InputError(
                f"the ROIs name subject(s) {', '.join(map(repr, stray))}, but this acquisition's animal(s) are "
                f"{', '.join(map(repr, subjects))} (from the sheet's subject column, else the Animal Number "
                "label, else the sample id); make the two agree")
        if not any(r.name == "background" for r in given):
            given += [r for r in auto if r.name == "background"]
        rois = given
    else:
        rois = auto
    table = measure_rois(acq, rois)
    animals = []
    for subject in subjects:
        own = table[table["subject"] == subject]
        metrics = {"subject": subject}
        for name in SPECIAL_ROIS:
            hit = own[own["roi"] == name]
            metrics[f"{name}_total_flux_p_s"] = float(hit["total_flux_p_s"].sum()) if len(hit) else np.nan
            metrics[f"{name}_avg_radiance"] = float(hit["avg_radiance"].mean()) if len(hit) else np.nan
            metrics[f"{name}_saturated"] = bool(hit["saturated"].any()) if len(hit) else False
        animals.append(metrics)
    return table, animals, rois


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
        rois = read_roi_table(rois_csv) if rois_csv.exists() else acq.rois
        subjects = subjects_of(acq, subject or "", sample)
        table, animals, drawn = analyse_acquisition(acq, rois=rois, subjects=subjects, options=options)
    except Exception as exc:  # any failure is this sample's status; the run goes on
        return _write_failure(sample, qc.failure_reason(sample, exc), outputs)
    io.write_table(table, outputs["rois"])
    io.write_tiff(acq.radiance.astype(np.float32), outputs["radiance"],
                  pixel_size_um=(None, acq.fov_cm / acq.radiance.shape[0] * 1e4, acq.fov_cm / acq.radiance.shape[1] * 1e4))
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
    warnings = []
    overlay = qc.bli_overlay(acq.radiance, acq.photograph, drawn, table, pixel_area_cm2=acq.pixel_area_cm2,
                             title=title.replace("nan", "-"))
    io.write_png(qc.with_warnings(overlay, warnings), outputs["qc"])
    metrics = {"sample": sample, "status": status, "warnings": warnings, "path": str(path), "animals": animals,
               "saturated_rois": saturated, "exposure_s": acq.exposure_s, "binning": acq.binning,
               "f_number": acq.f_number, "fov_cm": acq.fov_cm, "c_ccd": acq.coefficient, "bias": acq.bias,
               "labels": acq.labels}
    io.write_json(metrics, outputs["metrics"])
    return metrics


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
