"""In-vitro uptake: nuclei, cells and CD63-RFP puncta, puncta assigned to cells, per-cell measures.

:func:`analyse_image` is the science on arrays; :func:`process_sample` reads one sample's file,
runs it and writes the sample's outputs, turning any failure into a ``status`` that names the
problem so that other samples are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage import segmentation

from . import io, markers, progress, qc, tracking
from .aggregate import TIMELAPSE_HEADLINE
from .background import background_surface
from .labels import given_labels
from .puncta import (detect_puncta, measure_spot_sigma, path_evidence, path_puncta, position_sd_px, snr_image,
                     spot_sigma_px)
from .segmentation import measure_nucleus_diameter, segment_nuclei_and_cells
from .sheet import parse_channels, parse_pixel_size

CELL_COLUMNS = ["cell_id", "frame", "y", "x", "area_um2", "nucleus_area_um2", "exosome_mean",
                "exosome_integrated", "puncta_count", "exosome_positive", "z", "volume_um3",
                "nucleus_volume_um3"]
PUNCTA_COLUMNS = ["spot_id", "frame", "z", "y", "x", "intensity", "cell_id", "snr", "position_sd_px"]
TRACK_COLUMNS = ["track_id", "frame", "y", "x", "spot_id", "cell_id", "z"]
TRACK_SUMMARY_COLUMNS = ["track_id", "start_frame", "n_frames", "mean_speed_um_s", "diffusion_um2_s",
                         "msd_alpha", "msd_lag_min", "msd_lag_max", "frac_inside_cell", "location"]
CELL_TRACK_COLUMNS = ["cell_track_id", "start_frame", "n_frames", "mean_speed_um_min", "path_length_um",
                      "straightness"]

# Time-lapses, track_snr_threshold "auto": dim detections down to this SNR are linked, and their
# tracks kept where at most this fraction of them would be noise. Noise is judged on decoys: the
# same detections with every frame displaced out of register with the others, so that only chance
# links remain (the noise keeps its real distribution, photon-noise skew included).
DIM_SNR_FLOOR = 2.5
DIM_TRACK_FDR = 0.3
# Dim detections within this many spot sigmas of a confident punctum are its residue.
RESIDUE_SIGMAS = 4.0
# Puncta too dim for any one frame are sought along paths through the movie (puncta.path_evidence:
# puncta of SNR PATH_AMPLITUDE per frame, moving PATH_STEP_SIGMAS spot sigmas per frame and axis):
# candidates from PATH_FLOOR up where no frame detection is, kept from where decoy paths (through
# the displaced frames) are at most PATH_FDR of them. Their tracks then face the DIM_TRACK_FDR
# selection. Pixels within RESIDUE_SIGMAS of a confident punctum carry no path evidence.
PATH_AMPLITUDE = 1.2
PATH_STEP_SIGMAS = 1.5
PATH_FLOOR = 1.5
PATH_FDR = 0.3

DEFAULTS = {
    "channels": {"nuclei": "Hoechst", "exosomes": "CD63-RFP", "cells": "CellMask"},
    "pixel_size_um": None,
    "nucleus_diameter_um": "auto",
    "nucleus_diameter_prior_um": 10.0,
    "cell_expansion_um": 6.0,
    "max_cell_radius_um": 30.0,
    "spot_diameter_um": "auto",
    "spot_diameter_prior_um": 0.5,
    "spot_axial_ratio": 3.0,
    "snr_threshold": 5.5,
    "puncta_fdr": 0.03,
    "track_snr_threshold": "auto",
    "min_track_length": 3,
    "frame_interval_s": None,
    "min_puncta_positive": 1,
    "max_saturated_fraction": 0.05,
    "markers": markers.DEFAULTS,
}


@dataclass
class Result:
    """What one fluorescence image yields."""

    nuclei: np.ndarray  # labels, (T, Z, Y, X)
    cells: np.ndarray
    cell_table: pd.DataFrame
    puncta_table: pd.DataFrame
    metrics: dict
    pixel_size_um: tuple
    tracks: pd.DataFrame | None = None  # time-lapse only
    track_summary: pd.DataFrame | None = None
    cell_tracks: pd.DataFrame | None = None


def measure_cells(cells: np.ndarray, nuclei: np.ndarray, exosome: np.ndarray, puncta: pd.DataFrame,
                  *, pixel_size_um, min_puncta_positive: int = 1) -> pd.DataFrame:
    """Per-cell measurements for one 2-D or 3-D frame.

    Exosome intensities are corrected by a smooth background surface fitted outside the cells.
    ``puncta`` must already carry each punctum's ``cell_id``.
    """
    n = int(cells.max())
    flat = cells.ravel()
    count = np.bincount(flat, minlength=n + 1)[1:]
    nuc_count = np.bincount(nuclei.ravel(), minlength=n + 1)[1:n + 1]
    around = ndi.maximum_filter(cells > 0, size=7)  # cells and a 3-pixel margin
    corrected = exosome.astype(np.float32) - background_surface(exosome, exclude=around)
    integrated = np.bincount(flat, weights=corrected.ravel(), minlength=n + 1)[1:]
    coords = np.indices(cells.shape, dtype=np.float32)
    centroid = [np.bincount(flat, weights=c.ravel(), minlength=n + 1)[1:] / np.maximum(count, 1)
                for c in coords]
    in_cell = puncta["cell_id"].to_numpy(int)
    puncta_count = np.bincount(in_cell, minlength=n + 1)[1:n + 1]
    voxel = float(np.prod(pixel_size_um))
    area = float(np.prod(pixel_size_um[-2:]))
    is_3d = cells.ndim == 3
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame({
            "cell_id": np.arange(1, n + 1),
            "y": centroid[-2],
            "x": centroid[-1],
            "area_um2": np.nan if is_3d else count * area,
            "nucleus_area_um2": np.nan if is_3d else nuc_count * area,
            "exosome_mean": integrated / count,
            "exosome_integrated": integrated,
            "puncta_count": puncta_count,
            "exosome_positive": puncta_count >= min_puncta_positive,
            "z": centroid[0] if is_3d else 0.0,
            "volume_um3": count * voxel if is_3d else np.nan,
            "nucleus_volume_um3": nuc_count * voxel if is_3d else np.nan,
        })
    return table


def segment_frame(nuclei_image, cell_image=None, *, pixel_size_um, options: dict):
    """Nuclei and cells of one 2-D or 3-D frame (see :func:`segment_nuclei_and_cells`)."""
    return segment_nuclei_and_cells(
        nuclei_image, cell_image, pixel_size_um=pixel_size_um,
        nucleus_diameter_um=options["nucleus_diameter_um"],
        cell_expansion_um=options["cell_expansion_um"],
        max_cell_radius_um=options["max_cell_radius_um"])


def detect_frame(exosome_image, *, pixel_size_um, options: dict, snr_threshold: float, fdr: float | None = None):
    """Puncta of one 2-D or 3-D frame (see :func:`detect_puncta`); ``options["spot_diameter_um"]``
    must be a number (see :func:`calibrate_spots`)."""
    return detect_puncta(exosome_image, pixel_size_um=pixel_size_um,
                         spot_diameter_um=options["spot_diameter_um"],
                         axial_ratio=options["spot_axial_ratio"],
                         snr_threshold=snr_threshold, exclude=padding(exosome_image), fdr=fdr)


# Spot calibration: at most this many frames of a movie are searched for isolated puncta.
CALIBRATION_FRAMES = 6
# A configured spot width this far from the measured one (relative) is flagged.
SPOT_WIDTH_TOLERANCE = 0.3
FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))


# Nucleus sizes outside this range (µm) suggest a wrong pixel size or a stain that is no nucleus.
NUCLEUS_RANGE_UM = (4.0, 40.0)


def calibrate_nuclei(nuclei: np.ndarray, *, spatial, options: dict) -> tuple[float, dict, list[str]]:
    """The nucleus diameter to segment with, what was measured, and warnings.

    Measured on the first frame of ``nuclei`` (``(T, Z, Y, X)``, see
    :func:`measure_nucleus_diameter`); with ``nucleus_diameter_um`` "auto" the measurement is
    used, or ``nucleus_diameter_prior_um`` where no nucleus stands out; a number is used as given.
    """
    configured = options["nucleus_diameter_um"]
    plane = nuclei[0] if len(spatial) == 3 else nuclei[0, 0]
    diameter, n = measure_nucleus_diameter(plane, pixel_size_um=spatial)
    warnings = []
    if configured != "auto":
        return configured, {"nucleus_diameter_um": float(configured)}, warnings
    if not np.isfinite(diameter):
        prior = options["nucleus_diameter_prior_um"]
        warnings.append(f"no nucleus stands out to measure the nucleus size; the prior nucleus_diameter_prior_um "
                        f"{prior:g} was used")
        return prior, {"nucleus_diameter_um": float(prior)}, warnings
    low, high = NUCLEUS_RANGE_UM
    if not low <= diameter <= high:
        warnings.append(f"nuclei measure {diameter:.1f} µm across ({n} nuclei), outside {low:g}-{high:g} µm: "
                        "is the pixel size right?")
    return diameter, {"nucleus_diameter_um": diameter}, warnings


# More than this fraction of cells cut by the field's border is flagged.
MAX_BORDER_FRACTION = 0.2


def border_warnings(cells: np.ndarray) -> list[str]:
    """A warning when over ``MAX_BORDER_FRACTION`` of the cells (labels ``(T, [Z,] Y, X)``, all
    frames) touch the field's lateral border: their areas and counts are of cut cells."""
    total = cut = 0
    for frame in cells:
        rim = np.concatenate([frame[..., 0, :].ravel(), frame[..., -1, :].ravel(),
                              frame[..., :, 0].ravel(), frame[..., :, -1].ravel()])
        total += np.unique(frame[frame > 0]).size
        cut += np.unique(rim[rim > 0]).size
    if total == 0 or cut <= MAX_BORDER_FRACTION * total:
        return []
    return [f"{100 * cut / total:.0f}% of cells are cut by the image border: their areas, intensities and "
            "puncta counts are partial"]


def saturation_warnings(exosomes: np.ndarray, puncta: pd.DataFrame) -> list[str]:
    """A warning when puncta peak at the camera's ceiling (an integer type's maximum, or a 10-,
    12- or 14-bit camera's held in 16 bits): their intensities are underestimated."""
    top = float(exosomes.max())
    ceilings = [2.0 ** bits - 1 for bits in (8, 10, 12, 14, 16)]
    if top not in ceilings or puncta.empty:
        return []
    frames = puncta["frame"].to_numpy(int)
    index = [np.clip(np.round(puncta[c].to_numpy()).astype(int), 0, n - 1)
             for c, n in zip(("z", "y", "x"), exosomes.shape[1:])]
    saturated = int((exosomes[(frames, *index)] >= top).sum())
    if saturated == 0:
        return []
    return [f"{saturated} puncta peak at the camera's maximum ({top:g}): their intensities are underestimated"]


def calibrate_spots(exosomes: np.ndarray, *, spatial, options: dict) -> tuple[float, dict, list[str]]:
    """The spot diameter to detect with, what was measured, and warnings.

    The lateral spot width is measured on isolated puncta of ``exosomes`` (``(T, Z, Y, X)``; up
    to ``CALIBRATION_FRAMES`` frames of a movie and every slice of a stack are pooled, see
    :func:`measure_spot_sigma`). With ``spot_diameter_um`` "auto" the measured width is used, or
    ``spot_diameter_prior_um`` where too few isolated puncta measure it (a PBS control); a number
    is used as given, and flagged when the measurement disagrees with it. The diameter follows
    the convention of :func:`spot_sigma_px` (TrackMate's), the reported ``spot_fwhm_um`` is the
    measured full width at half maximum.
    """
    configured = options["spot_diameter_um"]
    auto = configured == "auto"
    prior = options["spot_diameter_prior_um"] if auto else configured
    prior_sigma = spot_sigma_px(spatial[-2:], spot_diameter_um=prior)[-1]
    frames = np.unique(np.linspace(0, len(exosomes) - 1, min(len(exosomes), CALIBRATION_FRAMES)).astype(int))
    planes = exosomes[frames]
    sigma, n = measure_spot_sigma(planes, prior_sigma_px=prior_sigma, exclude=padding(planes[0, 0]))
    warnings = []
    measured = {"spot_fwhm_um": float(sigma * FWHM_PER_SIGMA * spatial[-1]), "spot_fwhm_n_spots": int(n)}
    if not np.isfinite(sigma):
        if auto:
            warnings.append(f"only {n} isolated puncta: too few to measure the spot width; the prior "
                            f"spot_diameter_prior_um {prior:g} was used")
        return prior, measured, warnings
    diameter = float(sigma * 2 * np.sqrt(2) * spatial[-1])
    if auto:
        return diameter, measured, warnings
    if abs(diameter / configured - 1) > SPOT_WIDTH_TOLERANCE:
        warnings.append(f"the puncta measure {diameter:.2f} µm across (spot_diameter_um convention, from {n} "
                        f"isolated puncta), the configured spot_diameter_um is {configured:g}")
    return configured, measured, warnings


def position_columns(ndim: int) -> list[str]:
    """Table columns holding a position in an image of ``ndim`` spatial axes."""
    return ["z", "y", "x"][3 - ndim:]


def cell_at(labels: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """Label under each row's position (``z, y, x`` columns, nearest pixel)."""
    index = [np.clip(np.round(table[a].to_numpy()).astype(int), 0, n - 1)
             for a, n in zip(position_columns(labels.ndim), labels.shape)]
    return labels[tuple(index)] if len(table) else np.zeros(0, int)


# Cells reach this many spot sigmas beyond their segmented outline: a cytoplasmic stain thins and
# fades into the noise before the membrane, and a punctum centred that close overlaps the cell
# (independent microscope fields: 6 of 38 puncta of a field lay 1-5 px outside the outline).
CELL_REACH_SIGMAS = 2.0


def within_reach(cells: np.ndarray, options: dict, spatial) -> np.ndarray:
    """``cells`` (labels) grown by ``CELL_REACH_SIGMAS`` lateral spot sigmas (where the cells meet
    they stop; ``options["spot_diameter_um"]`` a number, see :func:`calibrate_spots`)."""
    if not cells.any():
        return cells
    sigma = spot_sigma_px(spatial[-2:], spot_diameter_um=options["spot_diameter_um"])[-1]
    spacing = np.array(spatial, float) / spatial[-1]
    return segmentation.expand_labels(cells, distance=CELL_REACH_SIGMAS * sigma, spacing=spacing)


def padding(image: np.ndarray) -> np.ndarray | None:
    """Large areas of exactly the lowest value: a frame or inset blacked out, not a sample."""
    lowest = image.min()
    flat = image == lowest
    if flat.mean() < 0.001:
        return None
    opened = ndi.binary_opening(flat, iterations=2)
    if not opened.any():
        return None
    return ndi.binary_dilation(opened, iterations=6)


def check_image(data: np.ndarray, *, max_saturated_fraction: float) -> None:
    """Refuse images that cannot hold a measurement, saying why."""
    if data.size == 0 or min(data.shape[-2:]) < 8:
        raise io.InputError(f"image is too small to analyse (shape {data.shape})")
    io.check_pixels(data, max_saturated_fraction=max_saturated_fraction)


def analyse_image(image: io.Image, *, roles: dict[str, int], pixel_size_um, options: dict,
                  frame_interval_s: float | None = None, labels: dict | None = None) -> Result:
    """Analyse every frame of a fluorescence image; link puncta and cells through a time-lapse.

    ``roles`` maps ``nuclei``, ``exosomes`` and ``cells`` to channel indices; ``nuclei`` or
    ``exosomes`` may be missing (a movie of puncta alone, or of nuclei alone), ``cells`` needs
    ``nuclei``. In a time-lapse a punctum counts if it exceeds ``snr_threshold`` in its frame, or
    if it exceeds ``track_snr_threshold`` and links with other such dim detections into a track
    of at least ``min_track_length`` frames: noise does not persist, so a dim spot that does is
    real. ``labels`` (``nuclei`` and ``cells``, ``(T, Z, Y, X)``, from :func:`given_labels`)
    replace the segmentation; no nuclei channel is needed then.
    """
    options = {**DEFAULTS, **options}
    data = image.data
    with_cells = "nuclei" in roles or labels is not None
    is_3d, movie = image.is_3d, image.n_frames > 1
    spatial = tuple(pixel_size_um) if is_3d else tuple(pixel_size_um[1:])
    adaptive = options["track_snr_threshold"] == "auto"
    threshold = options["snr_threshold"]
    if movie and not adaptive:
        threshold = min(threshold, options["track_snr_threshold"])
    # Dim puncta are sought in 2-D movies only: in 3-D ones (tested at SNR 7) the decoys let
    # noise tracks through (up to 150 noise detections against 320 true ones) and found no dim
    # punctum the confident ones had missed.
    decoys = [] if movie and adaptive and "exosomes" in roles and not is_3d else None
    if movie and frame_interval_s is None:
        raise io.InputError("the file does not state its frame interval; set "
                            "fluorescence.frame_interval_s in the config")

    def plane(frame, role):
        if role not in roles:
            return None
        stack = data[frame, roles[role]]
        return stack if is_3d else stack[0]

    shape = data.shape[2:] if is_3d else data.shape[3:]
    # Every plane is checked before the calibrations, which cannot measure a blank or NaN image.
    for frame in range(image.n_frames):
        for role, index in roles.items():
            try:
                check_image(data[frame, index], max_saturated_fraction=options["max_saturated_fraction"])
            except io.InputError as exc:
                raise io.InputError(f"{role} channel {image.channel_names[index]!r}: {exc}") from None
    warnings, calibration = [], {}
    if "exosomes" in roles:
        diameter, calibration, warnings = calibrate_spots(data[:, roles["exosomes"]], spatial=spatial, options=options)
        prior = options["spot_diameter_prior_um"] if options["spot_diameter_um"] == "auto" else diameter
        options = {**options, "spot_diameter_um": diameter}
        if is_3d and diameter < prior:
            # Only the lateral width is measured. A spot model narrower than the spot splits it,
            # one wider costs little, so a narrow measured spot keeps the prior's axial extent
            # (a widefield PSF's axial width shrinks less with NA than its lateral width).
            options["spot_axial_ratio"] = options["spot_axial_ratio"] * prior / diameter
    if "nuclei" in roles and labels is None:
        diameter, measured, more = calibrate_nuclei(data[:, roles["nuclei"]], spatial=spatial, options=options)
        options = {**options, "nucleus_diameter_um": diameter}
        calibration.update(measured)
        warnings += more
    if decoys is not None:
        exosomes = data[:, roles["exosomes"]] if is_3d else data[:, roles["exosomes"], 0]
        shifts = _displacements(shape, image.n_frames)
        paths, decoy_paths = _path_detections(exosomes, shifts, spatial=spatial, options=options)
    nuclei_stack, cell_stack, puncta_tables = [], [], []
    for frame in progress.steps(range(image.n_frames), total=image.n_frames, what="frames analysed"):
        if labels is not None:
            nuclei, cells = (labels[k][frame] if is_3d else labels[k][frame, 0] for k in ("nuclei", "cells"))
        elif "nuclei" in roles:
            nuclei, cells = segment_frame(plane(frame, "nuclei"), plane(frame, "cells"),
                                          pixel_size_um=spatial, options=options)
            if "exosomes" in roles:
                cells = within_reach(cells, options, spatial)
        else:
            nuclei = cells = np.zeros(shape, np.int32)
        if "exosomes" in roles:
            if decoys is None:
                puncta = detect_frame(plane(frame, "exosomes"), pixel_size_um=spatial, options=options,
                                      snr_threshold=threshold, fdr=None if movie else options["puncta_fdr"])
            else:
                puncta, decoy = _movie_detections(plane(frame, "exosomes"), paths[frame], decoy_paths[frame],
                                                  shifts[frame], spatial=spatial, options=options)
                decoys.append(decoy.assign(frame=frame))
        else:
            puncta = pd.DataFrame({c: np.zeros(0) for c in ("z", "y", "x", "intensity", "snr", "position_sd_px")})
        if not with_cells:
            puncta["cell_id"] = np.nan
        else:
            puncta["cell_id"] = cell_at(cells, puncta) if len(puncta) else 0
        puncta.insert(0, "frame", frame)
        nuclei_stack.append(nuclei if is_3d else nuclei[None])
        cell_stack.append(cells if is_3d else cells[None])
        puncta_tables.append(puncta)
    puncta_table = pd.concat(puncta_tables, ignore_index=True)
    tracks = track_summary = cell_tracks = None
    if movie and "exosomes" in roles:
        puncta_table, tracks, track_summary = track_puncta(
            puncta_table, np.stack(cell_stack), spatial=spatial, frame_interval_s=frame_interval_s,
            options=options, with_cells=with_cells,
            decoys=pd.concat(decoys, ignore_index=True) if decoys is not None else None)
    puncta_table.insert(0, "spot_id", np.arange(1, len(puncta_table) + 1))
    if tracks is not None:  # one row per kept punctum, in the same order
        tracks = tracks.assign(spot_id=puncta_table["spot_id"].to_numpy())[TRACK_COLUMNS]

    cell_tables = []
    if with_cells:
        for frame in range(image.n_frames):
            cells = cell_stack[frame] if is_3d else cell_stack[frame][0]
            nuclei = nuclei_stack[frame] if is_3d else nuclei_stack[frame][0]
            exosome = plane(frame, "exosomes")
            table = measure_cells(cells, nuclei, exosome if exosome is not None else np.zeros(cells.shape),
                                  puncta_table[puncta_table["frame"] == frame],
                                  pixel_size_um=spatial, min_puncta_positive=options["min_puncta_positive"])
            if exosome is None:
                table[["exosome_mean", "exosome_integrated", "puncta_count", "exosome_positive"]] = np.nan
            table.insert(1, "frame", frame)
            cell_tables.append(table)
    cell_table = pd.concat(cell_tables, ignore_index=True) if cell_tables else pd.DataFrame(columns=CELL_COLUMNS)
    cell_table = cell_table.reindex(columns=CELL_COLUMNS)
    if movie and with_cells:
        cell_table, cell_tracks = _track_cells(cell_table, spatial=spatial, frame_interval_s=frame_interval_s)
    metrics = headline_metrics(cell_table, puncta_table[PUNCTA_COLUMNS], n_frames=image.n_frames)
    for role, names in (("nuclei", ["n_cells", "pct_exosome_positive_cells", "puncta_per_cell_mean",
                                    "exosome_intensity_per_cell_mean", "pct_puncta_in_cells"]),
                        ("exosomes", ["n_puncta", "pct_exosome_positive_cells", "puncta_per_cell_mean",
                                      "exosome_intensity_per_cell_mean", "pct_puncta_in_cells"])):
        if role not in roles and not (role == "nuclei" and with_cells):  # not measured, rather than zero
            metrics.update(dict.fromkeys(names, np.nan))
    if movie:
        metrics.update(timelapse_metrics(track_summary, cell_tracks))
    metrics.update(calibration)
    if with_cells:
        warnings += border_warnings(np.stack(cell_stack)[:, 0] if not is_3d else np.stack(cell_stack))
    if "exosomes" in roles:
        warnings += saturation_warnings(data[:, roles["exosomes"]], puncta_table)
    metrics["warnings"] = warnings
    return Result(nuclei=np.stack(nuclei_stack), cells=np.stack(cell_stack), cell_table=cell_table,
                  puncta_table=puncta_table[PUNCTA_COLUMNS], metrics=metrics,
                  pixel_size_um=tuple(pixel_size_um), tracks=tracks, track_summary=track_summary,
                  cell_tracks=cell_tracks)


def _far_from(points, others, columns, sigma, spot_widths: float) -> np.ndarray:
    """Whether each of ``points`` is more than ``spot_widths`` spot sigmas from all ``others``."""
    if len(points) == 0 or len(others) == 0:
        return np.ones(len(points), bool)
    distance, _ = cKDTree(others[columns].to_numpy(float) / sigma).query(points[columns].to_numpy(float) / sigma)
    return distance > spot_widths


def _movie_detections(image, path_found, path_decoys, shift, *, spatial, options):
    """Puncta of one movie frame and the frame's decoys: the same detections displaced by
    ``shift`` (see :func:`_displacements`).

    ``confident`` puncta are those a still image would report (``snr_threshold``); the others
    are dim: down to ``DIM_SNR_FLOOR`` in the frame, and what only the path evidence through the
    frame shows (``along_path``; ``path_found`` and ``path_decoys`` from
    :func:`_path_detections`). Confident puncta are found on their own because deblending the
    hundreds of noise peaks around them at the floor inflates some noise peaks' SNR.
    """
    columns = position_columns(len(spatial))
    sigma = spot_sigma_px(spatial, spot_diameter_um=options["spot_diameter_um"], axial_ratio=options["spot_axial_ratio"])
    image = image.astype(np.float32)
    bright = detect_frame(image, pixel_size_um=spatial, options=options, snr_threshold=options["snr_threshold"],
                          fdr=options["puncta_fdr"])
    dim = detect_frame(image, pixel_size_um=spatial, options=options, snr_threshold=DIM_SNR_FLOOR)
    found = pd.concat([bright.assign(confident=True),
                       dim[_far_from(dim, bright, columns, sigma, 2.0)].assign(confident=False)], ignore_index=True)

    def combine(found, extra):
        extra = extra[_far_from(extra, found, columns, sigma, 2.0)]
        return pd.concat([found.assign(along_path=False), extra.assign(confident=False, along_path=True)],
                         ignore_index=True)

    shape = image.shape[-2:]
    displaced = found.assign(y=(found["y"] + shift[0]) % shape[0], x=(found["x"] + shift[1]) % shape[1])
    return combine(found, path_found), combine(displaced, path_decoys)


def _displacements(shape, n_frames: int) -> np.ndarray:
    """Per frame, a (y, x) shift that puts it out of register with its neighbours in time: frame
    ``t`` moves by ``t`` times the golden sections of the field, wrapped around it."""
    field = np.array(shape[-2:])
    step = np.round(np.array([0.618034, 0.381966]) * field).astype(int)
    return (np.arange(n_frames)[:, None] * step) % field


def _path_detections(stack, shifts, *, spatial, options):
    """Per frame, the candidate puncta that path evidence through the movie shows, and the decoys
    it shows through the frames displaced by ``shifts`` (see :func:`_select_path_detections`)."""
    spot = {"pixel_size_um": spatial, "spot_diameter_um": options["spot_diameter_um"],
            "axial_ratio": options["spot_axial_ratio"]}
    sigma = spot_sigma_px(**spot)
    around = (1, *(2 * np.maximum(np.round(RESIDUE_SIGMAS * sigma).astype(int), 1) + 1))
    snr = np.stack([snr_image(frame, **spot) for frame in stack])
    found = []
    # The displaced maps replace the SNR maps rather than join them: a long movie's maps are
    # gigabytes. Decoys need no intensities.
    for decoy in (False, True):
        if decoy:
            snr = np.stack([np.roll(frame, tuple(shift), axis=(-2, -1)) for frame, shift in zip(snr, shifts)])
        # Confident puncta are found in their frames; their evidence would only linger beyond them.
        confident = ndi.maximum_filter(snr >= options["snr_threshold"], size=around)
        evidence = path_evidence(snr, step_px=PATH_STEP_SIGMAS * sigma, amplitude=PATH_AMPLITUDE,
                                 clip=DIM_SNR_FLOOR, exclude=confident)
        del confident
        found.append([path_puncta(frame_evidence, **spot, threshold=PATH_FLOOR, image=None if decoy else image)
                      for image, frame_evidence in zip(stack, evidence)])
        del evidence
    return found


def _select_path_detections(puncta, decoys):
    """Drop the detections only path evidence shows (``along_path``) below the lowest evidence at
    which decoys are at most ``PATH_FDR`` of them. Only the paths where no frame detection is count:
    those through detected puncta, plentiful and strong, would vouch for the rest."""
    along = [table["along_path"].to_numpy(bool) for table in (puncta, decoys)]
    snr = [table["snr"].to_numpy(float) for table in (puncta, decoys)]
    threshold = dim_track_threshold(snr[0][along[0]], snr[1][along[1]], fdr=PATH_FDR)
    return [table[~a | (z >= threshold)].reset_index(drop=True) for table, a, z in zip((puncta, decoys), along, snr)]


def _beside(puncta, anchors, columns, sigma, *, spot_widths: float) -> np.ndarray:
    """Whether each detection that is not an anchor lies within ``spot_widths`` spot sigmas of an
    ``anchors`` detection in the same frame."""
    near = np.zeros(len(puncta), bool)
    for rows in puncta.groupby("frame").indices.values():
        here, others = rows[anchors[rows]], rows[~anchors[rows]]
        near[others] = ~_far_from(puncta.iloc[others], puncta.iloc[here], columns, sigma, spot_widths)
    return near


def _confident(puncta, options) -> np.ndarray:
    """Detections bright enough in their own frame to count without a track."""
    if "confident" in puncta:
        return puncta["confident"].to_numpy(bool)
    return puncta["snr"].to_numpy(float) >= options["snr_threshold"]


def _residue(puncta, confident, columns, sigma) -> np.ndarray:
    """Dim detections beside a confident one: the bright spot's residue, which would follow it as
    a duplicate track."""
    return ~confident & _beside(puncta, confident, columns, sigma, spot_widths=RESIDUE_SIGMAS)


def _dim_track_scores(dim, columns, parameters=None):
    """Track ids of dim detections, per track its length and combined evidence (the sum of its
    detections' SNRs over the square root of their number, as independent z-scores add), and the
    linking parameters used (``parameters`` if given, else estimated from ``dim``)."""
    given = {} if parameters is None else {"max_distance": parameters.max_distance, "max_gap": parameters.max_gap}
    ids, parameters = tracking.link(dim, columns=columns, certain=np.zeros(len(dim), bool), **given)
    if len(ids) == 0:
        return ids, np.zeros(1, int), np.zeros(1), parameters
    length = np.bincount(ids)
    score = np.bincount(ids, weights=dim["snr"].to_numpy(float)) / np.sqrt(np.maximum(length, 1))
    return ids, length, score, parameters


def dim_track_threshold(scores: np.ndarray, decoy_scores: np.ndarray, *, fdr: float) -> float:
    """Lowest evidence at which decoy (noise) tracks, plus one, are at most ``fdr`` of the tracks
    kept: target-decoy selection, as in proteomics, with the knockoff+ count (Barber & Candès
    2015), which keeps a movie of noise alone from passing its few luckiest tracks."""
    scores, decoy_scores = np.sort(scores), np.sort(decoy_scores)
    kept = len(scores) - np.searchsorted(scores, scores, side="left")
    decoys = len(decoy_scores) - np.searchsorted(decoy_scores, scores, side="left")
    good = decoys + 1 <= fdr * kept
    return float(scores[np.argmax(good)]) if good.any() else np.inf


def track_puncta(puncta, cells, *, spatial, frame_interval_s, options, with_cells, decoys=None):
    """Link puncta, keep the real ones, summarise each track's motion and where it lives.

    ``decoys`` (the detections with every frame displaced, see :func:`_movie_detections`) set how
    much evidence a track of dim detections needs; without them, a dim track counts when it has
    ``min_track_length`` frames.
    """
    columns = position_columns(len(spatial))
    if decoys is not None:
        puncta, decoys = _select_path_detections(puncta, decoys)
    # Confident detections are linked on their own, so that dim ones cannot corrupt their tracks;
    # dim detections form tracks of their own, kept where they persist (noise does not).
    confident = _confident(puncta, options)
    track_id = np.zeros(len(puncta), int)
    track_id[confident], parameters = tracking.link(puncta[confident], columns=columns)
    if decoys is not None:
        sigma = spot_sigma_px(spatial, spot_diameter_um=options["spot_diameter_um"], axial_ratio=options["spot_axial_ratio"])
        residue = _residue(puncta, confident, columns, sigma)
        puncta, confident = puncta[~residue].reset_index(drop=True), confident[~residue]
        track_id = track_id[~residue]
    dim_id, length, score, dim_parameters = _dim_track_scores(puncta[~confident], columns)
    real = length >= options["min_track_length"]
    if decoys is not None:
        decoy_confident = _confident(decoys, options)
        decoys = decoys[~decoy_confident & ~_residue(decoys, decoy_confident, columns, sigma)]
        # The same search as the movie's: a radius estimated from the decoys themselves would
        # differ, and with it how many chance links noise makes.
        _, decoy_length, decoy_score, _ = _dim_track_scores(decoys, columns, dim_parameters)
        decoy_score = decoy_score[decoy_length >= options["min_track_length"]]
        real &= score >= dim_track_threshold(score[real], decoy_score, fdr=DIM_TRACK_FDR)
    track_id[~confident] = dim_id + track_id.max(initial=0)
    keep = confident.copy()
    keep[~confident] = real[dim_id]
    if decoys is not None:
        # A path detection beside a kept frame detection is that punctum again, displaced by the
        # path model's smoothing over steps; left in, it would run alongside as a shadow track
        # and take the punctum's links.
        path = puncta["along_path"].to_numpy(bool)
        keep &= ~(path & _beside(puncta, keep & ~path, columns, sigma, spot_widths=RESIDUE_SIGMAS))
    unused = puncta[~keep]
    puncta = puncta[keep].reset_index(drop=True)
    _, track_id = np.unique(track_id[keep], return_inverse=True)
    track_id += 1
    if decoys is not None and not confident[keep].all():
        # The dim detections kept are real: linked together with the confident ones, a punctum
        # that dims for a few frames stays one track, and gaps close over a Brownian reach as
        # between confident ones. Only confident steps predict directed motion: a dim
        # detection's step is mostly its position error.
        track_id, _ = tracking.link(puncta, columns=columns, predicts=confident[keep])
        # Pieces of dim detections too short to stand as tracks by themselves are dropped again.
        bright = np.bincount(track_id, weights=confident[keep]) > 0
        long = np.bincount(track_id) >= options["min_track_length"]
        kept = (bright | long)[track_id]
        unused = pd.concat([unused, puncta[~kept]], ignore_index=True)
        puncta = puncta[kept].reset_index(drop=True)
        _, track_id = np.unique(track_id[kept], return_inverse=True)
        track_id += 1
    if decoys is not None:
        # Path evidence runs through a punctum's dark frames (blinking) by design; only what the
        # frame itself shows may fill them.
        in_frame = unused[~unused["along_path"].to_numpy(bool)]
        puncta, track_id = _fill_gaps(puncta, track_id, in_frame, columns, sigma)
    scale = np.array(spatial)
    state = _where(puncta, cells, scale) if with_cells else ""
    tracks = pd.DataFrame({"track_id": track_id, "frame": puncta["frame"].to_numpy(),
                           "z": puncta["z"].to_numpy(), "y": puncta["y"].to_numpy(),
                           "x": puncta["x"].to_numpy(),
                           "cell_id": puncta["cell_id"].to_numpy(), "where": state})
    measured = tracks[columns].to_numpy(float)
    tracks[columns] = _smooth_tracks(puncta, track_id, columns, options=options, spatial=spatial,
                                     step_sigma=parameters.step_sigma)
    rows = []
    for tid, block in tracks.groupby("track_id", sort=True):
        frames = block["frame"].to_numpy()
        # The MSD fit's intercept absorbs the localisation error of measured positions; the
        # smoothing that removes much of it would bend the short lags instead.
        positions = measured[block.index.to_numpy()] * scale
        summary = {"track_id": tid, "start_frame": int(frames.min()), "n_frames": len(frames),
                   **tracking.motion_summary(frames, positions, frame_interval_s=frame_interval_s)}
        if with_cells:
            inside = (block["where"] == "inside").mean()
            summary["frac_inside_cell"] = float(inside)
            summary["location"] = block["where"].mode().iloc[0]
        else:
            summary["frac_inside_cell"], summary["location"] = np.nan, ""
        rows.append(summary)
    summary = pd.DataFrame(rows, columns=TRACK_SUMMARY_COLUMNS)
    # A track is what lasts min_track_length frames, however bright: n_tracks counts these rows.
    summary = summary[summary["n_frames"] >= options["min_track_length"]].reset_index(drop=True)
    return puncta, tracks.drop(columns="where"), summary


def _smooth_tracks(puncta, track_id, columns, *, options, spatial, step_sigma):
    """Each track's positions, smoothed by :func:`tracking.smooth_tracks` with each punctum's own
    localisation error. A track moves by steps of the confident tracks' ``step_sigma`` or by its
    own, whichever is larger: a transported or fast punctum is not held back."""
    spot = {"pixel_size_um": spatial, "spot_diameter_um": options["spot_diameter_um"],
            "axial_ratio": options["spot_axial_ratio"]}
    per_axis = position_sd_px(1.0, **spot)
    sd = puncta["position_sd_px"].to_numpy(float)[:, None] * per_axis / per_axis[-1]
    # Unknown error (a path detection in a flat frame): the measured position stands.
    variances = np.nan_to_num(sd ** 2, nan=0.0)
    frames, positions = puncta["frame"].to_numpy(), puncta[columns].to_numpy(float)
    table = pd.DataFrame(positions, columns=columns).assign(frame=frames, track=track_id)
    steps = table.sort_values(["track", "frame"]).groupby("track")[columns + ["frame"]].diff()
    own = (steps[columns] ** 2).div(steps["frame"], axis=0).groupby(table["track"]).mean()
    step_variance = np.maximum(own.sort_index().fillna(0.0).to_numpy(), max(step_sigma, 1e-3) ** 2)
    return tracking.smooth_tracks(track_id, frames, positions, variances, step_variance=step_variance)


def _fill_gaps(puncta, track_id, candidates, columns, sigma, *, spot_widths: float = 1.0):
    """Fill the frames a track skips with the unused dim detection nearest its position there
    (interpolated), within ``spot_widths`` spot sigmas: a punctum that dims for a frame or two
    is still there, where noise is rarely that close by chance. Rows stay in frame order."""
    frames, positions = puncta["frame"].to_numpy(), puncta[columns].to_numpy(float)
    order = np.lexsort((frames, track_id))
    t, f, p = track_id[order], frames[order], positions[order]
    slot_track, slot_frame, slot_position = [], [], []
    for i in np.flatnonzero((t[1:] == t[:-1]) & (np.diff(f) > 1)):
        for frame in range(f[i] + 1, f[i + 1]):
            w = (frame - f[i]) / (f[i + 1] - f[i])
            slot_track.append(t[i])
            slot_frame.append(frame)
            slot_position.append((1 - w) * p[i] + w * p[i + 1])
    if not slot_track or candidates.empty:
        return puncta, track_id
    # One search in space (in spot sigmas) and time.
    slots = tracking.space_time_points(np.array(slot_position) / sigma, slot_frame, reach=spot_widths)
    tree = cKDTree(tracking.space_time_points(candidates[columns].to_numpy(float) / sigma,
                                              candidates["frame"].to_numpy(), reach=spot_widths))
    distance, nearest = tree.query(slots, distance_upper_bound=spot_widths)
    found = np.isfinite(distance)
    rows, first = np.unique(nearest[found], return_index=True)  # one slot per detection
    if len(rows) == 0:
        return puncta, track_id
    puncta = pd.concat([puncta, candidates.iloc[rows]], ignore_index=True)
    track_id = np.concatenate([track_id, np.array(slot_track)[found][first]])
    order = np.argsort(puncta["frame"].to_numpy(), kind="stable")
    return puncta.iloc[order].reset_index(drop=True), track_id[order]


def _where(puncta, cells, scale):
    """Per punctum: ``inside`` a cell, ``at_cell`` (within 1 µm of a cell's edge, either side)
    or ``outside``."""
    state = np.full(len(puncta), "outside", dtype=object)
    for frame, block in puncta.groupby("frame"):
        labels = cells[frame] if cells.shape[1] > 1 else cells[frame, 0]
        inside_depth = ndi.distance_transform_edt(labels > 0, sampling=scale)
        outside_gap = ndi.distance_transform_edt(labels == 0, sampling=scale)
        depth, gap = cell_at(inside_depth, block), cell_at(outside_gap, block)
        in_cell = block["cell_id"].to_numpy() > 0
        here = np.where(in_cell & (depth > 1.0), "inside",
                        np.where((in_cell & (depth <= 1.0)) | (~in_cell & (gap <= 1.0)), "at_cell", "outside"))
        state[block.index.to_numpy()] = here
    return state


def _track_cells(cell_table, *, spatial, frame_interval_s):
    """Link cells (by their centroids) through time; per-track migration measures."""
    columns = position_columns(len(spatial))
    if cell_table.empty:
        return cell_table.assign(cell_track_id=pd.Series(dtype=int)), pd.DataFrame(columns=CELL_TRACK_COLUMNS)
    track_id, _ = tracking.link(cell_table, columns=columns)
    cell_table = cell_table.assign(cell_track_id=track_id)
    scale = np.array(spatial)
    rows = []
    for tid, block in cell_table.groupby("cell_track_id", sort=True):
        frames = block["frame"].to_numpy()
        summary = tracking.path_summary(frames, block[columns].to_numpy() * scale, frame_interval_s=frame_interval_s)
        rows.append({"cell_track_id": tid, "start_frame": int(frames.min()), "n_frames": len(frames), **summary})
    return cell_table, pd.DataFrame(rows, columns=CELL_TRACK_COLUMNS)


def timelapse_metrics(track_summary, cell_tracks) -> dict:
    """Per-sample movie headline: tracks, their median diffusion coefficient, the percentage of
    tracks that live inside cells, and how fast cells migrate (tracks of 5 frames or more)."""
    out = dict.fromkeys(TIMELAPSE_HEADLINE, np.nan)
    if track_summary is not None:
        out["n_tracks"] = len(track_summary)
    if track_summary is not None and len(track_summary):
        out["median_diffusion_um2_s"] = float(track_summary["diffusion_um2_s"].median())
        located = track_summary["location"].astype(str)
        if (located != "").any():
            out["pct_internalised_tracks"] = 100 * float((located == "inside").mean())
    if cell_tracks is not None and len(cell_tracks):
        long = cell_tracks[cell_tracks["n_frames"] >= 5]
        out["cell_mean_speed_um_min"] = float(long["mean_speed_um_min"].mean()) if len(long) else np.nan
    return out


def headline_metrics(cells: pd.DataFrame, puncta: pd.DataFrame, *, n_frames: int = 1) -> dict:
    """Per-sample summary; with several frames, per-frame values are averaged."""
    n_cells = len(cells) / n_frames
    with np.errstate(invalid="ignore"):
        return {
            "n_cells": n_cells,
            "pct_exosome_positive_cells": 100 * cells["exosome_positive"].mean() if len(cells) else np.nan,
            "puncta_per_cell_mean": cells["puncta_count"].mean() if len(cells) else np.nan,
            "exosome_intensity_per_cell_mean": cells["exosome_integrated"].mean() if len(cells) else np.nan,
            "n_puncta": len(puncta) / n_frames,
            "pct_puncta_in_cells": 100 * (puncta["cell_id"] > 0).mean() if len(puncta) else np.nan,
        }


def resolve_roles(image: io.Image, mapping: dict) -> dict[str, int]:
    """Channel indices for each role named in ``mapping`` (names or indices)."""
    given = {role for role, key in mapping.items() if key is not None and key != ""}
    if not given & {"nuclei", "exosomes"}:
        raise io.InputError("no channel given for nuclei or exosomes (set fluorescence.channels in "
                            "the config or the sheet's channels column)")
    if "cells" in given and "nuclei" not in given:
        raise io.InputError("a cells channel needs a nuclei channel: cells are grown from nuclei")
    roles = {role: io.resolve_channel(image, key, role=role)
             for role, key in mapping.items() if key is not None and key != ""}
    return roles


def resolve_pixel_size(image: io.Image, override, fallback) -> tuple[float, float, float]:
    """Pixel size ``(z, y, x)`` in µm: the sheet's value, else the file's, else the config's."""
    z, y, x = image.pixel_size_um
    if override is not None:
        return override
    fb = parse_pixel_size(fallback) if fallback is not None else None
    if y is None or x is None:
        if fb is None:
            raise io.InputError("the file does not state its pixel size; give pixel_size_um in the "
                                "sample sheet or fluorescence.pixel_size_um in the config")
        return fb if z is None else (z, fb[1], fb[2])
    if z is None:
        z = fb[0] if fb is not None else x
    return (z, y, x)


def process_sample(*, sample: str, path, options: dict, outputs: dict, channels: str | None = None,
                   pixel_size_um=None, axes: str | None = None, nuclei_labels=None, cell_labels=None) -> dict:
    """Read, analyse and write one fluorescence sample.

    ``outputs`` maps ``cells``, ``puncta``, ``labels``, ``nuclei``, ``metrics`` and ``qc`` to paths,
    and for a time-lapse also ``tracks``, ``track_summary`` and ``cell_tracks``. Whatever goes wrong, every output is written: on failure the tables are empty, the label
    images are empty, the QC image states the error, and ``metrics`` carries ``status`` with the
    reason, so other samples and the aggregate tables go on. ``nuclei_labels`` and
    ``cell_labels`` name label images that replace the segmentation (see :func:`given_labels`).
    """
    options = {**DEFAULTS, **options}
    try:
        image = io.read_image(path, axes=axes or None)
        # A sheet's channels column replaces the config's roles, so a sample can drop one.
        mapping = parse_channels(channels) or options["channels"]
        roles = resolve_roles(image, {role: key for role, key in mapping.items() if role != "markers"})
        size = resolve_pixel_size(image, parse_pixel_size(pixel_size_um), options["pixel_size_um"])
        interval = image.frame_interval_s or options["frame_interval_s"]
        given = None
        if nuclei_labels or cell_labels:
            t, _, z, y, x = image.data.shape
            given = given_labels(nuclei_labels, cell_labels, shape_tzyx=(t, z, y, x), pixel_size_um=size,
                                 cell_expansion_um=options["cell_expansion_um"])
        result = analyse_image(image, roles=roles, pixel_size_um=size, options=options, frame_interval_s=interval,
                               labels=given)
        markers.add_markers(result, image, mapping=mapping, options=options.get("markers"))
    except Exception as exc:  # any failure is this sample's status; the run goes on
        return _write_failure(sample, qc.failure_reason(sample, exc), outputs)

    squeeze = (lambda a: a[0]) if image.n_frames == 1 else (lambda a: a)
    spatial = (lambda a: a) if image.is_3d else (lambda a: a[:, 0])
    axes_out = ("T" if image.n_frames > 1 else "") + ("ZYX" if image.is_3d else "YX")
    io.write_tiff(squeeze(spatial(result.cells)), outputs["labels"], axes=axes_out, pixel_size_um=result.pixel_size_um)
    io.write_tiff(squeeze(spatial(result.nuclei)), outputs["nuclei"], axes=axes_out, pixel_size_um=result.pixel_size_um)
    io.write_table(result.cell_table, outputs["cells"])
    io.write_table(result.puncta_table, outputs["puncta"])
    for key, table, columns in _track_outputs(result):
        if key in outputs:
            io.write_table(table if table is not None else pd.DataFrame(columns=columns), outputs[key])
    composite = {role: image.data[0, index] for role, index in roles.items()}
    warnings = result.metrics.pop("warnings", [])
    overlay = qc.fluorescence_overlay(composite, result.cells[0], result.nuclei[0],
                                      result.puncta_table[result.puncta_table["frame"] == 0],
                                      tracks=result.tracks, title=_qc_title(sample, result.metrics))
    io.write_png(qc.with_warnings(overlay, warnings), outputs["qc"])
    metrics = {"sample": sample, "status": "ok", "warnings": warnings, "path": str(path), **result.metrics,
               "channels": {role: image.channel_names[i] for role, i in roles.items()},
               "pixel_size_um": list(result.pixel_size_um), "frame_interval_s": interval,
               "segmentation": "exotrack" if given is None else "given: " + ", ".join(
                   str(p) for p in (nuclei_labels, cell_labels) if p),
               "shape_tczyx": list(image.data.shape)}
    io.write_json(metrics, outputs["metrics"])
    return metrics


def _track_outputs(result: Result | None):
    """(output key, table or None, columns) of the time-lapse tables."""
    return [("tracks", result and result.tracks, TRACK_COLUMNS),
            ("track_summary", result and result.track_summary, TRACK_SUMMARY_COLUMNS),
            ("cell_tracks", result and result.cell_tracks, CELL_TRACK_COLUMNS)]


def _qc_title(sample, metrics):
    title = (f"{sample}: {metrics['n_cells']:.0f} cells, {metrics['n_puncta']:.0f} puncta, "
             f"{metrics['pct_exosome_positive_cells']:.0f}% positive, "
             f"{metrics['puncta_per_cell_mean']:.1f} puncta/cell")
    if "n_tracks" in metrics:
        title += f", {metrics['n_tracks']:.0f} tracks (frame 1 shown, tracks drawn)"
    return title.replace("nan", "-")


def _write_failure(sample: str, reason: str, outputs: dict) -> dict:
    tables = {"cells": CELL_COLUMNS, "puncta": PUNCTA_COLUMNS, **{k: c for k, _, c in _track_outputs(None)}}
    return qc.write_failure(sample, reason, outputs, tables=tables, images=("labels", "nuclei"))

