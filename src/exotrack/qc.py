"""QC images a person can judge at a glance: channels as a colour composite, object outlines and
detections drawn on top, and the headline numbers written above."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from skimage.segmentation import find_boundaries

from .background import block_reduce_mean

# Longest side of a QC image in pixels; larger fields are block-averaged down to it.
_MAX_SIDE = 1024
_MIN_SIDE = 512
_HEADER = 22
_COLOURS = {"nuclei": (0.25, 0.45, 1.0), "exosomes": (1.0, 0.15, 0.35), "cells": (0.45, 0.45, 0.45)}


def _stretch(plane: np.ndarray) -> np.ndarray:
    """Contrast stretch between the 1st and 99.8th percentile (sampled for speed)."""
    sample = plane.ravel()[:: max(1, plane.size // 200_000)]
    lo, hi = np.percentile(sample, [1, 99.8])
    return np.clip((plane - lo) / max(hi - lo, 1e-9), 0, 1)


def _project(array: np.ndarray) -> np.ndarray:
    return array.max(axis=0) if array.ndim == 3 else array


def _header(rgb: np.ndarray, title: str) -> np.ndarray:
    canvas = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + _HEADER), (20, 20, 20))
    canvas.paste(Image.fromarray(rgb), (0, _HEADER))
    ImageDraw.Draw(canvas).text((6, 5), title, fill=(240, 240, 240), font=ImageFont.load_default())
    return np.asarray(canvas)


def with_warnings(rgb: np.ndarray, warnings) -> np.ndarray:
    """The QC image with one amber line per warning beneath it, so that a result standing on a
    shaky assumption says so where a person looks (the same text as the ``warnings`` column)."""
    lines = [f"WARNING: {w}"[i:i + 110] for w in warnings for i in range(0, len(f"WARNING: {w}"), 110)]
    if not lines:
        return rgb
    canvas = Image.new("RGB", (max(rgb.shape[1], 640), rgb.shape[0] + 8 + 14 * len(lines)), (20, 20, 20))
    canvas.paste(Image.fromarray(rgb), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((6, rgb.shape[0] + 4 + 14 * k), line, fill=(255, 190, 60), font=ImageFont.load_default())
    return np.asarray(canvas)


def fluorescence_overlay(channels: dict[str, np.ndarray], cells: np.ndarray, nuclei: np.ndarray,
                         puncta, *, tracks=None, title: str = "") -> np.ndarray:
    """RGB overlay of one frame (3-D stacks as maximum projections).

    Channels by role (``nuclei`` blue, ``exosomes`` red, ``cells`` grey), cell outlines in green,
    nucleus outlines in light blue, puncta as cyan rings inside cells and yellow rings outside,
    and, for a time-lapse, every track's path as a magenta line.
    """
    cells2d, nuclei2d = _project(cells), _project(nuclei)
    factor = max(1, int(np.ceil(max(cells2d.shape) / _MAX_SIDE)))
    # Everything is brought to display size first: a 2048-pixel field costs a quarter.
    block = (factor, factor)
    planes = {role: block_reduce_mean(_project(np.asarray(a)), block)[0] for role, a in channels.items()}
    cells2d, nuclei2d = cells2d[::factor, ::factor], nuclei2d[::factor, ::factor]
    shape = cells2d.shape
    rgb = np.zeros(shape + (3,), np.float32)
    for role, plane in planes.items():
        rgb += _stretch(plane[: shape[0], : shape[1]])[..., None] * np.array(
            _COLOURS.get(role, (0.5, 0.5, 0.5)), np.float32)
    rgb = np.clip(rgb, 0, 1)
    rgb[find_boundaries(nuclei2d, mode="inner")] = (0.6, 0.8, 1.0)
    rgb[find_boundaries(cells2d, mode="inner")] = (0.2, 1.0, 0.2)
    # Small fields are enlarged (pixels kept square) so that marks and the header stay legible.
    zoom = max(1, _MIN_SIDE // max(shape))
    rgb = rgb.repeat(zoom, axis=0).repeat(zoom, axis=1)
    image = Image.fromarray((rgb * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    scale = zoom / factor

    def at(table):  # pixel centres, scikit-image convention, in display pixels
        return (table["y"] + 0.5) * scale - 0.5, (table["x"] + 0.5) * scale - 0.5

    if tracks is not None:
        for _, path in tracks.groupby("track_id"):
            if len(path) > 1:
                y, x = at(path.sort_values("frame"))
                draw.line(list(zip(x, y)), fill=(255, 80, 255), width=1)
    r = 3
    y, x = at(puncta)
    for y, x, cell in zip(y, x, puncta["cell_id"]):
        colour = (0, 255, 255) if cell > 0 else (255, 230, 0)  # NaN (no cells) counts as outside
        draw.ellipse((x - r, y - r, x + r, y + r), outline=colour)
    return _header(np.asarray(image), title)


# Histology classes: negative, 1+, 2+, 3+ (cyan, then QuPath's yellow-orange-red).
_CLASS_COLOURS = [(80, 220, 255), (255, 220, 0), (255, 140, 0), (230, 20, 20)]


def histology_overlay(overview: np.ndarray, tissue: np.ndarray, cells, *, factor: int, brightfield: bool,
                      roles: dict | None = None, title: str = "") -> np.ndarray:
    """RGB overlay of a section: the slide (brightfield colours, or nuclei blue and marker green),
    the tissue outline in green, each cell as a dot coloured by class (negative cyan, 1+ yellow,
    2+ orange, 3+ red).

    ``overview`` is the section block-averaged by ``factor`` and ``tissue`` its tissue mask;
    ``cells`` has ``y, x`` in section pixels and ``class``.
    """
    step = max(1, round(max(tissue.shape) / _MAX_SIDE))
    small = block_reduce_mean(overview, (step, step, 1))[0]
    mask = tissue[::step, ::step][: small.shape[0], : small.shape[1]]
    if brightfield:
        rgb = np.clip(small[..., :3] / 255.0, 0, 1)
    else:
        rgb = np.zeros(small.shape[:2] + (3,), np.float32)
        rgb[..., 2] = _stretch(small[..., roles["nuclei"]])
        rgb[..., 1] = _stretch(small[..., roles["marker"]])
    rgb[find_boundaries(mask, mode="inner")] = (0.1, 0.85, 0.1)
    zoom = max(1, _MIN_SIDE // max(mask.shape))
    rgb = rgb.repeat(zoom, axis=0).repeat(zoom, axis=1)
    image = Image.fromarray((rgb * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    scale = zoom / (factor * step)
    r = 2 if len(cells) < 20000 else 1
    for y, x, k in zip((cells["y"] + 0.5) * scale - 0.5, (cells["x"] + 0.5) * scale - 0.5, cells["class"]):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_CLASS_COLOURS[int(k)])
    return _header(np.asarray(image), title)


def bli_overlay(radiance: np.ndarray, photograph: np.ndarray | None, rois, table, *, pixel_area_cm2: float,
                title: str = "") -> np.ndarray:
    """Living Image-style overlay: the photograph in grey, radiance above a thousandth of its peak
    in a logarithmic colour scale (colour bar in p/s/cm²/sr on the right), ROI outlines with
    their names and total flux."""
    from matplotlib import colormaps

    shape = radiance.shape
    zoom = max(1, _MIN_SIDE // max(shape))
    grey = _stretch(photograph) if photograph is not None else np.zeros(shape, np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    top = float(np.percentile(radiance, 99.95))
    low = top / 1000 if top > 0 else 1.0
    shown = radiance > low
    scale = np.clip((np.log10(np.maximum(radiance, low)) - np.log10(low)) / max(np.log10(top / low), 1e-9), 0, 1)
    colour = colormaps["turbo"](scale)[..., :3]
    rgb[shown] = 0.35 * rgb[shown] + 0.65 * colour[shown]
    for roi in rois:
        rgb[find_boundaries(roi.pixels(shape), mode="inner")] = (1.0, 1.0, 1.0)
    rgb = rgb.repeat(zoom, axis=0).repeat(zoom, axis=1)
    bar_width = 90
    canvas = np.zeros((rgb.shape[0], rgb.shape[1] + bar_width, 3), np.float32)
    canvas[:, : rgb.shape[1]] = rgb
    ramp = colormaps["turbo"](np.linspace(1, 0, rgb.shape[0] - 20))[:, :3]
    canvas[10:-10, rgb.shape[1] + 8: rgb.shape[1] + 24] = ramp[:, None, :]
    image = Image.fromarray((canvas * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for k in range(4):  # decade ticks, top to bottom
        value = top / 10 ** k
        y = 10 + (rgb.shape[0] - 20) * k / 3
        draw.text((rgb.shape[1] + 28, y - 5), f"{value:.1e}", fill=(230, 230, 230), font=font)
    draw.text((rgb.shape[1] + 4, rgb.shape[0] - 10), "p/s/cm²/sr", fill=(230, 230, 230), font=font)
    for roi, row in zip(rois, table.itertuples()):
        if roi.name == "background":
            continue
        label = f"{roi.subject + ' ' if roi.subject else ''}{roi.name} {row.total_flux_p_s:.2e}"
        draw.text(((roi.xc + roi.width / 2) * zoom + 3, (roi.yc - roi.height / 2) * zoom), label,
                  fill=(255, 255, 255), font=font)
    return _header(np.asarray(image), title)


def _side_by_side(tiles, gap_px: int = 4) -> np.ndarray:
    gap = np.ones((tiles[0].shape[0], gap_px, 3), np.float32)
    return np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)


def photoacoustic_montage(us: np.ndarray, node: np.ndarray, signal: np.ndarray | None, so2: np.ndarray | None,
                          *, title: str = "", n_slices: int = 5) -> np.ndarray:
    """Slices through the node, left to right: B-mode with the node outlined in yellow (top row),
    and the same slices with sO2 (blue 0 to red 1; or the PA signal in 'hot' without sO2) where
    the PA signal stands out of the shell (bottom row)."""
    from matplotlib import colormaps

    zs = np.flatnonzero(node.any(axis=(1, 2)))
    picks = np.unique(np.linspace(zs[0], zs[-1], min(n_slices, zs.size)).round().astype(int)) if zs.size else [0]
    grey = _stretch(us)
    tiles_top, tiles_bottom = [], []
    for z in picks:
        top = np.repeat(grey[z][..., None], 3, axis=-1)
        top[find_boundaries(node[z], mode="inner")] = (1.0, 0.9, 0.0)
        bottom = top.copy() * 0.6
        if so2 is not None:
            shown = np.isfinite(so2[z]) & (signal[z] > np.percentile(signal, 50) if signal is not None else True)
            bottom[shown] = colormaps["coolwarm"](np.nan_to_num(so2[z][shown]))[:, :3]
        elif signal is not None:
            bottom = colormaps["hot"](_stretch(signal[z]))[..., :3]
        bottom[find_boundaries(node[z], mode="inner")] = (1.0, 0.9, 0.0)
        tiles_top.append(top)
        tiles_bottom.append(bottom)
    top, bottom = _side_by_side(tiles_top), _side_by_side(tiles_bottom)
    rgb = np.concatenate([top, np.ones((4, top.shape[1], 3)), bottom], axis=0)
    zoom = max(1, _MIN_SIDE // max(rgb.shape[:2]))
    rgb = rgb.repeat(zoom, axis=0).repeat(zoom, axis=1)
    image = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    width = (grey.shape[2] + 4) * zoom
    for k, z in enumerate(picks):
        draw.text((k * width + 4, 2), f"z={z}", fill=(255, 255, 0), font=ImageFont.load_default())
    return _header(np.asarray(image), title)


def message_image(title: str, message: str, *, width: int = 640) -> np.ndarray:
    """A plain image that states a failure, so a QC folder shows every sample."""
    lines = [message[i:i + 95] for i in range(0, len(message), 95)] or [""]
    body = Image.new("RGB", (width, 30 + 14 * len(lines)), (60, 20, 20))
    draw = ImageDraw.Draw(body)
    for k, line in enumerate(lines):
        draw.text((8, 10 + 14 * k), line, fill=(255, 220, 220), font=ImageFont.load_default())
    return _header(np.asarray(body), title)


def failure_reason(sample: str, exc: Exception) -> str:
    """A failed sample's status text: an input problem in its own words; anything else (a bug or
    an unforeseen input) as an analysis failure, with the traceback logged. Call it in the
    ``except`` block."""
    from . import io

    if isinstance(exc, io.InputError):
        return str(exc)
    logging.getLogger(__name__).exception("sample %s failed", sample)
    return f"analysis failed ({type(exc).__name__}: {exc})"


def write_failure(sample: str, reason: str, outputs: dict, *, tables: dict, images=()) -> dict:
    """Every output of a failed sample, so that other samples and the aggregate go on: header-only
    ``tables`` (output key -> columns), 0 x 0 ``images``, a QC image stating ``reason`` and
    ``metrics`` whose ``status`` carries it. Returns the metrics."""
    from . import io

    logging.getLogger(__name__).error("sample %s: %s", sample, reason)
    for key, columns in tables.items():
        if key in outputs:
            io.write_table(pd.DataFrame(columns=columns), outputs[key])
    for key in images:
        io.write_tiff(np.zeros((0, 0), np.uint8), outputs[key])
    io.write_png(message_image(f"{sample}: FAILED", reason), outputs["qc"])
    metrics = {"sample": sample, "status": f"error: {reason}"}
    io.write_json(metrics, outputs["metrics"])
    return metrics
