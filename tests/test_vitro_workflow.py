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
    assert exo.loc["membrane_exo", "migrated_cells_per_field"] > exo.loc["membrane_pbs", "migrated_cells_per_field"]
    for png in ("markers", "wound", "transwell"):
        assert (tmp_path / "results" / "plots" / f"{png}.png").exists()
