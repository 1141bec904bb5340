"""Bioluminescence from folders laid out as Living Image 4.7 writes them on an IVIS Spectrum:
read bias with a data multiplier, dark charge, Living Image's corrected radiance, unlabelled
multi-mouse ROIs in another frame, dim sources over autoluminescence, and strict reading."""
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile

from exotrack import bli
from exotrack.demo_bli import IVIS_SPECTRUM, Mouse, simulate_acquisition

# Five mice in a row, dim and bright, as in the real folder (22.4 cm, binning 8, 40 s, f/1).
FIVE = [Mouse("a", 3e7, 2e5), Mouse("b", 1.2e7, 5e4), Mouse("c", 4e5, 3e4), Mouse("d", 1e5, 1e4),
        Mouse("e", 2e6, 1e6)]
REAL = dict(fov_cm=22.4, binning=8, exposure_s=40, f_number=1, layout="living_image")


def _run(folder, tmp_path, name="out", subject=""):
    outputs = {k: tmp_path / name / f"{k}.{e}" for k, e in [("rois", "csv"), ("radiance", "tif"),
                                                           ("metrics", "json"), ("qc", "png")]}
    metrics = bli.process_sample(sample=name, path=folder, options={}, outputs=outputs, subject=subject)
    return metrics, pd.read_csv(outputs["rois"])


def _stored(tmp_path, seed=1, name="li", mice=FIVE, **settings):
    truth = simulate_acquisition(tmp_path / name, mice, roi_source="living_image", seed=seed,
                                 labels={"Animal Number": ""}, **{**REAL, **settings})
    return tmp_path / name, truth


def test_the_documented_ivis_calibration_is_pinned():
    # Living Image 4.7.3's camera block on the real folder: 'Coef C-ccd at FOV 22.4, f1: 7.223E+05'.
    assert IVIS_SPECTRUM.calibration(22.4, 1) == pytest.approx(7.223e5, rel=0.01)
    # Four times the light per stop squared: the coefficient follows the aperture's area.
    assert IVIS_SPECTRUM.calibration(22.4, 2) / IVIS_SPECTRUM.calibration(22.4, 1) == pytest.approx(4)
    blocks = bli.parse_click_info("*** Camera System Info\nCoef C-ccd at FOV 22.4, f1:\t7.223E+05\n")
    assert bli.coefficients(blocks) == [(22.4, 1.0, 7.223e5)]


def test_stored_unlabelled_rois_reproduce_living_image(tmp_path):
    folder, truth = _stored(tmp_path)
    metrics, rois = _run(folder, tmp_path, subject="a;b;c;d;e")
    assert metrics["status"] == "ok" and metrics["warnings"] == [], metrics
    assert metrics["bias_source"] == "readbias.TIF / Data Multiplier 10"
    assert metrics["corrections"]["dark_charge"].startswith("background.TIF / Data Multiplier 10")
    assert metrics["measured_image"] == "luminescentFloatCorrected.TIF"
    assert metrics["living_image_version"].startswith("4.7.3")
    assert set(rois["source"]) == {"luminescentFloatCorrected.TIF"}
    measured = rois[rois["roi_source"] == "AnalyzedClickInfo.txt"]
    merged = measured.merge(truth, left_on=["subject", "roi"], right_on=["subject", "label"],
                            suffixes=("", "_true"))
    # Every ROI found its mouse and kept Living Image's name.
    assert len(merged) == len(truth) == 10 and merged["roi"].str.fullmatch(r"ROI \d+").all()
    # Living Image's own total flux (4π A Σ of its corrected image), every ROI, dim ones included.
    np.testing.assert_allclose(merged["total_flux_p_s"], merged["li_total_flux_p_s"], rtol=1e-3)
    # Against the noise-free flux in each ROI: 2 % from 1e6 p/s; dim ROIs within their noise
    # (photon and read noise of a few hundred pixels: their 3-sd detection limit).
    bright = merged["roi_flux_p_s"] >= 1e6
    assert bright.sum() >= 3 and (~bright).sum() >= 5
    np.testing.assert_allclose(merged.loc[bright, "total_flux_p_s"], merged.loc[bright, "roi_flux_p_s"], rtol=0.02)
    noise = (merged["total_flux_p_s"] - merged["roi_flux_p_s"]).abs()
    assert (noise[~bright] <= merged.loc[~bright, "detection_limit_p_s"]).all()
    # The node ROIs are ellipses turned 30°: unturned, they would cover other pixels.
    node = next(r for r in bli.read_acquisition(folder).rois if r.angle_deg)
    turned, flat = node.pixels((240, 240)), bli.ROI("x", node.shape, node.yc, node.xc, node.height, node.width).pixels(
        (240, 240))
    assert (turned ^ flat).sum() > 0.1 * turned.sum()
    # Exotrack's own calibration of the raw counts lacks Living Image's flat field: the lens's
    # fall-off leaves bright ROIs up to ~8 % low away from the axis (dim ones differ by noise too).
    raw = merged.loc[bright, "raw_calibration_error"]
    assert raw.between(-0.10, 0.0).all() and raw.min() < -0.02, raw
    _check_corrected(merged, "source_flux_in_roi_p_s")


def _check_corrected(merged, truth):
    """Background-corrected flux of every ROI against the sources' flux ``truth`` in it: within
    3 % from 1e6 p/s; dimmer ones within 20 % or within their own noise (the 3-sd detection
    limit), else flagged below the detection limit; never negative."""
    detected = merged[~merged["below_detection"]]
    assert detected["bkg_corrected_flux_p_s"].notna().all() and (detected["bkg_corrected_flux_p_s"] > 0).all()
    assert merged.loc[merged["below_detection"], "bkg_corrected_flux_p_s"].isna().all()
    error = detected["bkg_corrected_flux_p_s"] - detected[truth]
    bright = detected[truth] >= 1e6
    assert bright.sum() >= 2 and (~bright).sum() >= 3
    allowed = np.maximum(0.2 * detected[truth], detected["detection_limit_p_s"])
    assert (error[bright].abs() <= 0.03 * detected.loc[bright, truth]).all(), detected.assign(error=error)
    assert (error[~bright].abs() <= allowed[~bright]).all(), detected.assign(error=error)
    # What is flagged is dim: a source of 10 detection limits always stands out.
    flagged = merged[merged["below_detection"]]
    assert (flagged[truth] < 10 * flagged["detection_limit_p_s"]).all()


def test_unnamed_mice_are_named_from_the_sample_left_to_right(tmp_path):
    folder, truth = _stored(tmp_path, mice=FIVE[:3], seed=2)
    metrics, rois = _run(folder, tmp_path, "s7")
    assert [a["subject"] for a in metrics["animals"]] == ["s7_1", "s7_2", "s7_3"]
    assert "the photograph shows 3 mice but one subject is named" in metrics["warnings"][0]
    truth["subject"] = truth["subject"].map({"a": "s7_1", "b": "s7_2", "c": "s7_3"})
    merged = rois.merge(truth, left_on=["subject", "roi"], right_on=["subject", "label"])
    assert len(merged) == 6


def test_automatic_rois_on_five_mice_in_a_row(tmp_path):
    truth = simulate_acquisition(tmp_path / "auto", FIVE, seed=4, **REAL)
    metrics, rois = _run(tmp_path / "auto", tmp_path, subject="a;b;c;d;e")
    assert metrics["status"] == "ok"
    assert [a["subject"] for a in metrics["animals"]] == list("abcde")
    merged = rois.merge(truth, on=["subject", "roi"], suffixes=("", "_true"))
    # Named right: each mouse's brighter source is its tumour, a dim one is never taken for it.
    tumours = rois[rois["roi"] == "tumor"]
    assert len(tumours) == 5
    for row in tumours.itertuples():
        true = truth[(truth["subject"] == row.subject) & (truth["roi"] == "tumor")].iloc[0]
        assert np.hypot(row.yc - true["yc"], row.xc - true["xc"]) < 3, row
    bright = merged[merged["total_flux_p_s_true"] >= 1e6]
    assert len(bright) >= 4
    error = bright["bkg_corrected_flux_p_s"] / bright["total_flux_p_s_true"] - 1
    assert (error.abs() <= 0.10).all(), bright.assign(error=error)
    _check_dim(merged, truth)


def _check_dim(merged, truth):
    """Sources of 1e4-1e6 p/s over autoluminescence: found and within 20 % (or their noise), or
    flagged below detection (or not found at all); never negative."""
    dim = truth[(truth["total_flux_p_s"] >= 1e4) & (truth["total_flux_p_s"] < 1e6)]
    assert len(dim) >= 3
    found = merged[(merged["total_flux_p_s_true"] >= 1e4) & (merged["total_flux_p_s_true"] < 1e6)]
    detected = found[~found["below_detection"]]
    assert len(detected) >= 2
    truth_flux = detected["total_flux_p_s_true"]
    error = (detected["bkg_corrected_flux_p_s"] - truth_flux).abs()
    assert (error <= np.maximum(0.2 * truth_flux, detected["detection_limit_p_s"])).all(), detected
    assert found.loc[found["below_detection"], "bkg_corrected_flux_p_s"].isna().all()
    assert (detected["bkg_corrected_flux_p_s"] > 0).all()


@pytest.mark.parametrize("layout", ["legacy", "living_image"])
def test_dim_sources_over_autoluminescence(tmp_path, layout):
    # The PBS lymph nodes of the study: 1e4-1e6 p/s on a body glowing ~2e4 p/s over a node's ROI.
    mice = [Mouse("m1", 3e6, 1e4), Mouse("m2", 2e6, 3e4), Mouse("m3", 1e6, 1e5), Mouse("m4", 4e6, 3e5)]
    settings = dict(fov_cm=22.4, binning=8, exposure_s=60) if layout == "living_image" else dict(
        fov_cm=22.8, binning=4, exposure_s=60)
    for source in ("csv", "auto"):
        folder = tmp_path / f"{layout}_{source}"
        truth = simulate_acquisition(folder, mice, roi_source=source, layout=layout, seed=6, **settings)
        metrics, rois = _run(folder, tmp_path, folder.name, subject="m1;m2;m3;m4")
        assert metrics["status"] == "ok", metrics["status"]
        merged = rois.merge(truth, on=["subject", "roi"], suffixes=("", "_true"))
        _check_dim(merged, truth)
        if layout == "living_image":  # a 60 s exposure with the 40 s dark frame: scaled by 1.5
            assert "x 1.5 (exposure 60/40 s" in metrics["corrections"]["dark_charge"]
        if source == "csv":  # every source has its ROI: none may be dropped
            assert len(merged) == len(truth)


def test_folders_without_living_image_radiance_still_get_bias_and_dark_charge(tmp_path):
    folder, truth = _stored(tmp_path, seed=3)
    (folder / bli.FLOAT_CORRECTED).unlink()
    metrics, rois = _run(folder, tmp_path, "raw", subject="a;b;c;d;e")
    assert metrics["measured_image"] == "luminescent.TIF" and set(rois["source"]) == {"luminescent.TIF"}
    assert metrics["bias_source"] == "readbias.TIF / Data Multiplier 10"
    assert metrics["corrections"]["flat_field"] == "none in luminescent.TIF"
    merged = rois.merge(truth, left_on=["subject", "roi"], right_on=["subject", "label"], suffixes=("", "_true"))
    bright = merged[merged["roi_flux_p_s"] >= 1e6]
    # Without Living Image's flat field the lens's fall-off (cos⁴, up to 8 % here) stays.
    error = bright["total_flux_p_s"] / bright["roi_flux_p_s"] - 1
    assert len(bright) >= 3 and error.between(-0.10, 0.01).all(), error
    # Without readbias.TIF the block's Read Bias Level; without background.TIF no dark charge,
    # and the dim ROIs gain its counts.
    (folder / "readbias.TIF").unlink()
    (folder / "background.TIF").unlink()
    metrics, plain = _run(folder, tmp_path, "plain", subject="a;b;c;d;e")
    assert metrics["bias_source"] == "Read Bias Level" and metrics["bias"] == pytest.approx(496.628)
    assert metrics["corrections"]["dark_charge"] == "none (no background.TIF)"
    gained = (plain["total_flux_p_s"] - rois["total_flux_p_s"]) / rois["area_cm2"]
    assert (gained[rois["roi_source"] == "AnalyzedClickInfo.txt"] > 0).all()


def test_cosmic_ray_hits_are_removed_from_raw_counts(tmp_path):
    folder, truth = _stored(tmp_path, seed=9)
    (folder / bli.FLOAT_CORRECTED).unlink()
    metrics, clean = _run(folder, tmp_path, "clean", subject="a;b;c;d;e")
    # No bright source, however compact, is taken for a cosmic ray.
    assert metrics["corrections"]["cosmic"].startswith("0 pixel(s) replaced"), metrics["corrections"]
    counts = tifffile.imread(folder / "luminescent.TIF")
    acq = bli.read_acquisition(folder)
    hit = [r for r in acq.rois if r.name in ("ROI 4", "ROI 9")]  # the dimmest mouse's ROIs
    for roi, (energy, extent) in zip(hit, [(3000, 1), (800, 2)]):
        y, x = int(round(roi.yc)), int(round(roi.xc))
        counts[y, x: x + extent] += energy  # a hit, and a grazing one over two pixels
    tifffile.imwrite(folder / "luminescent.TIF", counts)
    metrics, hit_rois = _run(folder, tmp_path, "hit", subject="a;b;c;d;e")
    assert metrics["corrections"]["cosmic"].startswith("3 pixel(s) replaced")
    # 3000 counts would add 9e4 p/s to ROI 4 (1e5 p/s); replaced, a pixel's noise remains.
    np.testing.assert_allclose(hit_rois["total_flux_p_s"], clean["total_flux_p_s"], atol=2e3)


def _edit(folder, change):
    for name in ("ClickInfo.txt", "AnalyzedClickInfo.txt"):
        (folder / name).write_text(change((folder / name).read_text()))


def _drop_in_block(block_title, key):
    def change(text):
        out, inside = [], False
        for line in text.splitlines():
            if line.startswith("***"):
                inside = line.lstrip("* ").lower().startswith(block_title)
            if not (inside and line.startswith(key + ":")):
                out.append(line)
        return "\n".join(out) + "\n"
    return change


def test_reading_is_strict_and_says_what_is_wrong(tmp_path):
    good, _ = _stored(tmp_path, mice=FIVE[:2], seed=5, name="good")
    cases = {
        # The photograph block states binning 2 and f/8: they must not stand in for the luminescent's.
        "no_binning": (_drop_in_block("luminescent", "Binning Factor"),
                       "the luminescent image block has no 'Binning Factor' line"),
        "no_f_number": (_drop_in_block("luminescent", "f Number"), "the luminescent image block has no 'f Number'"),
        "no_dark_exposure": (_drop_in_block("darkcharge", "Background Exposure (Seconds)"),
                             "the darkcharge image block has no 'Background Exposure (Seconds)' line"),
        "decimal_comma": (lambda t: t.replace("Luminescent Exposure (Seconds):\t40.000",
                                              "Luminescent Exposure (Seconds):\t40,000"), "with a decimal comma"),
        "not_a_number": (lambda t: t.replace("f Number:\t1\n", "f Number:\tf/1\n"),
                         "'f Number' is 'f/1', not a number"),
    }
    for name, (change, message) in cases.items():
        folder = shutil.copytree(good, tmp_path / name)
        _edit(folder, change)
        metrics, rois = _run(folder, tmp_path, f"o_{name}", subject="a;b")
        assert message in metrics["status"], (name, metrics["status"])
        assert rois.empty
    # A UTF-16 ClickInfo (as some Windows tools save it) reads as the original.
    folder = shutil.copytree(good, tmp_path / "utf16")
    for name in ("ClickInfo.txt", "AnalyzedClickInfo.txt"):
        (folder / name).write_bytes((folder / name).read_text().encode("utf-16"))
    _, reference = _run(good, tmp_path, "o_good", subject="a;b")
    metrics, rois = _run(folder, tmp_path, "o_utf16", subject="a;b")
    assert metrics["status"] == "ok"
    pd.testing.assert_series_equal(rois["total_flux_p_s"], reference["total_flux_p_s"])
    # Unknown keys that may change the counts' meaning, and an untested version, are warned of.
    folder = shutil.copytree(good, tmp_path / "unknown")
    _edit(folder, lambda t: t.replace("Read Bias Level:\t496.628", "Read Bias Level:\t496.628\nGain Correction:\t1.1")
          .replace("4.7.3.20616", "5.1.0"))
    metrics, _ = _run(folder, tmp_path, "o_unknown", subject="a;b")
    assert metrics["status"] == "ok"
    assert any("unknown key(s) Gain Correction" in w for w in metrics["warnings"]), metrics["warnings"]
    assert any("Living Image version 5.1.0" in w for w in metrics["warnings"])


def test_photograph_of_another_aspect_ratio_is_registered_by_field_of_view(tmp_path):
    good, truth = _stored(tmp_path, mice=FIVE[:2], seed=7, name="good")
    _, reference = _run(good, tmp_path, "o_good", subject="a;b")
    folder = shutil.copytree(good, tmp_path / "cropped")
    photo = tifffile.imread(folder / "photograph.TIF")
    tifffile.imwrite(folder / "photograph.TIF", photo[160:-160])  # 640 x 960: the same width, less height
    metrics, rois = _run(folder, tmp_path, "o_cropped", subject="a;b")
    assert metrics["status"] == "ok"
    np.testing.assert_allclose(rois["bkg_corrected_flux_p_s"], reference["bkg_corrected_flux_p_s"], rtol=0.01)
    # Without a field of view for the photograph, stretching it would misplace every mouse: refused.
    _edit(folder, _drop_in_block("photograph", "Field of View"))
    metrics, _ = _run(folder, tmp_path, "o_nofov", subject="a;b")
    assert "another aspect ratio, and the photograph block states no Field of View" in metrics["status"]


def test_living_image_roi_names_links_and_semicolon_roi_tables(tmp_path):
    folder, truth = _stored(tmp_path, mice=FIVE[:2], seed=8)
    # rois.csv from European Excel names Living Image's ROIs: semicolons, UTF-8 with BOM.
    (folder / "rois.csv").write_bytes("label;roi\nROI 1;tumor\nROI 3;lymph_node\n".encode("utf-8-sig"))
    metrics, rois = _run(folder, tmp_path, "named", subject="a;b")
    assert set(rois.loc[rois["subject"] == "a", "roi"]) == {"tumor", "lymph_node", "background"}
    assert set(rois.loc[rois["subject"] == "b", "roi"]) == {"ROI 2", "ROI 4", "background"}
    animal = metrics["animals"][0]
    assert animal["tumor_total_flux_p_s"] == pytest.approx(truth.iloc[0]["li_total_flux_p_s"], rel=1e-3)
    assert np.isnan(metrics["animals"][1]["tumor_total_flux_p_s"])  # b's ROIs keep Living Image's names
    # A Bkg ROI link: ROI 1's background is ROI 5's mean radiance over ROI 1's area.
    (folder / "rois.csv").unlink()
    text = (folder / "AnalyzedClickInfo.txt").read_text()
    scale = 22.4 / 1920
    text = text.replace("ROI 1:\tzColorIndex=1;ROI Type=Measurement;Subject ROI=_none_;Subject ID=;Subject Label=;"
                        "Bkg ROI=_none_;", "ROI 1:\tzColorIndex=1;ROI Type=Measurement;Subject ROI=_none_;Subject ID=;"
                        "Subject Label=;Bkg ROI=ROI 5;")
    text += (f"ROI 5:\tzColorIndex=1;ROI Type=Average Bkg ROI;Subject ROI=_none_;Subject ID=;Bkg ROI=_none_;"
             f"Shape=Square;Xc={7.47 / scale:.3f};Yc={8.2 / scale:.3f};Width={1.0 / scale:.3f};"
             f"Height={1.0 / scale:.3f};Angle=0.0000;Label=ROI 5;cm per pixel={scale:.12f};\n")
    (folder / "AnalyzedClickInfo.txt").write_text(text)
    metrics, rois = _run(folder, tmp_path, "linked", subject="a;b")
    table = rois.set_index("roi")
    assert "ROI 5" in table.index and table.loc["ROI 5", "subject"] == "a"
    expected = table.loc["ROI 1", "total_flux_p_s"] - 4 * np.pi * table.loc["ROI 5", "avg_radiance"] * table.loc[
        "ROI 1", "area_cm2"]
    assert table.loc["ROI 1", "bkg_corrected_flux_p_s"] == pytest.approx(expected)
    # A Subject ROI link places an ROI on its mouse, though it lies nearer another.
    text += (f"ROI 6:\tROI Type=Subject ROI;Subject ID=;Shape=Ellipse;Xc={14.93 / scale:.3f};Yc={11.2 / scale:.3f};"
             f"Width={2.5 / scale:.3f};Height={7.2 / scale:.3f};Angle=0;Label=ROI 6;cm per pixel={scale:.12f};\n"
             f"ROI 7:\tROI Type=Measurement;Subject ROI=ROI 6;Shape=Circle;Xc={10.5 / scale:.3f};Yc={11.2 / scale:.3f};"
             f"Width={0.5 / scale:.3f};Height={0.5 / scale:.3f};Angle=0;Label=ROI 7;cm per pixel={scale:.12f};\n")
    (folder / "AnalyzedClickInfo.txt").write_text(text)
    _, rois = _run(folder, tmp_path, "subject_link", subject="a;b")
    assert rois.set_index("roi").loc[["ROI 6", "ROI 7"], "subject"].tolist() == ["b", "b"]


def test_empty_rois_are_below_detection_over_seeds():
    """The detection limit's claim, over seeds: an ROI over autoluminescence alone is flagged
    (3 sd: a false detection in ~0.1 % of ROIs), and its noise is no larger than the limit says."""
    import tempfile
    from pathlib import Path

    empty = [Mouse(m, t, 0.0) for m, t in zip("abcde", (3e7, 1e6, 1e5, 1e4, 0.0))]
    rows = []
    for seed in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            folder, truth = _stored(Path(tmp), seed=20 + seed, mice=empty)
            _, rois = _run(folder, Path(tmp), subject="a;b;c;d;e")
        merged = rois.merge(truth, left_on=["subject", "roi"], right_on=["subject", "label"], suffixes=("", "_t"))
        rows.append(merged[merged["roi_t"] == "lymph_node"])
    nodes = pd.concat(rows)
    assert len(nodes) == 15 and nodes["below_detection"].all(), nodes
    # Measured over 30 such ROIs: residual sd 0.77 of the limit's sd (limit / 3).
    residual = nodes["total_flux_p_s"] - nodes["roi_flux_p_s"]
    assert residual.std() <= 1.2 * (nodes["detection_limit_p_s"] / 3).mean()
