"""Real microscopy through the workflow (images read from ../shared/data, never copied)."""
import numpy as np
import pandas as pd
import tifffile
from PIL import Image

from conftest import run_snakemake, shared


def test_hela_lysosomes_through_the_workflow(tmp_path):
    hela = shared("hela-cells.tif")
    pd.DataFrame([{"sample": "hela", "modality": "fluorescence", "path": str(hela),
                   "channels": "nuclei=2;exosomes=0;cells=1"}]).to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    run_snakemake(tmp_path, "--config", "samples=s.tsv")
    row = pd.read_csv(tmp_path / "results" / "tables" / "samples.csv").iloc[0]
    assert row["status"] == "ok"
    assert row["n_cells"] == 4  # four nuclei lie in the field
    cells = pd.read_csv(tmp_path / "results" / "fluorescence" / "hela" / "cells.csv")
    assert (cells["area_um2"] > 2 * cells["nucleus_area_um2"]).all()  # cytoplasm, not just nuclei
    puncta = pd.read_csv(tmp_path / "results" / "fluorescence" / "hela" / "puncta.csv")
    assert 300 < len(puncta) < 3000
    # Nothing in the blacked-out corner.
    assert not ((puncta["y"] > 480) & (puncta["x"] > 500)).any()
    assert row["pct_puncta_in_cells"] > 50
    qc = np.asarray(Image.open(tmp_path / "results" / "qc" / "hela.png"))
    assert qc.shape[1] == 672 and qc.std() > 20


def test_cell_painting_field_with_pixel_size_from_sheet(tmp_path):
    field = shared("IXMtest_A02_s9.tif")
    pd.DataFrame([{"sample": "ixm", "modality": "fluorescence", "path": str(field), "pixel_size_um": "0.656",
                   "channels": "nuclei=0;exosomes=2;cells=1"}]).to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    run_snakemake(tmp_path, "--config", "samples=s.tsv", "fluorescence={'spot_diameter_um': 1.5, 'nucleus_diameter_um': 12}")
    row = pd.read_csv(tmp_path / "results" / "tables" / "samples.csv").iloc[0]
    assert row["status"] == "ok", row["status"]
    labels = tifffile.imread(tmp_path / "results" / "fluorescence" / "ixm" / "labels.tif")
    assert labels.shape == (395, 695)
    assert row["n_cells"] >= 20  # 25 nuclei by eye, a few cut by the border
    assert row["pct_puncta_in_cells"] > 50


def test_migrating_nuclei_give_plausible_cell_tracks(tmp_path):
    movie = shared("cancer_cell_migration_crop.tif")  # 48 frames, time axis stored as Q
    pd.DataFrame([{"sample": "migration", "modality": "fluorescence", "path": str(movie),
                   "channels": "nuclei=0"}]).to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    run_snakemake(tmp_path, "--config", "samples=s.tsv",
                  "fluorescence={'pixel_size_um': 0.4, 'frame_interval_s': 600}")
    base = tmp_path / "results" / "fluorescence" / "migration"
    tracks = pd.read_csv(base / "cell_tracks.csv")
    cells = pd.read_csv(base / "cells.csv")
    per_frame = cells.groupby("frame").size()
    assert len(per_frame) == 48 and per_frame.median() >= 10
    assert (tracks["n_frames"] >= 40).sum() >= 3  # several nuclei followed through the movie
    assert tracks["n_frames"].median() >= 5
    long = tracks[tracks["n_frames"] >= 10]
    assert long["straightness"].between(0, 1).all()
    assert long["mean_speed_um_min"].between(0.005, 1.0).all()  # µm/min, cells crawl
    assert pd.read_csv(base / "tracks.csv").empty  # no exosome channel, no puncta tracks
    row = pd.read_csv(tmp_path / "results" / "tables" / "samples.csv").iloc[0]
    assert row["status"] == "ok" and row["cell_mean_speed_um_min"] > 0
