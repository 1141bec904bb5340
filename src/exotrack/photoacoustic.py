"""Ultrasound-guided photoacoustics: the lymph node segmented in B-mode, its PA signal and
oxygenation quantified.

A lymph node is a hypoechoic oval below the skin. The B-mode volume is despeckled, the node seeded
at the darkest blob of node size below the skin line (or at a seed the sheet gives), and grown
into the connected dark region around it at a threshold midway between the node's level and its
surroundings', in 3-D so that neighbouring slices agree; holes are filled slice by slice and the
outline smoothed. Inside the node and in a shell around it: PA mean and integrated signal,
node-to-shell contrast, the fraction of the node above the shell; with two or more wavelengths,
linear least-squares unmixing against the molar absorption of HbO2 and Hb gives sO2 and HbT per
voxel (values outside [0, 1] are NaN, not clipped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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

REGION_COLUMNS = ["region", "volume_mm3", "pa_mean", "so2_mean", "hbt_mean", "so2_median", "hbt_median",
                  "pa_integrated", "contrast", "fraction_above_background", "hypoxic_fraction"]

DEFAULTS = {
    "voxel_size_um": None,
    "node_diameter_mm": [1.0, 4.0],
    "shell_mm": 0.5,
    "hypoxic_so2": 0.5,
    "speckle_um": 60.0,
    "edge_fraction": 0.6,
    "smooth_um": 100.0,
}

_PA_NAME = re.compile(r"^PA[_ -]?(\d{3,4})(?:\s*nm)?$", re.IGNORECASE)
_US_NAMES = ("us", "b-mode", "bmode")


@dataclass
class Stack:
    """A PA/US acquisition: channels by name, each ``(Z, Y, X)``; Y is depth."""

    channels: dict[str, np.ndarray]
    voxel_size_um: tuple[float, float, float]

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
    if path.suffix.lower() in (".dcm", ".dicom") or _is_dicom(path):
        us, size = read_dicom(path)
        channels, file_size = {"US": us}, size
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
        raise io.InputError("the file does not state its voxel size; give pixel_size_um (z,y,x) in the sample "
                            "sheet or photoacoustic.voxel_size_um in the config")
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
    return Stack({n: v.astype(np.float32) for n, v in channels.items()}, tuple(float(s) for s in size))


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(128)
        return fh.read(4) == b"DICM"


def read_dicom(path) -> tuple[np.ndarray, tuple]:
    """B-mode ultrasound from DICOM: one frame or a multi-frame cine (frames are slices of a
    sweep), greyscale or RGB (converted to grey). Returns ``(Z, Y, X)`` and the voxel size in µm
    ``(z, y, x)`` from the ultrasound region calibration or the pixel spacing (``None`` where
    the file does not say)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as exc:
        raise io.unreadable(path, "DICOM image with pixel data", exc) from exc
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    rgb = getattr(ds, "SamplesPerPixel", 1) == 3
    if rgb:
        pixels = pixels[..., :3].mean(axis=-1)
    if frames == 1:
        pixels = pixels[None]
    dy = dx = None
    regions = getattr(ds, "SequenceOfUltrasoundRegions", None)
    if regions:
        region = regions[0]
        # Ultrasound regions give physical deltas in cm (units code 3).
        if getattr(region, "PhysicalUnitsXDirection", 3) == 3:
            dx = float(region.PhysicalDeltaX) * 1e4
        if getattr(region, "PhysicalUnitsYDirection", 3) == 3:
            dy = float(region.PhysicalDeltaY) * 1e4
    elif "PixelSpacing" in ds:
        dy, dx = (float(v) * 1e3 for v in ds.PixelSpacing)
    dz = None
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        if key in ds and ds.get(key) not in (None, ""):
            dz = float(ds.get(key)) * 1e3
            break
    if frames == 1 and dz is None:
        dz = dx
    return pixels, (dz, dy, dx)


# --- segmentation ------------------------------------------------------------------------------

def skin_depth(us: np.ndarray) -> np.ndarray:
    """Per slice and column, the first depth index of tissue: above it lies the anechoic
    coupling gel. Tissue starts where the depth profile first exceeds half its median."""
    profile = ndi.uniform_filter1d(us, 5, axis=1)
    level = 0.5 * np.median(profile, axis=1, keepdims=True)
    above = profile > level
    first = np.argmax(above, axis=1)
    return np.where(above.any(axis=1), first, 0)


def find_seed(us: np.ndarray, *, voxel_size_um, diameter_mm=(1.0, 4.0)) -> tuple[int, int, int]:
    """The centre of the darkest blob of node size below the skin: the strongest response of a
    scale-normalised Laplacian of Gaussian to a dark blob, over the node diameters given."""
    size = np.asarray(voxel_size_um, float) / 1000  # mm
    depth = skin_depth(us)
    below = np.arange(us.shape[1])[None, :, None] > depth[:, None, :] + 0.5 / size[1]  # 0.5 mm under skin
    best, where = -np.inf, None
    for diameter in np.geomspace(diameter_mm[0], diameter_mm[1], 4):
        sigma = diameter / 2 / np.sqrt(3) / size
        response = ndi.gaussian_laplace(us, sigma) * (diameter / 2 / np.sqrt(3)) ** 2
        response = np.where(below, response, -np.inf)
        index = np.unravel_index(np.argmax(response), response.shape)
        if response[index] > best:
            best, where = response[index], index
    return tuple(int(i) for i in where)


def segment_node(us: np.ndarray, *, voxel_size_um, seed=None, diameter_mm=(1.0, 4.0),
                 speckle_um: float = 60.0, edge_fraction: float = 0.6) -> np.ndarray:
    """Mask of the lymph node in a B-mode volume ``(Z, Y, X)``.

    Speckle is smoothed over ``speckle_um``. The node is the connected region around ``seed``
    (automatic when ``None``) darker than ``edge_fraction`` of the way from the node's median
    to the median of the tissue around it. Above halfway: the node's edge voxels are lifted by
    the blurred echo of the bright capsule that often surrounds it. Thin bridges to other dark
    structures are cut by an opening, the speckle-ragged outline closed, holes filled slice by
    slice.
    """
    size = np.asarray(voxel_size_um, float)
    if seed is None:
        seed = find_seed(us, voxel_size_um=size, diameter_mm=diameter_mm)
    seed = tuple(seed)
    smooth = ndi.gaussian_filter(us, np.maximum(speckle_um / size, 0.5))
    reach = np.ceil(diameter_mm[1] * 1000 / size).astype(int)
    local = smooth[tuple(slice(max(0, c - r), c + r + 1) for c, r in zip(seed, reach))]
    inner = np.ceil(diameter_mm[0] * 500 / size / 2).astype(int)
    node_level = float(np.median(smooth[tuple(slice(max(0, c - r), c + r + 1) for c, r in zip(seed, inner))]))
    outside = float(np.median(local[local > filters.threshold_otsu(local)]))
    ball = _ellipsoid(np.maximum(diameter_mm[0] * 1000 / 6 / size, 1))  # a third of the smallest radius
    mask = _grow(smooth < node_level + edge_fraction * (outside - node_level), seed, ball)
    mask = ndi.binary_closing(mask, ball, border_value=0)
    return np.stack([ndi.binary_fill_holes(plane) for plane in mask])


def _grow(dark: np.ndarray, seed, ball) -> np.ndarray:
    """The dark region around ``seed``, with bridges narrower than ``ball`` cut."""
    labels = measure.label(dark)
    if labels[seed] == 0:
        return np.zeros(dark.shape, bool)
    region = labels == labels[seed]
    opened = measure.label(ndi.binary_opening(region, ball))
    if opened[seed] == 0:
        return region
    return ndi.binary_dilation(opened == opened[seed], ball) & region


def _ellipsoid(radius) -> np.ndarray:
    r = np.maximum(np.round(radius).astype(int), 1)
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


def quantify(stack: Stack, node: np.ndarray, *, shell_mm: float, hypoxic_so2: float, smooth_um: float):
    """``regions.csv`` rows (``node``, ``shell``) and the sO2 / HbT maps (or ``None``)."""
    size = np.asarray(stack.voxel_size_um, float)
    voxel_mm3 = float(np.prod(size)) / 1e9
    wavelengths = stack.wavelengths
    sigma = np.maximum(smooth_um / size, 0.5)
    pa = np.stack([ndi.gaussian_filter(stack.pa(w), sigma) for w in wavelengths]) if wavelengths else None
    so2 = hbt = None
    if pa is not None and len(wavelengths) >= 2:
        so2, hbt = unmix(pa, wavelengths)
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

def parse_seed(text) -> tuple[int, int, int] | None:
    """A seed ``"z,y,x"`` (voxels) from the sheet, or ``None``."""
    if text is None or not str(text).strip():
        return None
    parts = re.split(r"[,;\s]+", str(text).strip())
    if len(parts) != 3:
        raise io.InputError(f"seed {text!r} should be three voxel indices z,y,x")
    try:
        return tuple(int(round(float(p))) for p in parts)
    except ValueError:
        raise io.InputError(f"seed {text!r} should be three voxel indices z,y,x") from None


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
        point = parse_seed(seed)
        if point is not None and not all(0 <= p < n for p, n in zip(point, us.shape)):
            raise io.InputError(f"seed {point} lies outside the stack of shape {us.shape}")
        node = segment_node(us, voxel_size_um=stack.voxel_size_um, seed=point,
                            diameter_mm=tuple(options["node_diameter_mm"]), speckle_um=options["speckle_um"],
                            edge_fraction=options["edge_fraction"])
        if not node.any():
            raise io.InputError("no lymph node found (no dark region at the seed); give a seed z,y,x in the sheet")
        regions, so2, signal = quantify(stack, node, shell_mm=options["shell_mm"],
                                        hypoxic_so2=options["hypoxic_so2"], smooth_um=options["smooth_um"])
    except Exception as exc:  # any failure is this sample's status; the run goes on
        return _write_failure(sample, qc.failure_reason(sample, exc), outputs)
    io.write_table(regions, outputs["regions"])
    io.write_tiff(node.astype(np.uint8), outputs["mask"], axes="ZYX", pixel_size_um=stack.voxel_size_um)
    row = regions.set_index("region").loc["node"]
    warnings = []
    metrics = {"sample": sample, "status": "ok", "warnings": warnings, "path": str(path), "ln_volume_mm3": row["volume_mm3"], "ln_pa_mean": row["pa_mean"],
               "ln_so2_mean": row["so2_mean"], "ln_hbt_mean": row["hbt_mean"], "ln_so2_median": row["so2_median"],
               "ln_contrast": row["contrast"], "ln_hypoxic_fraction": row["hypoxic_fraction"],
               "wavelengths_nm": stack.wavelengths, "voxel_size_um": list(stack.voxel_size_um),
               "shape_zyx": list(us.shape)}
    metrics = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in metrics.items()}
    title = (f"{sample}: node {row['volume_mm3']:.2f} mm³, PA {row['pa_mean']:.3g}, "
             f"sO2 {row['so2_mean']:.2f}, HbT {row['hbt_mean']:.3g}").replace("nan", "-")
    io.write_png(qc.with_warnings(qc.photoacoustic_montage(us, node, signal, so2, title=title), warnings),
                 outputs["qc"])
    io.write_json(metrics, outputs["metrics"])
    return metrics


def _write_failure(sample: str, reason: str, outputs: dict) -> dict:
    return qc.write_failure(sample, reason, outputs, tables={"regions": REGION_COLUMNS}, images=("mask",))
