"""Property-based tests (hypothesis) of the readers and the core measurement functions: any axis
order, dtype and size down to a single pixel either gives a well-formed result or a clear
:class:`~exotrack.io.InputError`, never another exception."""
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from exotrack import bli, histology, io, photoacoustic, puncta, segmentation, tracking

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.float32])


@st.composite
def axes_and_shape(draw):
    """An axis order of the file (Y and X plus any of T, C, Z, in any order) and a size per axis."""
    letters = ["Y", "X"] + draw(st.lists(st.sampled_from("TCZ"), unique=True, max_size=3))
    order = draw(st.permutations(letters))
    # Axes of length 1 would be squeezed by the writer: the user-given axes then no longer match.
    shape = [draw(st.integers(2, 3)) if a in "TCZ" else draw(st.integers(2, 9)) for a in order]
    return "".join(order), tuple(shape)


@SETTINGS
@given(axes_and_shape(), DTYPES, st.integers(0, 2 ** 32 - 1))
def test_read_image_puts_any_axis_order_into_tczyx(layout, dtype, seed):
    axes, shape = layout
    data = np.random.default_rng(seed).integers(0, 200, shape).astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image.tif"
        tifffile.imwrite(path, data, photometric="minisblack")
        image = io.read_image(path, axes=axes)
    expected = data
    for letter in io.AXES:  # what the reader promises: missing axes as length 1, TCZYX order
        if letter not in axes:
            expected, axes = expected[np.newaxis], letter + axes
    expected = np.transpose(expected, [axes.index(a) for a in io.AXES])
    assert image.data.dtype == dtype
    np.testing.assert_array_equal(image.data, expected)


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 5), DTYPES)
def test_read_image_of_tiny_images(rows, columns, dtype):
    data = np.arange(rows * columns).reshape(rows, columns).astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.tif"
        tifffile.imwrite(path, data)
        image = io.read_image(path)
    assert image.data.shape == (1, 1, 1, rows, columns)
    np.testing.assert_array_equal(image.data[0, 0, 0], data)


@SETTINGS
@given(arrays(DTYPES, st.tuples(st.integers(1, 6), st.integers(1, 6)),
              elements=st.integers(0, 255)))
def test_check_pixels_accepts_or_names_the_problem(data):
    ceiling = np.iinfo(data.dtype).max if np.issubdtype(data.dtype, np.integer) else None
    at_ceiling = np.mean(data == ceiling) if ceiling is not None else 0.0
    if data.min() == data.max() or at_ceiling > 0.05:
        with pytest.raises(io.InputError, match="empty|saturated"):
            io.check_pixels(data)
    else:
        io.check_pixels(data)
    if np.issubdtype(data.dtype, np.floating):
        spoiled = data.copy()
        spoiled.flat[0] = np.nan
        with pytest.raises(io.InputError, match="NaN or infinite values in 1 of"):
            io.check_pixels(spoiled)


@SETTINGS
@given(arrays(np.float32, st.tuples(st.integers(1, 24), st.integers(1, 24)),
              elements=st.floats(0, 1000, width=32)), st.floats(0.05, 0.3))
def test_puncta_are_inside_the_image(image, pixel_size):
    table = puncta.detect_puncta(image, pixel_size_um=(pixel_size, pixel_size))
    assert {"y", "x", "intensity", "snr"} <= set(table.columns)
    assert ((table["y"] >= -0.5) & (table["y"] <= image.shape[0] - 0.5)).all()
    assert ((table["x"] >= -0.5) & (table["x"] <= image.shape[1] - 0.5)).all()


@SETTINGS
@given(arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 40)),
              elements=st.floats(0, 1000, width=32)))
def test_nuclei_and_cells_are_label_images_of_the_input(image):
    nuclei, cells = segmentation.segment_nuclei_and_cells(image, pixel_size_um=(0.65, 0.65))
    assert nuclei.shape == cells.shape == image.shape
    assert np.issubdtype(nuclei.dtype, np.integer) and np.issubdtype(cells.dtype, np.integer)
    # Every nucleus lies in the cell of the same label.
    inside = nuclei > 0
    np.testing.assert_array_equal(cells[inside], nuclei[inside])


@SETTINGS
@given(arrays(np.float32, st.tuples(st.integers(1, 48), st.integers(1, 48)),
              elements=st.floats(0, 2, width=32)), st.booleans())
def test_histology_cells_have_positive_areas(nuclear, all_tissue):
    tissue = np.ones(nuclear.shape, bool) if all_tissue else nuclear > 1
    cells = histology.measure_cells(nuclear, nuclear, tissue, pixel_size_um=0.5, nucleus_diameter_um=7.0,
                                    cell_expansion_um=5.0, compartment="cytoplasm")
    assert list(cells.columns[:5]) == ["y", "x", "area_um2", "nucleus_area_um2", "marker_mean"]
    assert (cells["area_um2"] >= cells["nucleus_area_um2"]).all() and (cells["nucleus_area_um2"] > 0).all()


@SETTINGS
@given(arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(1, 30)), elements=st.floats(0, 1e6)),
       st.floats(-10, 40), st.floats(-10, 40), st.floats(0.5, 30), st.sampled_from(["circle", "ellipse", "rect"]))
def test_roi_flux_is_the_radiance_summed_over_its_pixels(radiance, yc, xc, size, shape):
    acq = bli.Acquisition(radiance, radiance, None, fov_cm=12.8, saturation_counts=np.inf)
    roi = bli.ROI("tumor", shape, yc, xc, size, size)
    row = bli.measure_rois(acq, [roi]).iloc[0]
    mask = roi.pixels(radiance.shape)
    assert row["area_cm2"] == pytest.approx(mask.sum() * acq.pixel_area_cm2)
    if not mask.any():  # nothing measured is not zero flux
        assert np.isnan(row["total_flux_p_s"]) and np.isnan(row["avg_radiance"])
        return
    assert row["total_flux_p_s"] == pytest.approx(4 * np.pi * radiance[mask].sum() * acq.pixel_area_cm2)


@SETTINGS
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0.01, 10)), min_size=1, max_size=20),
       st.lists(st.sampled_from(range(680, 960, 10)), min_size=2, max_size=5, unique=True))
def test_unmixing_inverts_any_mixture(mixtures, wavelengths):
    so2, hbt = np.array(mixtures).T
    spectra = photoacoustic.extinction(wavelengths)
    signal = spectra @ np.stack([hbt * so2, hbt * (1 - so2)])
    found_so2, found_hbt = photoacoustic.unmix(signal, wavelengths)
    np.testing.assert_allclose(found_so2, so2, atol=1e-6)
    np.testing.assert_allclose(found_hbt, hbt * 1000, rtol=1e-6)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 6), st.floats(0, 50), st.floats(0, 50)), max_size=40))
def test_linking_gives_each_track_at_most_one_detection_per_frame(points):
    detections = pd.DataFrame(points, columns=["frame", "y", "x"])
    track_id, _ = tracking.link(detections)
    assert len(track_id) == len(detections)
    pairs = pd.DataFrame({"track": track_id, "frame": detections["frame"]})
    assert not pairs.duplicated().any()
