"""Ultrasound-guided photoacoustics: the lymph node segmented in B-mode, its PA signal and
oxygenation quantified.

A lymph node is a hypoechoic oval below the skin. The B-mode is taken to the log domain and its
speckle measured; dark blobs of node size are found in scale space, a region grown from each and
an oval fitted to its edge (:func:`segment_node`); each candidate is checked (anechoic, leaking,
too large a share of the field, outside the size range, no darker than speckle alone, not
compact) and the first that passes is the node, else the sample is an error that says how to
help (a seed or a box). Inside the node and in a shell around it: PA mean and integrated signal,
node-to-shell contrast, the fraction of the node above the shell; with two or more wavelengths,
PA divided by the light's fluence per wavelength and depth, then linear least-squares unmixing
against the molar absorption of HbO2 and Hb gives sO2 and HbT per voxel (values outside [0, 1]
are NaN, not clipped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage import filters, measure

from . import io, qc
from .sheet import parse_pixel_size

# Molar extinction coefficients (cm⁻¹/M) of oxy- and deoxyhaemoglobin, S. Prahl's compilation
# (omlc.org/spectra/hemoglobin, from Gratzer and Kollias): nm, HbO2, Hb.
EXTINCTION = np.array([
    (650, 368.0, 3750.12), (660, 319.6, 3226.56), (670, 294.0, 2795.12), (680, 277.6, 2407.92),
    (690, 276.0, 2051.96), (700, 290.0, 1794.28), (710, 314.0, 1540.48), (720, 348.0, 1325.88),
    (730, 390.0, 1102.2), (740, 446.0, 1115.88), (750, 518.0, 1405.24), (760, 586.0, 1548.52),
    (770, 650.0, 1311.88), (780, 710.0, 1075.44), (790, 756.0, 890.8), (800, 816.0, 761.72),
    (810, 864.0, 717.08), (820, 916.0, 693.76), (830, 974.0, 693.04), (840, 1022.0, 692.36),
    (850, 1058.0, 691.32), (860, 1092.0, 726.44), (870, 1124.0, 743.6), (880, 1154.0, 761.84),
    (890, 1172.0, 791.48), (900, 1198.0, 820.36), (910, 1214.0, 849.2), (920, 1224.0, 872.92),
    (930, 1222.0, 880.4), (940, 1214.0, 882.76), (950, 1204.0, 864.36), (960, 1186.0, 847.44),
    (970, 1155.0, 805.68),
])

# Water absorption (cm⁻¹), Hale and Querry (1973), for the light's attenuation in tissue.
WATER_ABSORPTION = np.array([(650, 0.0034), (700, 0.0060), (750, 0.0260), (800, 0.0196), (850, 0.0433),
                             (900, 0.0680), (950, 0.3900), (970, 0.4500)])
# Generic soft tissue (Jacques 2013, Phys Med Biol 58:R37): reduced scattering a'(λ/500 nm)^-b, with
# blood and water fractions of well-perfused tissue.
TISSUE_OPTICS = {"blood_fraction": 0.015, "so2": 0.75, "water_fraction": 0.65, "scatter_a_cm": 18.9,
                 "scatter_b": 1.286}
_BLOOD_HB_MOLAR = 150 / 64500  # haemoglobin in whole blood: 150 g/L at 64.5 kg/mol

REGION_COLUMNS = ["region", "volume_mm3", "pa_mean", "so2_mean", "hbt_mean", "so2_median", "hbt_median",
                  "pa_integrated", "contrast", "fraction_above_background", "hypoxic_fraction"]

DEFAULTS = {
    "voxel_size_um": None,
    "node_diameter_mm": [0.5, 6.0],
    "shell_mm": 0.5,
    "hypoxic_so2": 0.5,
    "speckle_um": None,
    "edge_fraction": 0.5,
    "smooth_um": 100.0,
    "fluence": "tissue",
    "tissue_optics": {},
    "pulse_energy": None,
}

_PA_NAME = re.compile(r"^PA[_ -]?(\d{3,4})(?:\s*nm)?$", re.IGNORECASE)
_US_NAMES = ("us", "b-mode", "bmode")


@dataclass
class Stack:
    """A PA/US acquisition: channels by name, each ``(Z, Y, X)``; Y is depth."""

    channels: dict[str, np.ndarray]
    voxel_size_um: tuple[float, float, float]
    notes: list = dataclass_field(default_factory=list)  # what reading assumed (warnings for the sample)

    @property
    def wavelengths(self) -> list[int]:
        return sorted(int(_PA_NAME.match(n).group(1)) for n in self.channels if _PA_NAME.match(n))

    def pa(self, nm: int) -> np.ndarray:
        return next(v for n, v in self.channels.items() if _PA_NAME.match(n) and int(_PA_NAME.match(n).group(1)) == nm)


# --- reading ------------------------------------------------------------------------------------

def read_stack(path, *, voxel_size_um=None) -> Stack:
    """A TIFF/OME-TIFF ``(C)ZYX`` with channels named ``US``, ``PA<nm>``, ``sO2``, ``HbT`` (OME or
    ImageJ names; a single unnamed channel is ``US``), or a DICOM ultrasound file. ``voxel_size_um``
    ``(z, y, x)`` fills in what the file does not state."""
    path = io.check_file(path)
    notes = []
    if path.suffix.lower() in (".dcm", ".dicom") or _is_dicom(path):
        us, file_size, notes = read_dicom(path)
        channels = {"US": us}
    else:
        image = io.read_image(path)
        if image.n_frames > 1:
            raise io.InputError(f"expected a (C)ZYX stack, but the file has {image.n_frames} time points")
        names = image.channel_names if image.data.shape[1] > 1 else (
            image.channel_names if image.channel_names != ["0"] else ["US"])
        channels = {name: image.data[0, c] for c, name in enumerate(names)}
        file_size = image.pixel_size_um
    size = tuple(f if f else g for f, g in zip(file_size, voxel_size_um or (None, None, None)))
    if any(s is None for s in size):
        raise io.InputError("the file does not state its voxel size" + (f" ({'; '.join(notes)})" if notes else "")
                            + "; give pixel_size_um (z,y,x) in the sample sheet or photoacoustic.voxel_size_um in "
                            "the config")
    for name, values in channels.items():
        # Ready-made sO2/HbT maps may hold NaN where there was no signal; measured channels may not.
        # B-mode shows bright skin and capsules at the display's maximum, so only a mostly saturated
        # channel is refused.
        if name.lower() in _US_NAMES or _PA_NAME.match(name):
            try:
                io.check_pixels(values, max_saturated_fraction=0.5)
            except io.InputError as exc:
                raise io.InputError(f"channel {name!r}: {exc}") from None
    shapes = {n: v.shape for n, v in channels.items()}
    if len(set(shapes.values())) > 1:
        raise io.InputError("channels differ in shape: " + ", ".join(f"{n} {s}" for n, s in shapes.items()))
    return Stack({n: v.astype(np.float32) for n, v in channels.items()}, tuple(float(s) for s in size), notes)


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(128)
        return fh.read(4) == b"DICM"


def read_dicom(path) -> tuple[np.ndarray, tuple, list[str]]:
    """B-mode ultrasound from DICOM: one frame, a multi-frame sweep (frames with a slice spacing)
    or a cine (frames in time: its middle frame is analysed), greyscale (MONOCHROME1 inverted, so
    that echoes are bright) or colour (to grey; a colour Doppler overlay is left out as black). Cropped to the ultrasound region when the file gives one. Returns ``(Z, Y,
    X)``, the voxel size in µm ``(z, y, x)`` from the region calibration or the pixel spacing
    (``None`` where the file does not say) and notes on what was assumed."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as exc:
        raise io.unreadable(path, "DICOM image with pixel data", exc) from exc
    notes = []
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    rgb = getattr(ds, "SamplesPerPixel", 1) == 3
    if frames == 1:
        pixels = pixels[None]
    if rgb:
        colour = pixels[..., :3].max(axis=-1) - pixels[..., :3].min(axis=-1)
        pixels = pixels[..., :3].mean(axis=-1)
        overlay = colour > 40
        if overlay.mean() > 0.005:
            # Colour pixels carry no B-mode: they are set to black, which the analysis leaves out.
            pixels = np.where(overlay, 0, pixels)
            notes.append(f"a colour (Doppler) overlay covers {100 * overlay.mean():.1f}% of the image: those "
                         "pixels hold no B-mode and were left out")
    elif str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        # MONOCHROME1: the minimum is white; B-mode echoes must be bright.
        pixels = float(2 ** int(getattr(ds, "BitsStored", 8)) - 1) - pixels
    spacing = next((float(ds.get(k)) for k in ("SpacingBetweenSlices", "SliceThickness")
                    if k in ds and ds.get(k) not in (None, "")), None)
    if frames > 1 and spacing is None and ("FrameTime" in ds or "FrameTimeVector" in ds or "CineRate" in ds):
        pixels = pixels[[frames // 2]]
        notes.append(f"a cine of {frames} frames in time: frame {frames // 2} was analysed as a 2-D frame")
        frames = 1
    dy = dx = None
    regions = getattr(ds, "SequenceOfUltrasoundRegions", None)
    if regions:
        region = regions[0]
        bounds = [int(getattr(region, k, -1)) for k in ("RegionLocationMinY0", "RegionLocationMaxY1",
                                                           "RegionLocationMinX0", "RegionLocationMaxX1")]
        unbounded = all(b < 0 for b in bounds)  # a region without a location covers the image
        if unbounded or (0 <= bounds[0] < bounds[1] < pixels.shape[1] and 0 <= bounds[2] < bounds[3] < pixels.shape[2]):
            if not unbounded:
                pixels = pixels[:, bounds[0]:bounds[1] + 1, bounds[2]:bounds[3] + 1]
            # Ultrasound regions give physical deltas in cm (units code 3).
            if getattr(region, "PhysicalUnitsXDirection", 3) == 3:
                dx = float(region.PhysicalDeltaX) * 1e4
            if getattr(region, "PhysicalUnitsYDirection", 3) == 3:
                dy = float(region.PhysicalDeltaY) * 1e4
        else:
            notes.append(f"the ultrasound region (rows {bounds[0]}-{bounds[1]}, columns {bounds[2]}-{bounds[3]}) "
                         f"lies outside the {pixels.shape[1]}x{pixels.shape[2]} image (a resized export?): its "
                         "calibration was not used")
    elif "PixelSpacing" in ds:
        dy, dx = (float(v) * 1e3 for v in ds.PixelSpacing)
    dz = spacing * 1e3 if spacing is not None else None
    if frames == 1 and dz is None:
        dz = dx
    return pixels, (dz, dy, dx), notes


# --- segmentation ------------------------------------------------------------------------------

@dataclass
class Speckle:
    """What the B-mode's speckle looks like, measured: ``log_scale`` (whether the data were taken
    to the log domain here, i.e. given as a linear envelope), the correlation length per axis
    (voxels) and the speckle SD in the log domain."""

    log_scale: bool
    length_voxels: tuple
    sd: float


def to_log_domain(us: np.ndarray) -> tuple[np.ndarray, bool]:
    """B-mode on a logarithmic scale: as given when already log-compressed (the display), else
    the envelope in dB. Fully developed speckle tells the two apart: a Rayleigh envelope varies
    by about half its mean within a few speckle cells; a log-compressed display by far less."""
    us = np.asarray(us, np.float32)
    axes = (1,) * (us.ndim - 2) + (7, 7)
    mean = ndi.uniform_filter(us, axes)
    sd = np.sqrt(np.maximum(ndi.uniform_filter(us * us, axes) - mean * mean, 0))
    tissue = mean > 0.25 * np.median(mean[mean > 0]) if (mean > 0).any() else mean > 0
    ratio = float(np.median(sd[tissue] / mean[tissue])) if tissue.any() else 0.0
    if ratio < 0.33:
        return us, False
    floor = 1e-3 * float(np.median(us[us > 0])) if (us > 0).any() else 1e-6
    return (20 * np.log10(us + floor)).astype(np.float32), True


def measure_speckle(log_us: np.ndarray, tissue: np.ndarray, *, log_scale: bool) -> Speckle:
    """Speckle correlation length (where the autocorrelation of the fine texture falls to one
    half) per axis, and its SD, in ``tissue``."""
    texture = log_us - ndi.gaussian_filter(log_us, [4.0 if n > 8 else 0 for n in log_us.shape])
    values = texture[tissue]
    variance = float(values.var()) if values.size else 0.0
    lengths = []
    for axis, n in enumerate(log_us.shape):
        if n < 8 or variance == 0:
            lengths.append(0.0)
            continue
        length = 4.0
        previous = 1.0
        for lag in range(1, min(8, n // 2)):
            a = np.take(texture, range(lag, n), axis=axis)
            b = np.take(texture, range(0, n - lag), axis=axis)
            both = np.take(tissue, range(lag, n), axis=axis) & np.take(tissue, range(0, n - lag), axis=axis)
            rho = float((a[both] * b[both]).mean() / variance) if both.any() else 0.0
            if rho < 0.5:
                length = lag - 1 + (previous - 0.5) / max(previous - rho, 1e-6)
                break
            previous = rho
        lengths.append(length)
    sd = 1.4826 * float(np.median(np.abs(values - np.median(values)))) if values.size else 0.0
    return Speckle(log_scale, tuple(float(v) for v in lengths), sd)


def skin_depth(us: np.ndarray) -> np.ndarray:
    """Per slice and column, the first depth index of tissue: above it lies the anechoic
    coupling gel. Tissue starts where the depth profile first exceeds half its median."""
    profile = ndi.uniform_filter1d(us, 5, axis=1)
    level = 0.5 * np.median(profile, axis=1, keepdims=True)
    above = profile > level
    first = np.argmax(above, axis=1)
    return np.where(above.any(axis=1), first, 0)


def tissue_field(log_us: np.ndarray, *, voxel_size_um, skin_margin_mm: float = 0.0) -> np.ndarray:
    """Voxels of imaged tissue: below the skin (``skin_margin_mm`` further down), and not in the
    black outside a sector or the anechoic gel (no voxel within 0.5 mm a tenth of the way from the
    image's floor to the tissue's median level)."""
    size = np.asarray(voxel_size_um, float)
    floor = float(np.percentile(log_us, 1))
    # The tissue's level: the median of what is brighter than the floor's share (a sector image is
    # mostly black, so the plain median would be the background's).
    median = float(np.median(log_us[log_us > filters.threshold_otsu(log_us)])) if np.ptp(log_us) > 0 else floor
    width = (2 * np.round(500 / size).astype(int) + 1) * [n > 1 for n in log_us.shape]
    # Outside a sector, in the gel or a lumen every voxel within 0.5 mm lies at the floor.
    imaged = ndi.maximum_filter(log_us, np.maximum(width, 1)) > floor + 0.1 * (median - floor)
    depth = skin_depth(np.where(imaged, log_us - floor, 0))
    below = np.arange(log_us.shape[1])[None, :, None] >= depth[:, None, :] + skin_margin_mm * 1000 / size[1]
    return imaged & below


@dataclass
class Candidate:
    """A dark blob found in scale space: centre (voxels), diameter (mm), normalised response."""

    centre: tuple
    diameter_mm: float
    response: float


def dark_blobs(smooth: np.ndarray, *, voxel_size_um, diameter_mm=(0.5, 6.0), allowed=None,
               n_scales: int = 8, max_blobs: int = 12) -> list[Candidate]:
    """Dark blob-like regions by scale-normalised Laplacian of Gaussian (in mm, so anisotropic
    voxels see a round blob as round), strongest first; centres only where ``allowed``."""
    size = np.asarray(voxel_size_um, float) / 1000
    active = np.array([n > 1 for n in smooth.shape])
    k = int(active.sum())
    best = np.full(smooth.shape, -np.inf, np.float32)
    scale = np.zeros(smooth.shape, np.float32)
    for diameter in np.geomspace(diameter_mm[0], diameter_mm[1], n_scales):
        sigma_mm = diameter / 2 / np.sqrt(k)
        sigma = np.where(active, sigma_mm / size, 0)
        response = np.zeros(smooth.shape, np.float32)
        for axis in np.flatnonzero(active):
            order = [0] * smooth.ndim
            order[axis] = 2
            response += ndi.gaussian_filter(smooth, sigma, order=order) / size[axis] ** 2
        response *= sigma_mm ** 2
        better = response > best
        best = np.where(better, response, best)
        scale = np.where(better, diameter, scale)
    if allowed is not None:
        best = np.where(allowed, best, -np.inf)
    footprint = _ellipsoid(np.where(active, diameter_mm[0] / 4 / size, 0))
    peaks = (best == ndi.maximum_filter(best, footprint=footprint)) & np.isfinite(best) & (best > 0)
    where = np.argwhere(peaks)
    kept: list[Candidate] = []
    for i in np.argsort(-best[peaks]):
        point = where[i]
        diameter = float(scale[tuple(point)])
        # One blob, one candidate: weaker peaks within half its diameter are its own.
        if any(np.sqrt((((point - c.centre) * size)[active] ** 2).sum()) < 0.5 * max(diameter, c.diameter_mm)
               for c in kept):
            continue
        kept.append(Candidate(tuple(int(v) for v in point), diameter, float(best[tuple(point)])))
        if len(kept) == max_blobs:
            break
    return kept


@dataclass
class NodeFit:
    """A region grown from one candidate, with the measures its checks read."""

    mask: np.ndarray
    candidate: Candidate
    node_level: float
    surround_level: float
    contrast_sd: float  # (shell - region) mean level, in SDs that speckle alone gives such means
    texture_ratio: float  # speckle SD inside the region / in the tissue (anechoic regions have none)
    diameter_mm: float  # equivalent diameter of the region
    ellipse_dice: float  # overlap with the ellipsoid of its second moments
    elongation: float  # longest / shortest axis of that ellipsoid
    field_fraction: float
    touches_border: bool
    cut_by_sweep: bool
    problem: str = ""
    edge_support: float = np.nan  # share of the fitted outline where the B-mode brightens outward
    region_agreement: float = np.nan  # Dice of the outline with the region grown from the blob
    blur_correction: float = 0.0  # volume the outline gained from undoing the smoothing's blur


def grow_node(log_us, smooth, candidate: Candidate, *, voxel_size_um, field, speckle: Speckle, outside,
              field_voxels: int, edge_fraction: float = 0.5, box=None, iterations: int = 3) -> NodeFit:
    """The dark region around ``candidate``: voxels of the smoothed B-mode below the level
    ``edge_fraction`` of the way from the node's median to that of a shell of tissue around it,
    connected to the candidate; bridges narrower than a third of its radius are cut, holes (an
    echogenic hilum) filled. Levels are re-measured from the region found, ``iterations`` times,
    so that a blob found at the wrong scale still settles on the region's own edge."""
    size = np.asarray(voxel_size_um, float) / 1000
    active = np.array([n > 1 for n in smooth.shape])
    radius = candidate.diameter_mm / 2
    grid = np.ogrid[tuple(slice(0, n) for n in smooth.shape)]
    distance = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s, a in zip(grid, candidate.centre, size, active) if a))
    core = distance <= 0.5 * radius
    region = core.copy()
    limit = np.ones(smooth.shape, bool) if box is None else box
    for _ in range(iterations):
        node_level = float(np.median(smooth[region & field])) if (region & field).any() else float(
            smooth[candidate.centre])
        ring = _ring(region, 0.2 * radius, 0.6 * radius, size) & field
        surround = float(np.median(smooth[ring])) if ring.any() else node_level
        threshold = node_level + edge_fraction * (surround - node_level)
        dark = (smooth < threshold) & limit & field
        labels = measure.label(dark, connectivity=1)  # face-connected: speckle dips percolate less
        hits = labels[core & dark]
        if not hits.size:
            region = np.zeros(smooth.shape, bool)
            break
        grown = labels == np.bincount(hits).argmax()
        ball = radius / 3
        opened = measure.label(_dilate_mm(_erode_mm(grown, ball, size), ball, size) & grown)
        hits = opened[core & (opened > 0)]
        if hits.size:
            grown = _dilate_mm(opened == np.bincount(hits).argmax(), ball, size) & grown
        grown = _erode_mm(_dilate_mm(grown, ball, size), ball, size) | grown
        grown = ndi.binary_fill_holes(grown)
        grown = np.stack([ndi.binary_fill_holes(plane) for plane in grown])
        if grown.sum() == region.sum() and (grown == region).all():
            break
        region = grown
        voxels = region.sum()
        if voxels:
            equivalent = (voxels * np.prod(size[active]) / (np.pi / 6 if active.sum() == 3 else np.pi / 4)) ** (
                1 / active.sum())
            radius = max(min(equivalent / 2, 3 * candidate.diameter_mm), size[active].max())
    return _describe(region, log_us, smooth, candidate, size=size, active=active, field=field, speckle=speckle,
                     node_level=node_level, surround=surround, outside=outside, field_voxels=field_voxels)


def _describe(region, log_us, smooth, candidate, *, size, active, field, speckle, node_level, surround,
              outside, field_voxels) -> NodeFit:
    voxels = int(region.sum())
    k = int(active.sum())
    if voxels == 0:
        return NodeFit(region, candidate, node_level, surround, 0.0, 0.0, 0.0, 0.0, np.inf, 0.0, False, False,
                       problem="no dark region there")
    equivalent = (voxels * np.prod(size[active]) / (np.pi / 6 if k == 3 else np.pi / 4)) ** (1 / k)
    points = np.argwhere(region)[:, active] * size[active]
    centre = points.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov((points - centre).T) + 1e-12 * np.eye(k))
    semi = np.sqrt((k + 2) * np.maximum(values, 1e-12))
    # Overlap of the region with the ellipsoid of equal second moments, in a box around both.
    reach = np.where(active, np.ceil(semi.max() / np.where(active, size, 1)).astype(int) + 1, 0)
    middle = np.round(centre / size[active]).astype(int)
    lo, hi = np.zeros(region.ndim, int), np.array(region.shape)
    lo[active], hi[active] = np.maximum(middle - reach[active], 0), np.minimum(middle + reach[active] + 1, hi[active])
    bounds = tuple(slice(a, b) for a, b in zip(lo, hi))
    grid = (np.indices(region[bounds].shape) + lo[:, None, None, None][: region.ndim].reshape(
        (region.ndim,) + (1,) * region.ndim))[active].reshape(k, -1).T * size[active]
    inside = ((((grid - centre) @ vectors / semi) ** 2).sum(axis=1) <= 1).reshape(region[bounds].shape)
    ellipse_dice = 2 * (inside & region[bounds]).sum() / (inside.sum() + voxels)
    # Contrast: the raw (log) levels of region and shell, against what speckle alone lets the mean
    # of so many independent speckle cells vary. Texture: the speckle within, which an anechoic
    # cyst or lumen (at the display's floor or noise) lacks.
    radius = equivalent / 2
    ring = _ring(region, 0.2 * radius, 0.6 * radius, size) & field
    cell = float(np.prod([max(2.5 * l, 1.0) for l, a in zip(speckle.length_voxels, active) if a]))
    if ring.any():
        delta = float(log_us[ring].mean() - log_us[region].mean())
        noise = speckle.sd * np.sqrt(cell / voxels + cell / ring.sum())
    else:
        delta, noise = 0.0, 1.0
    inner = _erode_mm(region, float(np.max(np.maximum(speckle.length_voxels, 1) * size * active)), size)
    inner = inner if inner.sum() > 10 else region
    inside_sd = 1.4826 * float(np.median(np.abs(log_us[inner] - np.median(log_us[inner]))))
    spatial = [a for a, on in enumerate(active) if on]
    edges = [np.take(region, [0, -1], axis=a).any() for a in spatial if a != 0 or k == 2]
    touches = bool(any(edges) or (ndi.binary_dilation(region) & outside).any())
    cut = False
    if active[0] and k == 3:
        areas = region.sum(axis=(1, 2))
        cut = bool(max(areas[0], areas[-1]) > 0.3 * areas.max())
    return NodeFit(region, candidate, node_level, surround, delta / max(noise, 1e-6),
                   float(inside_sd / max(speckle.sd, 1e-6)), float(equivalent), float(ellipse_dice),
                   float(semi.max() / semi.min()), float(voxels / max(field_voxels, 1)), touches, cut)


def _distance_mm(mask, size) -> np.ndarray:
    """Distance (mm) of each voxel to ``mask`` (0 inside); one transform serves every radius."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    return ndi.distance_transform_edt(~mask, sampling=size)


def _dilate_mm(mask, radius_mm, size, active=None):
    return _distance_mm(mask, size) <= radius_mm


def _erode_mm(mask, radius_mm, size):
    return ~_dilate_mm(~mask, radius_mm, size) if mask.any() else mask


def _ring(mask, inner_mm, outer_mm, size):
    distance = _distance_mm(mask, size)
    return (distance > inner_mm) & (distance <= outer_mm)


def _sphere_points(n: int, k: int) -> np.ndarray:
    """``n`` points spread evenly over the unit sphere (k = 3) or circle (k = 2), ``(n, k)``."""
    if k == 2:
        angle = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return np.stack([np.sin(angle), np.cos(angle)], axis=1)
    i = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * i / n)
    azimuth = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(polar), np.sin(polar) * np.sin(azimuth), np.sin(polar) * np.cos(azimuth)], axis=1)


@dataclass
class Ellipsoid:
    """An oval in mm: centre ``(z, y, x)`` (or ``(y, x)``), semi-axes along the same axes before
    rotation, and a rotation ``angle`` (radians) in the y-x plane (the image plane)."""

    centre: np.ndarray
    semi: np.ndarray
    angle: float

    def rotation(self) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        plane = np.array([[c, -s], [s, c]])
        if self.centre.size == 2:
            return plane
        rotation = np.eye(3)
        rotation[1:, 1:] = plane
        return rotation

    def mask(self, shape, size_mm, active, scale: float = 1.0) -> np.ndarray:
        grid = np.ogrid[tuple(slice(0, n) for n in shape)]
        coords = [(g + 0.0) * s for g, s, a in zip(grid, size_mm, active) if a]
        rotation = self.rotation()
        total = 0
        for row in range(len(coords)):
            local = sum(rotation[col, row] * (coords[col] - self.centre[col]) for col in range(len(coords)))
            total = total + (local / (scale * self.semi[row])) ** 2
        return np.broadcast_to(total <= 1, shape).copy() if np.ndim(total) else np.zeros(shape, bool)


def fit_ellipsoid(smooth: np.ndarray, start: Ellipsoid, *, voxel_size_um, sigma_mm: float, field=None,
                  n_points: int = 300, max_change: float = 1.6, max_elongation: float = 3.0
                  ) -> tuple[Ellipsoid, float, float]:
    """The oval whose outline best follows the node's edge: maximise the mean outward derivative of
    the B-mode (dark inside, bright outside) over its surface, from ``start``. An echogenic hilum
    inside gives edges of the opposite sign, so the outline keeps to the cortex's outer edge.
    The oval stays near ``start`` (axes within ``max_change`` of it, centre within half an axis),
    no longer than ``max_elongation`` times its width, and off what is not ``field`` (a vessel's
    lumen or a cyst beside the node, whose edges would pull it over). Returns the oval, its edge
    support (the share of its outline where the B-mode brightens outward) and its edge strength
    (that mean derivative, per mm)."""
    from scipy import optimize

    size = np.asarray(voxel_size_um, float) / 1000
    active = np.array([n > 1 for n in smooth.shape])
    k = int(active.sum())
    sigma = np.where(active, sigma_mm / size, 0)
    gradients = [ndi.gaussian_filter(smooth, sigma, order=[int(a == axis) for a in range(smooth.ndim)])
                 / size[axis] for axis in np.flatnonzero(active)]
    unit = _sphere_points(n_points, k)
    shape = np.array(smooth.shape)[active]
    grads = gradients if k == 3 else [g[0] for g in gradients]

    def unpack(p):
        centre = p[:k]
        semi = np.exp(p[k:2 * k])
        return Ellipsoid(centre, semi, float(p[-1]))

    lumen = None if field is None else (~field if k == 3 else ~field[0]).astype(np.float32)
    interior = np.concatenate([unit * f for f in (0.3, 0.6, 0.85)])

    def edge(p, support=False):
        oval = unpack(p)
        rotation = oval.rotation()
        ratio = oval.semi / start.semi
        excess = (max(0.0, np.log(ratio.max() / max_change)) + max(0.0, np.log(1 / max_change / ratio.min()))
                  + max(0.0, np.linalg.norm((oval.centre - start.centre) / start.semi) - 0.5)
                  + max(0.0, np.log(oval.semi.max() / oval.semi.min() / max_elongation)))
        points = oval.centre + (unit * oval.semi) @ rotation.T
        normals = (unit / oval.semi) @ rotation.T
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        index = (points / size[active]).T
        inside = np.all((index >= 0) & (index <= (shape - 1)[:, None]), axis=0)
        derivative = sum(ndi.map_coordinates(g, index, order=1, mode="nearest") * normals[:, i]
                         for i, g in enumerate(grads))
        if support:
            return float(np.mean((derivative > 0) & inside))
        strength = float(np.mean(np.where(inside, derivative, 0)))
        if lumen is not None:
            within = ((oval.centre + (interior * oval.semi) @ rotation.T) / size[active]).T
            strength -= 2 * abs(strength) * float(np.mean(ndi.map_coordinates(lumen, within, order=0, mode="nearest")))
        return -strength + 1e3 * abs(strength) * excess

    p0 = np.concatenate([start.centre, np.log(start.semi), [start.angle]])
    simplex = [p0]
    for i in range(p0.size):
        step = np.zeros_like(p0)
        step[i] = 0.25 * start.semi.mean() if i < k else (0.25 if i < 2 * k else 0.4)
        simplex.append(p0 + step)
    result = optimize.minimize(edge, p0, method="Nelder-Mead",
                               options={"initial_simplex": np.array(simplex), "maxiter": 600, "xatol": 1e-3,
                                        "fatol": 1e-4})
    return unpack(result.x), edge(result.x, support=True), -float(result.fun)


def _unblur(oval: Ellipsoid, sigma_mm: np.ndarray) -> Ellipsoid:
    """The oval before a Gaussian blur of ``sigma_mm`` per axis (smoothing, derivative and
    interpolation): the steepest edge of a blurred convex region lies inward of the true one by
    sigma² times half the sum of the principal curvatures there (σ²/R on a sphere, σ²/2R on a
    circle)."""
    active = sigma_mm > 0
    rotation = oval.rotation()
    sigma2 = (rotation ** 2).T @ (sigma_mm[active] ** 2)  # blur along each of the oval's axes
    semi = oval.semi
    curvature = np.array([semi[i] * sum(1 / semi[j] ** 2 for j in range(semi.size) if j != i)
                          for i in range(semi.size)])
    return Ellipsoid(oval.centre, semi + sigma2 * curvature / 2, oval.angle)


def outline_node(log_us, smooth, grown: NodeFit, *, voxel_size_um, field, speckle: Speckle, outside,
                 field_voxels: int) -> NodeFit:
    """The node's outline under an elliptical prior: the oval fitted to the edge
    (:func:`fit_ellipsoid`) from the grown region's moments and from the blob, the better kept;
    the mask is the oval. Its edge support and its agreement with the
    grown region are kept for the checks."""
    size = np.asarray(voxel_size_um, float) / 1000
    active = np.array([n > 1 for n in smooth.shape])
    k = int(active.sum())
    region = grown.mask
    starts = [Ellipsoid(np.asarray(grown.candidate.centre, float)[active] * size[active],
                        np.full(k, grown.candidate.diameter_mm / 2), 0.0)]
    if region.sum() > 10:
        points = np.argwhere(region)[:, active] * size[active]
        centre = points.mean(axis=0)
        cov = np.cov((points - centre).T)
        values, vectors = np.linalg.eigh(cov[-2:, -2:])
        angle = float(np.arctan2(vectors[0, 1], vectors[1, 1]))  # major in-plane axis from x towards y
        semi = np.sqrt((k + 2) * np.maximum(np.diag(cov), 1e-6))
        semi[-2:] = np.sqrt((k + 2) * np.maximum(values[::-1], 1e-6))
        starts.append(Ellipsoid(centre, semi, angle))
    # The B-mode is already smoothed over the speckle: a derivative at half a voxel keeps the edge
    # where it is (a wider one pulls the outline of a convex dark region inward).
    sigma_mm = 0.5 * float(size[active].min())
    best = None
    for start in starts:
        oval, support, strength = fit_ellipsoid(smooth, start, voxel_size_um=voxel_size_um, sigma_mm=sigma_mm,
                                                field=field)
        if best is None or strength > best[2]:
            best = (oval, support, strength)
    oval, support, _ = best
    raw = oval
    oval = _unblur(oval, np.sqrt((np.maximum(np.asarray(speckle.length_voxels), 0.5) ** 2 + 0.25 + 1 / 6)
                                 * active) * size)
    mask = oval.mask(smooth.shape, size, active) | (region & oval.mask(smooth.shape, size, active, 1.15))
    lumen = float((mask & ~field).sum() / max(mask.sum(), 1))
    mask &= field
    fit = _describe(mask, log_us, smooth, grown.candidate, size=size, active=active, field=field, speckle=speckle,
                    node_level=grown.node_level, surround=grown.surround_level, outside=outside,
                    field_voxels=field_voxels)
    fit.edge_support = support
    fit.blur_correction = float(np.prod(oval.semi / raw.semi) - 1)
    if lumen > 0.1:
        fit.problem = (f"its oval takes in an anechoic structure ({100 * lumen:.0f}% of it): a cyst or vessel "
                       "beside a faint region")
    fit.region_agreement = float(2 * (region & mask).sum() / max(region.sum() + mask.sum(), 1))
    return fit


def check_node(fit: NodeFit, *, diameter_mm, min_contrast_sd: float = 5.5, max_field_fraction: float = 0.25,
               min_ellipse_dice: float = 0.75, max_elongation: float = 3.0) -> str:
    """Why ``fit`` is not a lymph node (empty if it may be one).

    ``min_contrast_sd``: the darkest node-sized regions of speckle alone (volumes without a node
    from ``demo_photoacoustic.simulate_family``) reach 4.9 such SDs; the nodes found right, 5.1 and
    more."""
    if fit.problem:
        return fit.problem
    if fit.texture_ratio < 0.5:
        return (f"it is anechoic (speckle {fit.texture_ratio:.2f} of the tissue's): a cyst or a vessel's lumen, "
                "not a node")
    if fit.texture_ratio > 2.5:
        return (f"it is not homogeneous (its echoes vary {fit.texture_ratio:.1f} times as much as the tissue's "
                "speckle): it straddles structures")
    if fit.touches_border:
        return "it reaches the edge of the image or of the imaged tissue (it leaks into the surroundings)"
    if fit.field_fraction > max_field_fraction:
        return f"it fills {100 * fit.field_fraction:.0f}% of the imaged tissue"
    if not diameter_mm[0] / 1.25 <= fit.diameter_mm <= diameter_mm[1] * 1.25:
        return (f"its diameter of {fit.diameter_mm:.2f} mm lies outside node_diameter_mm "
                f"[{diameter_mm[0]:g}, {diameter_mm[1]:g}]")
    if fit.contrast_sd < min_contrast_sd:
        return (f"it is only {fit.contrast_sd:.1f} speckle SDs darker than the tissue around it (speckle alone "
                f"gives up to {min_contrast_sd:g})")
    if fit.contrast_sd < 8 and fit.blur_correction > 0.3:
        return (f"it is faint ({fit.contrast_sd:.1f} speckle SDs) and spans so few speckle cells that speckle "
                "alone can make such a region")
    if fit.ellipse_dice < min_ellipse_dice or fit.elongation > max_elongation:
        return (f"it is not compact (overlap with its ellipse {fit.ellipse_dice:.2f}, elongation "
                f"{fit.elongation:.1f}): it leaks along a vessel or between structures")
    return ""


def segment_node(us: np.ndarray, *, voxel_size_um, seed=None, box=None, diameter_mm=(0.5, 6.0),
                 speckle_um: float | None = None, edge_fraction: float = 0.5) -> tuple[np.ndarray, dict]:
    """Mask of the lymph node in a B-mode volume ``(Z, Y, X)`` (Z may be 1), and what was measured.

    The B-mode is taken to the log domain (if given as an envelope), its speckle measured and
    smoothed over its own correlation length (or ``speckle_um``). Dark blobs of node size are found
    in scale space below the skin (or the ``seed`` / centre of ``box`` is used); from each, in
    order of strength, a region is grown (:func:`grow_node`) and checked (:func:`check_node`):
    the first that passes is the node. None passing raises an :class:`io.InputError` that says
    why the strongest was refused and how to help (a seed or a box in the sheet, or a click in
    napari). The dict holds the speckle, levels, contrast, shape measures and ``warnings``.
    """
    size = np.asarray(voxel_size_um, float)
    log_us, converted = to_log_domain(us)
    field = tissue_field(log_us, voxel_size_um=size)
    if field.sum() < 100:
        raise io.InputError("no tissue found in the B-mode image (it is dark or blank)")
    speckle = measure_speckle(log_us, field, log_scale=converted)
    field_voxels = int(field.sum())
    # Outside the imaged tissue: above the skin or outside a sector, i.e. the non-tissue that reaches
    # the image's edge (a lumen or cyst beside the node does not count).
    labels = measure.label(~field)
    spatial = [a for a, n in enumerate(us.shape) if n > 1]
    edge_labels = np.unique(np.concatenate([np.take(labels, [0, -1], axis=a).ravel() for a in spatial]))
    outside = np.isin(labels, edge_labels[edge_labels > 0])
    active = np.array([n > 1 for n in us.shape])
    lengths = np.asarray(speckle.length_voxels) if speckle_um is None else speckle_um / size
    smooth = ndi.gaussian_filter(log_us, np.maximum(lengths, 0.5) * active)
    allowed = tissue_field(log_us, voxel_size_um=size, skin_margin_mm=0.4) if seed is None else field
    limit = None
    if box is not None:
        limit = np.zeros(us.shape, bool)
        limit[tuple(slice(lo, hi + 1) for lo, hi in box)] = True
        allowed = allowed & limit
    if seed is not None or box is not None:
        point = tuple(seed) if seed is not None else tuple((lo + hi) // 2 for lo, hi in box)
        # The blobs around the seed (a click may land anywhere in the node), then the seed itself.
        grid = np.ogrid[tuple(slice(0, n) for n in us.shape)]
        near = sum(((g - c) * s / 1000) ** 2 for g, c, s in zip(grid, point, size)) <= (diameter_mm[1] / 4) ** 2
        candidates = dark_blobs(smooth, voxel_size_um=size, diameter_mm=diameter_mm, max_blobs=3,
                                allowed=allowed & near) + [Candidate(point, diameter_mm[0], np.nan)]
    else:
        candidates = dark_blobs(smooth, voxel_size_um=size, diameter_mm=diameter_mm, allowed=allowed)
    info = {"speckle_length_um": [round(float(l * s), 1) for l, s in zip(speckle.length_voxels, size)],
            "speckle_sd": speckle.sd, "log_compressed_input": not converted, "warnings": []}
    refused, covered = [], np.zeros(us.shape, bool)
    for candidate in candidates:
        if covered[candidate.centre]:  # another peak of a structure already refused (a vessel's length)
            continue
        # Each candidate is worked on in a window of 2.5 blob diameters and 0.5 mm around it.
        reach = np.where(active, np.ceil((2.5 * max(candidate.diameter_mm, diameter_mm[0]) + 0.5) * 1000 / size), 0)
        window = tuple(slice(max(0, c - int(r)), c + int(r) + 1) for c, r in zip(candidate.centre, reach))
        local = Candidate(tuple(c - w.start for c, w in zip(candidate.centre, window)), candidate.diameter_mm,
                          candidate.response)
        crops = dict(voxel_size_um=size, field=field[window], speckle=speckle, outside=outside[window],
                     field_voxels=field_voxels)
        fit = grow_node(log_us[window], smooth[window], local, edge_fraction=edge_fraction,
                        box=None if limit is None else limit[window], **crops)
        if fit.mask.any() and not fit.texture_ratio < 0.5:
            fit = outline_node(log_us[window], smooth[window], fit, **crops)
        full = np.zeros(us.shape, bool)
        full[window] = fit.mask
        fit.mask, fit.candidate = full, candidate
        problem = check_node(fit, diameter_mm=diameter_mm)
        if not problem and seed is not None and not fit.mask[tuple(seed)]:
            problem = "it does not contain the seed"
        if not problem:
            break
        refused.append((candidate, problem))
        covered |= fit.mask
    else:
        where = "at the seed" if seed is not None or box is not None else "below the skin"
        if not refused:
            raise io.InputError(f"no lymph node found: no dark blob of {diameter_mm[0]:g}-{diameter_mm[1]:g} mm "
                                f"{where}; give a seed z,y,x (or a box z0-z1,y0-y1,x0-x1) in the sheet")
        first = refused[0]
        raise io.InputError(
            f"no lymph node found: the darkest blob {where}, at z,y,x {','.join(map(str, first[0].centre))}, "
            f"was refused as {first[1]}" + (f" ({len(refused) - 1} more refused)" if len(refused) > 1 else "")
            + "; give a seed z,y,x (or a box z0-z1,y0-y1,x0-x1) in the sheet, or click the node in napari")
    info.update(node_centre_zyx=list(candidate.centre), node_contrast_sd=fit.contrast_sd,
                node_diameter_mm=fit.diameter_mm, node_ellipse_dice=fit.ellipse_dice,
                node_elongation=fit.elongation, node_texture_ratio=fit.texture_ratio,
                node_edge_support=fit.edge_support, node_region_agreement=fit.region_agreement,
                node_blur_correction=fit.blur_correction,
                refused_candidates=len(refused))
    if fit.cut_by_sweep:
        info["warnings"].append("the node reaches the first or last frame of the sweep: its volume is a lower "
                                "bound")
    if fit.blur_correction > 0.3:
        info["warnings"].append(f"the node spans few speckle cells or voxels: undoing the blur added "
                                f"{100 * fit.blur_correction:.0f}% to its volume, which is uncertain by about as much")
    if fit.contrast_sd < 8:
        info["warnings"].append(f"the node is faint ({fit.contrast_sd:.1f} speckle SDs darker than its "
                                "surroundings): check its outline on the QC image")
    return fit.mask, info


def _ellipsoid(radius) -> np.ndarray:
    r = np.maximum(np.round(np.asarray(radius, float)).astype(int), 0)
    grid = np.ogrid[tuple(slice(-n, n + 1) for n in r)]
    return sum((g / max(n, 1)) ** 2 for g, n in zip(grid, r)) <= 1


# --- quantification ----------------------------------------------------------------------------

def extinction(wavelengths_nm) -> np.ndarray:
    """``(n, 2)`` molar extinction of (HbO2, Hb) at ``wavelengths_nm``, interpolated in the table."""
    wavelengths_nm = np.asarray(wavelengths_nm, float)
    lo, hi = EXTINCTION[0, 0], EXTINCTION[-1, 0]
    outside = wavelengths_nm[(wavelengths_nm < lo) | (wavelengths_nm > hi)]
    if outside.size:
        raise io.InputError(f"wavelength(s) {', '.join(f'{w:g}' for w in outside)} nm are not in the haemoglobin "
                            f"spectra table ({lo:g}-{hi:g} nm)")
    return np.stack([np.interp(wavelengths_nm, EXTINCTION[:, 0], EXTINCTION[:, i]) for i in (1, 2)], axis=1)


def unmix(pa: np.ndarray, wavelengths_nm) -> tuple[np.ndarray, np.ndarray]:
    """sO2 and HbT per voxel from PA ``(n_wavelengths, ...)`` by linear least squares against
    the HbO2 and Hb spectra (HbT in PA units per cm⁻¹/mM); sO2 outside [0, 1] (and where
    HbT ≤ 0) is NaN, not clipped."""
    # Per mM rather than per M, so that HbT of blood-rich tissue reads near 1 in PA units.
    matrix = extinction(wavelengths_nm) / 1000
    if len(wavelengths_nm) < 2:
        raise io.InputError("unmixing needs PA at two or more wavelengths")
    flat = pa.reshape(len(wavelengths_nm), -1)
    amounts, *_ = np.linalg.lstsq(matrix, flat, rcond=None)
    hbo2, hb = amounts
    hbt = hbo2 + hb
    with np.errstate(invalid="ignore", divide="ignore"):
        so2 = hbo2 / hbt
    eps = 1e-9  # round-off of the least-squares solve, not a physical excess
    so2 = np.where((hbt > 0) & (so2 >= -eps) & (so2 <= 1 + eps), np.clip(so2, 0, 1), np.nan)
    return so2.reshape(pa.shape[1:]), hbt.reshape(pa.shape[1:])


def effective_attenuation(wavelengths_nm, *, blood_fraction, so2, water_fraction, scatter_a_cm,
                          scatter_b) -> np.ndarray:
    """Effective attenuation μ_eff = √(3 μa (μa + μs')) (cm⁻¹) of light in tissue per wavelength
    (diffusion approximation): absorption by blood of ``so2`` and by water, reduced scattering
    ``scatter_a_cm`` (λ / 500 nm)^-``scatter_b``."""
    eps = extinction(wavelengths_nm)
    wavelengths_nm = np.asarray(wavelengths_nm, float)
    mu_a = (blood_fraction * np.log(10) * _BLOOD_HB_MOLAR * (so2 * eps[:, 0] + (1 - so2) * eps[:, 1])
            + water_fraction * np.interp(wavelengths_nm, WATER_ABSORPTION[:, 0], WATER_ABSORPTION[:, 1]))
    mu_s = scatter_a_cm * (wavelengths_nm / 500) ** -scatter_b
    return np.sqrt(3 * mu_a * (mu_a + mu_s))


def depth_below_skin_mm(us: np.ndarray, *, voxel_size_um) -> np.ndarray:
    """Depth (mm) of each voxel below the skin surface found in the B-mode (0 above it)."""
    log_us, _ = to_log_domain(us)
    floor = float(np.percentile(log_us, 1))
    skin = skin_depth(log_us - floor)
    rows = np.arange(us.shape[1])[None, :, None]
    return np.clip(rows - skin[:, None, :], 0, None) * float(voxel_size_um[1]) / 1000


def fluence(wavelengths_nm, depth_mm: np.ndarray, *, tissue_optics=None, pulse_energy=None) -> np.ndarray:
    """Relative fluence ``(n_wavelengths, ...)`` at ``depth_mm`` below the skin: the pulse energy
    per wavelength (1 where not given) times exp(-μ_eff depth) in tissue of ``tissue_optics``
    (defaults :data:`TISSUE_OPTICS`)."""
    optics = {**TISSUE_OPTICS, **(tissue_optics or {})}
    mu = effective_attenuation(wavelengths_nm, **optics)
    energy = np.array([float((pulse_energy or {}).get(w, (pulse_energy or {}).get(str(w), 1.0)))
                       for w in wavelengths_nm])
    return energy.reshape((-1,) + (1,) * depth_mm.ndim) * np.exp(-mu.reshape((-1,) + (1,) * depth_mm.ndim)
                                                                  * depth_mm / 10)


def quantify(stack: Stack, node: np.ndarray, *, shell_mm: float, hypoxic_so2: float, smooth_um: float,
             light: np.ndarray | None = None):
    """``regions.csv`` rows (``node``, ``shell``) and the sO2 / HbT maps (or ``None``); with
    ``light`` (relative fluence per wavelength and voxel) the PA is divided by it before unmixing."""
    size = np.asarray(stack.voxel_size_um, float)
    voxel_mm3 = float(np.prod(size)) / 1e9
    wavelengths = stack.wavelengths
    sigma = np.maximum(smooth_um / size, 0.5)
    pa = np.stack([ndi.gaussian_filter(stack.pa(w), sigma) for w in wavelengths]) if wavelengths else None
    so2 = hbt = None
    if pa is not None and len(wavelengths) >= 2:
        so2, hbt = unmix(pa if light is None else pa / light, wavelengths)
    channel = {n.lower(): v for n, v in stack.channels.items()}
    if "so2" in channel:
        so2 = channel["so2"] / (100.0 if np.nanmax(channel["so2"]) > 1.5 else 1.0)  # percent or fraction
        so2 = np.where((so2 >= 0) & (so2 <= 1), so2, np.nan)
    if "hbt" in channel:
        hbt = channel["hbt"]
    # The PA channel nearest the isosbestic point (~800 nm) weighs HbO2 and Hb alike.
    signal = pa[int(np.argmin(np.abs(np.array(wavelengths) - 800)))] if pa is not None else None
    shell = ndi.binary_dilation(node, _ellipsoid(shell_mm * 1000 / size)) & ~node
    shell_mean = float(signal[shell].mean()) if signal is not None and shell.any() else np.nan
    shell_sd = float(signal[shell].std()) if signal is not None and shell.any() else np.nan
    rows = []
    for name, mask in (("node", node), ("shell", shell)):
        row = {"region": name, "volume_mm3": mask.sum() * voxel_mm3}
        if signal is not None and mask.any():
            row.update(pa_mean=float(signal[mask].mean()), pa_integrated=float(signal[mask].sum() * voxel_mm3),
                       contrast=float(signal[mask].mean() / shell_mean) if shell_mean > 0 else np.nan,
                       fraction_above_background=float(np.mean(signal[mask] > shell_mean + 2 * shell_sd)))
        if so2 is not None and mask.any():
            values = so2[mask]
            finite = values[np.isfinite(values)]
            row.update(so2_mean=float(finite.mean()) if finite.size else np.nan,
                       so2_median=float(np.median(finite)) if finite.size else np.nan,
                       hypoxic_fraction=float(np.mean(finite < hypoxic_so2)) if finite.size else np.nan)
        if hbt is not None and mask.any():
            row.update(hbt_mean=float(hbt[mask].mean()), hbt_median=float(np.median(hbt[mask])))
        rows.append(row)
    return pd.DataFrame(rows, columns=REGION_COLUMNS), so2, signal


# --- one sample --------------------------------------------------------------------------------

def parse_seed(text) -> tuple[tuple | None, tuple | None]:
    """A seed ``"z,y,x"`` or a box ``"z0-z1,y0-y1,x0-x1"`` (voxels, inclusive) from the sheet:
    ``(seed, box)``, either ``None``."""
    if text is None or not str(text).strip() or str(text).strip().lower() == "nan":
        return None, None
    parts = [p for p in re.split(r"[,;\s]+", str(text).strip()) if p]
    problem = f"seed {text!r} should be three voxel indices z,y,x or a box z0-z1,y0-y1,x0-x1"
    if len(parts) != 3:
        raise io.InputError(problem)
    try:
        if any(re.fullmatch(r"\d+(\.\d*)?-\d+(\.\d*)?", p) for p in parts):
            box = []
            for p in parts:
                lo, _, hi = p.partition("-")
                box.append(tuple(sorted((int(round(float(lo))), int(round(float(hi or lo)))))))
            return None, tuple(box)
        return tuple(int(round(float(p))) for p in parts), None
    except ValueError:
        raise io.InputError(problem) from None


def process_sample(*, sample: str, path, options: dict, outputs: dict, pixel_size_um=None, seed=None) -> dict:
    """Read, segment, quantify and write one PA/US stack (``regions``, ``mask``, ``metrics``, ``qc``)."""
    options = {**DEFAULTS, **options}
    try:
        given = parse_pixel_size(pixel_size_um) or parse_pixel_size(options["voxel_size_um"])
        stack = read_stack(path, voxel_size_um=given)
        if pixel_size_um:  # the sheet overrides the file
            stack.voxel_size_um = parse_pixel_size(pixel_size_um)
        us = next((v for n, v in stack.channels.items() if n.lower() in _US_NAMES), None)
        if us is None:
            raise io.InputError("no ultrasound channel: expected one named 'US' among "
                                + ", ".join(repr(n) for n in stack.channels))
        if stack.wavelengths:
            extinction(stack.wavelengths)  # unknown wavelengths fail before any work
        point, box = parse_seed(seed)
        if point is not None and not all(0 <= p < n for p, n in zip(point, us.shape)):
            raise io.InputError(f"seed {point} lies outside the stack of shape {us.shape}")
        if box is not None and not all(0 <= lo and hi < n for (lo, hi), n in zip(box, us.shape)):
            raise io.InputError(f"box {box} reaches outside the stack of shape {us.shape}")
        node, found = segment_node(us, voxel_size_um=stack.voxel_size_um, seed=point, box=box,
                                   diameter_mm=tuple(options["node_diameter_mm"]), speckle_um=options["speckle_um"],
                                   edge_fraction=options["edge_fraction"])
        light, fluence_notes = None, []
        if len(stack.wavelengths) >= 2:
            light, fluence_notes = _fluence_for(stack, us, node, options)
        regions, so2, signal = quantify(stack, node, shell_mm=options["shell_mm"], hypoxic_so2=options["hypoxic_so2"],
                                        smooth_um=options["smooth_um"], light=light)
        found["warnings"] = stack.notes + found["warnings"] + fluence_notes
    except Exception as exc:  # any failure is this sample's status; the run goes on
        return _write_failure(sample, qc.failure_reason(sample, exc), outputs, path=path)
    io.write_table(regions, outputs["regions"])
    io.write_tiff(node.astype(np.uint8), outputs["mask"], axes="ZYX", pixel_size_um=stack.voxel_size_um)
    row = regions.set_index("region").loc["node"]
    warnings = found.pop("warnings")
    metrics = {"sample": sample, "status": "ok", "warnings": warnings, "path": str(path),
               "ln_volume_mm3": row["volume_mm3"], "ln_pa_mean": row["pa_mean"],
               "ln_so2_mean": row["so2_mean"], "ln_hbt_mean": row["hbt_mean"], "ln_so2_median": row["so2_median"],
               "ln_contrast": row["contrast"], "ln_hypoxic_fraction": row["hypoxic_fraction"],
               "wavelengths_nm": stack.wavelengths, "voxel_size_um": list(stack.voxel_size_um),
               "shape_zyx": list(us.shape), "seed": str(seed or ""), **found}
    metrics = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in metrics.items()}
    title = (f"{sample}: node {row['volume_mm3']:.2f} mm³, PA {row['pa_mean']:.3g}, "
             f"sO2 {row['so2_mean']:.2f}, HbT {row['hbt_mean']:.3g}").replace("nan", "-")
    io.write_png(qc.with_warnings(qc.photoacoustic_montage(us, node, signal, so2, title=title), warnings),
                 outputs["qc"])
    io.write_json(metrics, outputs["metrics"])
    return metrics


def _fluence_for(stack: Stack, us, node, options) -> tuple[np.ndarray | None, list[str]]:
    """The fluence to divide the PA by (``None`` with ``fluence: none``) and warnings: where the
    node lies so deep that plausible tissue (blood 0.5-3 %, scattering ±30 %) moves its sO2 by more
    than 0.05, the value rests on the assumed optics."""
    wavelengths = stack.wavelengths
    if options["fluence"] == "none":
        return None, ["sO2 is not corrected for the fluence's fall with depth (photoacoustic.fluence: none)"]
    depth = depth_below_skin_mm(us, voxel_size_um=stack.voxel_size_um)
    optics = {**TISSUE_OPTICS, **(options["tissue_optics"] or {})}
    light = fluence(wavelengths, depth, tissue_optics=optics, pulse_energy=options["pulse_energy"])
    # Node-mean PA per wavelength (smoothed as quantify does) under other plausible tissues.
    sigma = np.maximum(options["smooth_um"] / np.asarray(stack.voxel_size_um, float), 0.5)
    pa = np.stack([ndi.gaussian_filter(stack.pa(w), sigma)[node] for w in wavelengths])
    values = []
    for blood in (0.005, 0.015, 0.03):
        for scatter in (0.7, 1.0, 1.3):
            trial = {**optics, "blood_fraction": blood, "scatter_a_cm": optics["scatter_a_cm"] * scatter}
            guess = fluence(wavelengths, depth[node], tissue_optics=trial, pulse_energy=options["pulse_energy"])
            so2, _ = unmix(pa / guess, wavelengths)
            values.append(np.nanmean(so2) if np.isfinite(so2).any() else np.nan)
    spread = float(np.nanmax(values) - np.nanmin(values)) if np.isfinite(values).any() else 0.0
    notes = []
    if spread > 0.05:
        notes.append(f"the node's sO2 depends on the tissue's optics at its depth ({float(np.median(depth[node])):.1f} "
                     f"mm): {np.nanmin(values):.2f}-{np.nanmax(values):.2f} over plausible blood content and "
                     "scattering; set photoacoustic.tissue_optics if they are known")
    return light, notes


def _write_failure(sample: str, reason: str, outputs: dict, *, path=None) -> dict:
    metrics = qc.write_failure(sample, reason, outputs, tables={"regions": REGION_COLUMNS}, images=("mask",))
    if path is not None:  # so that the sample browser can show the B-mode to click a seed on
        metrics["path"] = str(path)
        io.write_json(metrics, outputs["metrics"])
    return metrics
