"""Vendor formats: CZI and OME-Zarr written offline by their own writers; ND2 and LIF, which have no
Python writer and no small real file in an installable package, through their readers' documented
APIs on fakes (stated per test)."""

import sys
import types
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from exotrack import formats, io

NAMES = ["Hoechst", "CD63-RFP", "CellMask"]


def _movie(shape=(2, 3, 1, 20, 30), seed=0):
    return np.random.default_rng(seed).integers(100, 4000, size=shape).astype(np.uint16)


def write_czi(path, data, *, pixel_size_um=(1.0, 0.2, 0.2), names=NAMES):
    from pylibCZIrw import czi as pyczi

    with pyczi.create_czi(str(path), exist_ok=True) as writer:
        for t, c, z in np.ndindex(data.shape[:3]):
            writer.write(data=data[t, c, z], plane={"T": t, "C": c, "Z": z})
        # CZI stores scaling in metres.
        writer.write_metadata(document_name="test", channel_names=dict(enumerate(names)),
                              scale_x=pixel_size_um[2] * 1e-6, scale_y=pixel_size_um[1] * 1e-6,
                              scale_z=pixel_size_um[0] * 1e-6)


def test_czi_written_by_pylibczirw(tmp_path):
    pytest.importorskip("pylibCZIrw")
    data = _movie((2, 3, 4, 20, 30))
    write_czi(tmp_path / "movie.czi", data, pixel_size_um=(0.8, 0.25, 0.25))
    image = io.read_image(tmp_path / "movie.czi")
    np.testing.assert_array_equal(image.data, data)
    assert image.channel_names == NAMES
    assert image.pixel_size_um == pytest.approx((0.8, 0.25, 0.25))
    assert image.frame_interval_s is None  # pylibCZIrw writes no time metadata
    assert io.count_frames(tmp_path / "movie.czi") == 2


def test_czi_frame_interval_from_metadata():
    xml = ("<ImageDocument><Metadata><Information><Image><Dimensions><T><Positions><Interval>"
           "<Increment>2.5</Increment></Interval></Positions></T></Dimensions></Image></Information>"
           "</Metadata></ImageDocument>")
    assert formats._czi_metadata(xml)[2] == 2.5
    xml = ("<ImageDocument><Metadata><Experiment><TimeSeriesSetup><Interval><TimeSpan><Value>1500</Value>"
           "<DefaultUnitFormat>ms</DefaultUnitFormat></TimeSpan></Interval></TimeSeriesSetup></Experiment>"
           "</Metadata></ImageDocument>")
    assert formats._czi_metadata(xml)[2] == 1.5


def write_ngff(path, data, *, scale, units, names, version="0.5"):
    """An NGFF image with a 2-level pyramid, written with zarr (v3 for 0.5, v2 for 0.4)."""
    import zarr

    axes = [{"name": n, "type": {"t": "time", "c": "channel"}.get(n, "space"), **({"unit": u} if u else {})}
            for n, u in zip("tczyx", units)]
    half = [1, 1, 1, 2, 2]
    multiscales = [{"version": version, "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": list(scale)}]},
        {"path": "1", "coordinateTransformations": [
            {"type": "scale", "scale": [s * h for s, h in zip(scale, half)]}]}]}]
    omero = {"channels": [{"label": n} for n in names]}
    group = zarr.open_group(str(path), mode="w", zarr_format=3 if version == "0.5" else 2)
    if version == "0.5":
        group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales, "omero": omero}
    else:
        group.attrs.update({"multiscales": multiscales, "omero": omero})
    for name, level in (("0", data), ("1", data[..., ::2, ::2])):
        array = group.create_array(name, shape=level.shape, dtype=level.dtype, chunks=(1, 1, 1, 16, 16))
        array[...] = level


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_written_by_zarr(tmp_path, version):
    data = _movie((3, 3, 2, 20, 30))
    path = tmp_path / "movie.ome.zarr"
    write_ngff(path, data, scale=(2.0, 1, 0.5, 0.1, 0.1),
              units=["second", None, "micrometer", "micrometer", "micrometer"], names=NAMES, version=version)
    image = io.read_image(path)
    np.testing.assert_array_equal(image.data, data)  # the full resolution, not the pyramid's top
    assert image.channel_names == NAMES
    assert image.pixel_size_um == pytest.approx((0.5, 0.1, 0.1))
    assert image.frame_interval_s == pytest.approx(2.0)
    assert io.count_frames(path) == 3


def test_ome_zarr_units_are_converted_and_folders_without_metadata_refused(tmp_path):
    data = _movie((2, 1, 1, 20, 30))
    write_ngff(tmp_path / "a.zarr", data, scale=(500, 1, 1, 100, 100),
               units=["millisecond", None, "nanometer", "nanometer", "nanometer"], names=["x"])
    image = io.read_image(tmp_path / "a.zarr")
    assert image.pixel_size_um[1:] == pytest.approx((0.1, 0.1))
    assert image.frame_interval_s == pytest.approx(0.5)
    (tmp_path / "b.zarr").mkdir()
    (tmp_path / "b.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    with pytest.raises(io.InputError, match="not an OME-Zarr image"):
        io.read_image(tmp_path / "b.zarr")
    assert io.count_frames(tmp_path / "b.zarr") == 0


def test_missing_reader_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "x.nd2").write_bytes(b"not empty")
    monkeypatch.setitem(sys.modules, "nd2", None)  # as if not installed
    with pytest.raises(io.InputError, match=r'exotrack\[formats\]'):
        io.read_image(tmp_path / "x.nd2")


def test_damaged_czi_is_refused_clearly(tmp_path):
    pytest.importorskip("pylibCZIrw")
    (tmp_path / "bad.czi").write_bytes(b"ZISRAWFILE" + bytes(100))
    with pytest.raises(io.InputError, match="cannot read bad.czi as a Zeiss CZI image"):
        io.read_image(tmp_path / "bad.czi")
    assert io.count_frames(tmp_path / "bad.czi") == 0


class _FakeND2:
    """A FAKE nd2.ND2File: the attributes nd2's documentation gives (sizes, asarray(position),
    voxel_size(), metadata.channels[i].channel.name, experiment with a TimeLoop), as a two-position
    3-frame 2-channel file would answer them."""

    data = _movie((2, 3, 2, 1, 20, 30), seed=1)[:, :, :, 0]  # P, T, C, Y, X

    def __init__(self, path):
        import nd2.structures as s

        self.sizes = {"P": 2, "T": 3, "C": 2, "Y": 20, "X": 30}
        meta = [types.SimpleNamespace(channel=types.SimpleNamespace(name=n)) for n in ("DAPI", "mCherry")]
        self.metadata = types.SimpleNamespace(channels=meta)
        self.experiment = [s.TimeLoop(count=3, nestingLevel=0, parameters=s.TimeLoopParams(
            startMs=0, periodMs=5000, durationMs=15000, periodDiff=s.PeriodDiff(avg=5012.0, max=5100, min=4990)))]

    def voxel_size(self, channel=0):
        return types.SimpleNamespace(x=0.325, y=0.325, z=1.0)

    def asarray(self, position=None):
        return self.data if position is None else self.data[position]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _FakeND2OnePosition(_FakeND2):
    """The same FAKE, as a file of one position (nd2 then lists no P axis)."""

    def __init__(self, path):
        super().__init__(path)
        self.sizes = {"T": 3, "C": 2, "Y": 20, "X": 30}
        self.data = _FakeND2.data[0]


def test_nd2_through_documented_api_on_a_fake(tmp_path, monkeypatch):
    nd2 = pytest.importorskip("nd2")
    (tmp_path / "a.nd2").write_bytes(b"fake")
    # Two positions: analysing the first alone would report part of the file as the whole.
    monkeypatch.setattr(nd2, "ND2File", _FakeND2)
    with pytest.raises(io.InputError, match="holds 2 positions; a sample is one image. Split the file"):
        io.read_image(tmp_path / "a.nd2")
    monkeypatch.setattr(nd2, "ND2File", _FakeND2OnePosition)
    image = io.read_image(tmp_path / "a.nd2")
    np.testing.assert_array_equal(image.data[:, :, 0], _FakeND2.data[0])
    assert image.channel_names == ["DAPI", "mCherry"]
    assert image.pixel_size_um == (None, 0.325, 0.325)  # no Z axis: no Z step
    assert image.frame_interval_s == pytest.approx(5.012)  # the measured mean period
    assert io.count_frames(tmp_path / "a.nd2") == 3


_LIF_XML = """<Element Name="movie"><Data><Image><ImageDescription>
<Channels><ChannelDescription LUTName="Blue"/><ChannelDescription LUTName="Red"/></Channels>
<Dimensions><DimensionDescription DimID="1" Unit="m"/><DimensionDescription DimID="2" Unit="m"/>
<DimensionDescription DimID="4" Unit="s"/></Dimensions></ImageDescription></Image></Data></Element>"""


class _FakeLif:
    """A FAKE liffile.LifFile: images[0] with the documented dims, sizes, coords (LAS X units: metres,
    seconds), xml_element and asarray(), as a 4-frame 2-channel LIF series would answer them."""

    data = _movie((4, 2, 20, 30), seed=2)

    def __init__(self, path):
        image = types.SimpleNamespace(
            dims=("T", "C", "Y", "X"), sizes={"T": 4, "C": 2, "Y": 20, "X": 30},
            coords={"T": np.linspace(0, 3 * 0.75, 4), "Y": np.linspace(0, 19 * 0.2e-6, 20),
                    "X": np.linspace(0, 29 * 0.2e-6, 30)},
            xml_element=ET.fromstring(_LIF_XML), asarray=lambda: self.data, name="movie")
        self.images = [image]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_lif_through_documented_api_on_a_fake(tmp_path, monkeypatch):
    liffile = pytest.importorskip("liffile")
    monkeypatch.setattr(liffile, "LifFile", _FakeLif)
    (tmp_path / "a.lif").write_bytes(b"fake")
    image = io.read_image(tmp_path / "a.lif")
    np.testing.assert_array_equal(image.data[:, :, 0], _FakeLif.data)
    assert image.channel_names == ["Blue", "Red"]
    assert image.pixel_size_um[1:] == pytest.approx((0.2, 0.2))
    assert image.frame_interval_s == pytest.approx(0.75)
    assert io.count_frames(tmp_path / "a.lif") == 4
    two = type("_FakeLifTwo", (_FakeLif,), {"__init__": lambda self, path: (
        _FakeLif.__init__(self, path), setattr(self, "images", self.images * 2))[0]})
    monkeypatch.setattr(liffile, "LifFile", two)
    with pytest.raises(io.InputError, match="holds 2 image series"):
        io.read_image(tmp_path / "a.lif")


def test_ome_tiff_frame_interval_from_plane_delta_t(tmp_path):
    import tifffile

    data = _movie((4, 1, 1, 16, 16))[:, 0, 0]
    planes = {"DeltaT": [0.0, 1.5, 3.0, 4.52], "DeltaTUnit": ["s"] * 4}
    tifffile.imwrite(tmp_path / "a.ome.tif", data, ome=True,
                     metadata={"axes": "TYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1, "Plane": planes})
    assert "TimeIncrement" not in tifffile.TiffFile(tmp_path / "a.ome.tif").ome_metadata
    assert io.read_image(tmp_path / "a.ome.tif").frame_interval_s == pytest.approx(1.5)
