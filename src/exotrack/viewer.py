"""What napari shows of a sample: layer data built from a results folder, plus the QC decisions
file. Pure functions returning napari's ``(data, kwargs, layer_type)`` tuples, so that the
reader, the widget and the tests share one path and nothing here needs a display.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from . import io

DECISION_COLUMNS = ["sample", "decision", "comment", "decided_at"]
SEED_COLUMNS = ["sample", "seed", "recorded_at"]
_ROLE_COLOURS = {"nuclei": "blue", "exosomes": "magenta", "cells": "gray"}
_CLASS_COLOURS = ["cyan", "yellow", "orange", "red"]
MODALITIES = ("fluorescence", "bli", "photoacoustic", "histology")


def result_folder(path) -> tuple[str, str] | None:
    """``(modality, sample)`` if ``path`` is ``results/<modality>/<sample>``, else ``None``."""
    path = Path(path)
    if path.is_dir() and path.parent.name in MODALITIES and (path / "metrics.json").exists():
        return path.parent.name, path.name
    return None


def read_result(path) -> list[tuple]:
    """Layers of one analysed sample, from ``results/<modality>/<sample>``."""
    found = result_folder(path)
    if found is None:
        raise ValueError(f"{path} is not a results/<modality>/<sample> folder with a metrics.json")
    modality, sample = found
    path = Path(path)
    metrics = json.loads((path / "metrics.json").read_text())
    # Raw paths are recorded relative to the run's working directory, which holds results/.
    metrics["path"] = str(path.parents[2] / metrics["path"]) if "path" in metrics else None
    failed = not str(metrics.get("status", "")).startswith(("ok", "saturated"))
    # A photoacoustic sample whose node was not found still shows its B-mode, to click a seed on.
    if failed and not (modality == "photoacoustic" and metrics.get("path")):
        raise ValueError(f"sample {sample} has no result to show: {metrics.get('status')}")
    return {"fluorescence": _fluorescence, "bli": _bli, "photoacoustic": _photoacoustic,
            "histology": _histology}[modality](path, metrics)


def _fluorescence(path: Path, metrics: dict) -> list[tuple]:
    image = io.read_image(metrics["path"])
    spatial = tuple(metrics["pixel_size_um"]) if image.is_3d else tuple(metrics["pixel_size_um"][1:])
    timelapse = image.n_frames > 1
    scale = ((1.0,) if timelapse else ()) + spatial

    def shaped(array):  # (T, Z, Y, X) -> the layer's axes
        array = array if image.is_3d else array[:, 0]
        return array if timelapse else array[0]

    roles = {index: role for role, index in
             ((r, image.channel_names.index(n)) for r, n in metrics.get("channels", {}).items())}
    layers = []
    for c, name in enumerate(image.channel_names):
        role = roles.get(c)
        layers.append((shaped(image.data[:, c]), {"name": name, "scale": scale, "blending": "additive",
                                                  "colormap": _ROLE_COLOURS.get(role, "gray")}, "image"))
    for file, name in (("nuclei.tif", "nuclei"), ("labels.tif", "cells")):
        layers.append((tifffile.imread(path / file), {"name": name, "scale": scale, "opacity": 0.35}, "labels"))
    puncta = pd.read_csv(path / "puncta.csv")
    axes = (["frame"] if timelapse else []) + (["z"] if image.is_3d else []) + ["y", "x"]
    layers.append((puncta[axes].to_numpy(float), {
        "name": "puncta", "scale": scale, "features": puncta, "size": 4, "face_color": "transparent",
        "border_color": "cell_id", "border_colormap": "turbo", "border_width": 0.15}, "points"))
    if (path / "tracks.csv").exists():
        tracks = pd.read_csv(path / "tracks.csv")
        if not tracks.empty:
            columns = ["track_id", "frame"] + (["z"] if image.is_3d else []) + ["y", "x"]
            layers.append((tracks[columns].to_numpy(float), {"name": "tracks", "scale": scale, "tail_length": 10},
                           "tracks"))
    return layers


def _bli(path: Path, metrics: dict) -> list[tuple]:
    radiance = tifffile.imread(path / "radiance.tif")
    pixel_cm = metrics["fov_cm"] / radiance.shape[1]
    scale = (pixel_cm * 10, pixel_cm * 10)  # mm
    layers = []
    folder = Path(metrics["path"])
    photo = next((p for p in folder.iterdir() if p.name.lower() == "photograph.tif"), None) if folder.is_dir() else None
    if photo is not None:
        picture = tifffile.imread(photo).astype(np.float32)
        layers.append((picture, {"name": "photograph", "colormap": "gray",
                                 "scale": tuple(s * radiance.shape[i] / picture.shape[i] for i, s in enumerate(scale))},
                       "image"))
    positive = radiance[radiance > 0]
    top = float(np.percentile(positive, 99.9)) if positive.size else 1.0
    layers.append((radiance, {"name": "radiance (p/s/cm²/sr)", "colormap": "turbo", "blending": "additive",
                              "scale": scale, "contrast_limits": (top / 1000, top), "gamma": 0.3}, "image"))
    rois = pd.read_csv(path / "rois.csv")
    if not rois.empty:
        shapes, kinds = [], []
        for row in rois.itertuples():
            y0, x0 = row.yc - row.height / 2, row.xc - row.width / 2
            shapes.append(np.array([[y0, x0], [y0 + row.height, x0 + row.width]]))
            kinds.append("rectangle" if row.shape == "rect" else "ellipse")
        label = rois["subject"].astype(str) + " " + rois["roi"] + ": " + rois["total_flux_p_s"].map("{:.2e}".format)
        layers.append((shapes, {"name": "ROIs", "shape_type": kinds, "scale": scale, "features": rois.assign(label=label),
                                "edge_color": "white", "face_color": "transparent", "edge_width": 0.3,
                                "text": {"string": "{label}", "color": "white", "size": 9}}, "shapes"))
    return layers


def _photoacoustic(path: Path, metrics: dict) -> list[tuple]:
    from .photoacoustic import read_stack

    from .io import InputError

    try:
        stack = read_stack(metrics["path"], voxel_size_um=tuple(metrics.get("voxel_size_um") or (1.0, 1.0, 1.0)))
    except InputError as exc:
        raise ValueError(f"cannot show {metrics['path']}: {exc}") from None
    scale = tuple(stack.voxel_size_um)
    first_pa = next((n for n in stack.channels if n.lower() != "us"), None)
    layers = []
    for name, data in stack.channels.items():
        ultrasound = name.lower() == "us"
        layers.append((data, {"name": name, "scale": scale, "colormap": "gray" if ultrasound else "inferno",
                              "blending": "translucent" if ultrasound else "additive",
                              "visible": ultrasound or name == first_pa}, "image"))
    node = tifffile.imread(path / "node.tif").astype(np.int32)
    if node.size:  # a failed sample has none
        layers.append((node.reshape(next(iter(stack.channels.values())).shape),
                       {"name": "lymph node", "scale": scale, "opacity": 0.4}, "labels"))
    # Clicked seeds land here (the sample browser records them in results/qc/seeds.csv).
    layers.append((np.zeros((0, 3)), {"name": "node seed", "scale": scale, "ndim": 3, "size": 8,
                                      "face_color": "cyan", "border_color": "white"}, "points"))
    return layers


def _histology(path: Path, metrics: dict) -> list[tuple]:
    from .histology import open_section

    section = open_section(metrics["path"])
    try:
        # Whole slides are shown at a resolution of at most 8192 pixels across.
        step = max(1, int(np.ceil(max(section.shape) / 8192)))
        if step == 1:
            data = section.read(0, section.shape[0], 0, section.shape[1])
        else:
            rows = range(0, section.shape[0], 4096)
            data = np.concatenate([section.read(y, min(y + 4096, section.shape[0]), 0, section.shape[1])[::step, ::step]
                                   for y in rows], axis=0)
    finally:
        section.close()
    size = metrics["pixel_size_um"]
    layers = []
    if section.brightfield:
        layers.append((data[..., :3].astype(np.uint8), {"name": "section", "rgb": True, "scale": (size * step,) * 2},
                       "image"))
    else:
        for c, name in enumerate(section.channel_names):
            layers.append((data[..., c], {"name": name, "scale": (size * step,) * 2, "blending": "additive",
                                          "colormap": ["blue", "green", "magenta", "gray"][c % 4]}, "image"))
    cells = pd.read_csv(path / "cells.csv")
    colours = [_CLASS_COLOURS[int(k)] for k in cells["class"]]
    layers.append((cells[["y", "x"]].to_numpy(float), {"name": "cells", "scale": (size, size), "features": cells,
                                                       "face_color": colours, "size": 6, "border_width": 0}, "points"))
    return layers


# --- QC decisions -------------------------------------------------------------------------------

def _read_qc_table(path, columns) -> tuple[Path, pd.DataFrame]:
    """A QC file written from the sample browser, as text (empty, with ``columns``, if absent);
    its first two columns are required."""
    path = Path(path)
    if not path.exists():
        return path, pd.DataFrame(columns=columns)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = set(columns[:2]) - set(table.columns)
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(sorted(missing))}")
    return path, table


def read_decisions(path) -> pd.DataFrame:
    """``results/qc/decisions.csv`` (``sample, decision, comment, decided_at``), empty if absent."""
    path, table = _read_qc_table(path, DECISION_COLUMNS)
    bad = ~table["decision"].isin(["pass", "fail"])
    if bad.any():
        raise ValueError(f"{path}: decision must be pass or fail, not {table.loc[bad, 'decision'].iloc[0]!r}")
    return table.reindex(columns=DECISION_COLUMNS, fill_value="")


def record_decision(path, sample: str, decision: str, comment: str = "") -> pd.DataFrame:
    """Record (or replace) one sample's QC decision, atomically; returns the table."""
    if decision not in ("pass", "fail"):
        raise ValueError(f"decision must be pass or fail, not {decision!r}")
    table = read_decisions(path)
    table = table[table["sample"] != sample]
    row = {"sample": sample, "decision": decision, "comment": comment.strip(),
           "decided_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    io.write_table(table, path)
    return table


# --- lymph-node seeds ---------------------------------------------------------------------------

def read_seeds(path) -> pd.DataFrame:
    """``results/qc/seeds.csv`` (``sample, seed, recorded_at``: a voxel ``z,y,x`` inside the
    lymph node, or a box ``z0-z1,y0-y1,x0-x1``), empty if absent. The workflow gives a sample's
    seed here precedence over the sheet's."""
    from .photoacoustic import parse_seed

    path, table = _read_qc_table(path, SEED_COLUMNS)
    table["sample"] = table["sample"].str.strip()
    for row in table.itertuples():
        try:
            parse_seed(row.seed)
        except ValueError as exc:
            raise ValueError(f"{path}, sample {row.sample}: {exc}") from None
    return table.reindex(columns=SEED_COLUMNS, fill_value="")


def record_seed(path, sample: str, seed) -> pd.DataFrame:
    """Record (or replace) one sample's lymph-node seed, a voxel ``(z, y, x)`` or a box
    ``((z0, z1), (y0, y1), (x0, x1))``, atomically; returns the table."""
    if all(np.ndim(v) == 0 for v in seed):
        text = ",".join(str(int(round(float(v)))) for v in seed)
    else:
        text = ",".join(f"{int(round(float(lo)))}-{int(round(float(hi)))}" for lo, hi in seed)
    table = read_seeds(path)
    table = table[table["sample"] != sample]
    row = {"sample": sample, "seed": text, "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    io.write_table(table, path)
    return table
