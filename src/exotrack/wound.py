"""Scratch (wound-healing) assays: the cell-free area per timepoint, its width and closure.

A monolayer is textured at the scale of a cell whatever the contrast (phase-contrast halos and
cell bodies, or a fluorescent stain's cells and the gaps between them); the scratch is flat, only
camera noise. The cell-free area is therefore where the local standard deviation, over a window
of about one cell, is low: Otsu's threshold on its logarithm (two populations, monolayer and
scratch), cleaned at the scale of a cell. At time 0 the wound is the low-texture regions that run
the length of the scratch (touching both image borders along its axis); later, the low-texture
regions lying mostly inside it (cells bridging a closing wound break it into pieces). Gaps
between cells inside the monolayer are not wound.

Per timepoint: wound area (mm²), mean width (µm: area over the scratch's length), % closure
relative to time 0. Per well: the closure rate (µm/h), the slope of a least-squares line through
the mean width over time while the wound is open (closure < 90 %), reported with its intercept,
standard error and r²; the migration speed of each front is half of it.

A sample is a multi-frame TIFF (frame k at k x the frame interval) or a folder of single images
whose names carry their time (``well3_0h.tif``, ``well3_12h.tif``); a series without time 0 is
refused, as is a time 0 without a wound.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from . import io, qc

FRAME_COLUMNS = ["time_h", "wound_area_mm2", "mean_width_um", "pct_closure", "found"]
DEFAULTS = {"cell_diameter_um": 15.0, "pixel_size_um": None, "frame_interval_h": None,
            "channel": 0, "max_closure_fit_pct": 90.0}
# Scales, in cell diameters: the detail kept (high-pass sigma), the texture window (sigma) and the
# radius of the cleaning (opening, closing).
DETAIL_CELLS = 0.25
WINDOW_CELLS = 0.35
CLEAN_CELLS = 0.35
_TIME = re.compile(r"(?<![0-9.])([0-9]+(?:\.[0-9]+)?)\s*h(?:ours?|rs?)?(?![a-z])", re.IGNORECASE)


def local_sd(image: np.ndarray, *, sigma_px: float) -> np.ndarray:
    """Local standard deviation in a Gaussian window of ``sigma_px``."""
    image = image.astype(np.float64)
    mean = ndi.gaussian_filter(image, sigma_px)
    square = ndi.gaussian_filter(image ** 2, sigma_px)
    return np.sqrt(np.clip(square - mean ** 2, 0, None))


def texture_threshold(texture: np.ndarray) -> float:
    """Texture threshold between the cell-free area and the monolayer.

    Otsu's split of log texture finds the two classes; the threshold is where the local variance
    is halfway between the classes' typical (median) variances: the window's variance mixes the
    two regions in proportion to their areas in it, so this is where the window straddles the
    edge, and the edge found is not shifted by the window's size.
    """
    from skimage.filters import threshold_otsu

    logs = np.log(texture[texture > 0])
    cut = threshold_otsu(logs)
    low, high = np.exp(np.median(logs[logs <= cut])), np.exp(np.median(logs[logs > cut]))
    return float(np.sqrt((low ** 2 + high ** 2) / 2))


def scratch_axis(mask: np.ndarray) -> int:
    """0 if the cell-free area runs top to bottom (a vertical scratch), 1 if left to right."""
    return 0 if mask.any(axis=1).mean() >= mask.any(axis=0).mean() else 1


def texture_map(image: np.ndarray, *, pixel_size_um: float, cell_diameter_um: float = 15.0) -> np.ndarray:
    """Local standard deviation of the detail within a quarter cell, over a third of a cell.

    Detail only: a monolayer's cells and the gaps between them, not the step in brightness at a
    fluorescent monolayer's edge (a window straddling the edge would count that step as texture
    and narrow the wound).
    """
    cell_px = cell_diameter_um / pixel_size_um
    image = image.astype(np.float64)
    detail = image - ndi.gaussian_filter(image, max(DETAIL_CELLS * cell_px, 1.0))
    return local_sd(detail, sigma_px=max(WINDOW_CELLS * cell_px, 1.0))


def segment_wound(image: np.ndarray, *, pixel_size_um: float, cell_diameter_um: float = 15.0,
                  threshold: float | None = None, axis: int | None = None,
                  within: np.ndarray | None = None, reference=None) -> tuple[np.ndarray, float, int]:
    """Cell-free area of one 2-D frame.

    Parameters
    ----------
    image : ndarray
        One frame (phase contrast, brightfield or fluorescence).
    pixel_size_um : float
    cell_diameter_um : float
        Scale of the monolayer's texture: window and cleaning size.
    threshold : float, optional
        Texture threshold; by default Otsu's on this frame's log texture.
    axis : int, optional
        The scratch's axis (see :func:`scratch_axis`); by default from this frame.
    within : ndarray of bool, optional
        The wound at time 0. Given, the mask holds the low-texture regions lying mostly inside
        it and larger than four cells: a closing wound may be bridged by cells and no longer run
        across the image.
    reference : (ndarray of bool, float), optional
        Pixels that are monolayer in every frame and their median texture where ``threshold`` was
        set: the threshold is scaled by this frame's median texture there over that, so that a
        frame taken with other contrast (focus, illumination) is cut alike.

    Returns
    -------
    mask, threshold, axis. Without ``within``, the mask holds the low-texture regions that touch
    both borders along the scratch's axis; it is empty when there is none.
    """
    cell_px = cell_diameter_um / pixel_size_um
    texture = texture_map(image, pixel_size_um=pixel_size_um, cell_diameter_um=cell_diameter_um)
    if threshold is None:
        threshold = texture_threshold(texture)
    elif reference is not None and reference[0].any() and reference[1] > 0:
        threshold = threshold * float(np.median(texture[reference[0]])) / reference[1]
    low = texture < threshold
    radius = max(int(round(CLEAN_CELLS * cell_px)), 1)
    disk = _disk(radius)
    # Padded with the border's own values: morphology would otherwise treat the outside as
    # monolayer and peel the wound off the image's edge.
    padded = np.pad(low, 2 * radius, mode="edge")
    padded = ndi.binary_closing(ndi.binary_opening(padded, disk), disk)
    low = ndi.binary_fill_holes(padded)[2 * radius:-2 * radius, 2 * radius:-2 * radius]
    if axis is None:
        axis = scratch_axis(low)
    labels, n = ndi.label(low)
    if n == 0:
        return low, threshold, axis
    if within is not None:
        size = np.bincount(labels.ravel(), minlength=n + 1)
        share = np.bincount(labels.ravel(), weights=within.ravel(), minlength=n + 1) / np.maximum(size, 1)
        # Gaps of a few cells behind a moving front are not the wound.
        keep = (share > 0.5) & (size >= np.pi * cell_px ** 2)
        keep[0] = False
        return keep[labels], threshold, axis
    first = np.unique(labels.take(0, axis=axis))
    last = np.unique(labels.take(-1, axis=axis))
    spanning = np.intersect1d(first[first > 0], last[last > 0])
    return np.isin(labels, spanning), threshold, axis


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return y ** 2 + x ** 2 <= radius ** 2


def analyse_series(frames: np.ndarray, times_h, *, pixel_size_um: float, cell_diameter_um: float = 15.0,
                   max_closure_fit_pct: float = 90.0) -> tuple[pd.DataFrame, dict, list[np.ndarray]]:
    """Wound area, width and closure of each frame, and the closure-rate fit.

    The texture threshold and scratch axis are set on time 0 (the frame with most contrast
    between monolayer and scratch) and kept for later frames, scaled by each frame's texture of
    the monolayer far from the wound, so that a nearly closed wound is not re-split by a threshold
    of its own and a frame of other contrast is cut alike. Raises :class:`io.InputError` when no time is 0 or
    time 0 shows no wound.

    Returns the per-frame table (``FRAME_COLUMNS``), the metrics and the masks.
    """
    times = np.asarray(times_h, float)
    if not np.any(times == 0):
        found = ", ".join(f"{t:g} h" for t in times)
        raise io.InputError(f"the wound series has no time 0 (times found: {found}); closure is "
                            "relative to the scratch at time 0")
    order = np.argsort(times)
    frames, times = np.asarray(frames)[order], times[order]
    mask0, threshold, axis = segment_wound(frames[0], pixel_size_um=pixel_size_um,
                                           cell_diameter_um=cell_diameter_um)
    if not mask0.any():
        raise io.InputError("no wound found at time 0: no cell-free region runs across the image "
                            "(check the image, its pixel size, or wound.cell_diameter_um)")
    # Monolayer in every frame: farther than two cells from the wound at time 0.
    monolayer = ~ndi.binary_dilation(mask0, iterations=max(int(2 * cell_diameter_um / pixel_size_um), 1))
    texture0 = texture_map(frames[0], pixel_size_um=pixel_size_um, cell_diameter_um=cell_diameter_um)
    reference = (monolayer, float(np.median(texture0[monolayer]))) if monolayer.any() else None
    masks, rows = [], []
    length_um = frames.shape[1 + axis] * pixel_size_um
    area0 = mask0.sum() * pixel_size_um ** 2
    for frame, t in zip(frames, times):
        mask = mask0 if t == 0 else segment_wound(
            frame, pixel_size_um=pixel_size_um, cell_diameter_um=cell_diameter_um, threshold=threshold,
            axis=axis, within=mask0, reference=reference)[0]
        area_um2 = mask.sum() * pixel_size_um ** 2
        rows.append({"time_h": t, "wound_area_mm2": area_um2 / 1e6, "mean_width_um": area_um2 / length_um,
                     "pct_closure": 100 * (1 - area_um2 / area0), "found": bool(mask.any())})
        masks.append(mask)
    table = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    return table, closure_fit(table, max_closure_fit_pct=max_closure_fit_pct), masks


def closure_fit(table: pd.DataFrame, *, max_closure_fit_pct: float = 90.0) -> dict:
    """Least-squares line through mean width vs time (frames with closure below
    ``max_closure_fit_pct``): ``closure_rate_um_h`` (width lost per hour) and the fit."""
    open_ = table[table["pct_closure"] < max_closure_fit_pct]
    out = {"closure_rate_um_h": np.nan, "front_speed_um_h": np.nan, "fit_intercept_um": np.nan,
           "fit_stderr_um_h": np.nan, "fit_r2": np.nan, "fit_n": int(len(open_)),
           "initial_width_um": float(table["mean_width_um"].iloc[0]),
           "wound_area_t0_mm2": float(table["wound_area_mm2"].iloc[0]),
           "pct_closure_final": float(table["pct_closure"].iloc[-1]),
           "time_final_h": float(table["time_h"].iloc[-1])}
    if len(open_) >= 2 and open_["time_h"].nunique() >= 2:
        from scipy import stats

        fit = stats.linregress(open_["time_h"], open_["mean_width_um"])
        out.update(closure_rate_um_h=float(-fit.slope), front_speed_um_h=float(-fit.slope / 2),
                   fit_intercept_um=float(fit.intercept),
                   fit_stderr_um_h=float(fit.stderr) if len(open_) > 2 else np.nan,
                   fit_r2=float(fit.rvalue ** 2) if len(open_) > 2 else np.nan)
    return out


def read_series(path, *, channel, frame_interval_h) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Frames (T, Y, X), their times in hours and the pixel size the files state (µm or None)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff", ".png", ".jpg", ".jpeg"))
        if not files:
            raise io.InputError(f"the wound folder {path} holds no images")
        times, frames, size = [], [], None
        for file in files:
            match = _TIME.findall(file.stem)
            if not match:
                raise io.InputError(f"cannot tell the time of {file.name}: name the images by time, "
                                    "e.g. well1_0h.tif, well1_12h.tif")
            times.append(float(match[-1]))
            plane, size = _read_plane(file, channel)
            frames.append(plane)
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise io.InputError(f"the wound images differ in size ({sorted(shapes)})")
        return np.stack(frames), np.array(times), size
    image = io.read_image(path)
    index = io.resolve_channel(image, channel, role="wound")
    frames = image.data[:, index].max(axis=1).astype(np.float32)
    interval_h = image.frame_interval_s / 3600 if image.frame_interval_s else frame_interval_h
    if len(frames) > 1 and interval_h is None:
        raise io.InputError("the file does not state its frame interval; set wound.frame_interval_h in the config")
    return frames, np.arange(len(frames)) * (interval_h or 0.0), image.pixel_size_um[2]


def _read_plane(file: Path, channel) -> tuple[np.ndarray, float | None]:
    if file.suffix.lower() in (".tif", ".tiff"):
        image = io.read_image(file)
        plane = image.data[0, io.resolve_channel(image, channel, role="wound")].max(axis=0)
        return plane.astype(np.float32), image.pixel_size_um[2]
    from PIL import Image as PILImage

    return np.asarray(PILImage.open(file).convert("L"), np.float32), None


def overlay(frames: np.ndarray, masks, table: pd.DataFrame, *, title: str) -> np.ndarray:
    """QC: each timepoint with its wound edges drawn, side by side."""
    tiles = []
    for frame, mask in zip(frames, masks):
        lo, hi = np.percentile(frame, [1, 99.5])
        grey = (np.clip((frame - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        edge = mask & ~ndi.binary_erosion(mask, iterations=2)
        rgb[edge] = (255, 200, 0)
        tiles.append(rgb)
    step = max(1, int(np.ceil(max(frames.shape[1:]) / 400)))
    tiles = [t[::step, ::step] for t in tiles]
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1)
    times = ", ".join(f"{t:g} h: {c:.0f}%" for t, c in zip(table["time_h"], table["pct_closure"]))
    return qc._header(row, f"{title} | closure {times}")


def process_sample(*, sample: str, path, options: dict, outputs: dict, pixel_size_um=None) -> dict:
    """Read, analyse and write one scratch-assay well (``outputs``: ``frames``, ``metrics``,
    ``qc``); any failure becomes the sample's ``status``."""
    from .sheet import parse_pixel_size

    options = {**DEFAULTS, **options}
    try:
        frames, times, stated = read_series(path, channel=options["channel"],
                                            frame_interval_h=options["frame_interval_h"])
        given = parse_pixel_size(pixel_size_um)
        size = given[2] if given else stated or options["pixel_size_um"]
        if size is None:
            raise io.InputError("the images do not state their pixel size; give pixel_size_um in the "
                                "sample sheet or wound.pixel_size_um in the config")
        table, metrics, masks = analyse_series(frames, times, pixel_size_um=float(size),
                                               cell_diameter_um=options["cell_diameter_um"],
                                               max_closure_fit_pct=options["max_closure_fit_pct"])
    except Exception as exc:
        reason = qc.failure_reason(sample, exc)
        return qc.write_failure(sample, reason, outputs, tables={"frames": FRAME_COLUMNS})
    warnings = []
    if not table["found"].iloc[1:].all() and (table["pct_closure"] < 100).any():
        warnings.append("the wound was not found at some timepoints after time 0 (taken as closed)")
    field_mm2 = frames[0].size * float(size) ** 2 / 1e6
    if metrics["wound_area_t0_mm2"] > 0.8 * field_mm2:
        warnings.append(f"the wound covers {100 * metrics['wound_area_t0_mm2'] / field_mm2:.0f}% of the field at "
                        "time 0: check on the QC image that the monolayer was found")
    if (table["pct_closure"] < -10).any():
        warnings.append("the wound grew by more than 10% after time 0 (cells detaching, or another field?)")
    if metrics["fit_n"] >= 3 and metrics["fit_r2"] < 0.8:
        warnings.append(f"width does not fall linearly with time (r² {metrics['fit_r2']:.2f}); "
                        "the closure rate is an average")
    io.write_table(table, outputs["frames"])
    title = f"{sample}: closure {metrics['closure_rate_um_h']:.1f} um/h".replace("nan", "-")
    io.write_png(qc.with_warnings(overlay(frames, masks, table, title=title), warnings), outputs["qc"])
    result = {"sample": sample, "status": "ok", "warnings": warnings, "path": str(path), **metrics,
              "pixel_size_um": float(size), "times_h": table["time_h"].tolist()}
    io.write_json(result, outputs["metrics"])
    return result
