"""In-vitro uptake: nuclei, cells and CD63-RFP puncta, puncta assigned to cells, per-cell measures.

:func:`analyse_image` is the science on arrays; :func:`process_sample` reads one sample's file,
runs it and writes the sample's outputs, turning any failure into a ``status`` that names the
problem so that other samples are unaffected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from . import io, qc
from .background import background_surface
from .puncta import detect_puncta
from .segmentation import segment_nuclei_and_cells
from .sheet import parse_channels, parse_pixel_size

log = logging.getLogger(__name__)

CELL_COLUMNS = ["cell_id", "frame", "y", "x", "area_um2", "nucleus_area_um2", "exosome_mean",
                "exosome_integrated", "puncta_count", "exosome_positive", "z", "volume_um3",
                "nucleus_volume_um3"]
PUNCTA_COLUMNS = ["spot_id", "frame", "z", "y", "x", "intensity", "cell_id", "snr"]
HEADLINE = ["n_cells", "pct_exosome_positive_cells", "puncta_per_cell_mean",
            "exosome_intensity_per_cell_mean", "n_puncta", "pct_puncta_in_cells"]

DEFAULTS = {
    "channels": {"nuclei": "Hoechst", "exosomes": "CD63-RFP", "cells": "CellMask"},
    "pixel_size_um": None,
    "nucleus_diameter_um": 10.0,
    "cell_expansion_um": 6.0,
    "max_cell_radius_um": 30.0,
    "spot_diameter_um": 0.5,
    "spot_axial_ratio": 3.0,
    "snr_threshold": 5.5,
    "min_puncta_positive": 1,
    "max_saturated_fraction": 0.05,
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


def analyse_frame(nuclei_image, exosome_image, cell_image=None, *, pixel_size_um, options: dict):
    """Segment, detect and measure one 2-D or 3-D frame. Returns nuclei, cells and both tables."""
    nuclei, cells = segment_nuclei_and_cells(
        nuclei_image, cell_image, pixel_size_um=pixel_size_um,
        nucleus_diameter_um=options["nucleus_diameter_um"],
        cell_expansion_um=options["cell_expansion_um"],
        max_cell_radius_um=options["max_cell_radius_um"])
    puncta = detect_puncta(exosome_image, pixel_size_um=pixel_size_um,
                           spot_diameter_um=options["spot_diameter_um"],
                           axial_ratio=options["spot_axial_ratio"],
                           snr_threshold=options["snr_threshold"],
                           exclude=_padding(exosome_image))
    index = [np.clip(np.round(puncta[a].to_numpy()).astype(int), 0, n - 1)
             for a, n in zip("zyx"[3 - cells.ndim:], cells.shape)]
    puncta["cell_id"] = cells[tuple(index)] if len(puncta) else np.zeros(0, int)
    table = measure_cells(cells, nuclei, exosome_image, puncta, pixel_size_um=pixel_size_um,
                          min_puncta_positive=options["min_puncta_positive"])
    return nuclei, cells, table, puncta


def _padding(image: np.ndarray) -> np.ndarray | None:
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
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise io.InputError("image contains NaN or infinite values")
    lo, hi = data.min(), data.max()
    if lo == hi:
        raise io.InputError(f"image is empty: every pixel has the value {lo}")
    if np.issubdtype(data.dtype, np.integer):
        ceiling = np.iinfo(data.dtype).max
        saturated = float(np.mean(data == ceiling))
        if saturated > max_saturated_fraction:
            raise io.InputError(
                f"image is saturated: {100 * saturated:.1f}% of pixels are at the camera's "
                f"maximum ({ceiling}); reacquire with a shorter exposure")


def analyse_image(image: io.Image, *, roles: dict[str, int], pixel_size_um, options: dict) -> Result:
    """Analyse every frame of a fluorescence image.

    ``roles`` maps ``nuclei``, ``exosomes`` and optionally ``cells`` to channel indices.
    """
    options = {**DEFAULTS, **options}
    data = image.data
    is_3d = image.is_3d
    spatial = tuple(pixel_size_um) if is_3d else tuple(pixel_size_um[1:])
    nuclei_stack, cell_stack, cell_tables, puncta_tables = [], [], [], []
    for frame in range(image.n_frames):
        def plane(role):
            if role not in roles:
                return None
            stack = data[frame, roles[role]]
            return stack if is_3d else stack[0]

        for role, index in roles.items():
            try:
                check_image(data[frame, index], max_saturated_fraction=options["max_saturated_fraction"])
            except io.InputError as exc:
                raise io.InputError(f"{role} channel {image.channel_names[index]!r}: {exc}") from None
        nuclei, cells, table, puncta = analyse_frame(
            plane("nuclei"), plane("exosomes"), plane("cells"), pixel_size_um=spatial, options=options)
        table.insert(1, "frame", frame)
        puncta.insert(0, "frame", frame)
        nuclei_stack.append(nuclei if is_3d else nuclei[None])
        cell_stack.append(cells if is_3d else cells[None])
        cell_tables.append(table)
        puncta_tables.append(puncta)
    cell_table = pd.concat(cell_tables, ignore_index=True)[CELL_COLUMNS]
    puncta_table = pd.concat(puncta_tables, ignore_index=True)
    puncta_table.insert(0, "spot_id", np.arange(1, len(puncta_table) + 1))
    puncta_table = puncta_table[PUNCTA_COLUMNS]
    return Result(nuclei=np.stack(nuclei_stack), cells=np.stack(cell_stack), cell_table=cell_table,
                  puncta_table=puncta_table, metrics=headline_metrics(cell_table, puncta_table),
                  pixel_size_um=tuple(pixel_size_um))


def headline_metrics(cells: pd.DataFrame, puncta: pd.DataFrame) -> dict:
    """Per-sample summary; with several frames, per-frame values are averaged."""
    n_frames = max(int(cells["frame"].max()) + 1, 1) if len(cells) else 1
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
    missing = [r for r in ("nuclei", "exosomes") if not mapping.get(r) and mapping.get(r) != 0]
    if missing:
        raise io.InputError("no channel given for " + " and ".join(missing)
                            + " (set fluorescence.channels in the config or the sheet's channels column)")
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
                   pixel_size_um=None, axes: str | None = None) -> dict:
    """Read, analyse and write one fluorescence sample.

    ``outputs`` maps ``cells``, ``puncta``, ``labels``, ``nuclei``, ``metrics`` and ``qc`` to paths.
    Whatever goes wrong, every output is written: on failure the tables are empty, the label
    images are empty, the QC image states the error, and ``metrics`` carries ``status`` with the
    reason, so other samples and the aggregate tables go on.
    """
    options = {**DEFAULTS, **options}
    try:
        image = io.read_image(path, axes=axes or None)
        # A sheet's channels column replaces the config's roles, so a sample can drop one.
        mapping = parse_channels(channels) or options["channels"]
        roles = resolve_roles(image, mapping)
        size = resolve_pixel_size(image, parse_pixel_size(pixel_size_um), options["pixel_size_um"])
        result = analyse_image(image, roles=roles, pixel_size_um=size, options=options)
    except io.InputError as exc:
        return _write_failure(sample, str(exc), outputs)
    except Exception as exc:  # a bug or an unforeseen input: record it, keep the run going
        log.exception("sample %s failed", sample)
        return _write_failure(sample, f"analysis failed ({type(exc).__name__}: {exc})", outputs)

    squeeze = (lambda a: a[0]) if image.n_frames == 1 else (lambda a: a)
    spatial = (lambda a: a) if image.is_3d else (lambda a: a[:, 0])
    axes_out = ("T" if image.n_frames > 1 else "") + ("ZYX" if image.is_3d else "YX")
    io.write_tiff(squeeze(spatial(result.cells)), outputs["labels"], axes=axes_out, pixel_size_um=result.pixel_size_um)
    io.write_tiff(squeeze(spatial(result.nuclei)), outputs["nuclei"], axes=axes_out, pixel_size_um=result.pixel_size_um)
    io.write_table(result.cell_table, outputs["cells"])
    io.write_table(result.puncta_table, outputs["puncta"])
    composite = {role: image.data[0, index] for role, index in roles.items()}
    io.write_png(qc.fluorescence_overlay(composite, result.cells[0], result.nuclei[0],
                                         result.puncta_table[result.puncta_table["frame"] == 0],
                                         title=_qc_title(sample, result.metrics)), outputs["qc"])
    metrics = {"sample": sample, "status": "ok", **result.metrics,
               "channels": {role: image.channel_names[i] for role, i in roles.items()},
               "pixel_size_um": list(result.pixel_size_um), "shape_tczyx": list(image.data.shape)}
    io.write_json(metrics, outputs["metrics"])
    return metrics


def _qc_title(sample, metrics):
    return (f"{sample}: {metrics['n_cells']:.0f} cells, {metrics['n_puncta']:.0f} puncta, "
            f"{metrics['pct_exosome_positive_cells']:.0f}% positive, "
            f"{metrics['puncta_per_cell_mean']:.1f} puncta/cell")


def _write_failure(sample: str, reason: str, outputs: dict) -> dict:
    log.error("sample %s: %s", sample, reason)
    io.write_table(pd.DataFrame(columns=CELL_COLUMNS), outputs["cells"])
    io.write_table(pd.DataFrame(columns=PUNCTA_COLUMNS), outputs["puncta"])
    empty = np.zeros((0, 0), np.int32)
    io.write_tiff(empty, outputs["labels"])
    io.write_tiff(empty, outputs["nuclei"])
    io.write_png(qc.message_image(f"{sample}: FAILED", reason), outputs["qc"])
    metrics = {"sample": sample, "status": f"error: {reason}"}
    io.write_json(metrics, outputs["metrics"])
    return metrics

