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
