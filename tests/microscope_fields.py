"""Fluorescence fields from an independent model of the microscope, for tests of the analysis.

Nothing here comes from exotrack: the optics (a Gaussian or an Airy point-spread function,
integrated over each pixel), the camera (photon noise, EMCCD gain, read noise, 8-, 12- or 16-bit
quantisation, resampling that correlates the noise) and the specimen (cells, nuclei, puncta,
structured background) are all drawn per field, over ranges wider than any configured default.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.special import j1

# The Airy core's Gaussian approximation has sigma 0.21 lambda/NA, and its first dark ring lies at
# 0.61 lambda/NA: 2.90 sigma (Zhang, Zerubia & Olivo-Marin, Appl. Opt. 2007).
AIRY_ZERO_PER_SIGMA = 0.61 / 0.21
AIRY_FIRST_ZERO = 3.8317


@dataclass
class MicroscopeField:
    image: np.ndarray  # (3, Y, X): nuclei, puncta, cell stain; camera units
    cells: np.ndarray  # cell labels
    nuclei: np.ndarray
    puncta: np.ndarray  # (n, 2) y, x in pixels
    owner: np.ndarray  # cell label of each punctum (0 outside)
    pixel_size_um: float
    settings: dict


def psf_window(offsets_y, offsets_x, *, sigma_px: float, profile: str, oversample: int = 5) -> np.ndarray:
    """Fraction of a point's light in each pixel of a window (offsets from the point, pixels),
    integrated over the pixel by oversampling, normalised to one over the window."""
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    y = offsets_y[..., None, None] + sub[:, None]
    x = offsets_x[..., None, None] + sub[None, :]
    r = np.hypot(y, x)
    if profile == "gaussian":
        value = np.exp(-0.5 * (r / sigma_px) ** 2)
    else:
        v = AIRY_FIRST_ZERO * r / (AIRY_ZERO_PER_SIGMA * sigma_px)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(v > 1e-9, (2 * j1(v) / v) ** 2, 1.0)
    value = value.mean(axis=(-1, -2))
    return value / value.sum(axis=(-1, -2), keepdims=True)


def render_points(shape, points, photons, *, sigma_px: float, profile: str) -> np.ndarray:
    """Expected photons per pixel of point sources seen through the PSF."""
    out = np.zeros(shape)
    half = int(np.ceil(6 * sigma_px))
    grid = np.arange(-half, half + 1)
    for (py, px), n in zip(points, photons):
        cy, cx = int(round(py)), int(round(px))
        window = psf_window((grid + cy - py)[:, None], (grid + cx - px)[None, :], sigma_px=sigma_px, profile=profile)
        ys, xs = grid + cy, grid + cx
        iy, ix = (ys >= 0) & (ys < shape[0]), (xs >= 0) & (xs < shape[1])
        out[np.ix_(ys[iy], xs[ix])] += n * window[np.ix_(iy, ix)]
    return out


def _ellipse(yy, xx, centre, axes, angle):
    u = (yy - centre[0]) * np.cos(angle) + (xx - centre[1]) * np.sin(angle)
    v = -(yy - centre[0]) * np.sin(angle) + (xx - centre[1]) * np.cos(angle)
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2


def camera(rng, photons, *, bits: int, emccd: bool, read_noise: float, correlate: float, offset: float):
    """Camera counts: Poisson photons, EM gain (gamma-distributed, the excess noise factor of
    sqrt 2), read noise, resampling blur that correlates the noise, gain to fill the bit depth."""
    electrons = rng.poisson(np.clip(photons, 0, None)).astype(float)
    if emccd:
        gain = 20.0
        electrons = np.where(electrons > 0, rng.gamma(np.maximum(electrons, 1e-9), gain), 0.0) / gain
    signal = electrons + rng.normal(0, read_noise, photons.shape)
    if correlate > 0:  # an image resampled (registration, de-warping) after readout
        signal = ndi.gaussian_filter(signal, correlate)
    ceiling = 2 ** bits - 1
    scale = 0.8 * (ceiling - offset) / max(np.percentile(signal, 99.99), 1.0)
    scale = min(scale, 4.0) if bits > 8 else scale
    return np.clip(np.round(signal * scale + offset), 0, ceiling).astype(np.uint8 if bits == 8 else np.uint16)


def microscope_field(seed: int, *, loaded: bool) -> MicroscopeField:
    """One field, every acquisition and specimen parameter drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    cell_um = rng.uniform(8, 40)
    # Pixel sizes 0.065-0.65 µm, drawn so that a cell spans 30-110 pixels (small fields).
    low, high = max(0.065, cell_um / 110), min(0.65, cell_um / 30)
    pixel = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    sigma = rng.uniform(0.7, 3.0)
    profile = str(rng.choice(["gaussian", "airy"]))
    bits = int(rng.choice([8, 12, 16]))
    settings = {"cell_um": cell_um, "pixel_um": pixel, "sigma_px": sigma, "profile": profile, "bits": bits,
                "emccd": bool(rng.random() < 0.5), "correlate": float(rng.choice([0.0, rng.uniform(0.5, 0.8)])),
                "loaded": loaded}
    radius = cell_um / 2 / pixel
    n = int(rng.integers(3, 6))
    side = int(np.ceil(radius * 2 * (np.sqrt(n) + 0.6) * 1.3))
    shape = (side, side)
    yy, xx = np.mgrid[0:side, 0:side].astype(float)
    cells = np.zeros(shape, np.int32)
    nuclei = np.zeros(shape, np.int32)
    thickness = np.zeros(shape)  # a cell is a dome: thickest over the nucleus, thin at its edge
    placed = []
    for _ in range(500):
        if len(placed) == n:
            break
        r = radius * rng.uniform(0.85, 1.15)
        c = rng.uniform(1.1 * r, side - 1.1 * r, 2)
        if any(np.hypot(*(c - c2)) < 1.05 * (r + r2) for c2, r2 in placed):
            continue
        placed.append((c, r))
        label = len(placed)
        angle = rng.uniform(0, np.pi)
        rho = _ellipse(yy, xx, c, (r, r * rng.uniform(0.75, 1.0)), angle)
        cells[rho < 1] = label
        thickness = np.maximum(thickness, np.sqrt(np.clip(1 - rho, 0, 1)))
        nuclei[(_ellipse(yy, xx, c + rng.normal(0, 0.05 * r, 2), (0.45 * r, 0.38 * r), angle) < 1)
               & (cells == label)] = label

    # Puncta inside the cells (and a few on the glass), at least 3 PSF sigmas and 3 px apart.
    spacing = max(3 * sigma, 3.0)
    points, owner = [], []
    for label in range(1, len(placed) + 1):
        area = (cells == label).sum()
        capacity = area / (np.pi * spacing ** 2)
        count = rng.integers(0, 3) if not loaded else int(min(80, capacity * rng.uniform(0.25, 0.5)))
        inside = np.argwhere((cells == label) & (nuclei == 0))
        for _ in range(50 * count + 50):
            if sum(o == label for o in owner) >= count or len(inside) == 0:
                break
            p = inside[rng.integers(len(inside))] + rng.uniform(-0.5, 0.5, 2)
            if all(np.hypot(*(p - q)) >= spacing for q in points):
                points.append(p)
                owner.append(label)
    points = np.array(points).reshape(-1, 2)
    owner = np.array(owner, int)

    # Photons: background with structure (out-of-focus light at the scale of cells), cytoplasmic
    # haze in the puncta channel, and puncta whose peak stands 15-40 noise sigmas above it.
    background = rng.uniform(5, 80)
    structure = ndi.gaussian_filter(rng.normal(size=shape), radius / 2)
    structure = 1 + 0.5 * structure / (np.abs(structure).max() + 1e-9)
    haze = background * rng.uniform(0.2, 1.0) * thickness
    floor = ndi.gaussian_filter(background * structure + haze, sigma)
    noise = np.sqrt(floor.mean() * (2 if settings["emccd"] else 1) + 4)
    peak = rng.uniform(15, 40) * noise * rng.lognormal(0, 0.25, len(points))
    spots = render_points(shape, points, peak / _peak_of_unit(sigma, profile), sigma_px=sigma, profile=profile)
    bright = rng.uniform(0.4, 1.6, len(placed) + 1)
    nuclear = ndi.gaussian_filter(30 * background * bright[nuclei] * (nuclei > 0), sigma) + background
    stain = ndi.gaussian_filter(10 * background * bright[cells] * thickness, sigma) + background * structure
    channels = [nuclear, spots + floor, stain]
    read = rng.uniform(1, 6)
    image = np.stack([camera(rng, c, bits=bits, emccd=settings["emccd"], read_noise=read,
                             correlate=settings["correlate"], offset=rng.uniform(0, 0.05) * (2 ** bits - 1))
                      for c in channels])
    return MicroscopeField(image=image, cells=cells, nuclei=nuclei, puncta=points, owner=owner,
                           pixel_size_um=pixel, settings=settings)


def _peak_of_unit(sigma, profile):
    """Peak pixel fraction of a unit point source centred on a pixel."""
    half = int(np.ceil(6 * sigma))
    grid = np.arange(-half, half + 1).astype(float)
    return psf_window(grid[:, None], grid[None, :], sigma_px=sigma, profile=profile)[half, half]
