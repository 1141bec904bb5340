"""Synthetic uptake fields with known ground truth, for the demo, the tests and the benchmarks.

A field holds macrophage-like cells (irregular, some touching), their nuclei, and CD63-RFP puncta
taken up into the cytoplasm (densest around the nucleus), plus a few exosomes on the glass. It is
imaged through a Gaussian PSF onto a camera with uneven illumination, Poisson photon noise, an
offset and Gaussian read noise. Everything is drawn from one seed, so a field is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage as ndi
from scipy.special import erf

from .io import write_ome_tiff
from .demo_bli import write_demo_acquisitions
from .demo_histology import write_demo_sections
from .demo_photoacoustic import write_demo_volumes

CHANNELS = ["Hoechst", "CD63-RFP", "CellMask"]
PIXEL_SIZE_UM = 0.1625
# The demo's optics, set apart from the analysis's defaults and priors so that the calibration is
# exercised: PSF sigma 0.2 µm laterally (FWHM 0.47 µm; the analysis's prior assumes 0.177), 3.3
# times that along z (the analysis assumes 3). Movies keep the PSF the tracking figures were
# measured with.
SPOT_SIGMA_UM = 0.2
AXIAL_SIGMA_RATIO = 3.3
MOVIE_SPOT_SIGMA_UM = 0.17678
CAMERA_OFFSET_ADU = 100.0
READ_NOISE_ADU = 2.0
GAIN_ADU_PER_PHOTON = 1.0
# Puncta closer than this are optically unresolvable and not generated as separate objects.
MIN_PUNCTA_DISTANCE_UM = 0.5


@dataclass
class Field:
    """A simulated field: the camera image and what is really in it."""

    image: np.ndarray  # (C, Y, X) or (Z, C, Y, X), uint16
    cells: np.ndarray  # cell labels, (Y, X) or (Z, Y, X)
    nuclei: np.ndarray  # nucleus labels, each carrying its cell's label
    puncta: pd.DataFrame  # z, y, x (pixels), cell_id (0 = outside), photons
    pixel_size_um: tuple[float, float, float]


def _place_cells(rng, shape_yx, radius_px, n_cells):
    centres, radii = [], []
    ny, nx = shape_yx
    for _ in range(4000):
        if len(centres) == n_cells:
            break
        r = radius_px * rng.uniform(0.8, 1.2)
        c = rng.uniform([0.2 * r, 0.2 * r], [ny - 0.2 * r, nx - 0.2 * r])
        # Centres as close as 1.3 radii make touching, overlapping cells, the hard case.
        if all(np.hypot(*(c - c2)) > 1.3 * max(r, r2) for c2, r2 in zip(centres, radii)):
            centres.append(c)
            radii.append(r)
    return np.array(centres), np.array(radii)


def gaussian_spots(shape, positions, photons, sigma):
    """Render spots of given total photons, integrating the Gaussian PSF over each pixel."""
    out = np.zeros(shape, np.float64)
    if len(positions) == 0:
        return out
    half = int(np.ceil(4 * sigma.max()))
    offsets = np.arange(-half, half + 1)
    ndim = len(shape)
    base = np.floor(positions).astype(int)
    weights = []
    for axis in range(ndim):
        pix = base[:, axis, None] + offsets[None, :]
        edges_lo = (pix - 0.5 - positions[:, axis, None]) / (np.sqrt(2) * sigma[axis])
        edges_hi = (pix + 0.5 - positions[:, axis, None]) / (np.sqrt(2) * sigma[axis])
        weights.append((pix, 0.5 * (erf(edges_hi) - erf(edges_lo))))
    grids = np.meshgrid(*[np.arange(offsets.size)] * ndim, indexing="ij")
    value = photons[:, None]
    index = []
    for axis, g in enumerate(grids):
        pix, w = weights[axis]
        value = value * w[:, g.ravel()]
        index.append(pix[:, g.ravel()])
    inside = np.ones(value.shape, bool)
    for axis, idx in enumerate(index):
        inside &= (idx >= 0) & (idx < shape[axis])
    np.add.at(out, tuple(idx[inside] for idx in index), value[inside])
    return out


def simulate_uptake_field(*, shape=(512, 512), n_z: int | None = None, z_step_um: float = 0.5,
                          pixel_size_um: float = PIXEL_SIZE_UM, n_cells: int = 10,
                          puncta_per_cell: float = 40.0, extracellular_puncta: float = 5.0,
                          seed: int = 0) -> Field:
    """Simulate one uptake field.

    Parameters
    ----------
    shape : (int, int)
        Field size in pixels.
    n_z : int, optional
        Number of planes for a 3-D stack (``z_step_um`` apart); 2-D widefield if omitted.
    puncta_per_cell : float
        Mean number of internalised puncta per cell (cells vary around it).
    extracellular_puncta : float
        Mean number of exosomes lying on the glass between cells.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    radius_px = 9.5 / pixel_size_um
    centres, radii = _place_cells(rng, shape, radius_px, n_cells)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)

    best = np.full(shape, np.inf, np.float32)
    cells = np.zeros(shape, np.int32)
    rho_nuc = np.full(shape, np.inf, np.float32)
    nuclei = np.zeros(shape, np.int32)
    shapes = []
    for i, ((cy, cx), r) in enumerate(zip(centres, radii), start=1):
        harm = [(k, rng.uniform(0, a), rng.uniform(0, 2 * np.pi)) for k, a in ((2, 0.15), (3, 0.08), (5, 0.04))]
        # The harmonics stretch a cell to at most 1.27 radii: work inside that box.
        box = tuple(slice(max(0, int(c - 1.3 * r)), min(n, int(c + 1.3 * r) + 2)) for c, n in ((cy, ny), (cx, nx)))
        y, x = yy[box], xx[box]
        theta = np.arctan2(y - cy, x - cx)
        r_theta = r * (1 + sum(a * np.cos(k * theta + p) for k, a, p in harm))
        rho = np.hypot(y - cy, x - cx) / r_theta
        take = (rho < 1) & (rho < best[box])
        best[box][take] = rho[take]
        cells[box][take] = i
        a = 0.42 * r * rng.uniform(0.9, 1.1)
        b = a * rng.uniform(0.7, 0.95)
        phi = rng.uniform(0, np.pi)
        ncy, ncx = cy + rng.normal(0, 0.05 * r), cx + rng.normal(0, 0.05 * r)
        u = (y - ncy) * np.cos(phi) + (x - ncx) * np.sin(phi)
        v = -(y - ncy) * np.sin(phi) + (x - ncx) * np.cos(phi)
        rn = np.hypot(u / a, v / b)
        inside = rn < 1
        rho_nuc[box][inside] = np.minimum(rho_nuc[box][inside], rn[inside])
        nuclei[box][inside] = i
        shapes.append((cy, cx, harm, r))
    nuclei = np.where(nuclei == cells, nuclei, 0)
    thickness = np.where(cells > 0, np.sqrt(np.clip(1 - best ** 2, 0, 1)), 0).astype(np.float32)
    nuc_thickness = np.where(nuclei > 0, np.sqrt(np.clip(1 - rho_nuc ** 2, 0, 1)), 0).astype(np.float32)

    # Puncta: perinuclear-biased positions inside each cell's own territory.
    min_d = MIN_PUNCTA_DISTANCE_UM / pixel_size_um
    points, owners = [], []

    def _accept(p):
        return all(np.hypot(*(p - q)) >= min_d for q in points[-400:]) if points else True

    for i, (cy, cx, harm, r) in enumerate(shapes, start=1):
        count = rng.poisson(puncta_per_cell * rng.uniform(0.5, 1.5))
        placed = tries = 0
        while placed < count and tries < 50 * count + 50:
            tries += 1
            theta = rng.uniform(0, 2 * np.pi)
            rr = r * (1 + sum(a * np.cos(k * theta + p) for k, a, p in harm))
            rho = 0.25 + 0.7 * rng.beta(1.5, 2.5)
            p = np.array([cy + rho * rr * np.sin(theta), cx + rho * rr * np.cos(theta)])
            iy, ix = int(round(p[0])), int(round(p[1]))
            if not (0 <= iy < ny and 0 <= ix < nx) or cells[iy, ix] != i or not _accept(p):
                continue
            points.append(p)
            owners.append(i)
            placed += 1
    outside = 0
    target = rng.poisson(extracellular_puncta)
    while outside < target:
        p = rng.uniform([2, 2], [ny - 2, nx - 2])
        if cells[int(round(p[0])), int(round(p[1]))] == 0 and _accept(p):
            points.append(p)
            owners.append(0)
            outside += 1
    points = np.array(points).reshape(-1, 2)
    photons = rng.lognormal(np.log(1500.0), 0.4, len(points))

    sigma_xy = SPOT_SIGMA_UM / pixel_size_um
    illum = _illumination(rng, shape)
    backgrounds = [40.0, 60.0, 40.0]
    brightness = {
        "nuc": rng.uniform(350, 800, len(shapes) + 1),
        "cyt": rng.uniform(120, 300, len(shapes) + 1),
        "auto": rng.uniform(8, 20, len(shapes) + 1),
    }
    texture = ndi.gaussian_filter(rng.normal(size=shape), 3)
    texture = 1 + 0.25 * texture / (texture.std() + 1e-9)

    if n_z is None:
        sigma = np.array([sigma_xy, sigma_xy])
        nuc = brightness["nuc"][nuclei] * nuc_thickness * texture
        cyt = brightness["cyt"][cells] * thickness
        auto = brightness["auto"][cells] * thickness
        spots = gaussian_spots(shape, points, photons, sigma)
        truth_cells, truth_nuclei = cells, nuclei
        z = np.zeros(len(points))
        planes = [ndi.gaussian_filter(c, sigma) for c in (nuc, cyt, auto)]
        signal = [planes[0], spots + planes[2], planes[1]]
        image = np.stack([camera(rng, s * illum + bg * _gradient(rng, shape)) for s, bg in zip(signal, backgrounds)])
        pixel = (1.0, pixel_size_um, pixel_size_um)
    else:
        zz = (np.arange(n_z) - 2) * z_step_um  # coverslip two planes into the stack
        height = 6.0 * thickness  # µm
        in_cell = (zz[:, None, None] >= 0) & (zz[:, None, None] < height[None])
        truth_cells = np.where(in_cell, cells[None], 0).astype(np.int32)
        nuc_half = 2.5 * nuc_thickness
        nuc_centre = 0.4 * height
        in_nuc = np.abs(zz[:, None, None] - nuc_centre[None]) < nuc_half[None]
        truth_nuclei = np.where(in_nuc & (nuclei[None] > 0) & in_cell, nuclei[None], 0).astype(np.int32)
        ry, rx = points[:, 0].round().astype(int), points[:, 1].round().astype(int)
        h = np.clip(height[ry.clip(0, ny - 1), rx.clip(0, nx - 1)], 1.2, None)
        z_um = np.where(np.array(owners) > 0, rng.uniform(0.5, h - 0.5), rng.uniform(0, 0.3, len(points)))
        z = z_um / z_step_um + 2
        sigma = np.array([AXIAL_SIGMA_RATIO * SPOT_SIGMA_UM / z_step_um, sigma_xy, sigma_xy])
        nuc = brightness["nuc"][truth_nuclei] * (truth_nuclei > 0) * texture[None] * 0.5
        cyt = brightness["cyt"][truth_cells] * (truth_cells > 0) * 0.4
        auto = brightness["auto"][truth_cells] * (truth_cells > 0) * 0.4
        spots = gaussian_spots((n_z, ny, nx), np.column_stack([z, points]), photons, sigma)
        planes = [ndi.gaussian_filter(c.astype(np.float64), sigma) for c in (nuc, cyt, auto)]
        signal = [planes[0], spots + planes[2], planes[1]]
        image = np.stack([camera(rng, s * illum[None] + bg * _gradient(rng, shape)[None])
                          for s, bg in zip(signal, backgrounds)], axis=1)
        pixel = (z_step_um, pixel_size_um, pixel_size_um)

    puncta = pd.DataFrame({"z": z, "y": points[:, 0], "x": points[:, 1],
                           "cell_id": np.array(owners, int), "photons": photons})
    return Field(image=image, cells=truth_cells, nuclei=truth_nuclei, puncta=puncta, pixel_size_um=pixel)


def _illumination(rng, shape):
    """Vignetting: excitation falls towards the edge of the field, off-centre."""
    ny, nx = shape
    cy, cx = rng.uniform(0.3, 0.7) * ny, rng.uniform(0.3, 0.7) * nx
    r2 = ((np.arange(ny)[:, None] - cy) ** 2 + (np.arange(nx)[None] - cx) ** 2) / (0.5 * max(ny, nx)) ** 2
    return (1 - 0.25 * r2).clip(0.4, 1)


def _gradient(rng, shape):
    """Additive background that tilts across the field (medium, out-of-focus light)."""
    ny, nx = shape
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * np.arange(ny)[:, None] / ny + np.sin(angle) * np.arange(nx)[None] / nx
    return 1 + 0.4 * (ramp - ramp.min())


def camera(rng, photons):
    """Camera counts for expected photons: Poisson noise, gain, offset, Gaussian read noise."""
    counts = rng.poisson(np.clip(photons, 0, None)) * GAIN_ADU_PER_PHOTON
    adu = counts + CAMERA_OFFSET_ADU + rng.normal(0, READ_NOISE_ADU, counts.shape)
    return np.clip(np.round(adu), 0, 65535).astype(np.uint16)


# (sample, group, puncta per cell, 3-D?, file kind, channels column)
_DEMO_WELLS = [
    ("pbs_w1", "PBS", 1.0, False, "ome", ""),
    ("pbs_w2", "PBS", 1.0, False, "ome", ""),
    ("pbs_w3", "PBS", 1.0, False, "ome", "nuclei=Hoechst;exosomes=CD63-RFP"),
    ("pbs_w4", "PBS", 2.0, False, "ome", ""),
    ("exo_w1", "exosome", 30.0, False, "ome", ""),
    ("exo_w2", "exosome", 60.0, False, "ome", ""),
    ("exo_w3", "exosome", 120.0, False, "ome", "nuclei=Hoechst;exosomes=CD63-RFP"),
    ("exo_w4", "exosome", 45.0, False, "ome", ""),
    ("exo_z1", "exosome", 40.0, True, "imagej", "nuclei=0;exosomes=1;cells=2"),
]


# (sample, group, ISBI SNR, with cells?)
_DEMO_MOVIES = [
    ("live_w1", "exosome_live", 4.0, True),
    ("live_w2", "exosome_live", 7.0, False),
]


def write_demo(directory, *, seed: int = 0) -> Path:
    """Write the demo study into ``directory`` and return the path of its sample sheet.

    Eight 2-D wells (PBS and exosome-treated, four each, with different uptake across the exosome
    wells; one well per group analysed without its cell stain), one 3-D stack and two
    time-lapses (one over cells at SNR 4, one of the CD63 channel alone at SNR 7), IVIS acquisitions
    of six mice over three weeks (see :func:`exotrack.demo_bli.write_demo_acquisitions`), their
    lymph nodes in ultrasound / photoacoustic volumes on day 21, twelve IHC
    lymph-node sections (CD206 and NOS2 for three mice per group), each as a real file with
    metadata, and the ground truth of every object under ``truth/<sample>/``.
    """
    directory = Path(directory)
    rows = []
    for index, (sample, group, dose, is_3d, kind, channels) in enumerate(_DEMO_WELLS):
        field = simulate_uptake_field(
            shape=(256, 256) if is_3d else (512, 512), n_z=20 if is_3d else None,
            n_cells=3 if is_3d else 10, puncta_per_cell=dose, seed=seed * 1000 + index)
        rel = Path("images") / group / (f"{sample}.ome.tif" if kind == "ome" else f"{sample}.tif")
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == "ome":
            write_ome_tiff(target, field.image, axes="CYX", channel_names=CHANNELS,
                           pixel_size_um=field.pixel_size_um)
        else:
            tifffile.imwrite(target, field.image, imagej=True,
                             resolution=(1 / field.pixel_size_um[2], 1 / field.pixel_size_um[1]),
                             metadata={"axes": "ZCYX", "spacing": field.pixel_size_um[0], "unit": "um"})
        truth = directory / "truth" / sample
        truth.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(truth / "cells.tif", field.cells, compression="zlib")
        tifffile.imwrite(truth / "nuclei.tif", field.nuclei, compression="zlib")
        field.puncta.to_csv(truth / "puncta.csv", index=False)
        rows.append({"sample": sample, "modality": "fluorescence", "group": group,
                     "subject": sample, "timepoint": 24, "marker": "CD63-RFP",
                     "channels": channels, "path": rel.as_posix()})
    for index, (sample, group, snr, with_cells) in enumerate(_DEMO_MOVIES, start=len(_DEMO_WELLS)):
        cells = simulate_uptake_field(shape=(256, 256), n_cells=4, puncta_per_cell=0,
                                      seed=seed * 1000 + index) if with_cells else None
        movie = simulate_movie(shape=(256, 256), n_frames=40, n_particles=40, snr=snr, cells=cells,
                               bleach_per_frame=0.005, seed=seed * 1000 + index)
        names = ["Hoechst", "CellMask", "CD63-RFP"] if with_cells else ["CD63-RFP"]
        rel = Path("images") / group / f"{sample}.ome.tif"
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        write_ome_tiff(target, movie.image, axes="TCYX", channel_names=names,
                       pixel_size_um=(1.0, movie.pixel_size_um, movie.pixel_size_um),
                       frame_interval_s=movie.frame_interval_s)
        truth = directory / "truth" / sample
        truth.mkdir(parents=True, exist_ok=True)
        movie.tracks.to_csv(truth / "tracks.csv", index=False)
        if cells is not None:
            tifffile.imwrite(truth / "cells.tif", cells.cells, compression="zlib")
            tifffile.imwrite(truth / "nuclei.tif", cells.nuclei, compression="zlib")
        rows.append({"sample": sample, "modality": "fluorescence", "group": group, "subject": sample,
                     "timepoint": 24, "marker": "CD63-RFP", "path": rel.as_posix(),
                     "channels": "" if with_cells else "exosomes=CD63-RFP"})
    rows += write_demo_acquisitions(directory, seed=seed)
    rows += write_demo_volumes(directory, seed=seed)
    rows += write_demo_sections(directory, seed=seed)
    sheet = directory / "samples.tsv"
    pd.DataFrame(rows).to_csv(sheet, sep="\t", index=False)
    return sheet


def isbi_peak_photons(snr: float, background: float) -> float:
    """Peak photons above background for an ISBI SNR, (peak - background) / sqrt(peak)."""
    return (snr ** 2 + snr * np.sqrt(snr ** 2 + 4 * background)) / 2


@dataclass
class Movie:
    """A simulated time-lapse and the true tracks of its particles."""

    image: np.ndarray  # (T, C, Y, X) uint16; the exosome channel is the last
    tracks: pd.DataFrame  # track_id, frame, y, x, visible, motion
    pixel_size_um: float
    frame_interval_s: float


def simulate_movie(*, shape=(256, 256), n_frames: int = 50, n_particles: float = 60, snr: float = 4.0,
                   background_photons: float = 10.0, step_sigma_px: float = 1.2,
                   directed_fraction: float = 0.3, speed_px: tuple[float, float] = (1.5, 3.0),
                   mean_lifetime: float = 30.0, blink_probability: float = 0.05,
                   bleach_per_frame: float = 0.0, frame_interval_s: float = 1.0,
                   pixel_size_um: float = PIXEL_SIZE_UM, cells: Field | None = None, seed: int = 0) -> Movie:
    """Vesicle-like particles in a time-lapse, in the spirit of the ISBI 2012 challenge.

    Particles appear (at a steady rate keeping about ``n_particles`` present), live for a
    geometric number of frames, move by Brownian steps (``step_sigma_px`` per axis) or, for
    ``directed_fraction`` of them, along a straight line at a speed drawn from ``speed_px``
    (pixels per frame) with a small Brownian jitter, and blink off with ``blink_probability`` per
    frame. Brightness gives the ISBI signal-to-noise ratio ``snr`` over ``background_photons``,
    fading by ``bleach_per_frame`` per frame. With ``cells`` (a 2-D :class:`Field`), its nuclear and
    cell-stain channels come first and the particles are imaged over its CD63 channel.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    sigma = MOVIE_SPOT_SIGMA_UM / pixel_size_um
    peak = isbi_peak_photons(snr, background_photons)
    photons = peak * 2 * np.pi * sigma ** 2
    rows = []
    next_id = 1
    alive = []
    for t in range(n_frames):
        for p in alive:  # last frame's particles move on
            jitter = 0.25 * step_sigma_px if p["directed"] else step_sigma_px
            p["y"] += p["vy"] + rng.normal(0, jitter)
            p["x"] += p["vx"] + rng.normal(0, jitter)
        births = rng.poisson(n_particles if t == 0 else n_particles / mean_lifetime)
        for _ in range(births):
            directed = bool(rng.random() < directed_fraction)
            angle = rng.uniform(0, 2 * np.pi)
            speed = rng.uniform(*speed_px) if directed else 0.0
            alive.append({"id": next_id, "y": rng.uniform(0, ny - 1), "x": rng.uniform(0, nx - 1),
                          "vy": speed * np.sin(angle), "vx": speed * np.cos(angle), "directed": directed})
            next_id += 1
        survivors = []
        for p in alive:
            if not (0 <= p["y"] <= ny - 1 and 0 <= p["x"] <= nx - 1):
                continue  # left the field
            rows.append({"track_id": p["id"], "frame": t, "y": p["y"], "x": p["x"],
                         "visible": bool(rng.random() >= blink_probability),
                         "motion": "directed" if p["directed"] else "brownian"})
            if rng.random() >= 1 / mean_lifetime:
                survivors.append(p)
        alive = survivors
    tracks = pd.DataFrame(rows, columns=["track_id", "frame", "y", "x", "visible", "motion"])
    frames = []
    for t in range(n_frames):
        now = tracks[(tracks["frame"] == t) & tracks["visible"]]
        fade = (1 - bleach_per_frame) ** t
        spots = gaussian_spots(shape, now[["y", "x"]].to_numpy(), np.full(len(now), photons * fade),
                                np.array([sigma, sigma]))
        exo = camera(rng, spots + background_photons)
        frames.append(np.stack([cells.image[0], cells.image[2], exo]) if cells is not None else exo[None])
    # Track ids renumbered by first appearance, as a tracker would.
    _, tracks["track_id"] = np.unique(tracks["track_id"], return_inverse=True)
    tracks["track_id"] += 1
    return Movie(image=np.stack(frames), tracks=tracks, pixel_size_um=pixel_size_um,
                 frame_interval_s=frame_interval_s)
