"""The in-vitro assays through the real Snakemake workflow (markers, wound, transwell)."""

import pandas as pd

from conftest import run_snakemake
from exotrack.demo_vitro import write_demo_vitro


def test_vitro_study_end_to_end(tmp_path):
    rows = write_demo_vitro(tmp_path / "data", seed=0)
    sheet = tmp_path / "data" / "samples.tsv"
    pd.DataFrame(rows).to_csv(sheet, sep="\t", index=False)
    run_snakemake(tmp_path, "--config", f"samples={sheet}")
    samples = pd.read_csv(tmp_path / "results" / "tables" / "samples.csv")
    assert (samples["status"] == "ok").all(), samples[["sample", "status"]]
    assert samples["CD206_pct_positive"].notna().sum() == 4
    markers = pd.read_csv(tmp_path / "results" / "tables" / "markers.csv")
    assert set(markers["gate"]) == {"control"} and len(markers) == 8
    course = pd.read_csv(tmp_path / "results" / "tables" / "wound_timecourse.csv")
    assert (course.groupby("sample")["time_h"].min() == 0).all()
    exo = samples.set_index("sample")
    assert exo.loc["scratch_exo", "closure_rate_um_h"] > exo.loc["scratch_pbs", "closure_rate_um_h"]
    migrated = exo["migrated_cells_per_field"]
    assert migrated["membrane_exo"] > migrated["membrane_pbs"]
    gates = pd.read_csv(tmp_path / "results" / "tables" / "markers_gates.csv")
    assert gates["gate"].str.startswith("control group 'PBS'").all()
    wound_groups = pd.read_csv(tmp_path / "results" / "tables" / "wound_groups.csv")
    assert set(wound_groups["timepoint"].astype(str)) >= {"0.0", "12.0", "auc"}
    for png in ("markers", "markers_uptake", "wound", "wound_timecourse", "transwell"):
        assert (tmp_path / "results" / "plots" / f"{png}.png").exists()


def test_bad_vitro_input_is_named_and_other_samples_go_on(tmp_path):
    from exotrack.demo_vitro import simulate_marker_well, simulate_scratch_series, write_marker_well
    import tifffile

    rows = []
    for sample, markers in (("well_ok", "CD206,iNOS"), ("well_no_arg1", "CD206,Arg1")):
        well = simulate_marker_well(treated=True, shape=(256, 256), seed=5)
        rows.append({"sample": sample, "modality": "fluorescence", "group": "PBS",
                     "path": write_marker_well(tmp_path, sample, well).as_posix(),
                     "channels": f"nuclei=Hoechst;exosomes=CD63-RFP;cells=CellMask;markers={markers}"})
    series = simulate_scratch_series(kind="phase", shape=(192, 192), seed=2)
    for sample, frames in (("scratch_ok", slice(None)), ("scratch_no_t0", slice(1, None))):
        folder = tmp_path / sample
        folder.mkdir()
        for frame, t in zip(series.frames[frames], series.times_h[frames]):
            tifffile.imwrite(folder / f"{sample}_{t:g}h.tif", frame)
        rows.append({"sample": sample, "modality": "wound", "group": "PBS", "path": sample, "pixel_size_um": 1.3})
    pd.DataFrame(rows).to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    run_snakemake(tmp_path, "--config", "samples=samples.tsv")
    table = pd.read_csv(tmp_path / "results" / "tables" / "samples.csv").set_index("sample")
    assert table.loc["well_ok", "status"] == "ok" and table.loc["scratch_ok", "status"] == "ok"
    status = table.loc["well_no_arg1", "status"]
    assert status.startswith("error:") and "Arg1" in status and "not found" in status
    status = table.loc["scratch_no_t0", "status"]
    assert status.startswith("error:") and "no time 0" in status and "4 h" in status
    markers = pd.read_csv(tmp_path / "results" / "tables" / "markers.csv")
    assert set(markers["sample"]) == {"well_ok"}
    log = (tmp_path / "logs" / "analyse_wound" / "scratch_no_t0.log").read_text()
    assert "scratch_no_t0" in log
