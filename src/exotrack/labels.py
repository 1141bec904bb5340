"""Label images brought by the user (Cellpose, StarDist, QuPath, ...) in place of exotrack's own
segmentation: read, checked against the image they label, and made into the nuclei and cells
that :func:`exotrack.fluorescence.analyse_image` measures."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import expand_labels, relabel_sequential

from .io import InputError, check_file


def read_label_image(path, *, shape_tzyx, role: str) -> np.ndarray:
    """A label image as ``(T, Z, Y, X)`` int32 for an image of ``shape_tzyx``.

    The file (TIFF or PNG) holds one label per object, 0 for background, and has the image's
    shape without its channels: ``(T, Z, Y, X)`` with length-1 axes left out as the writer
    pleases, or one frame of it (``(Z, Y, X)`` or ``(Y, X)``), which then serves every frame.
    Anything else, or values that are not non-negative integers, is an :class:`InputError`.
    """
    path = check_file(path)
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image as PILImage

            data = np.asarray(PILImage.open(path))
        else:
            import tifffile

            data = tifffile.imread(path)
    except Exception as exc:
        raise InputError(f"cannot read {role} label image {path.name}: {exc}") from exc
    if not (np.issubdtype(data.dtype, np.integer) or data.dtype == bool):
        if np.issubdtype(data.dtype, np.floating) and np.all(np.isfinite(data)) and np.all(data == np.round(data)):
            data = data.astype(np.int64)  # integers stored as floats (ImageJ's 32-bit labels)
        else:
            raise InputError(f"{role} label image {path.name} holds {data.dtype} values, not labels: give an "
                             "integer image with one value per object and 0 for background")
    if data.size and data.min() < 0:
        raise InputError(f"{role} label image {path.name} has negative values; labels are 0 (background) "
                         "or a positive object number")
    t, z, y, x = shape_tzyx
    squeezed = tuple(n for n in data.shape if n > 1)
    full = tuple(n for n in (t, z, y, x) if n > 1)
    frame = tuple(n for n in (z, y, x) if n > 1)
    if squeezed == full:
        return data.reshape(t, z, y, x).astype(np.int32)
    if squeezed == frame:
        return np.broadcast_to(data.reshape(1, z, y, x), (t, z, y, x)).astype(np.int32)
    raise InputError(f"{role} label image {path.name} has shape {data.shape}, but the image it labels is "
                     f"(T, Z, Y, X) = {tuple(shape_tzyx)}: give labels of that shape or of one frame "
                     f"({', '.join(map(str, (z, y, x) if z > 1 else (y, x)))})")


def given_labels(nuclei_path, cell_path, *, shape_tzyx, pixel_size_um, cell_expansion_um: float) -> dict:
    """Nuclei and cells ``(T, Z, Y, X)`` from label files, as exotrack's segmentation gives them.

    Each frame's cells are numbered 1..n and each nucleus carries the label of the cell it lies
    in (a nucleus outside every cell is dropped), whatever numbering the files use. Without
    ``cell_path`` the cells are the nuclei expanded by ``cell_expansion_um``, stopping where two
    meet, as exotrack does without a cell stain.
    """
    if not nuclei_path:
        raise InputError("cell_labels needs nuclei_labels as well: a cell is measured with its nucleus")
    nuclei = read_label_image(nuclei_path, shape_tzyx=shape_tzyx, role="nuclei")
    if cell_path:
        cells = read_label_image(cell_path, shape_tzyx=shape_tzyx, role="cells")
    else:
        spacing = np.asarray(pixel_size_um, float)
        step = spacing[-1]
        cells = np.stack([
            expand_labels(frame, distance=cell_expansion_um / step, spacing=spacing / step)
            if shape_tzyx[1] > 1 else expand_labels(frame[0], distance=cell_expansion_um / step)[None]
            for frame in nuclei])
    out_cells = np.zeros(cells.shape, np.int32)
    for t in range(len(cells)):
        out_cells[t] = relabel_sequential(cells[t])[0]
    out_nuclei = np.where(nuclei > 0, out_cells, 0).astype(np.int32)
    return {"nuclei": out_nuclei, "cells": out_cells}


def label_path(value) -> str | None:
    """A sheet cell naming a label file, or ``None`` when empty."""
    return str(value) if value is not None and str(value).strip() not in ("", "nan") else None

