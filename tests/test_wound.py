"""Scratch assays against the truth of simulated phase-contrast and fluorescence series."""

import numpy as np
import pytest
import tifffile

from exotrack import io, wound
from exotrack.demo_vitro import simulate_scratch_series


@pytest.mark.parametrize("kind", ["phase", "fluorescence"])
def test_area_per_frame_and_closure_rate(kind):
    rate_errors = []
    for seed in range(3):
        series = simulate_scratch_series(kind=kind, initial_width_um=250.0, front_speed_um_h=5.0, seed=seed)
        table, fit, masks = wound.analyse_series(series.frames, series.times_h, pixel_size_um=series.pixel_size_um)
        true = series.wound.sum(axis=(1, 2)) * series.pixel_size_um ** 2 / 1e6
        error = table["wound_area_mm2"].to_numpy() / true - 1
        assert np.abs(error).max() <= 0.05, (kind, seed, error)
        rate_errors.append(fit["closure_rate_um_h"] / series.width_rate_um_h - 1)
        assert fit["fit_n"] == len(series.times_h) and fit["fit_r2"] > 0.95
        assert table["pct_closure"].iloc[0] == 0 and np.all(np.diff(table["pct_closure"]) > 0)
    assert np.abs(rate_errors).max() <= 0.10, rate_errors


def test_series_without_time_zero_is_refused():
    series = simulate_scratch_series(kind="phase", seed=0)
    with pytest.raises(io.InputError, match="no time 0"):
        wound.analyse_series(series.frames[1:], series.times_h[1:], pixel_size_um=series.pixel_size_um)


def test_monolayer_without_wound_is_refused():
    series = simulate_scratch_series(kind="phase", initial_width_um=0.0, seed=0)
    with pytest.raises(io.InputError, match="no wound found"):
        wound.analyse_series(series.frames, series.times_h, pixel_size_um=series.pixel_size_um)


def test_folder_of_timed_images_names_the_missing_time_zero(tmp_path):
    series = simulate_scratch_series(kind="phase", seed=1)
    for frame, t in zip(series.frames[1:], series.times_h[1:]):
        tifffile.imwrite(tmp_path / f"well_{t:g}h.tif", frame)
    outputs = {"frames": tmp_path / "out" / "frames.csv", "metrics": tmp_path / "out" / "m.json",
               "qc": tmp_path / "out" / "qc.png"}
    metrics = wound.process_sample(sample="well_B2", path=tmp_path, options={"pixel_size_um": 1.3},
                                   outputs=outputs)
    assert metrics["status"].startswith("error:") and "no time 0" in metrics["status"]
    assert outputs["qc"].exists() and outputs["frames"].exists()


def test_config_schema_defaults_match_the_libraries():
    import yaml

    from exotrack import transwell
    from exotrack.sheet import validate_config
    from conftest import REPO

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    filled = validate_config({"samples": "x.tsv"}, schema)
    assert filled["wound"] == wound.DEFAULTS and filled["transwell"] == transwell.DEFAULTS
    shipped = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()), schema)
    assert shipped["wound"] == wound.DEFAULTS and shipped["transwell"] == transwell.DEFAULTS


def test_multiframe_file_gives_times_from_its_frame_interval(tmp_path):
    series = simulate_scratch_series(kind="fluorescence", initial_width_um=250.0, front_speed_um_h=5.0, seed=4)
    io.write_ome_tiff(tmp_path / "well.ome.tif", series.frames[:, None], axes="TCYX",
                      channel_names=["CellTracker"], frame_interval_s=4 * 3600,
                      pixel_size_um=(1.0, series.pixel_size_um, series.pixel_size_um))
    outputs = {k: tmp_path / "out" / f"{k}.{ext}"
               for k, ext in (("frames", "csv"), ("metrics", "json"), ("qc", "png"))}
    metrics = wound.process_sample(sample="w1", path=tmp_path / "well.ome.tif", options={"channel": "CellTracker"},
                                   outputs=outputs)
    assert metrics["status"] == "ok" and metrics["times_h"] == [0.0, 4.0, 8.0, 12.0]
    assert metrics["pixel_size_um"] == pytest.approx(series.pixel_size_um)
    assert abs(metrics["closure_rate_um_h"] / series.width_rate_um_h - 1) <= 0.10


@pytest.mark.parametrize("kind", ["phase", "fluorescence"])
def test_later_frames_of_other_contrast_are_cut_alike(kind):
    """Later timepoints at half the contrast (refocused, another lamp setting): without scaling
    the time-0 threshold by the far monolayer's texture, areas were off by up to 290 %."""
    series = simulate_scratch_series(kind=kind, initial_width_um=250.0, front_speed_um_h=5.0, seed=7)
    frames = series.frames.astype(float)
    mean = frames[1:].mean(axis=(1, 2), keepdims=True)
    frames[1:] = mean + 0.5 * (frames[1:] - mean)
    table, _, _ = wound.analyse_series(frames, series.times_h, pixel_size_um=series.pixel_size_um)
    true = series.wound.sum(axis=(1, 2)) * series.pixel_size_um ** 2 / 1e6
    assert np.abs(table["wound_area_mm2"].to_numpy() / true - 1).max() <= 0.05
