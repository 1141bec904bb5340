"""The bundled demo through the real Snakemake workflow, checked against its ground truth."""
import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from exotrack.evaluate import match_labels, match_points

STILLS = ["pbs_w1", "pbs_w2", "pbs_w3", "pbs_w4", "exo_w1", "exo_w2", "exo_w3", "exo_w4", "exo_z1"]
MOVIES = ["live_w1", "live_w2"]
SECTIONS = [f"m{i}_{marker}" for i in range(1, 7) for marker in ("CD206", "NOS2")]
ACQUISITIONS = ["m1_d7", "m1_d14", "m1_d21", "m1_d21_long", "m2_d7", "m2_d14", "m2_d21", "m2_d21_b8",
                "m3_d7", "m3_d14", "m3_d21", "m4_d7", "m4_d14", "m5_d7", "m5_d14", "m6_d7", "m6_d14", "m4-m6_d21"]
VOLUMES = [f"m{i}_pa" for i in range(1, 7)]
DEMO_SAMPLES = STILLS + MOVIES + ACQUISITIONS + VOLUMES + SECTIONS
ABSOLUTE_COUNT_ERROR = 0.3  # puncta per cell, mean over cells with fewer than 10 (docs/tolerances.md)


def _truth(run, sample):
    base = run / "demo" / "truth" / sample
    return (tifffile.imread(base / "cells.tif"), tifffile.imread(base / "nuclei.tif"),
            pd.read_csv(base / "puncta.csv"))


def test_samples_table_lists_every_sample_ok(demo_run):
    table = pd.read_csv(demo_run / "results" / "tables" / "samples.csv")
    # The three mice imaged together are one row each.
    expected = [name for sample in DEMO_SAMPLES for name in [sample] * (3 if sample == "m4-m6_d21" else 1)]
    assert table["sample"].tolist() == expected
    assert table.loc[table["sample"] == "m4-m6_d21", "subject"].tolist() == ["m4", "m5", "m6"]
    saturated = table["sample"] == "m1_d21_long"
    assert table.loc[saturated, "status"].str.startswith("saturated: raw counts at the camera's ceiling in tumor").all()
    assert (table.loc[~saturated, "status"] == "ok").all(), table[["sample", "status"]]
    for column in ["sample", "modality", "group", "subject", "timepoint", "marker", "status", "n_cells",
                   "pct_exosome_positive_cells", "puncta_per_cell_mean", "exosome_intensity_per_cell_mean"]:
        assert column in table.columns
    by_group = table[table["modality"] == "fluorescence"].groupby("group")["puncta_per_cell_mean"].mean()
    assert by_group["exosome"] > 10 * by_group["PBS"]


def test_output_tables_have_spec_columns(demo_run):
    base = demo_run / "results" / "fluorescence" / "exo_w1"
    cells = pd.read_csv(base / "cells.csv")
    puncta = pd.read_csv(base / "puncta.csv")
    assert cells.columns[:10].tolist() == ["cell_id", "frame", "y", "x", "area_um2", "nucleus_area_um2",
                                           "exosome_mean", "exosome_integrated", "puncta_count", "exosome_positive"]
    assert puncta.columns[:7].tolist() == ["spot_id", "frame", "z", "y", "x", "intensity", "cell_id"]


@pytest.mark.parametrize("sample", STILLS)
def test_accuracy_against_ground_truth(demo_run, sample):
    truth_cells, truth_nuclei, truth_puncta = _truth(demo_run, sample)
    base = demo_run / "results" / "fluorescence" / sample
    labels = tifffile.imread(base / "labels.tif")
    nuclei = tifffile.imread(base / "nuclei.tif")
    cells = pd.read_csv(base / "cells.csv")
    puncta = pd.read_csv(base / "puncta.csv")
    assert labels.shape == truth_cells.shape

    axes = ["z", "y", "x"] if labels.ndim == 3 else ["y", "x"]
    pairs, _, _, f1 = match_points(puncta[axes].to_numpy(), truth_puncta[axes].to_numpy(), radius=3)
    assert f1 >= 0.95, f"{sample}: puncta F1 {f1:.3f}"
    assert match_labels(labels, truth_cells, iou=0.5) >= 0.9
    assert match_labels(nuclei, truth_nuclei, iou=0.5) >= 0.9

    # Per-cell counts, every cell: each predicted cell against the truth cell it overlaps most;
    # relative error where a cell holds 10 puncta or more, absolute error below that (PBS wells).
    truth_counts = np.bincount(truth_puncta["cell_id"], minlength=truth_cells.max() + 1)
    relative, absolute = [], []
    for row in cells.itertuples():
        overlap = np.bincount(truth_cells[labels == row.cell_id], minlength=truth_cells.max() + 1)
        overlap[0] = 0
        true_count = truth_counts[overlap.argmax()]
        if true_count >= 10:
            relative.append(abs(row.puncta_count - true_count) / true_count)
        else:
            absolute.append(abs(row.puncta_count - true_count))
    assert relative or absolute, f"{sample}: no cell to check"
    if relative:
        assert np.mean(relative) <= 0.10, f"{sample}: per-cell count error {np.mean(relative):.3f}"
    if absolute:
        assert np.mean(absolute) <= ABSOLUTE_COUNT_ERROR, f"{sample}: per-cell count error {np.mean(absolute):.2f}"


def test_labels_puncta_and_tables_agree(demo_run):
    base = demo_run / "results" / "fluorescence" / "exo_w2"
    labels = tifffile.imread(base / "labels.tif")
    cells = pd.read_csv(base / "cells.csv")
    puncta = pd.read_csv(base / "puncta.csv")
    assert sorted(np.unique(labels[labels > 0])) == cells["cell_id"].tolist()
    at = labels[np.round(puncta["y"]).astype(int), np.round(puncta["x"]).astype(int)]
    assert (at == puncta["cell_id"]).all()
    counts = puncta[puncta["cell_id"] > 0].groupby("cell_id").size()
    assert (cells.set_index("cell_id")["puncta_count"].reindex(counts.index) == counts).all()
    area = np.bincount(labels.ravel())[1:] * 0.1625 ** 2
    np.testing.assert_allclose(cells["area_um2"], area, rtol=1e-3)


def test_qc_images_and_provenance(demo_run):
    from PIL import Image

    for sample in DEMO_SAMPLES:
        png = np.asarray(Image.open(demo_run / "results" / "qc" / f"{sample}.png"))
        assert png.ndim == 3 and png.shape[0] > 200 and png.std() > 10
    versions = json.loads((demo_run / "results" / "provenance" / "versions.json").read_text())
    assert versions["software"]["exotrack"]
    assert len(versions["inputs"]) == len(DEMO_SAMPLES)
    assert all(len(v) == 64 for v in versions["inputs"].values())
    assert (demo_run / "results" / "provenance" / "config.yaml").exists()


def test_rerun_is_a_no_op(demo_run):
    from conftest import run_snakemake

    result = run_snakemake(demo_run, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_report_is_built(demo_run):
    from conftest import run_snakemake

    run_snakemake(demo_run, "--report", "report.html")
    html = (demo_run / "report.html").read_text(errors="replace")
    assert len(html) > 10_000 and "samples.csv" in html


def test_demo_is_deterministic(tmp_path):
    import subprocess
    import sys

    for name in ("a", "b"):
        subprocess.run([sys.executable, "-m", "exotrack.cli", "demo", str(tmp_path / name), "--seed", "3"],
                       check=True, capture_output=True)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    # sheet; image and truth per sample
    # IVIS folders: two text files and three TIFFs each (five in Living Image 4.7's layout:
    # readbias.TIF for readbiasonly.TIF, background.TIF, luminescentFloatCorrected.TIF), some with
    # rois.csv; truth: rois.csv each
    ivis = [p for p in (tmp_path / "a" / "ivis").rglob("*") if p.is_file()]
    real = sum(p.name == "background.TIF" for p in ivis)
    assert real >= 6 and len(ivis) == 5 * len(ACQUISITIONS) + 2 * real + sum(p.name == "rois.csv" for p in ivis)
    assert len(files) == (1 + 4 * len(STILLS) + 4 + 2 + 3 * len(SECTIONS) + len(ivis) + len(ACQUISITIONS)
                          + 3 * len(VOLUMES))
    for rel in files:
        a, b = tmp_path / "a" / rel, tmp_path / "b" / rel
        if rel.suffix == ".tif":  # OME-XML carries a fresh UUID; the pixels must agree
            np.testing.assert_array_equal(tifffile.imread(a), tifffile.imread(b))
        else:
            assert a.read_bytes() == b.read_bytes(), rel
    sheet = pd.read_csv(tmp_path / "a" / "samples.tsv", sep="\t")
    assert set(sheet["group"]) == {"PBS", "exosome", "exosome_live"} and len(sheet) == len(DEMO_SAMPLES)


def _true_pct_internalised(run, sample, truth, *, pixel_um=0.1625, edge_um=1.0, min_frames=3):
    """The percentage of true tracks that live inside cells: a point is inside when it lies in a
    true cell deeper than ``edge_um`` from its edge, at the cell within ``edge_um`` of it either
    side, and a track is where most of its points are."""
    from scipy import ndimage as ndi

    labels = tifffile.imread(run / "demo" / "truth" / sample / "cells.tif")
    depth = ndi.distance_transform_edt(labels > 0, sampling=pixel_um)
    gap = ndi.distance_transform_edt(labels == 0, sampling=pixel_um)
    points = truth[truth["visible"]]
    iy = np.clip(np.round(points["y"]).astype(int), 0, labels.shape[0] - 1)
    ix = np.clip(np.round(points["x"]).astype(int), 0, labels.shape[1] - 1)
    inside = labels[iy, ix] > 0
    where = np.where(inside & (depth[iy, ix] > edge_um), "inside",
                     np.where(inside | (gap[iy, ix] <= edge_um), "at_cell", "outside"))
    located = points.assign(where=where).groupby("track_id")["where"].agg(lambda w: w.mode().iloc[0])
    lengths = points.groupby("track_id").size()
    located = located[lengths >= min_frames]
    assert len(located) > 0
    return 100 * float((located == "inside").mean())


@pytest.mark.parametrize("sample", MOVIES)
def test_movies_are_tracked_against_ground_truth(demo_run, sample):
    from exotrack.evaluate import tracking_scores
    from exotrack.tracking import motion_summary

    truth = pd.read_csv(demo_run / "demo" / "truth" / sample / "tracks.csv")
    base = demo_run / "results" / "fluorescence" / sample
    tracks = pd.read_csv(base / "tracks.csv")
    summary = pd.read_csv(base / "track_summary.csv")
    assert tracks.columns[:6].tolist() == ["track_id", "frame", "y", "x", "spot_id", "cell_id"]
    assert summary.columns[:6].tolist() == ["track_id", "start_frame", "n_frames", "mean_speed_um_s",
                                            "diffusion_um2_s", "msd_alpha"]
    scores = tracking_scores(truth[truth["visible"]], tracks, gate=5.0)
    # One demo seed; margins below the worst of 20 seeds of the CD63-only movie (alpha 0.882,
    # beta 0.834, test_tracking_seeds.py) and of demo seed 3 (live_w2 alpha 0.846).
    assert scores["alpha"] >= 0.83 and scores["beta"] >= 0.8, scores
    puncta = pd.read_csv(base / "puncta.csv")
    assert set(tracks["spot_id"]) == set(puncta["spot_id"])
    row = pd.read_csv(demo_run / "results" / "tables" / "samples.csv").set_index("sample").loc[sample]
    assert row["n_tracks"] == len(summary)
    # Diffusion of the tracks that follow Brownian particles (by majority of matched points):
    # right units and scale; the benchmark measures the accuracy on larger movies.
    owner = {}
    for frame, block in tracks.groupby("frame"):
        t = truth[truth["visible"] & (truth["frame"] == frame)]
        for i, j in match_points(block[["y", "x"]].to_numpy(), t[["y", "x"]].to_numpy(), radius=3)[0]:
            owner.setdefault(block["track_id"].iloc[i], []).append(t["track_id"].iloc[j])
    motion = truth.groupby("track_id")["motion"].first()
    particle = {k: pd.Series(v).mode().iloc[0] for k, v in owner.items() if len(v) >= 20}
    brownian = [k for k, p in particle.items() if motion[p] == "brownian"]
    chosen = summary.set_index("track_id").loc[brownian]
    d = np.average(chosen["diffusion_um2_s"], weights=chosen["n_frames"])
    # Against the same MSD fit on each particle's true positions (in µm at the demo's 0.1625 µm
    # pixel), so that the luck of 20-30 short tracks (the fit's own scatter, +18 % from the
    # simulator's nominal D on live_w1) is not charged to the tracker: measured +0.2 % and +6.7 %.
    visible = truth[truth["visible"]]
    true_d = np.average([motion_summary(t["frame"].to_numpy(), t[["y", "x"]].to_numpy() * 0.1625,
                                        frame_interval_s=1.0)["diffusion_um2_s"]
                         for t in (visible[visible["track_id"] == particle[k]] for k in brownian)],
                        weights=chosen["n_frames"])
    assert len(chosen) >= 15 and d == pytest.approx(true_d, rel=0.12)
    if sample == "live_w2":  # the CD63 channel alone: no cells, cell columns empty
        assert tracks["cell_id"].isna().all() and np.isnan(row["n_cells"])
    else:
        cells = pd.read_csv(base / "cell_tracks.csv")
        assert len(cells) == 4 and (cells["n_frames"] == 40).all()  # four static cells, whole movie
        assert summary["location"].isin(["inside", "at_cell", "outside"]).all()
        # Internalised tracks against the truth: each true track of 3 frames or more located by
        # the most frequent place of its points in the true cells (measured 49.5 % vs 48.3 %).
        assert abs(row["pct_internalised_tracks"] - _true_pct_internalised(demo_run, sample, truth)) <= 5


@pytest.mark.parametrize("sample", SECTIONS)
def test_sections_against_ground_truth(demo_run, sample):
    truth = json.loads((demo_run / "demo" / "truth" / sample / "summary.json").read_text())
    summary = pd.read_csv(demo_run / "results" / "histology" / sample / "summary.csv").iloc[0]
    assert summary["marker"] == sample.split("_")[1]
    assert abs(summary["positive_pct"] - truth["positive_pct"]) <= 3.0
    assert abs(summary["h_score"] - truth["h_score"]) <= 0.10 * truth["h_score"]
    assert summary["tissue_area_mm2"] == pytest.approx(truth["tissue_area_mm2"], rel=0.05)
    cells = pd.read_csv(demo_run / "results" / "histology" / sample / "cells.csv")
    true_cells = pd.read_csv(demo_run / "demo" / "truth" / sample / "cells.csv")
    _, _, _, f1 = match_points(cells[["y", "x"]].to_numpy(), true_cells[["y", "x"]].to_numpy(), radius=4)
    assert f1 >= 0.9, f"{sample}: cell detection F1 {f1:.3f}"
    assert summary["n_positive"] == cells["positive"].sum()


def _bli_errors(run):
    """Per ROI of every demo acquisition: measured against true flux."""
    rows = []
    for sample in ACQUISITIONS:
        rois = pd.read_csv(run / "results" / "bli" / sample / "rois.csv")
        truth = pd.read_csv(run / "demo" / "truth" / sample / "rois.csv")
        rows.append(rois.merge(truth[["subject", "roi", "total_flux_p_s"]], on=["subject", "roi"],
                               suffixes=("", "_true")).assign(sample=sample, group="PBS" if sample[1] in "123"
                                                              else "exosome"))
    table = pd.concat(rows, ignore_index=True)
    for column in ("total_flux_p_s", "bkg_corrected_flux_p_s"):
        table[f"{column}_error"] = table[column] / table["total_flux_p_s_true"] - 1
    return table


def test_bli_flux_against_ground_truth(demo_run):
    table = _bli_errors(demo_run)
    assert set(table["roi_source"]) == {"rois.csv", "AnalyzedClickInfo.txt", "auto"}
    assert set(table["source"]) == {"luminescent.TIF", "luminescentFloatCorrected.TIF"}
    assert table.loc[table["sample"] == "m1_d21_long", "saturated"].any()
    ok = table[~table["saturated"]]
    # Every ROI of every acquisition is checked: none may be lost in the merge with the truth.
    assert len(ok) == 2 * (len(ACQUISITIONS) + 2) - 1
    given = ok[ok["roi_source"] != "auto"]
    auto = ok[ok["roi_source"] == "auto"]
    # Total flux includes the body's autoluminescence under the ROI (~4e4 p/s over a tumour's):
    # within 2 % of the source where that is below 1 %; every ROI is checked corrected below.
    tumours = given[(given["roi"] == "tumor") & (given["total_flux_p_s_true"] >= 5e6)]
    assert len(tumours) >= 6 and (tumours["total_flux_p_s_error"].abs() <= 0.02).all(), tumours
    # Background-corrected flux, every ROI: from 1e6 p/s within 2 % (given ROIs; measured <= 1.5 %)
    # or 10 % (automatic; measured <= 8.2 %); dimmer ones (the PBS nodes) within 20 %; any of them
    # may instead be within its own noise (the 3-sd detection limit: a 5 s, f/4 exposure's is 2e6
    # p/s), or flagged below detection; never negative.
    detected = ok[~ok["below_detection"]]
    assert (detected["bkg_corrected_flux_p_s"] > 0).all()
    assert ok.loc[ok["below_detection"], "bkg_corrected_flux_p_s"].isna().all()
    bright = detected["total_flux_p_s_true"] >= 1e6
    share = np.where(detected["roi_source"] == "auto", 0.10, 0.02)
    error = (detected["bkg_corrected_flux_p_s"] - detected["total_flux_p_s_true"]).abs()
    allowed = np.maximum(share * detected["total_flux_p_s_true"], detected["detection_limit_p_s"])
    assert bright.sum() >= 20 and (error[bright] <= allowed[bright]).all(), detected[bright]
    dim = detected[~bright]
    miss = (dim["bkg_corrected_flux_p_s"] - dim["total_flux_p_s_true"]).abs()
    assert len(dim) >= 6 and (dim["group"] == "PBS").sum() >= 4
    assert (miss <= np.maximum(0.2 * dim["total_flux_p_s_true"], dim["detection_limit_p_s"])).all(), dim


def test_bli_timecourse_and_growth_curves(demo_run):
    course = pd.read_csv(demo_run / "results" / "tables" / "timecourse.csv")
    tumour = course[(course["subject"] == "m3") & (course["roi"] == "tumor")].sort_values("timepoint")
    assert tumour["timepoint"].tolist() == [7, 14, 21]
    assert tumour["fold_change"].iloc[0] == 1.0
    assert tumour["fold_change"].iloc[-1] == pytest.approx(
        tumour["total_flux_p_s"].iloc[-1] / tumour["total_flux_p_s"].iloc[0])
    assert set(course.loc[course["subject"] == "m5", "group"]) == {"exosome"}
    assert "background" not in set(course["roi"])
    groups = pd.read_csv(demo_run / "results" / "tables" / "groups.csv")
    node = groups[(groups["metric"] == "lymph_node_total_flux_p_s") & (groups["timepoint"] == "21")]
    assert node.set_index("group").loc["exosome", "mean"] > 10 * node.set_index("group").loc["PBS", "mean"]
    assert (demo_run / "results" / "plots" / "bli.png").stat().st_size > 10_000


@pytest.mark.parametrize("sample", VOLUMES)
def test_lymph_nodes_against_ground_truth(demo_run, sample):
    truth = pd.read_csv(demo_run / "demo" / "truth" / sample / "node.csv").iloc[0]
    node = np.load(demo_run / "demo" / "truth" / sample / "node.npy")
    base = demo_run / "results" / "photoacoustic" / sample
    regions = pd.read_csv(base / "regions.csv").set_index("region")
    mask = tifffile.imread(base / "node.tif").astype(bool)
    assert 2 * (mask & node).sum() / (mask.sum() + node.sum()) >= 0.85
    # The oval under-reads the demo's wobbly outline: measured -13 % to +3 % over m1-m6.
    assert regions.loc["node", "volume_mm3"] == pytest.approx(truth["volume_mm3"], rel=0.15)
    assert abs(regions.loc["node", "so2_mean"] - truth["so2_mean"]) <= 0.05
