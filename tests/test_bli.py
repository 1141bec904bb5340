"""Bioluminescence against acquisitions with known source fluxes: calibration, ROIs, mice,
saturation and malformed folders."""
import shutil

import numpy as np
import pandas as pd
import pytest

from exotrack import bli
from exotrack.demo_bli import BODY_RADIANCE, Mouse, c_ccd, simulate_acquisition


def _run(folder, tmp_path, name="out", subject=""):
    outputs = {k: tmp_path / name / f"{k}.{e}" for k, e in [("rois", "csv"), ("radiance", "tif"), ("metrics", "json"),
                                                                           ("qc", "png")]}
    metrics = bli.process_sample(sample=name, path=folder, options={}, outputs=outputs, subject=subject)
    return metrics, pd.read_csv(outputs["rois"])


def test_click_info_blocks_and_calibration_lines(tmp_path):
    simulate_acquisition(tmp_path / "a", [Mouse("m1", 1e7, 1e6)], exposure_s=0.5, binning=8, f_number=2,
                         labels={"Animal Number": "7", "Time Point": "day 3"})
    acq = bli.read_acquisition(tmp_path / "a")
    # The photograph block states binning 2 and f/8: the luminescent block's values must win.
    assert (acq.exposure_s, acq.binning, acq.f_number, acq.fov_cm) == (0.5, 8, 2, 12.8)
    assert acq.coefficient == pytest.approx(c_ccd(12.8, 2), rel=1e-3)  # written to 4 digits
    assert acq.labels["Animal Number"] == "7" and acq.labels["Time Point"] == "day 3"
    assert acq.bias == pytest.approx(600, abs=1) and acq.radiance.shape == (128, 128)
    assert bli.parse_animals("1-3, 5") == ["1", "2", "3", "5"]


def test_same_mouse_with_different_settings_gives_the_same_flux(tmp_path):
    mouse = Mouse("m1", 8e6, 2e6)
    fluxes = []
    for k, setting in enumerate([dict(exposure_s=60, binning=4, f_number=1), dict(exposure_s=10, binning=8, f_number=1),
                                 dict(exposure_s=120, binning=2, f_number=2), dict(exposure_s=240, binning=4, f_number=4)]):
        truth = simulate_acquisition(tmp_path / f"a{k}", [mouse], roi_source="csv", seed=k, **setting)
        metrics, rois = _run(tmp_path / f"a{k}", tmp_path, f"o{k}", subject="m1")
        assert metrics["status"] == "ok"
        tumour = rois.set_index("roi").loc["tumor"]
        node = rois.set_index("roi").loc["lymph_node"]
        assert tumour["total_flux_p_s"] == pytest.approx(8e6, rel=0.02)
        # Photon and read noise of the node's ROI: up to 2.3 % over 12 seeds and these settings.
        assert node["bkg_corrected_flux_p_s"] == pytest.approx(2e6, rel=0.03)
        fluxes.append(tumour["total_flux_p_s"])
        assert not truth["saturated"].any()
    assert np.ptp(fluxes) / np.mean(fluxes) < 0.02


def test_living_image_rois_in_sensor_units_match_the_same_rois_in_pixels(tmp_path):
    for source in ("csv", "living_image"):
        simulate_acquisition(tmp_path / source, [Mouse("m1", 5e6, 1e6)], roi_source=source, binning=8, seed=1)
    _, from_csv = _run(tmp_path / "csv", tmp_path, "c", subject="m1")
    _, from_li = _run(tmp_path / "living_image", tmp_path, "l", subject="m1")
    assert set(from_li["roi_source"]) == {"AnalyzedClickInfo.txt", "auto"}
    assert set(from_li["source"]) == {"luminescent.TIF"}
    np.testing.assert_allclose(from_li["area_cm2"], from_csv["area_cm2"], rtol=0.02)
    np.testing.assert_allclose(from_li["total_flux_p_s"][:2], from_csv["total_flux_p_s"][:2], rtol=0.01)


def test_automatic_rois_split_mice_left_to_right(tmp_path):
    mice = [Mouse("a", 4e6, 1e6), Mouse("b", 1.5e7, 3e5), Mouse("c", 2e6, 2e6)]
    truth = simulate_acquisition(tmp_path / "three", mice, fov_cm=22.8, exposure_s=10,
                                 labels={"Animal Number": "4-6"}, seed=2)
    metrics, rois = _run(tmp_path / "three", tmp_path)
    rois["subject"] = rois["subject"].astype(str)
    assert [a["subject"] for a in metrics["animals"]] == ["4", "5", "6"]  # from the label
    truth["subject"] = truth["subject"].map({"a": "4", "b": "5", "c": "6"})
    merged = rois.merge(truth, on=["subject", "roi"], suffixes=("", "_true"))
    assert len(merged) == 6
    error = merged["bkg_corrected_flux_p_s"] / merged["total_flux_p_s_true"] - 1
    assert (error.abs() <= 0.10).all(), merged[["subject", "roi", "bkg_corrected_flux_p_s", "total_flux_p_s_true"]]
    # Naming follows total flux: mouse c's node (2e6) is not taken for its tumour (2e6, broader).
    assert set(rois.loc[rois["subject"] == "6", "roi"]) == {"tumor", "lymph_node", "background"}
    metrics, _ = _run(tmp_path / "three", tmp_path, "named", subject="x1;x2")
    assert "shows 3 animal(s) but 2 are named" in metrics["status"]


def test_saturation_is_flagged_and_background_is_not_clipped(tmp_path):
    truth = simulate_acquisition(tmp_path / "bright", [Mouse("m1", 5e8, 1e4)], exposure_s=300, seed=3)
    assert truth["saturated"].all()
    metrics, rois = _run(tmp_path / "bright", tmp_path, subject="m1")
    assert metrics["status"].startswith("saturated: m1 tumor")
    assert rois.set_index("roi").loc["tumor", "saturated"]
    # A dim acquisition: after bias subtraction many pixels are negative and stay so, so the
    # body's mean radiance is right (clipping at zero would inflate it).
    simulate_acquisition(tmp_path / "dim", [Mouse("m1", 1e5, 1e4)], exposure_s=60, binning=4, seed=4)
    acq = bli.read_acquisition(tmp_path / "dim")
    assert (acq.radiance < 0).mean() > 0.2
    _, rois = _run(tmp_path / "dim", tmp_path, "dim", subject="m1")
    assert rois.set_index("roi").loc["background", "avg_radiance"] == pytest.approx(BODY_RADIANCE, rel=0.25)


def test_malformed_folders_give_clear_errors(tmp_path):
    good = tmp_path / "good"
    simulate_acquisition(good, [Mouse("m1", 1e6, 1e5)], seed=5)
    cases = {}
    folder = shutil.copytree(good, tmp_path / "no_lum")
    (folder / "luminescent.TIF").unlink()
    cases[folder] = "has no luminescent.TIF"
    folder = shutil.copytree(good, tmp_path / "no_coef")
    for name in ("ClickInfo.txt", "AnalyzedClickInfo.txt"):
        text = (folder / name).read_text()
        (folder / name).write_text("\n".join(l for l in text.splitlines() if "FOV 12.8, f1:" not in l))
    cases[folder] = "no calibration line 'Coef C-ccd at FOV 12.8, f1'"
    folder = shutil.copytree(good, tmp_path / "bad_tiff")
    (folder / "luminescent.TIF").write_bytes(b"II*\x00garbage")
    cases[folder] = "cannot read luminescent.TIF (luminescent image) as a TIFF"
    folder = shutil.copytree(good, tmp_path / "no_exposure")
    for name in ("ClickInfo.txt", "AnalyzedClickInfo.txt"):
        text = (folder / name).read_text()
        (folder / name).write_text(text.replace("Luminescent Exposure (Seconds)", "Exposure"))
    cases[folder] = "no 'Luminescent Exposure (Seconds)' line"
    folder = shutil.copytree(good, tmp_path / "no_text")
    for name in ("ClickInfo.txt", "AnalyzedClickInfo.txt"):
        (folder / name).unlink()
    cases[folder] = "neither ClickInfo.txt nor AnalyzedClickInfo.txt"
    cases[tmp_path / "absent"] = "IVIS acquisition folder not found"
    for folder, message in cases.items():
        metrics, rois = _run(folder, tmp_path, folder.name)
        assert message in metrics["status"], (folder.name, metrics["status"])
        assert rois.empty and (tmp_path / folder.name / "qc.png").exists()
