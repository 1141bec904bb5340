"""Transwell migration: cells on the underside of a membrane, per field and per mm².

Crystal-violet brightfield images are unmixed by colour deconvolution (optical density against
the image's own light level) into crystal violet, a neutral grey density (the membrane and its
pores, which scatter all colours alike) and a residual; DAPI (fluorescence) images use the
background-corrected nuclear channel. Stained objects are found by Otsu's threshold on the
smoothed stain. Pores are holes: crystal violet stains them little, DAPI shows only their
autofluorescence; they are small, round and all alike. When the objects hold a dim population
that is mostly pore-sized (two populations of log density), those up to twice a pore's area are
the pores, left out, and objects are cut again above the brightest pore's brightest pixel (a cell
beside a pore is then one cell); objects under half a pore's area are specks. (A nucleus is about
as large as a pore: size alone cannot tell them apart.) A clump of touching cells counts one cell
per peak of its distance transform.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from . import io, qc
from .background import background_surface

# Crystal violet's optical density per RGB channel (unit vector): it absorbs near 590 nm, red and
# green far more than blue, so stained cells look violet.
CRYSTAL_VIOLET = np.array([0.60, 0.75, 0.28])
NEUTRAL = np.ones(3) / np.sqrt(3)
OBJECT_COLUMNS = ["object_id", "y", "x", "area_um2", "kind", "cells"]
DEFAULTS = {"stain": "auto", "channel": 0, "cell_diameter_um": 12.0, "pore_diameter_um": 8.0,
            "pixel_size_um": None}


def stain_matrix(stain=CRYSTAL_VIOLET) -> np.ndarray:
    """Rows: the stain, neutral grey and their cross product (residual), as unit vectors."""
    stain = np.asarray(stain, float) / np.linalg.norm(stain)
    residual = np.cross(stain, NEUTRAL)
    return np.stack([stain, NEUTRAL, residual / np.linalg.norm(residual)])


def crystal_violet_density(rgb: np.ndarray, *, stain=CRYSTAL_VIOLET) -> np.ndarray:
    """Crystal-violet optical density per pixel of an RGB brightfield image.

    The light level of each channel is the image's bright end (99.5th percentile): a membrane
    field is mostly unstained.
    """
    rgb = rgb[..., :3].astype(np.float64)
    light = np.percentile(rgb.reshape(-1, 3), 99.5, axis=0)
    od = -np.log10(np.clip(rgb / np.maximum(light, 1e-9), 1e-4, 1.0))
    return (od.reshape(-1, 3) @ np.linalg.inv(stain_matrix(stain)))[:, 0].reshape(rgb.shape[:2])


def count_cells(density: np.ndarray, *, pixel_size_um: float, cell_diameter_um: float = 12.0,
                pore_diameter_um: float = 8.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Migrated cells in a stain-density image (cells bright, membrane dark).

    Returns one row per object counted from (``kind`` ``cell`` or ``speck``, ``cells`` the number
    of cells it counts for), the object labels and the number of pores seen and left out.
    """
    from skimage.filters import threshold_otsu

    smooth = ndi.gaussian_filter(density.astype(np.float64), max(0.1 * cell_diameter_um / pixel_size_um, 0.5))
    pore_area = np.pi * (pore_diameter_um / 2) ** 2
    mask, labels, n, area, mean = _objects(smooth, density, threshold_otsu(smooth), pixel_size_um)
    levels = _pore_and_cell_levels(area, mean, pore_area=pore_area)
    pores = np.zeros(0, bool)
    if levels is not None:
        # Pores show: they are the dim pore-sized objects, and objects are cut again above them,
        # so that a cell beside a pore stays one cell and the pores drop out.
        pores = (mean <= levels[0]) & (area < 2 * pore_area)
        kept = np.concatenate([[False], ~pores])[labels]
        brightest_pore = float(np.max(ndi.maximum(smooth, labels, np.flatnonzero(pores) + 1)))
        mask, labels, n, area, mean = _objects(np.where(kept, smooth, 0), density,
                                               max(brightest_pore, threshold_otsu(smooth)), pixel_size_um)
    centres = ndi.center_of_mass(mask, labels, np.arange(1, n + 1)) if n else []
    is_cell = area >= 0.5 * pore_area  # smaller: specks
    # Touching cells: one per peak of the distance to the background, peaks at least 0.7 of a
    # cell's radius apart (each cell is about round, so its centre is the farthest from the edge).
    from skimage.feature import peak_local_max

    distance = ndi.distance_transform_edt(mask)
    radius_px = cell_diameter_um / 2 / pixel_size_um
    peaks = peak_local_max(distance, min_distance=max(int(0.7 * radius_px), 1), labels=labels,
                           threshold_abs=0.3 * radius_px, exclude_border=False)
    per_object = np.bincount(labels[tuple(peaks.T)], minlength=n + 1)[1:] if len(peaks) else np.zeros(n, int)
    cells = np.where(is_cell, np.maximum(1, per_object), 0).astype(int)
    table = pd.DataFrame({"object_id": np.arange(1, n + 1),
                          "y": [c[0] for c in centres], "x": [c[1] for c in centres],
                          "area_um2": area, "kind": np.where(is_cell, "cell", "speck"), "cells": cells},
                         columns=OBJECT_COLUMNS)
    return table, labels, int(pores.sum())


def _objects(smooth, density, threshold, pixel_size_um):
    """Mask, labels, count, areas (µm²) and mean densities of the objects above ``threshold``."""
    mask = ndi.binary_fill_holes(ndi.binary_opening(smooth > threshold, iterations=1))
    labels, n = ndi.label(mask)
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:] * pixel_size_um ** 2
    mean = np.asarray(ndi.mean(density, labels, np.arange(1, n + 1))) if n else np.zeros(0)
    return mask, labels, n, area, mean


def _pore_and_cell_levels(area, mean, *, pore_area: float):
    """The brightest pore's density and the typical cell's, when the objects hold a dim population that is
    mostly pore-sized (Otsu's split of log density, Ashman's D >= 3); else None (pores unseen)."""
    from skimage.filters import threshold_otsu

    if len(mean) < 10 or not (mean > 0).all() or np.ptp(mean) == 0:
        return None
    logs = np.log(mean)
    low = logs <= threshold_otsu(logs)
    if low.all() or not low.any():
        return None
    spread = np.sqrt((logs[low].var() + logs[~low].var()) / 2)
    sized = (area > 0.5 * pore_area) & (area < 2 * pore_area)
    if np.sqrt(2) * (logs[~low].mean() - logs[low].mean()) / max(spread, 1e-12) < 3 or sized[low].mean() < 0.8:
        return None
    return float(np.exp(logs[low].max())), float(np.exp(np.median(logs[~low])))


def stain_density(image: io.Image, *, stain: str, channel) -> tuple[np.ndarray, str]:
    """The image's stain density and which stain it was (``auto``: RGB is crystal violet)."""
    data = image.data[0]  # (C, Z, Y, X)
    rgb = data.shape[0] == 3 and stain in ("auto", "crystal_violet")
    if stain == "crystal_violet" and data.shape[0] != 3:
        raise io.InputError(f"a crystal-violet image must be RGB; this one has {data.shape[0]} channel(s)")
    if rgb:
        return crystal_violet_density(np.moveaxis(data.max(axis=1), 0, -1)), "crystal_violet"
    plane = data[io.resolve_channel(image, channel, role="transwell nuclei")].max(axis=0).astype(np.float32)
    return plane - background_surface(plane), "fluorescence"


def process_sample(*, sample: str, path, options: dict, outputs: dict, pixel_size_um=None) -> dict:
    """Read, count and write one membrane field (``outputs``: ``objects``, ``metrics``, ``qc``)."""
    from .sheet import parse_pixel_size

    options = {**DEFAULTS, **options}
    try:
        image = io.read_image(path)
        given = parse_pixel_size(pixel_size_um)
        size = given[2] if given else image.pixel_size_um[2] or options["pixel_size_um"]
        if size is None:
            raise io.InputError("the image does not state its pixel size; give pixel_size_um in the "
                                "sample sheet or transwell.pixel_size_um in the config")
        density, stain = stain_density(image, stain=options["stain"], channel=options["channel"])
        table, labels, n_pores = count_cells(density, pixel_size_um=float(size),
                                             cell_diameter_um=options["cell_diameter_um"],
                                    pore_diameter_um=options["pore_diameter_um"])
    except Exception as exc:
        reason = qc.failure_reason(sample, exc)
        return qc.write_failure(sample, reason, outputs, tables={"objects": OBJECT_COLUMNS})
    field_mm2 = density.size * float(size) ** 2 / 1e6
    n_cells = int(table["cells"].sum())
    warnings = []
    if n_cells == 0:
        warnings.append("no stained object at all: check the stain and channel")
    elif table.loc[table["cells"] > 1, "cells"].sum() > 0.3 * n_cells:
        warnings.append(f"{table.loc[table['cells'] > 1, 'cells'].sum()} of {n_cells} cells are in clumps, "
                        "counted by splitting them: the count is less certain")
    io.write_table(table, outputs["objects"])
    lo, hi = np.percentile(density, [1, 99.5])
    grey = (np.clip((density - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    kinds = np.concatenate([[""], table["kind"].to_numpy(str)])[labels]
    edge = (labels > 0) & ~ndi.binary_erosion(labels > 0)
    rgb[edge & (kinds == "cell")] = (255, 200, 0)
    rgb[edge & (kinds == "speck")] = (80, 160, 255)
    overlay = qc._header(rgb, f"{sample}: {n_cells} migrated cells ({n_cells / field_mm2:.0f} per mm2; "
                              f"{n_pores} pores left out; yellow cells, blue specks)")
    io.write_png(qc.with_warnings(overlay, warnings), outputs["qc"])
    metrics = {"sample": sample, "status": "ok", "warnings": warnings, "path": str(path),
               "migrated_cells_per_field": n_cells, "migrated_cells_per_mm2": n_cells / field_mm2,
               "field_mm2": field_mm2, "n_pores_seen": n_pores, "stain": stain,
               "pixel_size_um": float(size)}
    io.write_json(metrics, outputs["metrics"])
    return metrics
