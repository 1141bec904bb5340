"""Bad input through the real workflow: bad samples are recorded, good ones finish; sheet and
config errors stop the run before any job, naming the row and column."""
import numpy as np
import pandas as pd
import tifffile

from conftest import run_snakemake
from exotrack.demo import CHANNELS, simulate_uptake_field, write_ome_tiff


def _sheet(workdir, rows):
    pd.DataFrame(rows).to_csv(workdir / "samples.tsv", sep="\t", index=False)


def test_bad_samples_do_not_stop_good_ones(tmp_path):
    field = simulate_uptake_field(shape=(256, 256), n_cells=3, seed=3)
    write_ome_tiff(tmp_path / "good.ome.tif", field.image, axes="CYX", channel_names=CHANNELS,
                   pixel_size_um=field.pixel_size_um)
    write_ome_tiff(tmp_path / "nochannel.ome.tif", field.image[:2], axes="CYX",
                   channel_names=["Hoechst", "GFP"], pixel_size_um=field.pixel_size_um)
    (tmp_path / "notanimage.tif").write_text("this is a text file, not a TIFF")
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((3, 64, 64), np.uint16), imagej=True,
                     metadata={"axes": "CYX"}, resolution=(1 / 0.16, 1 / 0.16))
    tifffile.imwrite(tmp_path / "movie.tif", np.stack([field.image[1]] * 3), imagej=True,
                     metadata={"axes": "TYX"}, resolution=(1 / 0.16, 1 / 0.16))
    _sheet(tmp_path, [
        {"sample": "good", "modality": "fluorescence", "path": "good.ome.tif", "group": "A"},
        {"sample": "movie_no_interval", "modality": "fluorescence", "path": "movie.tif", "group": "A",
         "channels": "exosomes=0"},
        {"sample": "missing_channel", "modality": "fluorescence", "path": "nochannel.ome.tif", "group": "A"},
        {"sample": "not_an_image", "modality": "fluorescence", "path": "notanimage.tif", "group": "B"},
        {"sample": "blank", "modality": "fluorescence", "path": "empty.tif", "group": "B",
         "channels": "nuclei=0;exosomes=1;cells=2"},
        {"sample": "mouse1", "modality": "bli", "path": "good.ome.tif", "group": "B"},
    ])
    run_snakemake(tmp_path, "--config", "samples=samples.tsv")
    table = pd.read_csv(tmp_path / "results" / "tables" / "samples.csv").set_index("sample")
    assert table.loc["good", "status"] == "ok"
    assert table.loc["good", "n_cells"] >= 2
    assert "CD63-RFP" in table.loc["missing_channel", "status"] and "not found" in table.loc["missing_channel", "status"]
    assert "cannot read notanimage.tif" in table.loc["not_an_image", "status"]
    assert "empty" in table.loc["blank", "status"]
    assert "radiance TIFF needs bli.radiance_tiff.fov_cm" in table.loc["mouse1", "status"]
    assert "frame interval" in table.loc["movie_no_interval", "status"]
    assert (tmp_path / "results" / "fluorescence" / "movie_no_interval" / "tracks.csv").exists()
    assert (tmp_path / "results" / "qc" / "not_an_image.png").exists()


def test_sheet_errors_name_row_and_column(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"")
    _sheet(tmp_path, [
        {"sample": "ok_1", "modality": "fluorescence", "path": "a.tif", "timepoint": "2"},
        {"sample": "bad id", "modality": "flourescence", "path": "nowhere.tif", "timepoint": "day 3"},
        {"sample": "ok_1", "modality": "fluorescence", "path": "a.tif", "timepoint": "1"},
    ])
    result = run_snakemake(tmp_path, "--config", "samples=samples.tsv", check=False)
    err = result.stdout + result.stderr
    assert result.returncode != 0
    assert "row 3 (sample 'bad id'), column 'modality': 'flourescence' is not one of" in err
    assert "row 3 (sample 'bad id'), column 'sample'" in err
    assert "column 'timepoint': 'day 3' is not valid here: expected a number" in err
    assert "column 'path': 'nowhere.tif' does not exist" in err
    assert "sample id 'ok_1' is used more than once (rows 2, 4)" in err
    assert "common.smk" not in err and "Traceback" not in err  # the problem in words, nothing else
    assert not (tmp_path / "results").exists()


def test_sheet_layouts_that_crashed_planning_are_named(tmp_path):
    """ids equal but for a trailing space (a pandas traceback before), and a value past the header."""
    (tmp_path / "a.tif").write_bytes(b"x")
    (tmp_path / "samples.tsv").write_text("sample\tmodality\tpath\nh_good\tfluorescence\ta.tif\n"
                                          "h_good \tfluorescence\ta.tif\nh_two\tfluorescence\ta.tif\tPBS\n")
    result = run_snakemake(tmp_path, "--config", "samples=samples.tsv", check=False)
    err = result.stdout + result.stderr
    assert result.returncode != 0
    assert "sample id 'h_good' is used more than once (rows 2, 3)" in err
    assert "row 4 has 4 cells but the header names 3 columns" in err
    assert "Traceback" not in err and "common.smk" not in err


def test_config_errors_are_named(tmp_path):
    result = run_snakemake(tmp_path, "--config", "fluorescence={'snr_threshold': 'high', 'colour': 1}",
                           check=False)
    err = result.stdout + result.stderr
    assert result.returncode != 0
    assert "fluorescence.snr_threshold: 'high' should be a number" in err
    assert "unknown setting(s) ('colour' was unexpected)" in err
    assert "common.smk" not in err


def test_config_type_error_reads_as_english(tmp_path):
    result = run_snakemake(tmp_path, "--config", "batch_size=many", check=False)
    assert "batch_size: 'many' should be an integer" in result.stdout + result.stderr


def test_missing_sheet_column(tmp_path):
    pd.DataFrame([{"sample": "a", "path": "a.tif"}]).to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    result = run_snakemake(tmp_path, "--config", "samples=samples.tsv", check=False)
    assert result.returncode != 0
    assert "required column(s) missing: modality" in result.stdout + result.stderr


def test_lint_is_clean(tmp_path):
    result = run_snakemake(tmp_path, "--lint", check=False)
    text = result.stdout + result.stderr
    assert "Lints for rule analyse_fluorescence" in text  # the linter really ran over our rules
    # Environment advice (conda/container) is accepted; anything else is a finding.
    findings = [line for line in text.splitlines() if line.strip().startswith("*")
                and "conda environment or container" not in line]
    assert not findings, text
