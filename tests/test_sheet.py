"""Sample sheets: validation, overrides and writing a sheet from a folder."""
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import REPO
from exotrack import fluorescence
from exotrack.sheet import SheetError, load_sample_sheet, parse_channels, parse_pixel_size, validate_config

SCHEMA = REPO / "workflow" / "schemas" / "samples.schema.yaml"


def test_relative_paths_resolve_against_the_sheet(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.tif").write_bytes(b"x")
    pd.DataFrame([{"sample": "a", "modality": "fluorescence", "path": "data/a.tif"}]).to_csv(
        tmp_path / "s.tsv", sep="\t", index=False)
    sheet = load_sample_sheet(tmp_path / "s.tsv", SCHEMA)
    assert sheet.loc["a", "path"] == str(tmp_path / "data" / "a.tif")
    assert sheet.loc["a", "group"] == ""


def test_overrides_parse_and_reject():
    assert parse_channels("nuclei=DAPI; exosomes=1") == {"nuclei": "DAPI", "exosomes": "1"}
    with pytest.raises(ValueError, match="unknown channel role 'membrane'"):
        parse_channels("membrane=CellMask")
    assert parse_pixel_size("0.2") == (0.2, 0.2, 0.2)
    assert parse_pixel_size("1, 0.2, 0.2") == (1.0, 0.2, 0.2)
    with pytest.raises(ValueError, match="positive"):
        parse_pixel_size("0.2,0.2")


def test_config_schema_defaults_match_the_library():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    filled = validate_config({"samples": "x.tsv"}, schema)
    assert filled["fluorescence"] == fluorescence.DEFAULTS
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    assert validate_config(shipped, schema)["fluorescence"] == fluorescence.DEFAULTS
    with pytest.raises(SheetError, match="fluorescence.spot_diameter_um: -1 is out of range"):
        validate_config({"samples": "x", "fluorescence": {"spot_diameter_um": -1}}, schema)


def test_samples_command_writes_a_valid_sheet(tmp_path):
    for group in ("PBS", "exosome"):
        for mouse in (1, 2):
            (tmp_path / group).mkdir(exist_ok=True)
            (tmp_path / group / f"m{mouse}_d{7 * mouse}.tif").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    out = subprocess.run([sys.executable, "-m", "exotrack.cli", "samples", str(tmp_path), "--pattern",
                          "{group}/{subject}_d{timepoint}.tif"], capture_output=True, text=True, check=True)
    (tmp_path / "samples.tsv").write_text(out.stdout)
    sheet = load_sample_sheet(tmp_path / "samples.tsv", SCHEMA)
    assert sorted(sheet["sample"]) == ["PBS_m1_d7", "PBS_m2_d14", "exosome_m1_d7", "exosome_m2_d14"]
    assert sheet.loc["exosome_m2_d14", ["group", "subject", "timepoint"]].tolist() == ["exosome", "m2", "14"]
    bad = subprocess.run([sys.executable, "-m", "exotrack.cli", "samples", str(tmp_path), "--pattern", "{group}/*.png"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no file under" in bad.stderr
