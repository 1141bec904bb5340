"""Reading microscopy images into a fixed axis order, and writing outputs atomically.

Every image is returned as a 5-D array with axes ``(T, C, Z, Y, X)`` whatever order the file
stores, so that the analysis code never has to guess. Outputs are written to a temporary file in
the destination folder and renamed into place, so a crash never leaves a partial file at a final
path.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

AXES = "TCZYX"

# Lengths in micrometres. OME writes a UnitsLength symbol (every one that is a length is here);
# ImageJ writes what its user typed in Set Scale, so its spellings are listed too.
_UNIT_UM = {
    "ym": 1e-18, "zm": 1e-15, "am": 1e-12, "fm": 1e-9, "pm": 1e-6, "Å": 1e-4, "\u212b": 1e-4,
    "nm": 1e-3, "µm": 1.0, "\u03bcm": 1.0, "mm": 1e3, "cm": 1e4, "dm": 1e5, "m": 1e6, "dam": 1e7,
    "hm": 1e8, "km": 1e9, "Mm": 1e12, "Gm": 1e15, "Tm": 1e18, "Pm": 1e21, "Em": 1e24, "Zm": 1e27,
    "Ym": 1e30, "thou": 25.4, "li": 25400.0 / 12, "in": 25400.0, "ft": 304800.0,
    "yd": 914400.0, "mi": 1.609344e9, "ua": 1.495978707e17, "ly": 9.4607304725808e21,
    "pc": 3.0856775814913673e22, "pt": 25400.0 / 72,
}
# ImageJ's Set Scale units that a microscope calibration is written in. ``inch`` is not among
# them: ImageJ shows a print resolution (dpi) as inches, and a dpi is not a calibration.
_IMAGEJ_UNIT_UM = {
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3, "um": 1.0, "µm": 1.0, "\u03bcm": 1.0,
    "\\u00b5m": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6,
}


class InputError(ValueError):
    """An input that cannot be analysed; the message is meant for the person who supplied it."""


@dataclass
class Image:
    """A multichannel image with axes ``(T, C, Z, Y, X)``.

    ``pixel_size_um`` is ``(z, y, x)``; an entry is ``None`` where the file does not say.
    """

    data: np.ndarray
    channel_names: list[str]
    pixel_size_um: tuple[float | None, float | None, float | None] = (None, None, None)
    source_axes: str = ""
    frame_interval_s: float | None = None

    @property
    def n_frames(self) -> int:
        return self.data.shape[0]

    @property
    def is_3d(self) -> bool:
        return self.data.shape[2] > 1


def _normalise_axes(axes: str, user_axes: str | None) -> str:
    """Map a file's axis letters onto ``TCZYX`` letters (S is a channel axis; Q/I are time)."""
    if user_axes:
        axes_in = user_axes.upper()
        if len(axes_in) != len(axes):
            raise InputError(
                f"the axes given ({user_axes!r}) have {len(axes_in)} letters but the image has "
                f"{len(axes)} dimensions (stored as {axes!r})")
        axes = axes_in
    mapped = []
    for letter in axes:
        if letter in "QIE" and "T" not in axes and "T" not in mapped:
            letter = "T"
        mapped.append(letter)
    return "".join(mapped)


def _to_tczyx(data: np.ndarray, axes: str) -> np.ndarray:
    unknown = set(axes) - set(AXES + "S")
    if unknown or len(set(axes)) != len(axes) or not {"Y", "X"} <= set(axes):
        raise InputError(
            f"cannot interpret image axes {axes!r}: expected Y and X plus any of T, C, Z (S counts "
            "as C); give the axes in the sample sheet's 'axes' column (e.g. TYX)")
    if "S" in axes:
        if "C" in axes:  # an RGB image per channel: fold samples into the channel axis
            c, s = axes.index("C"), axes.index("S")
            data = np.moveaxis(data, s, c + 1)
            axes = axes.replace("S", "")
            shape = list(data.shape)
            shape[c : c + 2] = [shape[c] * shape[c + 1]]
            data = data.reshape(shape)
        else:
            axes = axes.replace("S", "C")
    for letter in AXES:
        if letter not in axes:
            data = data[np.newaxis]
            axes = letter + axes
    return np.transpose(data, [axes.index(letter) for letter in AXES])


_UNIT_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "min": 60.0,
           "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0}


def _ome_metadata(xml: str) -> tuple[list[str], tuple, float | None]:
    root = ET.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return [], (None, None, None), None
    names = [ch.get("Name") or ch.get("ID") or "" for ch in pixels if ch.tag.endswith("Channel")]
    sizes = []
    for axis in "ZYX":
        value = pixels.get(f"PhysicalSize{axis}")
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")  # OME's default unit
        if unit in ("pixel", "reference frame"):  # OME's words for "not calibrated"
            value = None
        elif value and unit not in _UNIT_UM:
            raise InputError(f"the OME metadata give PhysicalSize{axis} in {unit!r}, which is not a unit of "
                             "length; export the image again with its pixel size in µm")
        sizes.append(float(value) * _UNIT_UM[unit] if value else None)
    step = pixels.get("TimeIncrement")
    interval = float(step) * _UNIT_S.get(pixels.get("TimeIncrementUnit", "s"), 1.0) if step else None
    if interval is None:
        interval = _plane_delta_t(pixels)
    return names, tuple(sizes), interval


def _plane_delta_t(pixels) -> float | None:
    """Frame interval from the Planes' ``DeltaT`` (as Bio-Formats exports it): the median step
    between successive time points' first planes."""
    times = {}
    for plane in pixels:
        if plane.tag.endswith("Plane") and plane.get("DeltaT") not in (None, ""):
            seconds = float(plane.get("DeltaT")) * _UNIT_S.get(plane.get("DeltaTUnit", "s"), 1.0)
            t = int(plane.get("TheT", 0))
            times[t] = min(times.get(t, seconds), seconds)
    if len(times) < 2:
        return None
    frames = np.array(sorted(times))
    steps = np.diff([times[t] for t in frames]) / np.diff(frames)
    step = float(np.median(steps))
    return step if step > 0 else None


def _resolution_um(page, unit_um: float | None) -> float | None:
    """Pixel size from the resolution tags, in µm; ``unit_um`` is the unit ImageJ states for them.

    A resolution in pixels per inch is a print or screen resolution (72, 96, 300 dpi), which
    scanners and image editors write on everything; it is never taken for a calibration.
    """
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value
    if not num or not den:
        return None
    pixels_per_unit = num / den
    res_unit = page.tags.get("ResolutionUnit")
    res_unit = int(res_unit.value) if res_unit is not None else 2
    if unit_um is None:
        unit_um = {3: 10000.0}.get(res_unit)  # CENTIMETER; INCH (2) is a dpi
    if unit_um is None or pixels_per_unit in (1.0, 72.0):  # 1 and 72 dpi are writer defaults
        return None
    return unit_um / pixels_per_unit


def check_file(path) -> Path:
    """``path`` as a Path, or an :class:`InputError` if it is missing, empty or a folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"image file not found: {path}")
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
        listing = ", ".join(inside[:5]) + (", …" if len(inside) > 5 else "") if inside else "nothing"
        raise InputError(f"{path.name} is a folder, not an image file (it holds {listing}); give the "
                         "path of the image file itself in the sample sheet")
    if path.stat().st_size == 0:
        raise InputError(f"image file is empty (0 bytes): {path}")
    return path


def check_pixels(data: np.ndarray, *, ceiling: float | None = None, max_saturated_fraction: float = 0.05) -> None:
    """Refuse pixel data that cannot hold a measurement, saying why: NaN or infinite values, more
    than ``max_saturated_fraction`` of pixels at the ``ceiling`` (an integer type's maximum unless
    given; a float image without a stated ceiling is never called saturated), or one value
    everywhere (a blank or failed acquisition)."""
    if data.size == 0:
        raise InputError(f"the image holds no pixels (shape {data.shape})")
    if np.issubdtype(data.dtype, np.floating):
        bad = data.size - int(np.count_nonzero(np.isfinite(data)))
        if bad:
            raise InputError(f"NaN or infinite values in {bad} of {data.size} pixels; export the image "
                             "again without them (e.g. fill masked areas with 0)")
    if ceiling is None and np.issubdtype(data.dtype, np.integer):
        ceiling = np.iinfo(data.dtype).max
    lo, hi = data.min(), data.max()
    if ceiling is not None:
        saturated = float(np.count_nonzero(data >= ceiling)) / data.size
        if saturated > max_saturated_fraction or lo >= ceiling:
            raise InputError(f"image is saturated: {100 * saturated:.1f}% of pixels are at the camera's "
                             f"maximum ({ceiling:g}); acquire again with a shorter exposure or lower gain")
    if lo == hi:
        raise InputError(f"image is empty: every pixel is {lo:g} (a blank or failed acquisition)")


def unreadable(path, kind: str, exc: Exception, *, what: str = "") -> InputError:
    """The error for a file that exists but cannot be decoded as a ``kind`` (``what`` it holds)."""
    name = f"{Path(path).name} ({what})" if what else Path(path).name
    return InputError(f"cannot read {name} as a {kind}: the file is damaged, incomplete (an "
                      f"interrupted copy?) or of another format ({exc})")


def tiff_metadata(tif: tifffile.TiffFile) -> tuple[list[str], tuple, float | None]:
    """Channel names, pixel size ``(z, y, x)`` in µm (``None`` where unstated) and frame interval
    in seconds of an open TIFF, from OME-XML, ImageJ metadata or the resolution tags."""
    if tif.is_ome:
        return _ome_metadata(tif.ome_metadata)
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        unit = str(meta.get("unit", "")).strip().lower()
        # No unit: tifffile's ImageJ writer (µm); a unit ImageJ shows for a dpi or for no
        # calibration ("inch", "pixel") is not a calibration.
        unit_um = _IMAGEJ_UNIT_UM.get(unit) if unit else 1.0
        xy = _resolution_um(tif.pages[0], unit_um) if unit_um is not None else None
        z = meta.get("spacing")
        interval = None
        if meta.get("finterval"):
            interval = float(meta["finterval"]) * _UNIT_S.get(str(meta.get("tunit", "s")).lower(), 1.0)
        labels = meta.get("Labels")
        n_c = int(meta.get("channels", 1))
        names = [str(label) for label in labels] if (
            isinstance(labels, list) and len(labels) == n_c and n_c > 1) else []
        return names, (float(z) * unit_um if z and unit_um is not None else None, xy, xy), interval
    xy = _resolution_um(tif.pages[0], None)
    return [], (None, xy, xy), None


def _one_series(tif: tifffile.TiffFile, path: Path):
    """The file's only image series; a file of several (positions, scenes, wells) is refused."""
    series = tif.series
    if len(series) > 1:
        listed = "; ".join(f"series {i}: {s.name or 'unnamed'} {s.axes} {tuple(s.shape)}"
                           for i, s in enumerate(series[:6])) + ("; …" if len(series) > 6 else "")
        raise InputError(
            f"{path.name} holds {len(series)} image series (positions or scenes: {listed}); a sample is "
            "one series. Split the file into one file per series (Fiji: File > Import > Bio-Formats, "
            "'Open all series', then save each; or bfconvert -series N) and list each as its own sample")
    return series[0]


def _check_declared_size(series, path: Path) -> None:
    """Refuse a header that declares more pixels than the file can hold or memory can take, before
    any allocation (a damaged header can declare 100,000 x 100,000 pixels)."""
    declared = int(np.prod(series.shape, dtype=np.float64)) * np.dtype(series.dtype).itemsize
    stored = path.stat().st_size
    compressed = series.keyframe.compression != 1
    one_file = all(page is None or page.parent is series.parent for page in series.pages)
    if not compressed and one_file and declared > stored:
        raise InputError(f"cannot read {path.name} as a TIFF image: its header declares "
                         f"{_shape_words(series)} uncompressed ({_gib(declared)}), but the file is only "
                         f"{_gib(stored)}: it is damaged or incomplete (an interrupted copy?)")
    available = _available_memory()
    if available is not None and declared > available:
        raise InputError(f"{path.name}: the header declares {_shape_words(series)} ({_gib(declared)}), more "
                         f"than the {_gib(available)} of memory available; if the header is right, "
                         "crop or bin the image, or run on a machine with more memory")


def _shape_words(series) -> str:
    return f"{' x '.join(str(n) for n in series.shape)} pixels ({series.axes})"


def _gib(size: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} bytes"


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_complete(tif: tifffile.TiffFile, series, path: Path) -> None:
    """Refuse a file cut short: its pages' data run past its end, or its OME-XML (written last)
    is missing from a file named OME-TIFF."""
    size = path.stat().st_size
    # Pages of this file only: an OME dataset may keep other pages in other files.
    end = max((o + n for page in series.pages if page is not None and page.parent is tif
               for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
    if end > size:
        raise unreadable(path, "TIFF image", ValueError(f"its pixel data run to byte {end}, past the file's end "
                                                        f"at {size}"))
    if path.name.lower().endswith((".ome.tif", ".ome.tiff")) and not tif.is_ome:
        raise unreadable(path, "TIFF image", ValueError("named OME-TIFF, it holds no OME metadata"))


def _check_pages_named(file_axes: str, shape, axes: str | None, path: Path) -> None:
    """A multi-page TIFF that does not say what its pages are (``I``: no metadata at all) could be
    a movie, channels or a z stack; guessing would give a number for the wrong experiment."""
    if axes or "I" not in file_axes or shape[file_axes.index("I")] < 2:
        return
    n = shape[file_axes.index("I")]
    raise InputError(f"{path.name} has {n} pages and no metadata saying whether they are time points, "
                     "channels or z slices; give the sample sheet's axes column (e.g. TYX for a movie, "
                     "CYX for channels, ZYX for a z stack)")


def read_image(path: str | os.PathLike, *, axes: str | None = None) -> Image:
    """Read a TIFF, OME-TIFF or ImageJ TIFF, or a vendor file (CZI, ND2, LIF, OME-Zarr: see
    :mod:`exotrack.formats`), into an :class:`Image` with axes ``(T, C, Z, Y, X)``.

    Parameters
    ----------
    path : path-like
        The image file.
    axes : str, optional
        The file's axis letters, overriding what the file says (e.g. ``"TYX"`` for a movie that
        ImageJ stored as a Z stack).

    Raises
    ------
    InputError
        If the file cannot be read, holds several image series, declares more pixels than it or
        memory can hold, has pages of unstated meaning (and no ``axes``), or states a unit of
        length that is not known.
    """
    from . import formats

    path = Path(path)
    if not path.exists():
        raise InputError(f"image file not found: {path}")
    if formats.kind(path):  # an OME-Zarr image is a folder
        return formats.read(path, axes=axes)
    path = check_file(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = _one_series(tif, path)
            _check_complete(tif, series, path)
            _check_pages_named(series.axes, series.shape, axes, path)
            _check_declared_size(series, path)
            names, sizes, interval = tiff_metadata(tif)
            data = series.asarray()
            file_axes = series.axes
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise unreadable(path, "TIFF image", exc) from exc
    norm = _normalise_axes(file_axes, axes)
    data = _to_tczyx(data, norm)
    n_c = data.shape[1]
    if len(names) != n_c:
        names = [str(i) for i in range(n_c)]
    return Image(data=data, channel_names=names, pixel_size_um=sizes, source_axes=file_axes,
                 frame_interval_s=interval)


def count_frames(path, *, axes: str | None = None) -> int:
    """Number of time points of an image, from its header alone (0 if it cannot be read, and 1 if
    its pages' meaning is unstated: the analysis will say why)."""
    from . import formats

    if formats.kind(path):
        return formats.count_frames(path, axes=axes)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            if not axes and "I" in series.axes:
                return 1
            letters = _normalise_axes(series.axes, axes)
            return int(series.shape[letters.index("T")]) if "T" in letters else 1
    except Exception:
        return 0


def resolve_channel(image: Image, key: str | int, *, role: str) -> int:
    """Index of the channel named (case-insensitive) or numbered by ``key``."""
    names = image.channel_names
    text = str(key).strip()
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.lstrip("-").isdigit():
        index = int(text)
        if -len(names) <= index < len(names):
            return index % len(names)
        raise InputError(
            f"{role} channel index {index} is out of range: the image has {len(names)} channel(s)")
    raise InputError(
        f"{role} channel {text!r} not found; the image's channels are "
        + ", ".join(repr(n) for n in names))


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_table(table, path) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def write_parquet(table, path) -> None:
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def write_text(text: str, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(obj, path) -> None:
    """Write strict JSON atomically: a missing value (NaN, infinity) becomes ``null``, which every
    JSON reader accepts, where ``NaN`` is a Python extension that strict readers reject."""
    write_text(json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False) + "\n", path)


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_tiff(array: np.ndarray, path, *, axes: str | None = None, pixel_size_um=None) -> None:
    """Write an array as a compressed TIFF atomically; ImageJ-compatible (labels as uint16)
    unless the values need more than 16 bits."""
    array = np.asarray(array)
    if array.size == 0:  # a failed sample's empty label image: plain TIFF, 0 x 0 pixels
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tifffile.imwrite(tmp, array)
        return
    imagej = array.dtype in (np.uint8, np.uint16, np.float32)
    if not imagej and np.issubdtype(array.dtype, np.integer) and (
            array.min() >= 0 and array.max() <= np.iinfo(np.uint16).max):
        array, imagej = array.astype(np.uint16), True
    metadata = {"axes": axes} if axes else {}
    kwargs = {}
    if pixel_size_um is not None and pixel_size_um[-1]:
        kwargs["resolution"] = (1.0 / pixel_size_um[-1], 1.0 / pixel_size_um[-2])
        metadata["unit"] = "um"
        if pixel_size_um[0]:
            metadata["spacing"] = pixel_size_um[0]
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, array, imagej=imagej, metadata=metadata if imagej else None,
                         compression="zlib", **kwargs)


def write_ome_tiff(path, image: np.ndarray, *, axes: str, channel_names, pixel_size_um,
                   frame_interval_s: float | None = None) -> None:
    """Write an OME-TIFF with channel names, physical pixel sizes and the frame interval."""
    metadata = {
        "axes": axes,
        "Channel": {"Name": list(channel_names)},
        "PhysicalSizeX": pixel_size_um[-1], "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": pixel_size_um[-2], "PhysicalSizeYUnit": "µm",
    }
    if "Z" in axes:
        metadata.update(PhysicalSizeZ=pixel_size_um[0], PhysicalSizeZUnit="µm")
    if frame_interval_s is not None:
        metadata.update(TimeIncrement=frame_interval_s, TimeIncrementUnit="s")
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, image, ome=True, metadata=metadata, compression="zlib")


def write_png(rgb: np.ndarray, path) -> None:
    from PIL import Image as PILImage

    with atomic_path(path) as tmp:
        PILImage.fromarray(rgb).save(tmp, format="PNG", compress_level=3)
