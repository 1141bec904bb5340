"""Vendor microscopy formats: Zeiss CZI, Nikon ND2, Leica LIF and OME-Zarr (NGFF).

Each reader is imported only when a file of its kind is met, so that ``pip install exotrack``
stays light; a reader that is not installed gives an :class:`~exotrack.io.InputError` naming the
extra to install. Every reader returns an :class:`~exotrack.io.Image` exactly as the TIFF path
does: axes ``(T, C, Z, Y, X)``, channel names, pixel size ``(z, y, x)`` in µm and the frame
interval in seconds (``None`` where the file does not say).

A file holding several images (CZI scenes, ND2 positions, LIF series or mosaic tiles) is refused
with how to split it, as a multi-series TIFF is: analysing its first image alone would report a
part of the file as the whole. An OME-Zarr pyramid is read at its full resolution.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from .io import Image, InputError, _normalise_axes, _to_tczyx, _UNIT_S, _UNIT_UM, unreadable

EXTRA = 'pip install "exotrack[formats]"'
# Suffix -> (format name, module to import, distribution to install).
READERS = {
    ".czi": ("Zeiss CZI", "pylibCZIrw.czi", "pylibCZIrw"),
    ".nd2": ("Nikon ND2", "nd2", "nd2"),
    ".lif": ("Leica LIF", "liffile", "liffile"),
    ".zarr": ("OME-Zarr", "zarr", "zarr"),
}


def kind(path) -> str | None:
    """The vendor suffix of ``path`` (``".czi"``, ``".nd2"``, ``".lif"``, ``".zarr"``), else ``None``.

    A folder holding OME-Zarr metadata counts as ``".zarr"`` whatever its name.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in READERS:
        return suffix
    if path.is_dir() and any((path / name).is_file() for name in ("zarr.json", ".zattrs")):
        return ".zarr"
    return None


def _module(suffix: str):
    import importlib

    name, module, dist = READERS[suffix]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"reading {name} files needs the {dist} package, which is not installed: "
                         f"{EXTRA}") from None


def read(path, *, axes: str | None = None) -> Image:
    """Read a vendor file (see :func:`kind`) into an :class:`~exotrack.io.Image`.

    Parameters
    ----------
    path : path-like
        The file, or the OME-Zarr folder.
    axes : str, optional
        The data's axis letters as the reader delivers them, overriding what the file says.
    """
    path = Path(path)
    suffix = kind(path)
    module = _module(suffix)
    name = READERS[suffix][0]
    try:
        data, file_axes, names, sizes, interval = _READ[suffix](module, path)
    except InputError:
        raise
    except Exception as exc:  # each reader raises its own types for damaged files
        raise unreadable(path, f"{name} image", exc) from exc
    data = _to_tczyx(data, _normalise_axes(file_axes, axes))
    n_c = data.shape[1]
    if len(names) != n_c or not all(names):
        names = [str(i) for i in range(n_c)]
    return Image(data=data, channel_names=names, pixel_size_um=sizes, source_axes=file_axes,
                 frame_interval_s=interval)


def count_frames(path, *, axes: str | None = None) -> int:
    """Number of time points of a vendor file from its header (0 if it cannot be read)."""
    path = Path(path)
    suffix = kind(path)
    try:
        shape, file_axes = _SHAPE[suffix](_module(suffix), path)
        letters = _normalise_axes(file_axes, axes)
    except Exception:
        return 0
    return int(shape[letters.index("T")]) if "T" in letters else 1


# --- Zeiss CZI (pylibCZIrw) -------------------------------------------------------------------

def _czi_metadata(xml: str) -> tuple[list[str], tuple, float | None]:
    """Channel names, pixel size ``(z, y, x)`` in µm and frame interval in s of CZI metadata."""
    root = ET.fromstring(xml)
    names = [ch.get("Name") or ch.get("Id") or "" for ch in root.iterfind(
        ".//Information/Image/Dimensions/Channels/Channel")]
    scale = {}
    for distance in root.iterfind(".//Scaling/Items/Distance"):
        value = distance.findtext("Value")
        if value and float(value) > 0:  # metres, whatever DefaultUnitFormat displays
            scale[distance.get("Id")] = float(value) * 1e6
    interval = None
    increment = root.findtext(".//Information/Image/Dimensions/T/Positions/Interval/Increment")
    if increment and float(increment) > 0:
        interval = float(increment)
    else:  # the acquisition's set interval (ZEN time series setup)
        span = root.find(".//TimeSeriesSetup//Interval/TimeSpan")
        value = span.findtext("Value") if span is not None else None
        if value and float(value) > 0:
            interval = float(value) * _UNIT_S.get((span.findtext("DefaultUnitFormat") or "s").lower(), 1.0)
    return names, (scale.get("Z"), scale.get("Y"), scale.get("X")), interval


def _refuse_several(path, count: int, what: str) -> None:
    """Refuse a file of ``count`` > 1 images (``what``: scenes, positions, ...), saying how to split it."""
    if count > 1:
        raise InputError(
            f"{Path(path).name} holds {count} {what}; a sample is one image. Split the file into one file per "
            f"image (Fiji: File > Import > Bio-Formats, 'Open all series', then save each as OME-TIFF) and list "
            "each as its own sample")


def _czi_read(pyczi, path):
    with pyczi.open_czi(str(path)) as doc:
        box = doc.total_bounding_box
        scenes = doc.scenes_bounding_rectangle
        _refuse_several(path, len(scenes), "scenes")
        roi = scenes[min(scenes)] if scenes else doc.total_bounding_rectangle
        n_t, n_c, n_z = (box.get(d, (0, 1))[1] - box.get(d, (0, 1))[0] for d in "TCZ")
        t0, c0, z0 = (box.get(d, (0, 1))[0] for d in "TCZ")
        planes = []
        for t in range(n_t):
            for c in range(n_c):
                for z in range(n_z):
                    plane = {"T": t0 + t, "C": c0 + c, "Z": z0 + z}
                    planes.append(doc.read(plane=plane, roi=(roi.x, roi.y, roi.w, roi.h)))
        xml = doc.raw_metadata
    data = np.stack(planes)
    samples = data.shape[-1]
    if samples == 1:
        data = data[..., 0].reshape(n_t, n_c, n_z, roi.h, roi.w)
        file_axes = "TCZYX"
    else:  # colour (BGR) planes: RGB samples, one image channel
        data = data[..., ::-1].reshape(n_t, n_c, n_z, roi.h, roi.w, samples)
        if n_c != 1:
            raise InputError(f"{Path(path).name} holds {n_c} colour channels; export each as its own image")
        data, file_axes = data[:, 0], "TZYXS"
    names, sizes, interval = _czi_metadata(xml)
    return data, file_axes, names if samples == 1 else [], sizes, interval


def _czi_shape(pyczi, path):
    with pyczi.open_czi(str(path)) as doc:
        box = doc.total_bounding_box
    return [box.get(d, (0, 1))[1] - box.get(d, (0, 1))[0] for d in "TCZYX"], "TCZYX"


# --- Nikon ND2 (nd2) --------------------------------------------------------------------------

def _nd2_interval(experiment) -> float | None:
    """Frame interval in s of an ND2 time loop: the measured mean period, else the set one."""
    for loop in experiment or []:
        params = loop.parameters
        if getattr(loop, "type", "") == "NETimeLoop" and params.periods:
            params = params.periods[0]
        if getattr(loop, "type", "") not in ("TimeLoop", "NETimeLoop"):
            continue
        measured = getattr(params.periodDiff, "avg", 0) if params.periodDiff else 0
        period_ms = measured if measured and measured > 0 else params.periodMs
        return float(period_ms) / 1000 if period_ms and period_ms > 0 else None
    return None


def _nd2_sizes(f, path) -> tuple[list[int], str, bool]:
    sizes = dict(f.sizes)
    positions = "P" in sizes
    _refuse_several(path, sizes.pop("P", 1), "positions")
    return list(sizes.values()), "".join(sizes), positions


def _nd2_read(nd2, path):
    with nd2.ND2File(str(path)) as f:
        shape, file_axes, positions = _nd2_sizes(f, path)
        data = np.asarray(f.asarray(0) if positions else f.asarray())
        voxel = f.voxel_size()
        channels = (f.metadata.channels or []) if f.metadata else []
        names = [ch.channel.name for ch in channels]
        interval = _nd2_interval(f.experiment)
    sizes = tuple(float(v) if v and v > 0 else None for v in (voxel.z, voxel.y, voxel.x))
    if "Z" not in file_axes:
        sizes = (None, *sizes[1:])
    return data.reshape(shape), file_axes, names, sizes, interval


def _nd2_shape(nd2, path):
    with nd2.ND2File(str(path)) as f:
        shape, file_axes, _ = _nd2_sizes(f, path)
    return shape, file_axes


# --- Leica LIF (liffile) ----------------------------------------------------------------------

def _lif_units(image) -> dict[str, str]:
    """Unit of each LIF dimension (``DimID`` 1-4 are X, Y, Z, T), as LAS X records it."""
    letters = {"1": "X", "2": "Y", "3": "Z", "4": "T"}
    element = getattr(image, "xml_element", None)
    if element is None:
        return {}
    return {letters[d.get("DimID")]: d.get("Unit", "")
            for d in element.iterfind(".//Dimensions/DimensionDescription") if d.get("DimID") in letters}


def _lif_step(coords, dim, units, table, default_unit):
    values = coords.get(dim)
    if values is None or len(values) < 2:
        return None
    step = abs(float(values[-1] - values[0])) / (len(values) - 1)
    # A unit exotrack does not know leaves the size unstated (the sheet or config then gives it).
    factor = table.get(units.get(dim, default_unit).strip().lower() or default_unit)
    return step * factor if step > 0 and factor else None


def _lif_read(liffile, path):
    with liffile.LifFile(str(path)) as lif:
        if not len(lif.images):
            raise InputError(f"{Path(path).name} holds no image")
        _refuse_several(path, len(lif.images), "image series")
        image = lif.images[0]
        file_axes = "".join(image.dims)
        data = np.asarray(image.asarray())
        coords, units = image.coords, _lif_units(image)
        element = getattr(image, "xml_element", None)
        names = [ch.get("LUTName", "") for ch in element.iterfind(".//Channels/ChannelDescription")] \
            if element is not None else []
    metres = {"m": 1e6, **_UNIT_UM}
    sizes = tuple(_lif_step(coords, d, units, metres, "m") for d in "ZYX")
    interval = _lif_step(coords, "T", units, _UNIT_S, "s")
    if "M" in file_axes and data.shape[file_axes.index("M")] > 1:
        raise InputError(f"{Path(path).name} holds {data.shape[file_axes.index('M')]} unstitched mosaic tiles; "
                         "stitch them (LAS X: Mosaic Merge) and export the field as OME-TIFF")
    if "M" in file_axes:
        data = np.take(data, 0, axis=file_axes.index("M"))
        file_axes = file_axes.replace("M", "")
    return data, file_axes, names, sizes, interval


def _lif_shape(liffile, path):
    with liffile.LifFile(str(path)) as lif:
        image = lif.images[0]
        sizes = dict(image.sizes)
    sizes.pop("M", None)
    return list(sizes.values()), "".join(sizes)


# --- OME-Zarr (NGFF 0.4 and 0.5, zarr) --------------------------------------------------------

def _ngff_attrs(path: Path) -> dict:
    """The OME attributes of an NGFF image folder (0.5 nests them under ``ome``)."""
    for name in ("zarr.json", ".zattrs"):
        file = path / name
        if file.is_file():
            attrs = json.loads(file.read_text())
            attrs = attrs.get("attributes", attrs) if name == "zarr.json" else attrs
            attrs = attrs.get("ome", attrs)
            if "multiscales" in attrs:
                return attrs
    raise InputError(f"{path.name} is not an OME-Zarr image: no 'multiscales' metadata in "
                     "zarr.json or .zattrs (a plate or a bare array is not read; point at one image)")


def _ngff_layout(path: Path):
    attrs = _ngff_attrs(path)
    scales = attrs["multiscales"][0]
    axes = scales.get("axes") or [{"name": a} for a in "tczyx"]  # 0.3 and older: always 5-D
    names = [(a["name"] if isinstance(a, dict) else a).upper() for a in axes]
    level = scales["datasets"][0]  # the full resolution; napari shows the pyramid
    scale = [1.0] * len(names)
    for transform in scales.get("coordinateTransformations", [])[:1] + level.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = [s * t for s, t in zip(scale, transform["scale"])]
    return attrs, axes, names, level["path"], scale


def _ngff_read(zarr, path):
    attrs, axes, names, level, scale = _ngff_layout(path)
    array = zarr.open_array(store=str(path / level), mode="r")
    data = np.asarray(array[...])
    units = {n: (a.get("unit", "") if isinstance(a, dict) else "") for n, a in zip(names, axes)}
    step = dict(zip(names, scale))

    def physical(letter, table, default):
        if letter not in step:
            return None
        unit = (units[letter] or default).lower()
        if unit not in table:
            raise InputError(f"{path.name}: axis {letter.lower()} has unit {unit!r}, which exotrack "
                             "does not know")
        return step[letter] * table[unit]

    sizes = tuple(physical(d, {**_UNIT_UM, "micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3},
                           "micrometer") for d in "ZYX")
    interval = physical("T", {**_UNIT_S, "millisecond": 1e-3, "microsecond": 1e-6}, "second")
    channels = [ch.get("label", "") for ch in attrs.get("omero", {}).get("channels", [])]
    return data, "".join(names), channels, sizes, interval


def _ngff_shape(zarr, path):
    _, _, names, level, _ = _ngff_layout(path)
    return list(zarr.open_array(store=str(path / level), mode="r").shape), "".join(names)


_READ = {".czi": _czi_read, ".nd2": _nd2_read, ".lif": _lif_read, ".zarr": _ngff_read}
_SHAPE = {".czi": _czi_shape, ".nd2": _nd2_shape, ".lif": _lif_shape, ".zarr": _ngff_shape}
