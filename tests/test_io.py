"""Reading images of any axis order and metadata flavour into (T, C, Z, Y, X)."""
import numpy as np
import pytest
import tifffile

from exotrack import io
from exotrack.demo import write_ome_tiff
from conftest import shared

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("axes", ["YX", "CYX", "ZCYX", "TZCYX", "CTZYX", "YXC", "TYX", "ZYX", "YXS", "TCZYX"])
def test_any_axis_order_becomes_tczyx(tmp_path, axes):
    sizes = {"T": 2, "C": 3, "Z": 4, "Y": 10, "X": 12, "S": 3}
    data = RNG.integers(0, 1000, [sizes[a] for a in axes], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.ome.tif", data, ome=True, metadata={"axes": axes})
    image = io.read_image(tmp_path / "a.ome.tif")
    assert image.data.ndim == 5
    expected = [sizes.get(a, 1) if a in axes else 1 for a in "TCZYX"]
    if "S" in axes:
        expected[1] = sizes["S"]
    assert list(image.data.shape) == expected
    # A value lands where its axes say it should.
    index = {a: 1 for a in axes}
    src = tuple(index[a] for a in axes)
    dst = tuple(1 if (a in axes or (a == "C" and "S" in axes)) else 0 for a in "TCZYX")
    assert image.data[dst] == data[src]


def test_ome_channel_names_and_pixel_size(tmp_path):
    data = RNG.integers(0, 1000, (3, 5, 16, 16), dtype=np.uint16)
    write_ome_tiff(tmp_path / "a.ome.tif", data, axes="CZYX", channel_names=["Hoechst", "CD63-RFP", "CellMask"],
                   pixel_size_um=(0.5, 0.2, 0.2))
    image = io.read_image(tmp_path / "a.ome.tif")
    assert image.channel_names == ["Hoechst", "CD63-RFP", "CellMask"]
    assert image.pixel_size_um == pytest.approx((0.5, 0.2, 0.2))
    assert io.resolve_channel(image, "cd63-rfp", role="exosomes") == 1
    assert io.resolve_channel(image, 2, role="cells") == 2
    with pytest.raises(io.InputError, match="'GFP' not found; the image's channels are 'Hoechst'"):
        io.resolve_channel(image, "GFP", role="exosomes")
    with pytest.raises(io.InputError, match="out of range"):
        io.resolve_channel(image, 5, role="cells")


def test_imagej_hyperstack_pixel_size(tmp_path):
    data = RNG.integers(0, 1000, (4, 2, 16, 16), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", data, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "ZCYX", "spacing": 0.8, "unit": "um"})
    image = io.read_image(tmp_path / "a.tif")
    assert image.data.shape == (1, 2, 4, 16, 16)
    assert image.pixel_size_um == pytest.approx((0.8, 0.25, 0.25))


def test_axes_override_for_mislabelled_movie(tmp_path):
    data = RNG.integers(0, 1000, (5, 16, 16), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", data, imagej=True, metadata={"axes": "ZYX"})
    assert io.read_image(tmp_path / "a.tif").data.shape == (1, 1, 5, 16, 16)
    assert io.read_image(tmp_path / "a.tif", axes="TYX").data.shape == (5, 1, 1, 16, 16)
    with pytest.raises(io.InputError, match="have 2 letters but the image has 3"):
        io.read_image(tmp_path / "a.tif", axes="YX")


def test_unreadable_files_give_clear_errors(tmp_path):
    with pytest.raises(io.InputError, match="not found"):
        io.read_image(tmp_path / "nope.tif")
    (tmp_path / "zero.tif").write_bytes(b"")
    with pytest.raises(io.InputError, match="0 bytes"):
        io.read_image(tmp_path / "zero.tif")
    data = RNG.integers(0, 1000, (64, 64), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "full.tif", data)
    raw = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(io.InputError, match="cannot read cut.tif"):
        io.read_image(tmp_path / "cut.tif")


def test_real_hela_samples_become_channels():
    image = io.read_image(shared("hela-cells.tif"))
    assert image.data.shape == (1, 3, 1, 512, 672)
    assert image.pixel_size_um[2] == pytest.approx(0.0515, rel=0.01)


def test_atomic_writers_leave_no_partial_files(tmp_path):
    import pandas as pd

    io.write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
    io.write_tiff(np.ones((4, 4), np.int32), tmp_path / "l.tif", pixel_size_um=(1, 0.2, 0.2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.tif", "t.csv"]
    assert tifffile.imread(tmp_path / "l.tif").dtype == np.uint16


# PhysicalSizeX of 16250 in each unit, and the µm it stands for (independent of the reader's table).
@pytest.mark.parametrize("unit, um", [("Å", 1.625), ("pm", 0.01625), ("nm", 16.25), ("µm", 16250.0),
                                      ("mm", 1.625e7), ("cm", 1.625e8), ("m", 1.625e10)])
def test_every_ome_length_unit_is_converted(tmp_path, unit, um):
    tifffile.imwrite(tmp_path / "a.ome.tif", np.ones((8, 8), np.uint16), ome=True, metadata={
        "axes": "YX", "PhysicalSizeX": 16250, "PhysicalSizeXUnit": unit,
        "PhysicalSizeY": 16250, "PhysicalSizeYUnit": unit})
    assert io.read_image(tmp_path / "a.ome.tif").pixel_size_um[1:] == pytest.approx((um, um))


def test_ome_unit_that_is_no_length_is_refused_and_pixel_means_uncalibrated(tmp_path):
    def write(unit):
        tifffile.imwrite(tmp_path / "a.ome.tif", np.ones((8, 8), np.uint16), ome=True, metadata={
            "axes": "YX", "PhysicalSizeX": 2, "PhysicalSizeXUnit": unit, "PhysicalSizeY": 2,
            "PhysicalSizeYUnit": unit})
        return tmp_path / "a.ome.tif"

    with pytest.raises(io.InputError, match="'furlong', which is not a unit of length"):
        io.read_image(write("furlong"))
    assert io.read_image(write("pixel")).pixel_size_um == (None, None, None)


@pytest.mark.parametrize("dpi", [72, 96, 300])
def test_dpi_is_not_a_calibration(tmp_path, dpi):
    """Print resolutions (resolution unit INCH, or ImageJ's unit 'inch') give no pixel size, so
    the sheet's or config's pixel size is used (before: 300 dpi read as 84.67 µm, ImageJ's
    'inch' as 0.00333 µm)."""
    tifffile.imwrite(tmp_path / "plain.tif", np.ones((8, 8), np.uint16), resolution=(dpi, dpi),
                     resolutionunit="INCH")
    assert io.read_image(tmp_path / "plain.tif").pixel_size_um == (None, None, None)
    tifffile.imwrite(tmp_path / "ij.tif", np.ones((8, 8), np.uint16), imagej=True, resolution=(dpi, dpi),
                     metadata={"unit": "inch"})
    assert io.read_image(tmp_path / "ij.tif").pixel_size_um == (None, None, None)
    # A calibration in centimetres, as microscope software writes it, is one.
    tifffile.imwrite(tmp_path / "cm.tif", np.ones((8, 8), np.uint16), resolution=(62500, 62500),
                     resolutionunit="CENTIMETER")
    assert io.read_image(tmp_path / "cm.tif").pixel_size_um[1:] == pytest.approx((0.16, 0.16))
    tifffile.imwrite(tmp_path / "ij_mm.tif", np.ones((8, 8), np.uint16), imagej=True, resolution=(20, 20),
                     metadata={"unit": "mm"})
    assert io.read_image(tmp_path / "ij_mm.tif").pixel_size_um[1:] == pytest.approx((50, 50))


def test_file_of_several_series_is_refused_saying_how_to_split(tmp_path):
    with tifffile.TiffWriter(tmp_path / "two.ome.tif", ome=True) as tif:
        for _ in range(2):
            tif.write(RNG.integers(0, 100, (16, 16), dtype=np.uint16), metadata={"axes": "YX"})
    with pytest.raises(io.InputError, match="holds 2 image series .* Split the file into one file per series"):
        io.read_image(tmp_path / "two.ome.tif")


def test_pages_of_unstated_meaning_need_the_axes_column(tmp_path):
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for _ in range(3):
            tif.write(RNG.integers(0, 100, (16, 16), dtype=np.uint16), metadata=None, contiguous=False)
    with pytest.raises(io.InputError, match="3 pages and no metadata .* give the sample sheet's axes column"):
        io.read_image(tmp_path / "pages.tif")
    assert io.count_frames(tmp_path / "pages.tif") == 1  # not planned as a movie
    assert io.count_frames(tmp_path / "pages.tif", axes="TYX") == 3
    assert io.read_image(tmp_path / "pages.tif", axes="CYX").data.shape == (1, 3, 1, 16, 16)


def test_header_declaring_more_than_the_file_holds_is_refused_before_allocating(tmp_path):
    tifffile.imwrite(tmp_path / "small.tif", np.ones((64, 64), np.uint16))
    raw = bytearray((tmp_path / "small.tif").read_bytes())
    with tifffile.TiffFile(tmp_path / "small.tif") as tif:
        for name in ("ImageWidth", "ImageLength"):
            tag = tif.pages[0].tags[name]
            raw[tag.valueoffset:tag.valueoffset + (4 if tag.dtype == 4 else 2)] = (100_000).to_bytes(
                4 if tag.dtype == 4 else 2, "little")
    (tmp_path / "huge.tif").write_bytes(bytes(raw))
    with pytest.raises(io.InputError, match=r"declares 100000 x 100000 .*\(18.6 GiB\), but the file is only"):
        io.read_image(tmp_path / "huge.tif")


def test_folder_given_as_an_image_is_called_a_folder(tmp_path):
    (tmp_path / "well_A1").mkdir()
    (tmp_path / "well_A1" / "field1.tif").write_bytes(b"x")
    with pytest.raises(io.InputError, match=r"well_A1 is a folder, not an image file \(it holds field1.tif\)"):
        io.read_image(tmp_path / "well_A1")


def test_metrics_json_is_strict_json(tmp_path):
    import json

    io.write_json({"a": float("nan"), "b": [np.float32("inf"), 1], "c": np.float64(2.0)}, tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}")) == {
        "a": None, "b": [None, 1], "c": 2.0}
