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


def _write(tmp_path, text, encoding="utf-8", name="s.tsv"):
    (tmp_path / "a.tif").write_bytes(b"x")
    (tmp_path / "Plate #3").mkdir(exist_ok=True)
    (tmp_path / "Plate #3" / "well A1.ome.tif").write_bytes(b"x")
    (tmp_path / name).write_bytes(text.encode(encoding))
    return tmp_path / name


def test_hash_is_data_not_a_comment(tmp_path):
    sheet = load_sample_sheet(_write(tmp_path, "sample\tmodality\tpath\tgroup\n"
                                               "a\tfluorescence\tPlate #3/well A1.ome.tif\texosome #2\n"
                                               "b\tfluorescence\ta.tif\texosome\n"), SCHEMA)
    assert sheet["group"].tolist() == ["exosome #2", "exosome"]  # two groups, not one
    assert sheet.loc["a", "path"].endswith("Plate #3/well A1.ome.tif")


def test_excel_layouts_read_as_meant(tmp_path):
    """A tab ending every row (header included or not) and a row of only tabs, as Excel writes."""
    for header_tab in ("", "\t"):
        text = (f"sample\tmodality\tpath\tgroup{header_tab}\r\n"
                "a\tfluorescence\ta.tif\tPBS\t\r\n\t\t\t\t\r\nb\tfluorescence\ta.tif\texosome\t\r\n")
        sheet = load_sample_sheet(_write(tmp_path, text), SCHEMA)
        assert sheet[["sample", "modality", "path", "group"]].values.tolist() == [
            ["a", "fluorescence", str(tmp_path / "a.tif"), "PBS"],
            ["b", "fluorescence", str(tmp_path / "a.tif"), "exosome"]]
    with pytest.raises(SheetError, match="row 2 has 5 cells but the header names 4 columns"):
        load_sample_sheet(_write(tmp_path, "sample\tmodality\tpath\tgroup\na\tfluorescence\ta.tif\tPBS\tx\n"),
                          SCHEMA)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "cp1252"])
def test_sheets_in_excels_encodings_are_read(tmp_path, encoding):
    sheet = load_sample_sheet(_write(tmp_path, "sample\tmodality\tpath\tgroup\na\tfluorescence\ta.tif\tcafé\n",
                                     encoding=encoding), SCHEMA)
    assert sheet.loc["a", "group"] == "café"


def test_undecodable_sheet_says_save_as_utf8(tmp_path):
    (tmp_path / "s.tsv").write_bytes(b"sample\tmodality\tpath\na\tfluorescence\t\x81\x8d.tif\n")
    with pytest.raises(SheetError, match="save the sheet as UTF-8"):
        load_sample_sheet(tmp_path / "s.tsv", SCHEMA)


def test_ids_are_compared_as_stripped_and_without_case(tmp_path):
    path = _write(tmp_path, "sample\tmodality\tpath\nh_good\tfluorescence\ta.tif\nh_good \tfluorescence\ta.tif\n"
                            "f_good\tfluorescence\ta.tif\nF_GOOD\tfluorescence\ta.tif\n")
    with pytest.raises(SheetError) as error:
        load_sample_sheet(path, SCHEMA)
    assert "sample id 'h_good' is used more than once (rows 2, 3)" in str(error.value)
    assert "sample ids 'f_good' and 'F_GOOD' (rows 4, 5) differ only in case" in str(error.value)
    sheet = load_sample_sheet(_write(tmp_path, "sample\tmodality\tpath\n h_good \tfluorescence\ta.tif \n"), SCHEMA)
    assert sheet.index.tolist() == ["h_good"] and sheet["sample"].tolist() == ["h_good"]


def test_type_errors_use_the_right_article():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    with pytest.raises(SheetError) as error:
        validate_config({"samples": "x", "batch_size": "many"}, schema)
    assert "'many' should be an integer" in str(error.value)
