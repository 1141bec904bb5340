"""Histology: marker-positive macrophages (CD206 for M2, NOS2 for M1) in tissue sections.

Brightfield IHC (DAB with a hematoxylin counterstain) is separated into stains by colour
deconvolution (Ruifrok & Johnston 2001) with QuPath's default H-DAB vectors, or with vectors
estimated from the slide itself (Macenko et al. 2009) when its stains differ. Immunofluorescence
sections (a nuclear channel and a marker channel) take the same per-cell path after that step.

Cells follow QuPath's positive cell detection: nuclei on the hematoxylin (or nuclear) channel,
cells as nuclei expanded by a fixed distance, the marker measured in the compartment where it
lives (the nucleus for Ki67 or FOXP3, the membrane or cytoplasm for CD206, NOS2 or CD68: by
marker name unless the config says otherwise), and each cell classed negative, 1+, 2+ or 3+ by
thresholds on that mean. Nuclei are found whether DAB-stained or not: for a nuclear marker the
nucleus channel is hematoxylin or DAB, whichever is stronger, with DAB capped at a hematoxylin
nucleus's level so that dark brown nuclei neither hide nor outshine the pale blue ones; the
nucleus size is measured on the section (the config's value is the starting guess). From the
classes: positive %, positive cells per mm² of tissue and the H-score (``1·%1+ + 2·%2+ + 3·%3+``, 0-300).

Whole slides are read tile by tile (pyramidal TIFF / OME-TIFF through tifffile's Zarr store), so
memory is bounded by the tile size, not the slide: one pass builds a thumbnail (tissue mask,
background light level, stain vectors, QC image); a second analyses each tile that holds tissue,
with a margin wide enough for a cell, keeping the cells whose nucleus centre lies in the tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage as ndi
from skimage import filters, morphology, segmentation

from . import io, progress, qc
from .background import background_surface, block_reduce_mean, pixel_noise
from .sheet import parse_channels, parse_pixel_size

# QuPath's "H-DAB default" stain vectors (optical density per R, G, B, unit length).
HEMATOXYLIN = np.array([0.651, 0.701, 0.290])
DAB = np.array([0.269, 0.568, 0.778])

SUMMARY_COLUMNS = ["marker", "n_cells", "n_positive", "positive_pct", "positive_cells_per_mm2",
                   "dab_area_fraction", "h_score", "tissue_area_mm2", "n_1plus", "n_2plus", "n_3plus"]
CELL_COLUMNS = ["cell_id", "y", "x", "area_um2", "nucleus_area_um2", "marker_mean", "class", "positive"]
CLASS_NAMES = ["negative", "1+", "2+", "3+"]

DEFAULTS = {
    "pixel_size_um": None,
    "stain_vectors": "auto",
    "channels": {"nuclei": "DAPI", "marker": 1},
    "nucleus_diameter_um": 7.0,
    "cell_expansion_um": 5.0,
    "compartment": "auto",
    "compartments": {},
    "dab_thresholds": [0.2, 0.4, 0.6],
    "fluorescence_thresholds": [2.0, 3.0, 5.0],
    "tissue_min_od": 0.08,
    "tile_px": 1024,
}

_NUCLEUS_WORKING_PX = 24  # pixels across a nucleus at the resolution nuclei are found at
_THUMB_SIDE = 1024  # longest side of the overview that tissue detection and QC use
_SUFFIXES_PIL = {".jpg", ".jpeg", ".png", ".bmp"}
# Estimated stain vectors further than this from the defaults are taken for a failed estimate.
_MAX_STAIN_ANGLE_DEG = 25.0

# Where each marker lives, by its name in the sample sheet (lower case, without spaces, dashes
# or slashes). Nuclear: proliferation and transcription factors; membrane: surface receptors;
# cytoplasm (the ring between nucleus and membrane, membrane included): enzymes, lysosomal and
# endosomal proteins. Unknown markers are measured over the cytoplasm,
# with a warning.
MARKER_COMPARTMENTS = {
    **dict.fromkeys(["ki67", "mib1", "foxp3", "pcna", "p53", "er", "pr", "ar", "tbet", "gata3", "irf4",
                     "irf8", "pax5", "cmyc", "ttf1", "sox10", "ph3", "brdu", "edu", "p16", "cyclind1"],
                    "nucleus"),
    **dict.fromkeys(["cd3", "cd4", "cd8", "cd20", "cd45", "cd11b", "cd11c", "cd163",
                     "f480", "her2", "egfr", "pdl1", "pd1", "cd31", "ecadherin", "cd44", "lyve1"],
                    "membrane"),
    # CD206 sits on the membrane and in endosomes: its IHC fills the cytoplasm ring.
    **dict.fromkeys(["cd206", "mrc1", "nos2", "inos", "cd68", "arg1", "iba1", "mpo", "cd107a", "lamp1", "granzymeb",
                     "ck", "panck", "cytokeratin", "vimentin", "sma", "desmin", "dab"], "cytoplasm"),
}
# A section with fewer cells than this gives a positive % too coarse to report without a warning.
_MIN_CELLS = 50
_MIN_TISSUE_MM2 = 0.005


@dataclass
class Section:
    """A section image opened for reading regions; pixels stay on disk until read.

    ``read(y0, y1, x0, x1)`` returns ``(rows, columns, channels)`` as float32.
    """

    path: Path
    shape: tuple[int, int]
    channel_names: list[str]
    brightfield: bool
    pixel_size_um: float | None
    dtype: np.dtype = np.dtype(np.uint8)
    _array: object = field(repr=False, default=None)
    _order: tuple = field(repr=False, default=(0, 1, 2))
    _store: object = field(repr=False, default=None)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        index = {0: slice(y0, y1), 1: slice(x0, x1), 2: slice(None)}
        try:
            region = np.asarray(self._array[tuple(index[axis] for axis in self._order)])
        except Exception as exc:  # a damaged tile shows only when it is decoded
            raise io.unreadable(self.path, "TIFF image", exc) from exc
        region = np.moveaxis(region, [0, 1, 2], list(self._order)).astype(np.float32)
        if self.brightfield and region.shape[-1] == 4:  # transparency on white, as bare glass
            white = float(np.iinfo(self.dtype).max) if np.issubdtype(self.dtype, np.integer) else 1.0
            alpha = region[..., 3:] / white
            region = region[..., :3] * alpha + white * (1 - alpha)
        return region

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def open_section(path) -> Section:
    """Open a brightfield RGB or multichannel fluorescence section (TIFF, OME-TIFF, pyramidal
    TIFF, JPEG or PNG) without reading its pixels (JPEG/PNG are read whole)."""
    path = io.check_file(path)
    if path.suffix.lower() in _SUFFIXES_PIL:
        rgb = _read_colour_picture(path)
        return Section(path, rgb.shape[:2], ["R", "G", "B"], True, None, rgb.dtype, rgb)
    try:
        tif = tifffile.TiffFile(path)
        series = tif.series[0]
        axes = series.axes.replace("S", "C")
        names, sizes, _ = io.tiff_metadata(tif)
        photometric = series.keyframe.photometric
        dtype = series.dtype
        store = tif.aszarr(series=0, level=0)
        import zarr

        array = zarr.open(store, mode="r")
    except Exception as exc:
        raise io.unreadable(path, "TIFF image", exc) from exc
    finally:
        if "tif" in locals():
            tif.close()
    shape = dict(zip(axes, series.shape))
    extra = {a: n for a, n in shape.items() if a not in "YXC" and n > 1}
    if extra or not {"Y", "X"} <= set(axes):
        raise io.InputError(f"a section must be one 2-D plane (axes Y, X and channels); this file has "
                            f"axes {series.axes!r} with shape {tuple(series.shape)}")
    keep = [a for a in axes if a in "YXC"]
    if len(keep) != len(axes):  # singleton T/Z axes: index them away
        array = _Squeezed(array, [a in "YXC" for a in axes])
    n_channels = shape.get("C", 1)
    order = tuple("YXC".index(a) for a in keep) if "C" in keep else None
    if order is None:
        array, order = _Squeezed(array, [True] * len(keep), add_channel=True), (0, 1, 2)
    # An RGB TIFF is a brightfield colour image whatever its bit depth (scanners also write 16 bits).
    brightfield = photometric == tifffile.PHOTOMETRIC.RGB and n_channels in (3, 4) and np.issubdtype(
        dtype, np.integer)
    if brightfield:
        names = ["R", "G", "B"]  # an alpha channel is composited away when read
    elif len(names) != n_channels:
        names = [str(i) for i in range(n_channels)]
    return Section(path, (shape["Y"], shape["X"]), names, brightfield, sizes[2], np.dtype(dtype), array, order,
                   store)


def _read_colour_picture(path: Path) -> np.ndarray:
    """A JPEG/PNG/BMP as 8-bit RGB, transparency composited on white (bare glass, as a slide
    scanner shows it); a greyscale picture is refused, since stains are told apart by colour."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as image:
            mode = image.mode
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
                rgba = np.asarray(image.convert("RGBA"), np.float32)
                alpha = rgba[..., 3:] / 255.0
                rgb = np.round(rgba[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
            else:
                rgb = np.asarray(image.convert("RGB"))
    except Exception as exc:
        raise io.unreadable(path, "image", exc) from exc
    if mode in ("1", "L", "LA", "I", "I;16", "F") or (
            np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
        raise io.InputError(f"{path.name} is a greyscale picture (mode {mode}): brightfield IHC is analysed "
                            "by colour (hematoxylin blue, DAB brown), so save the colour (RGB) image from the "
                            "microscope or scanner")
    return rgb


class _Squeezed:
    """Indexes an array that has extra singleton axes (or lacks a channel axis) as if it did not."""

    def __init__(self, array, keep: list[bool], *, add_channel: bool = False):
        self.array, self.keep, self.add_channel = array, keep, add_channel

    def __getitem__(self, index):
        index = list(index)
        if self.add_channel:
            index = index[:-1]
        full, it = [], iter(index)
        for kept in self.keep:
            full.append(next(it) if kept else 0)
        region = np.asarray(self.array[tuple(full)])
        return region[..., None] if self.add_channel else region


# --- stains -------------------------------------------------------------------------------------

def optical_density(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Optical density ``log10(I0 / I)`` per channel; ``background`` is the light level ``I0``."""
    return np.log10(np.asarray(background, np.float32) / np.maximum(rgb[..., :3], 1.0)).clip(0)


def stain_matrix(hematoxylin=HEMATOXYLIN, dab=DAB) -> np.ndarray:
    """Rows: hematoxylin, DAB and the residual (their normalised cross product), unit length."""
    h = np.asarray(hematoxylin, float) / np.linalg.norm(hematoxylin)
    d = np.asarray(dab, float) / np.linalg.norm(dab)
    residual = np.cross(h, d)
    return np.stack([h, d, residual / np.linalg.norm(residual)])


def deconvolve(od: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Stain amounts ``(..., 3)`` (hematoxylin, DAB, residual) in optical-density units."""
    return (od.reshape(-1, 3) @ np.linalg.inv(matrix)).reshape(od.shape).astype(np.float32)


def estimate_stain_vectors(od: np.ndarray, *, min_od: float = 0.5, percentile: float = 1.0):
    """Hematoxylin and DAB vectors of a slide by Macenko's method, from optical densities
    ``(n, 3)`` of tissue pixels.

    The pixels' OD vectors are projected on the plane of their two main directions; the stains
    are the directions at the ``percentile`` and ``100 - percentile`` extremes of angle in that
    plane. Returns ``(hematoxylin, dab)`` or ``None`` where the slide does not show two stains.
    """
    od = od[od.sum(axis=1) > min_od]
    if len(od) < 100:
        return None
    _, vectors = np.linalg.eigh(np.cov(od, rowvar=False))
    plane = vectors[:, [2, 1]]
    plane *= np.sign(plane.sum(axis=0, keepdims=True) + 1e-12)
    projected = od @ plane
    angle = np.arctan2(projected[:, 1], projected[:, 0])
    lo, hi = np.percentile(angle, [percentile, 100 - percentile])
    candidates = [np.abs(plane @ np.array([np.cos(a), np.sin(a)])) for a in (lo, hi)]
    candidates = [v / np.linalg.norm(v) for v in candidates]
    # The candidate nearer the default hematoxylin direction is hematoxylin.
    if candidates[0] @ HEMATOXYLIN < candidates[1] @ HEMATOXYLIN:
        candidates.reverse()
    return candidates[0], candidates[1]


def angle_deg(a, b) -> float:
    """Angle in degrees between two stain (optical-density) vectors."""
    cosine = np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)
    return float(np.degrees(np.arccos(cosine)))


def choose_stain_vectors(od: np.ndarray, setting) -> tuple[np.ndarray, str]:
    """Stain matrix for a slide and how it was chosen.

    ``setting`` is ``"default"`` (QuPath's H-DAB), ``"estimate"`` (Macenko, the defaults when the
    slide shows too little of either stain), ``"auto"`` (the estimate where it lies within 25° of
    the defaults, which guards against a slide with almost no DAB) or two explicit RGB vectors.
    """
    if isinstance(setting, (list, tuple)):
        return stain_matrix(*setting), "given"
    if setting == "default":
        return stain_matrix(), "default"
    found = estimate_stain_vectors(od)
    if found is None:
        return stain_matrix(), "default (too little stain to estimate)"
    if setting == "auto" and max(angle_deg(found[0], HEMATOXYLIN), angle_deg(found[1], DAB)) > _MAX_STAIN_ANGLE_DEG:
        return stain_matrix(), "default (estimate too far from H-DAB)"
    if angle_deg(found[0], found[1]) < 5:
        return stain_matrix(), "default (stains not separable)"
    return stain_matrix(*found), "estimated"


def background_light(rgb: np.ndarray, *, white: float = 255.0) -> np.ndarray:
    """Light level ``I0`` per channel: the brightest pixels where the slide shows bare glass,
    else ``white`` (the camera's full scale: 255 for 8 bits), as QuPath assumes."""
    flat = rgb.reshape(-1, rgb.shape[-1])[:, :3]
    brightness = flat.mean(axis=1)
    top = flat[brightness >= np.percentile(brightness, 99)]
    estimate = np.median(top, axis=0)
    return estimate if estimate.mean() >= 215 / 255 * white else np.full(3, float(white))


# --- tissue -------------------------------------------------------------------------------------

def tissue_mask(density: np.ndarray, *, pixel_size_um: float, min_density: float,
                min_area_um2: float = 2500.0) -> np.ndarray:
    """Tissue in an overview image: where ``density`` (summed optical density for brightfield,
    normalised nuclear signal for fluorescence) smoothed over about 10 µm exceeds
    ``min_density``; specks smaller than ``min_area_um2`` dropped and holes that small filled."""
    smooth = ndi.gaussian_filter(density, max(10.0 / pixel_size_um, 0.5))
    mask = smooth > min_density
    area_px = max(int(min_area_um2 / pixel_size_um ** 2), 1)
    mask = morphology.remove_small_objects(mask, max_size=area_px)
    return morphology.remove_small_holes(mask, max_size=area_px)


def _fluorescence_density(nuclear: np.ndarray, *, pixel_size_um: float, nucleus_diameter_um: float):
    """Nuclear signal smoothed over a few nuclei and scaled so that tissue is near 1 and empty
    slide near 0; all ones where the image has no empty region (a field inside tissue)."""
    smooth = ndi.gaussian_filter(nuclear, max(2 * nucleus_diameter_um / pixel_size_um, 0.5))
    lo, hi = np.percentile(smooth, [1, 99])
    if hi <= lo:
        return np.ones_like(smooth)
    otsu = filters.threshold_otsu(smooth)
    dark, bright = smooth[smooth <= otsu], smooth[smooth > otsu]
    if bright.size == 0 or dark.mean() - lo > 0.2 * (bright.mean() - lo):
        return np.ones_like(smooth)
    return (smooth - lo) / (bright.mean() - lo)


# --- cells --------------------------------------------------------------------------------------

def classify(values: np.ndarray, thresholds) -> np.ndarray:
    """0 (negative), 1, 2 or 3 (+) per value, by the three ascending ``thresholds``."""
    return np.searchsorted(np.asarray(thresholds, float), values, side="right").astype(np.int8)


def detect_nuclei(nuclear: np.ndarray, *, pixel_size_um: float, nucleus_diameter_um: float,
                  min_snr: float = 5.0) -> np.ndarray:
    """Label image of the nuclei on a nuclear-stain image (optical density or fluorescence).

    Parameters
    ----------
    nuclear : ndarray
        2-D nuclear stain, bright (or dense) where nuclei are.
    pixel_size_um : float
        Pixel size.
    nucleus_diameter_um : float
        Typical nucleus diameter: sets the working resolution, the smoothing, the depth of a split
        and the smallest nucleus kept (a sixth of the typical area).
    min_snr : float
        Nuclei must exceed the background by this many noise standard deviations.

    Returns
    -------
    ndarray of int32, the input's shape.

    Notes
    -----
    The mask takes everything above the background (the median below Otsu's threshold) by a fifth
    of the typical nucleus level, so pale nuclei stay whole beside dark ones. Touching nuclei are
    split at each distance-transform maximum at least 4 % of a diameter deep: a shallower one is
    an outline's irregularity, a deeper one the neck between two nuclei (dense lymphoid tissue
    and epithelium pack nuclei edge to edge). Each nucleus is then trimmed to a quarter of its
    own peak, so that a pale nucleus's outline sits where a dark one's does.
    """
    shape = nuclear.shape
    factor = max(1, int(nucleus_diameter_um / pixel_size_um / _NUCLEUS_WORKING_PX))
    spacing = pixel_size_um * factor
    radius_px = nucleus_diameter_um / 2 / spacing
    image = block_reduce_mean(nuclear.astype(np.float32), (factor, factor))[0] if factor > 1 else (
        nuclear.astype(np.float32))
    image = image - background_surface(image)
    sigma = max(radius_px / 6, 0.5)
    smooth = ndi.gaussian_filter(image, sigma)
    noise = pixel_noise(image) * min(1.0, 1 / (2 * np.sqrt(np.pi) * sigma))
    otsu = filters.threshold_otsu(smooth) if np.ptp(smooth) > 0 else np.inf
    below = smooth[smooth < otsu]
    signal = smooth - (float(np.median(below)) if below.size else 0.0)
    core = smooth > otsu
    level = float(np.median(signal[core])) if core.any() else 0.0
    if level < min_snr * noise:
        return np.zeros(shape, np.int32)
    mask = signal > max(min_snr * noise, 0.2 * level)
    min_area = max(int(np.pi * radius_px ** 2 / 6), 1)
    mask = morphology.remove_small_objects(mask, max_size=min_area)
    distance = ndi.gaussian_filter(ndi.distance_transform_edt(mask) * spacing, 1.0)
    components, _ = ndi.label(mask)
    peaks = np.zeros(mask.shape, bool)
    for index, box in enumerate(ndi.find_objects(components), start=1):
        if box is not None:
            inside = components[box] == index
            peaks[box] |= morphology.h_maxima(np.where(inside, distance[box], 0),
                                              0.04 * nucleus_diameter_um).astype(bool) & inside
    labels = segmentation.watershed(-distance, ndi.label(peaks)[0], mask=mask)
    n = int(labels.max())
    if n:
        peak = np.asarray(ndi.maximum(signal, labels, index=np.arange(n + 1)))
        labels = np.where(signal >= 0.25 * peak[labels], labels, 0)
        area = np.bincount(labels.ravel(), minlength=n + 1)
        keep = area >= min_area
        keep[0] = False
        labels = segmentation.relabel_sequential(np.where(keep[labels], labels, 0))[0]
    if factor > 1:
        labels = labels.repeat(factor, axis=0).repeat(factor, axis=1)[:shape[0], :shape[1]]
    return labels.astype(np.int32)


def nucleus_diameter(labels: np.ndarray, *, pixel_size_um: float) -> tuple[float, int]:
    """Median equivalent diameter (µm) of the nuclei in a label image, and how many there are."""
    area = np.bincount(labels.ravel())[1:]
    area = area[area > 0]
    if area.size == 0:
        return float("nan"), 0
    return float(2 * np.sqrt(np.median(area) / np.pi) * pixel_size_um), int(area.size)


def nucleus_channel(hematoxylin: np.ndarray, dab: np.ndarray, *, compartment: str,
                    dab_cap: float) -> np.ndarray:
    """The image nuclei are found on, from the stain amounts of a brightfield section.

    For a nuclear marker a positive nucleus holds DAB, which may hide its hematoxylin: the
    channel is hematoxylin or DAB, whichever is stronger, DAB capped at ``dab_cap`` (a fraction
    of a hematoxylin nucleus's level), so that a brown nucleus counts as a nucleus but cannot
    outshine the pale blue ones and drag the detection threshold above them. For a membrane or
    cytoplasm marker the DAB lies around the nucleus and only hematoxylin marks it.
    """
    hematoxylin = np.clip(hematoxylin, 0, None)
    if compartment != "nucleus":
        return hematoxylin
    return np.maximum(hematoxylin, np.clip(dab, 0, dab_cap))


def marker_compartment(marker: str, options: dict) -> tuple[str, str]:
    """Where ``marker`` is measured, and why: the config's ``compartments`` entry for it, the
    config's ``compartment`` unless ``auto``, else :data:`MARKER_COMPARTMENTS` by name."""
    key = "".join(ch for ch in str(marker or "").lower() if ch.isalnum())
    given = {"".join(ch for ch in str(k).lower() if ch.isalnum()): v
             for k, v in (options.get("compartments") or {}).items()}
    if key in given:
        return given[key], "config (histology.compartments)"
    if options.get("compartment", "auto") != "auto":
        return options["compartment"], "config (histology.compartment)"
    if key in MARKER_COMPARTMENTS:
        return MARKER_COMPARTMENTS[key], f"default for {marker}"
    return "cytoplasm", "unknown marker"


def measure_cells(nuclear: np.ndarray, marker: np.ndarray, tissue: np.ndarray, *, pixel_size_um: float,
                  nucleus_diameter_um: float, cell_expansion_um: float, compartment: str,
                  drop_marker_dominated: bool = False) -> pd.DataFrame:
    """Cells of one region: nuclei on ``nuclear`` inside ``tissue``, cells grown from them, the
    mean of ``marker`` in each cell's ``compartment``: ``nucleus``, ``cytoplasm`` (the cell
    outside its nucleus), ``membrane`` (the cytoplasm's outer micrometre) or ``cell`` (all of
    it); a cell whose compartment is empty falls back to the whole cell. With
    ``drop_marker_dominated`` (brightfield, marker outside the nucleus), "nuclei" whose mean
    marker is over twice their mean nuclear stain are dropped: they are dark DAB membranes whose
    colour leaks into the hematoxylin channel, not nuclei.

    Returns a table with ``y, x`` (nucleus centre, pixels), ``area_um2``, ``nucleus_area_um2``
    and ``marker_mean``.
    """
    nuclei = detect_nuclei(np.where(tissue, nuclear, 0).astype(np.float32), pixel_size_um=pixel_size_um,
                           nucleus_diameter_um=nucleus_diameter_um)
    if drop_marker_dominated and nuclei.max():
        index = np.arange(int(nuclei.max()) + 1)
        dominated = np.asarray(ndi.mean(marker, nuclei, index)) > 2 * np.asarray(ndi.mean(nuclear, nuclei, index))
        dominated[0] = False
        nuclei = np.where(dominated[nuclei], 0, nuclei)
    cells = segmentation.expand_labels(nuclei, distance=cell_expansion_um / pixel_size_um)
    n = int(cells.max())
    if n == 0:
        return pd.DataFrame(columns=["y", "x", "area_um2", "nucleus_area_um2", "marker_mean"])
    cytoplasm = np.where(nuclei > 0, 0, cells)
    if compartment == "membrane":
        border = segmentation.find_boundaries(cells, mode="inner")
        near = ndi.distance_transform_edt(~border) * pixel_size_um <= 1.0
        region = np.where(near, cytoplasm, 0)
    else:
        region = {"cytoplasm": cytoplasm, "cell": cells, "nucleus": nuclei}[compartment]
    counts = np.bincount(region.ravel(), minlength=n + 1)
    sums = np.bincount(region.ravel(), weights=marker.ravel(), minlength=n + 1)
    cell_counts = np.bincount(cells.ravel(), minlength=n + 1)
    cell_sums = np.bincount(cells.ravel(), weights=marker.ravel(), minlength=n + 1)
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), cell_sums / np.maximum(cell_counts, 1))
    nucleus_counts = np.bincount(nuclei.ravel(), minlength=n + 1)
    yy, xx = np.indices(nuclei.shape)
    y = np.bincount(nuclei.ravel(), weights=yy.ravel(), minlength=n + 1) / np.maximum(nucleus_counts, 1)
    x = np.bincount(nuclei.ravel(), weights=xx.ravel(), minlength=n + 1) / np.maximum(nucleus_counts, 1)
    area = pixel_size_um ** 2
    keep = cell_counts[1:] > 0
    return pd.DataFrame({"y": y[1:], "x": x[1:], "area_um2": cell_counts[1:] * area,
                         "nucleus_area_um2": nucleus_counts[1:] * area, "marker_mean": mean[1:]})[keep]


# --- a whole section ----------------------------------------------------------------------------

@dataclass
class Overview:
    """What the first pass over a section learns."""

    factor: int  # overview pixel = factor x factor section pixels
    image: np.ndarray  # (rows, columns, channels), block means
    tissue: np.ndarray  # bool, overview pixels
    light: np.ndarray | None = None  # brightfield I0 per channel
    matrix: np.ndarray | None = None  # brightfield stain matrix
    stain_source: str = ""
    background: float = 1.0  # fluorescence: marker level of unstained tissue above ``dark``
    dark: float = 0.0  # fluorescence: camera offset
    compartment: str = "cytoplasm"  # where the marker is measured
    dab_cap: float = np.inf  # brightfield, nuclear marker: DAB's cap in the nucleus channel
    nucleus_diameter_um: float = 7.0  # measured on the section (the config's where it cannot be)
    cell_expansion_um: float = 5.0  # measured on the stained cells (the config's where it cannot be)
    warnings: list = field(default_factory=list)


def _tiles(shape, size):
    for y0 in range(0, shape[0], size):
        for x0 in range(0, shape[1], size):
            yield y0, min(y0 + size, shape[0]), x0, min(x0 + size, shape[1])


def overview(section: Section, *, roles: dict[str, int], pixel_size_um: float, options: dict) -> Overview:
    """First pass: a block-averaged overview of the section and what follows from it."""
    factor = max(1, math.ceil(max(section.shape) / _THUMB_SIDE))
    rows, cols = (math.ceil(n / factor) for n in section.shape)
    image = np.zeros((rows, cols, len(section.channel_names)), np.float32)
    step = factor * max(1, 1024 // factor)
    for y0, y1, x0, x1 in _tiles(section.shape, step):
        block = section.read(y0, y1, x0, x1)
        image[y0 // factor: math.ceil(y1 / factor), x0 // factor: math.ceil(x1 / factor)] = block_reduce_mean(
            block, (factor, factor, 1))[0]
    ceiling = np.iinfo(section.dtype).max if np.issubdtype(section.dtype, np.integer) else None
    # Bare glass may sit at the camera's white, so a brightfield slide is refused as saturated only
    # when every pixel is.
    io.check_pixels(image, ceiling=ceiling, max_saturated_fraction=1.0 if section.brightfield else 0.05)
    size = pixel_size_um * factor
    if section.brightfield:
        light = background_light(image, white=_camera_white(image, section.dtype))
        od = optical_density(image, light)
        tissue = tissue_mask(od.sum(axis=-1), pixel_size_um=size, min_density=options["tissue_min_od"])
        matrix, source = choose_stain_vectors(od[tissue], options["stain_vectors"])
        return Overview(factor, image, tissue, light, matrix, source)
    nuclear, marker = image[..., roles["nuclei"]], image[..., roles["marker"]]
    density = _fluorescence_density(nuclear, pixel_size_um=size, nucleus_diameter_um=options["nucleus_diameter_um"])
    tissue = tissue_mask(density, pixel_size_um=size, min_density=0.3)
    # The camera's offset, measured on bare slide where there is some; none can be told apart
    # inside tissue, so a field without bare slide is taken as offset-free.
    dark = float(np.median(marker[~tissue])) if np.mean(~tissue) > 0.01 else 0.0
    background = (float(np.median(marker[tissue])) if tissue.any() else float(np.median(marker))) - dark
    if background <= 0:
        raise io.InputError("the marker channel is empty (no signal above the slide's dark level in the tissue)")
    return Overview(factor, image, tissue, background=background, dark=dark)


def _camera_white(image: np.ndarray, dtype) -> float:
    """Full scale of the camera that took a brightfield image: the smallest of 8, 10, 12, 14 or 16
    bits that holds its brightest pixel (16-bit files often carry 12-bit data)."""
    if not np.issubdtype(dtype, np.integer) or np.dtype(dtype).itemsize == 1:
        return 255.0
    top = float(np.max(image[..., :3]))
    return float(next((2 ** bits - 1 for bits in (8, 10, 12, 14, 16) if top <= 2 ** bits - 1), 65535))


def _channels_of(region: np.ndarray, view: Overview, roles):
    """(nuclear, marker) of a region: the nucleus channel and DAB for brightfield, channels for
    fluorescence (the marker as fold over unstained tissue)."""
    if view.matrix is not None:
        stains = deconvolve(optical_density(region, view.light), view.matrix)
        return nucleus_channel(stains[..., 0], stains[..., 1], compartment=view.compartment,
                               dab_cap=view.dab_cap), stains[..., 1]
    return region[..., roles["nuclei"]], (region[..., roles["marker"]] - view.dark) / view.background


def _calibrate(section: Section, view: Overview, roles, *, pixel_size_um: float, options: dict,
               thresholds) -> None:
    """Measure on the most tissue-rich field (up to 1024² pixels at full resolution) what the
    analysis needs at the nuclei's scale: the hematoxylin level of a nucleus (which caps DAB in
    the nucleus channel) and the nucleus diameter (two rounds, starting from the config's)."""
    prior = float(options["nucleus_diameter_um"])
    view.nucleus_diameter_um, view.cell_expansion_um = prior, float(options["cell_expansion_um"])
    side, f = 1024, view.factor
    density = ndi.uniform_filter(view.tissue.astype(np.float32), max(side // f, 1), mode="constant")
    cy, cx = np.unravel_index(np.argmax(density), density.shape)
    y0 = int(np.clip(cy * f + f // 2 - side // 2, 0, max(section.shape[0] - side, 0)))
    x0 = int(np.clip(cx * f + f // 2 - side // 2, 0, max(section.shape[1] - side, 0)))
    region = section.read(y0, min(y0 + side, section.shape[0]), x0, min(x0 + side, section.shape[1]))
    tissue = view.tissue[np.arange(y0, y0 + region.shape[0])[:, None] // f,
                         np.arange(x0, x0 + region.shape[1])[None, :] // f]
    if view.matrix is not None and view.compartment == "nucleus":
        hema = np.clip(deconvolve(optical_density(region, view.light), view.matrix)[..., 0], 0, None)
        smooth = ndi.gaussian_filter(hema, max(prior / pixel_size_um / 12, 0.5))[tissue]
        if smooth.size and np.ptp(smooth) > 0:
            otsu = filters.threshold_otsu(smooth)
            # A third of a typical (Otsu-core) hematoxylin nucleus: enough to make a brown nucleus
            # whose hematoxylin is hidden stand out as a nucleus, too little to outshine pale ones.
            view.dab_cap = float(np.median(smooth[smooth > otsu])) / 3
    nuclear, _ = _channels_of(region, view, roles)
    diameter = prior
    for _ in range(2):
        labels = detect_nuclei(np.where(tissue, nuclear, 0), pixel_size_um=pixel_size_um,
                               nucleus_diameter_um=diameter)
        found, n = nucleus_diameter(labels, pixel_size_um=pixel_size_um)
        if n < 20:
            view.warnings.append(f"too few nuclei ({n}) to measure their size: the config's "
                                 f"nucleus_diameter_um ({prior:g} µm) is used")
            return
        diameter = float(np.clip(found, prior / 2, prior * 2))
    view.nucleus_diameter_um = diameter
    if not prior / 1.5 <= found <= prior * 1.5:
        view.warnings.append(f"nuclei measure {found:.1f} µm across, the config expects {prior:g} µm: "
                             f"is the pixel size ({pixel_size_um:g} µm) right?")
    if view.compartment != "nucleus":
        _, marker = _channels_of(region, view, roles)
        found = cell_extent(labels, marker, np.asarray(tissue), pixel_size_um=pixel_size_um,
                            threshold=float(thresholds[0]))
        if found is not None:
            view.cell_expansion_um = found


def cell_extent(nuclei: np.ndarray, marker: np.ndarray, tissue: np.ndarray, *, pixel_size_um: float,
                threshold: float, reach_um: float = 8.0, min_cells: int = 10) -> float | None:
    """How far the stained cells reach beyond their nucleus (µm), from the marker's radial profile.

    Without a membrane stain the cell border is not seen, and a fixed expansion either cuts a
    large cell's cytoplasm or dilutes a small one's with unstained stroma. The cells that are
    clearly stained (the mean over their first 1.5 µm above ``threshold``) show where the
    cytoplasm ends: the marker's mean at each distance from the nucleus falls, past the membrane,
    to the unstained tissue's level. The extent is the last distance at which it is still above
    halfway between that level and the profile's peak. ``None`` when fewer than ``min_cells``
    cells are stained, or when the profile does not fall within ``reach_um`` (stained cells
    packed edge to edge, as in epithelium: their borders are where they meet).
    """
    territory = segmentation.expand_labels(nuclei, distance=reach_um / pixel_size_um) * tissue
    distance = ndi.distance_transform_edt(nuclei == 0) * pixel_size_um
    outside = (territory > 0) & (nuclei == 0)
    n = int(nuclei.max())
    near = outside & (distance <= 1.5)
    sums = np.bincount(territory[near], weights=marker[near], minlength=n + 1)
    counts = np.bincount(territory[near], minlength=n + 1)
    stained = (counts > 0) & (sums > threshold * np.maximum(counts, 1))
    stained[0] = False
    if stained.sum() < min_cells:
        return None
    chosen = outside & stained[territory]
    step = max(pixel_size_um, 0.25)
    bins = np.minimum((distance[chosen] / step).astype(int), int(reach_um / step))
    profile = np.bincount(bins, weights=marker[chosen]) / np.maximum(np.bincount(bins), 1)
    unstained = float(np.median(marker[outside & ~stained[territory]])) if (outside & ~stained[territory]).any() \
        else float(np.percentile(marker[tissue], 10))
    peak = float(profile.max())
    above = np.flatnonzero(profile > unstained + 0.5 * (peak - unstained))
    if not above.size or above.max() >= len(profile) - 2:
        return None
    return float(max((above.max() + 1) * step, 1.0))


def analyse_section(section: Section, *, roles: dict[str, int] | None = None, pixel_size_um: float,
                    options: dict, marker: str = ""):
    """Cells, summary and overview of a whole section, tile by tile.

    Returns ``(cells, summary, view)``: the per-cell table (section pixel coordinates), the
    one-row ``summary.csv`` table and the :class:`Overview` (which also holds the compartment,
    the measured nucleus diameter and any warnings).
    """
    options = {**DEFAULTS, **options}
    roles = roles or {}
    view = overview(section, roles=roles, pixel_size_um=pixel_size_um, options=options)
    view.compartment, why = marker_compartment(marker, options)
    if why == "unknown marker":
        view.warnings.append(f"marker {marker!r} is not one exotrack knows: measured over the cytoplasm "
                             "(set histology.compartments to say where it lives)")
    thresholds = options["dab_thresholds"] if section.brightfield else options["fluorescence_thresholds"]
    if view.tissue.any():
        _calibrate(section, view, roles, pixel_size_um=pixel_size_um, options=options, thresholds=thresholds)
    diameter, expansion = view.nucleus_diameter_um, view.cell_expansion_um
    tile = int(options["tile_px"])
    margin = math.ceil((diameter + 2 * expansion) / pixel_size_um)
    pixel_sigma = max(0.5 / pixel_size_um, 0.5)  # positive pixels: marker smoothed over ~0.5 µm
    tables, positive_px, tissue_px = [], 0, 0
    f = view.factor
    tiles = list(_tiles(section.shape, tile))
    for y0, y1, x0, x1 in progress.steps(tiles, total=len(tiles), what="tiles analysed"):
        if not view.tissue[y0 // f: math.ceil(y1 / f), x0 // f: math.ceil(x1 / f)].any():
            continue
        ry0, ry1 = max(0, y0 - margin), min(section.shape[0], y1 + margin)
        rx0, rx1 = max(0, x0 - margin), min(section.shape[1], x1 + margin)
        region = section.read(ry0, ry1, rx0, rx1)
        tissue = view.tissue[np.arange(ry0, ry1)[:, None] // f, np.arange(rx0, rx1)[None, :] // f]
        nuclear, stain = _channels_of(region, view, roles)
        cells = measure_cells(nuclear, stain, tissue, pixel_size_um=pixel_size_um, nucleus_diameter_um=diameter,
                              cell_expansion_um=expansion, compartment=view.compartment,
                              drop_marker_dominated=view.matrix is not None and view.compartment != "nucleus")
        cells["y"] += ry0
        cells["x"] += rx0
        inside = cells["y"].between(y0 - 0.5, y1 - 0.5, inclusive="left") & cells["x"].between(
            x0 - 0.5, x1 - 0.5, inclusive="left")
        tables.append(cells[inside])
        core = (slice(y0 - ry0, y1 - ry0), slice(x0 - rx0, x1 - rx0))
        smooth = ndi.gaussian_filter(stain, pixel_sigma)[core]
        tissue_core = tissue[core]
        positive_px += int(np.count_nonzero(smooth[tissue_core] > thresholds[0]))
        tissue_px += int(np.count_nonzero(tissue_core))
    cells = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=["y", "x", "area_um2", "nucleus_area_um2", "marker_mean"])
    cells.insert(0, "cell_id", np.arange(1, len(cells) + 1))
    cells["class"] = classify(cells["marker_mean"].to_numpy(float), thresholds)
    cells["positive"] = cells["class"] > 0
    tissue_mm2 = tissue_px * pixel_size_um ** 2 / 1e6
    summary = summarise(cells["class"].to_numpy(), tissue_area_mm2=tissue_mm2,
                        positive_area_fraction=positive_px / tissue_px if tissue_px else np.nan, marker=marker)
    return cells[CELL_COLUMNS], summary, view


def summarise(classes: np.ndarray, *, tissue_area_mm2: float, positive_area_fraction: float,
              marker: str = "") -> pd.DataFrame:
    """The one-row ``summary.csv`` from per-cell classes (0-3)."""
    counts = np.bincount(np.asarray(classes, int), minlength=4)[:4]
    n = int(counts.sum())
    n_positive = int(counts[1:].sum())
    pct = 100.0 * counts / n if n else np.full(4, np.nan)
    return pd.DataFrame([{
        "marker": marker, "n_cells": n, "n_positive": n_positive,
        "positive_pct": 100.0 * n_positive / n if n else np.nan,
        "positive_cells_per_mm2": n_positive / tissue_area_mm2 if tissue_area_mm2 > 0 else np.nan,
        "dab_area_fraction": positive_area_fraction,
        "h_score": float(pct[1] + 2 * pct[2] + 3 * pct[3]),
        "tissue_area_mm2": tissue_area_mm2,
        "n_1plus": int(counts[1]), "n_2plus": int(counts[2]), "n_3plus": int(counts[3]),
    }], columns=SUMMARY_COLUMNS)


# --- one sample ---------------------------------------------------------------------------------

def resolve_roles(section: Section, mapping: dict) -> dict[str, int]:
    """Channel index of ``nuclei`` and ``marker`` in a fluorescence section."""
    image = io.Image(np.zeros((1, len(section.channel_names), 1, 1, 1)), section.channel_names)
    roles = {}
    for role in ("nuclei", "marker"):
        if mapping.get(role) is None:
            raise io.InputError(f"a fluorescence section needs a {role} channel (histology.channels.{role})")
        roles[role] = io.resolve_channel(image, mapping[role], role=role)
    if roles["nuclei"] == roles["marker"]:
        raise io.InputError("the nuclei and marker channels are the same channel")
    return roles


def _pixel_size(section: Section, override, fallback) -> float:
    """Pixel size from the sheet, else the file, else the config."""
    given = parse_pixel_size(override)
    if given:
        return given[-1]
    if section.pixel_size_um:
        return section.pixel_size_um
    fallback = parse_pixel_size(fallback)
    if fallback:
        return fallback[-1]
    raise io.InputError("the file does not state its pixel size; give pixel_size_um in the sample sheet "
                        "or histology.pixel_size_um in the config")


def process_sample(*, sample: str, path, options: dict, outputs: dict, marker: str = "",
                   channels: str | None = None, pixel_size_um=None) -> dict:
    """Read, analyse and write one histology sample (``summary``, ``cells``, ``metrics``, ``qc``).

    Whatever goes wrong, every output is written and ``metrics["status"]`` says what happened.
    """
    options = {**DEFAULTS, **options}
    try:
        section = open_section(path)
        try:
            size = _pixel_size(section, pixel_size_um, options["pixel_size_um"])
            roles = None if section.brightfield else resolve_roles(
                section, parse_channels(channels, roles=("nuclei", "marker")) or options["channels"])
            cells, summary, view = analyse_section(section, roles=roles, pixel_size_um=size, options=options,
                                                   marker=marker or "")
        finally:
            section.close()
    except Exception as exc:  # any failure is this sample's status; the run goes on
        return _write_failure(sample, qc.failure_reason(sample, exc), outputs)
    row = summary.iloc[0]
    if row["n_cells"] == 0:
        return _write_failure(sample, "no cells found in the tissue (is the pixel size right, "
                                      f"{size:g} µm?)", outputs)
    if row["n_cells"] < _MIN_CELLS // 5 or row["tissue_area_mm2"] < _MIN_TISSUE_MM2 / 5:
        return _write_failure(sample, f"too little to score: {row['n_cells']:.0f} cells on "
                                      f"{row['tissue_area_mm2'] * 1e6:.0f} µm² of tissue; a positive % needs at "
                                      f"least {_MIN_CELLS // 5} cells (is this the whole section, and is the pixel "
                                      f"size {size:g} µm right?)", outputs)
    warnings = list(view.warnings)
    if row["n_cells"] < _MIN_CELLS or row["tissue_area_mm2"] < _MIN_TISSUE_MM2:
        p = row["n_positive"] / row["n_cells"]
        half = 196 * math.sqrt(max(p * (1 - p), 0.25 / row["n_cells"]) / row["n_cells"])
        warnings.append(f"only {row['n_cells']:.0f} cells on {row['tissue_area_mm2'] * 1e6:.0f} µm² of tissue: "
                        f"positive % uncertain by about ±{half:.0f} points")
    io.write_table(cells, outputs["cells"])
    io.write_table(summary, outputs["summary"])
    title = (f"{sample} {marker}: {row['n_cells']:.0f} cells, {row['positive_pct']:.1f}% positive, "
             f"{row['positive_cells_per_mm2']:.0f}/mm², H-score {row['h_score']:.0f}")
    shown = view.image
    if section.brightfield and section.dtype.itemsize > 1:  # a 16-bit RGB section shown on 8 bits
        shown = view.image * (255.0 / _camera_white(view.image, section.dtype))
    overlay = qc.histology_overlay(shown, view.tissue, cells, factor=view.factor,
                                   brightfield=section.brightfield, roles=roles, title=title)
    io.write_png(qc.with_warnings(overlay, warnings), outputs["qc"])
    metrics = {"sample": sample, "status": "ok", "warnings": warnings, "path": str(path),
               **{k: _plain(row[k]) for k in SUMMARY_COLUMNS if k != "marker"},
               "marker": marker, "compartment": view.compartment,
               "nucleus_diameter_um": round(view.nucleus_diameter_um, 2),
               "cell_expansion_um": round(view.cell_expansion_um, 2),
               "pixel_size_um": size, "shape_yx": list(section.shape),
               "kind": "brightfield" if section.brightfield else "fluorescence",
               "stain_vectors": view.stain_source or None,
               "stain_matrix": view.matrix.tolist() if view.matrix is not None else None}
    io.write_json(metrics, outputs["metrics"])
    return metrics


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _write_failure(sample: str, reason: str, outputs: dict) -> dict:
    return qc.write_failure(sample, reason, outputs, tables={"cells": CELL_COLUMNS, "summary": SUMMARY_COLUMNS})
