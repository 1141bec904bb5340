"""Synthetic in-vitro assays with known truth: marker-stained macrophage wells, scratch-assay
series and transwell membranes.

Each generator carries its own optics and camera (none of the analysers' constants): objects are
drawn as geometry, blurred by a Gaussian PSF, scaled into photons, and recorded with Poisson
noise, a camera offset and read noise. Everything follows from one seed.

- Macrophage wells (:func:`simulate_marker_well`): Hoechst nuclei, a CellMask cytoplasm, CD63
  puncta taken up per cell and two polarization markers. Each cell is marker-positive or not
  (its truth); a positive cell's marker level is lognormal around a bright median, a negative
  cell's around a dim nonspecific one. In exosome-treated wells the chance of being CD206
  positive rises with the cell's uptake (and of being iNOS positive falls), so high-uptake cells
  shift most.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage as ndi

# The simulated microscope: its own numbers, not the analysis' priors.
_OFFSET_ADU = 96.0
_READ_NOISE_ADU = 2.5
_WELL_PIXEL_UM = 0.2
_PSF_SIGMA_UM = 0.21  # spot FWHM ~0.5 µm at 60x, NA 1.4
_CELL_RADIUS_UM = (6.0, 8.0)
_NUCLEUS_RADIUS_UM = (3.2, 4.2)
_MARKER_POSITIVE_MEDIAN = 900.0  # photons per pixel in a positive cell
_MARKER_NEGATIVE_MEDIAN = 160.0  # nonspecific staining and autofluorescence
_MARKER_LOG_SD = 0.35


@dataclass
class MarkerWell:
    """One simulated well: a CYX image, its channel names, truth labels and per-cell truth."""

    image: np.ndarray
    channel_names: list[str]
    cells: np.ndarray
    nuclei: np.ndarray
    truth: pd.DataFrame  # cell_id, y, x, puncta, <m>_positive, <m>_level
    pixel_size_um: float = _WELL_PIXEL_UM
    markers: tuple = field(default_factory=tuple)


def _camera(rng, photons):
    counts = rng.poisson(np.clip(photons, 0, None)).astype(np.float64)
    adu = counts + _OFFSET_ADU + rng.normal(0, _READ_NOISE_ADU, counts.shape)
    return np.clip(np.round(adu), 0, 65535).astype(np.uint16)


def _logistic(x):
    return 1 / (1 + np.exp(-x))


def positive_probability(marker: str, puncta: np.ndarray, *, treated: bool) -> np.ndarray:
    """Truth model: chance that a cell expresses ``marker`` given its internalised puncta."""
    lifted = np.log1p(puncta)
    if marker.upper() == "CD206":
        return _logistic(-1.8 + (1.0 * lifted if treated else 0.0))
    return _logistic(-0.2 - (0.7 * lifted if treated else 0.0))  # iNOS falls with uptake


def simulate_marker_well(*, treated: bool, shape=(768, 768), markers=("CD206", "iNOS"),
                         mean_puncta: float = 8.0, seed: int = 0) -> MarkerWell:
    """Simulate one marker-stained macrophage well.

    Parameters
    ----------
    treated : bool
        Exosome-treated (uptake, polarization tied to it) or control (PBS: hardly any puncta).
    shape : (int, int)
        Field in pixels (0.2 µm each).
    markers : tuple of str
        Marker channels; ``CD206`` follows the M2 model, any other the M1 (iNOS) one.
    mean_puncta : float
        Mean puncta per treated cell; cells vary widely (gamma-distributed propensity).
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    px = _WELL_PIXEL_UM
    spacing = 2.3 * _CELL_RADIUS_UM[1] / px
    grid = [(y, x) for y in np.arange(spacing / 2, ny - spacing / 3, spacing)
            for x in np.arange(spacing / 2, nx - spacing / 3, spacing)]
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    cells = np.zeros(shape, np.int32)
    nuclei = np.zeros(shape, np.int32)
    dome = np.zeros(shape, np.float32)  # cell thickness profile
    rows = []
    for i, (gy, gx) in enumerate(grid, start=1):
        cy, cx = gy + rng.uniform(-0.12, 0.12) * spacing, gx + rng.uniform(-0.12, 0.12) * spacing
        r = rng.uniform(*_CELL_RADIUS_UM) / px
        box = (slice(max(0, int(cy - 1.2 * r)), int(cy + 1.2 * r) + 2),
               slice(max(0, int(cx - 1.2 * r)), int(cx + 1.2 * r) + 2))
        y, x = yy[box], xx[box]
        k, a, phase = rng.integers(2, 4), rng.uniform(0.05, 0.15), rng.uniform(0, 2 * np.pi)
        theta = np.arctan2(y - cy, x - cx)
        rho = np.hypot(y - cy, x - cx) / (r * (1 + a * np.cos(k * theta + phase)))
        inside = (rho < 1) & (cells[box] == 0)
        cells[box][inside] = i
        dome[box][inside] = np.sqrt(1 - rho[inside] ** 2)
        rn = rng.uniform(*_NUCLEUS_RADIUS_UM) / px
        ecc, phi = rng.uniform(0.75, 1.0), rng.uniform(0, np.pi)
        u = (y - cy) * np.cos(phi) + (x - cx) * np.sin(phi)
        v = -(y - cy) * np.sin(phi) + (x - cx) * np.cos(phi)
        nuclei[box][(np.hypot(u / rn, v / (rn * ecc)) < 1) & (cells[box] == i)] = i
        rows.append({"cell_id": i, "y": cy, "x": cx})
    truth = pd.DataFrame(rows)
    n = len(truth)
    propensity = rng.gamma(0.8, mean_puncta / 0.8, n) if treated else rng.gamma(0.5, 0.3, n)
    truth["puncta"] = rng.poisson(propensity)

    # Puncta: uniform over each cell's cytoplasm, at least one PSF width apart.
    spots = np.zeros(shape, np.float32)
    cytoplasm = np.where(nuclei > 0, 0, cells).ravel()
    order = np.argsort(cytoplasm, kind="stable")
    starts = np.searchsorted(cytoplasm[order], np.arange(n + 2))
    placed = []
    for row in truth.itertuples():
        chosen = []
        for idx in rng.permutation(order[starts[row.cell_id]:starts[row.cell_id + 1]]):
            if len(chosen) == row.puncta:
                break
            y, x = divmod(int(idx), nx)
            if all((y - cy) ** 2 + (x - cx) ** 2 > (0.6 / px) ** 2 for cy, cx in chosen):
                chosen.append((y, x))
        for y, x in chosen:
            spots[y, x] += rng.lognormal(np.log(700.0), 0.3)
        placed.append(len(chosen))
    truth["puncta"] = placed

    psf = _PSF_SIGMA_UM / px
    signal = {"Hoechst": ndi.gaussian_filter(np.where(nuclei > 0, 1200.0, 0.0), psf),
              "CellMask": ndi.gaussian_filter(250.0 * dome * (cells > 0), psf),
              "CD63-RFP": ndi.gaussian_filter(spots, psf) + ndi.gaussian_filter(20.0 * dome, 4 * psf)}
    texture = 1 + 0.15 * ndi.gaussian_filter(rng.normal(size=shape), 4) / 0.04
    for marker in markers:
        p = positive_probability(marker, truth["puncta"].to_numpy(float), treated=treated)
        positive = rng.random(n) < p
        median = np.where(positive, _MARKER_POSITIVE_MEDIAN, _MARKER_NEGATIVE_MEDIAN)
        level = median * rng.lognormal(0, _MARKER_LOG_SD, n)
        truth[f"{marker}_positive"] = positive
        truth[f"{marker}_level"] = level
        per_pixel = np.concatenate([[0.0], level])[cells] * np.clip(texture, 0.5, 1.5)
        signal[marker] = ndi.gaussian_filter(per_pixel, 2 * psf)
    names = ["Hoechst", "CD63-RFP", "CellMask", *markers]
    ramp = 1 + 0.3 * xx / nx
    background = {"Hoechst": 30.0, "CD63-RFP": 40.0, "CellMask": 25.0}
    image = np.stack([_camera(rng, signal[c] + background.get(c, 60.0) * ramp) for c in names])
    return MarkerWell(image=image, channel_names=names, cells=cells, nuclei=nuclei, truth=truth,
                      markers=tuple(markers))


def true_spearman(truth: pd.DataFrame, marker: str) -> float:
    """Spearman correlation between each cell's true puncta and its true marker level."""
    from scipy.stats import spearmanr

    return float(spearmanr(truth["puncta"], truth[f"{marker}_level"]).statistic)


def write_marker_well(directory, sample: str, well: MarkerWell) -> Path:
    """Write a well as an OME-TIFF under ``directory/images`` and its truth under
    ``directory/truth/<sample>``; returns the image path relative to ``directory``."""
    from .io import write_ome_tiff

    directory = Path(directory)
    rel = Path("images") / f"{sample}.ome.tif"
    (directory / rel).parent.mkdir(parents=True, exist_ok=True)
    write_ome_tiff(directory / rel, well.image, axes="CYX", channel_names=well.channel_names,
                   pixel_size_um=(1.0, well.pixel_size_um, well.pixel_size_um))
    truth = directory / "truth" / sample
    truth.mkdir(parents=True, exist_ok=True)
    well.truth.to_csv(truth / "cells.csv", index=False)
    tifffile.imwrite(truth / "cells.tif", well.cells, compression="zlib")
    return rel


@dataclass
class ScratchSeries:
    """A scratch assay: frames (T, Y, X), their times, the truth wound masks and the truth rate."""

    frames: np.ndarray
    times_h: np.ndarray
    wound: np.ndarray  # bool (T, Y, X)
    pixel_size_um: float
    width_rate_um_h: float  # true loss of mean width per hour


def simulate_scratch_series(*, kind: str = "phase", shape=(384, 384), pixel_size_um: float = 1.3,
                            times_h=(0, 4, 8, 12), initial_width_um: float = 200.0,
                            front_speed_um_h: float = 5.0, seed: int = 0) -> ScratchSeries:
    """Simulate a closing scratch in a monolayer.

    The scratch runs top to bottom; each front advances at ``front_speed_um_h`` with a rough,
    smoothly wandering edge. Cells (ellipses of 6-10 µm radius, denser than one layer) fill
    everything outside the scratch and are redrawn at each timepoint (they move). ``kind``
    ``"phase"``: dark cell bodies with bright halos on a grey field and Gaussian camera noise;
    ``"fluorescence"``: a cytoplasmic stain on a dark field with photon noise.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    centre = nx / 2 + rng.uniform(-0.05, 0.05) * nx
    waves = [(rng.uniform(4, 10) / pixel_size_um, rng.uniform(1, 4), rng.uniform(0, 2 * np.pi)) for _ in range(3)]
    frames, wounds = [], []
    for t in times_h:
        half = (initial_width_um / 2 - front_speed_um_h * t) / pixel_size_um
        rough_l = sum(a * np.sin(2 * np.pi * k * yy[:, :1] / ny + p) for a, k, p in waves)
        rough_r = sum(a * np.sin(2 * np.pi * (k + 1) * yy[:, :1] / ny + 2 * p) for a, k, p in waves)
        wound = (xx > centre - half + rough_l) & (xx < centre + half + rough_r)
        body = np.zeros(shape, np.float32)
        n_cells = int(1.6 * ny * nx * pixel_size_um ** 2 / (np.pi * 8.0 ** 2))
        for cy, cx in rng.uniform([0, 0], [ny, nx], (n_cells, 2)):
            r = rng.uniform(6, 10) / pixel_size_um
            e, phi = rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)
            box = (slice(max(0, int(cy - r) - 1), int(cy + r) + 2),
                   slice(max(0, int(cx - r) - 1), int(cx + r) + 2))
            u = (yy[box] - cy) * np.cos(phi) + (xx[box] - cx) * np.sin(phi)
            v = -(yy[box] - cy) * np.sin(phi) + (xx[box] - cx) * np.cos(phi)
            rho = np.hypot(u / r, v / (r * e))
            body[box] = np.maximum(body[box], np.clip(1 - rho ** 2, 0, None) * rng.uniform(0.6, 1.0))
        body *= ~wound
        if kind == "phase":
            edges = ndi.gaussian_filter(body, 1.0) - ndi.gaussian_filter(body, 3.0)
            signal = 1000 * (1 - 0.35 * ndi.gaussian_filter(body, 0.8) + 1.2 * np.clip(-edges, 0, None))
            frame = signal * (1 + 0.1 * xx / nx) + rng.normal(0, 12, shape)
        elif kind == "fluorescence":
            signal = 30 + 400 * ndi.gaussian_filter(body, 1.0)
            frame = rng.poisson(signal * (1 - 0.2 * yy / ny)) + _OFFSET_ADU + rng.normal(0, _READ_NOISE_ADU, shape)
        else:
            raise ValueError(f"kind must be phase or fluorescence, not {kind!r}")
        frames.append(np.clip(frame, 0, 65535).astype(np.uint16))
        wounds.append(wound)
    return ScratchSeries(frames=np.stack(frames), times_h=np.asarray(times_h, float), wound=np.stack(wounds),
                         pixel_size_um=pixel_size_um, width_rate_um_h=2 * front_speed_um_h)


@dataclass
class Membrane:
    """A transwell membrane field: the image (RGB YXS or one channel YX) and its truth."""

    image: np.ndarray
    n_cells: int
    n_pores: int
    pixel_size_um: float
    centres: np.ndarray  # (n_cells, 2) y, x in pixels


# Crystal violet as this simulator's camera sees it (not the analyser's vector).
_CV_OD = np.array([0.55, 0.78, 0.30])


def simulate_membrane(*, kind: str = "crystal_violet", shape=(512, 512), pixel_size_um: float = 0.65,
                      n_cells: int = 60, pore_diameter_um: float = 8.0, pore_spacing_um: float = 30.0,
                      seed: int = 0) -> Membrane:
    """Simulate a membrane's underside after a transwell assay.

    Pores: a jittered lattice of round holes of ``pore_diameter_um`` (in brightfield a grey rim
    that holds some crystal violet, in DAPI autofluorescent discs a third as bright as nuclei).
    Cells: ellipses of 11-16 µm that may touch (about one in five placed beside another),
    crystal-violet stained (or DAPI nuclei of 8-11 µm in ``kind="fluorescence"``).
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    step = pore_spacing_um / pixel_size_um
    pores = np.zeros(shape, np.float32)
    n_pores = 0
    for y in np.arange(step / 2, ny, step):
        for x in np.arange(step / 2 + (y // step % 2) * step / 2, nx, step):
            cy, cx = y + rng.normal(0, 0.08 * step), x + rng.normal(0, 0.08 * step)
            r = pore_diameter_um / 2 / pixel_size_um
            d = np.hypot(yy - cy, xx - cx)
            pores = np.maximum(pores, np.exp(-0.5 * ((d - r) / 1.2) ** 2) if kind == "crystal_violet"
                               else (d < r).astype(np.float32))
            n_pores += 1
    stain = np.zeros(shape, np.float32)
    centres = []
    while len(centres) < n_cells:
        if centres and rng.random() < 0.2:  # a neighbour touching the last cell
            py, px_ = centres[-1]
            angle = rng.uniform(0, 2 * np.pi)
            cy, cx = py + 11 / pixel_size_um * np.sin(angle), px_ + 11 / pixel_size_um * np.cos(angle)
        else:
            cy, cx = rng.uniform(10, ny - 10), rng.uniform(10, nx - 10)
        if not (8 <= cy < ny - 8 and 8 <= cx < nx - 8):
            continue
        if any(np.hypot(cy - y, cx - x) < 9 / pixel_size_um for y, x in centres):
            continue
        radius_um = rng.uniform(4.0, 5.5) if kind == "fluorescence" else rng.uniform(5.5, 8.0)
        r, e, phi = radius_um / pixel_size_um, rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
        u = (yy - cy) * np.cos(phi) + (xx - cx) * np.sin(phi)
        v = -(yy - cy) * np.sin(phi) + (xx - cx) * np.cos(phi)
        rho = np.hypot(u / r, v / (r * e))
        stain = np.maximum(stain, np.clip(1.2 * (1 - rho ** 4), 0, 1) * rng.uniform(0.7, 1.0))
        centres.append((cy, cx))
    if kind == "crystal_violet":
        od = (ndi.gaussian_filter(stain, 1.0)[..., None] * 0.9 * _CV_OD
              + pores[..., None] * (0.3 * np.ones(3) / np.sqrt(3) + 0.25 * _CV_OD) + 0.03)
        light = np.array([235.0, 228.0, 240.0]) * (1 - 0.1 * (xx / nx))[..., None]
        rgb = light * 10 ** (-od) + rng.normal(0, 2.0, od.shape)
        image = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    elif kind == "fluorescence":
        signal = 800 * ndi.gaussian_filter(stain, 1.0) + 250 * ndi.gaussian_filter(pores, 1.0) + 40
        image = _camera(rng, signal)
    else:
        raise ValueError(f"kind must be crystal_violet or fluorescence, not {kind!r}")
    return Membrane(image=image, n_cells=len(centres), n_pores=n_pores, pixel_size_um=pixel_size_um,
                    centres=np.array(centres))


def write_demo_vitro(directory, *, seed: int = 0) -> list[dict]:
    """Write the in-vitro demo samples under ``directory`` and return their sample-sheet rows:
    two PBS and two exosome marker wells (CD206, iNOS), a phase-contrast scratch series per
    group (a folder of timed images), and a crystal-violet membrane per group."""
    directory = Path(directory)
    rows = []
    for i, (sample, treated) in enumerate([("mac_pbs1", False), ("mac_pbs2", False),
                                           ("mac_exo1", True), ("mac_exo2", True)]):
        well = simulate_marker_well(treated=treated, shape=(512, 512), seed=seed * 100 + i)
        rel = write_marker_well(directory, sample, well)
        rows.append({"sample": sample, "modality": "fluorescence", "group": "exosome" if treated else "PBS",
                     "subject": sample, "timepoint": 24, "path": rel.as_posix(),
                     "channels": "nuclei=Hoechst;exosomes=CD63-RFP;cells=CellMask;markers=CD206,iNOS"})
    for i, (sample, group, speed) in enumerate([("scratch_pbs", "PBS", 4.0), ("scratch_exo", "exosome", 7.0)]):
        series = simulate_scratch_series(kind="phase", shape=(256, 256), initial_width_um=200.0,
                                         front_speed_um_h=speed, seed=seed * 100 + 10 + i)
        folder = directory / "images" / sample
        folder.mkdir(parents=True, exist_ok=True)
        for frame, t in zip(series.frames, series.times_h):
            tifffile.imwrite(folder / f"{sample}_{t:g}h.tif", frame)
        rows.append({"sample": sample, "modality": "wound", "group": group, "subject": sample,
                     "pixel_size_um": series.pixel_size_um, "path": f"images/{sample}"})
    for i, (sample, group, n) in enumerate([("membrane_pbs", "PBS", 25), ("membrane_exo", "exosome", 50)]):
        membrane = simulate_membrane(shape=(384, 384), n_cells=n, seed=seed * 100 + 20 + i)
        rel = Path("images") / f"{sample}.tif"
        tifffile.imwrite(directory / rel, membrane.image, photometric="rgb")
        rows.append({"sample": sample, "modality": "transwell", "group": group, "subject": sample,
                     "pixel_size_um": membrane.pixel_size_um, "path": rel.as_posix()})
    return rows
