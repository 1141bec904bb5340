"""Bring your own segmentation: label images named in the sheet replace exotrack's, through the
real workflow; the same labels give the same per-cell counts whoever made them."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from conftest import run_snakemake
from exotrack import io
from exotrack.demo import CHANNELS, simulate_uptake_field, write_ome_tiff
from exotrack.labels import read_label_image


def _sheet(workdir, rows):
    pd.DataFrame(rows).to_csv(workdir / "samples.tsv", sep="\t", index=False)


def test_labels_in_the_sheet_give_the_counts_of_exotrack_segmentation(tmp_path):
    field = simulate_uptake_field(shape=(256, 256), n_cells=5, puncta_per_cell=30, seed=4)
    write_ome_tiff(tmp_path / "field.ome.tif", field.image, axes="CYX", channel_names=CHANNELS,
                   pixel_size_um=field.pixel_size_um)
    own = {"sample": "own", "modality": "fluorescence", "path": "field.ome.tif", "group": "A"}
    _sheet(tmp_path, [own])
    run_snakemake(tmp_path, "--config", "samples=samples.tsv")
    result = tmp_path / "results" / "fluorescence"
    cells_own = pd.read_csv(result / "own" / "cells.csv")
    assert len(cells_own) >= 3

    # The same labels as another tool would number them: cells and nuclei shuffled independently.
    labels = tifffile.imread(result / "own" / "labels.tif")
    nuclei = tifffile.imread(result / "own" / "nuclei.tif")
    rng = np.random.default_rng(0)
    cell_ids, nucleus_ids = rng.permutation(np.arange(1, 1000))[:labels.max() + 1], rng.permutation(999) + 1
    cell_ids[0], nucleus_ids[0] = 0, 0
    tifffile.imwrite(tmp_path / "cp_cells.tif", cell_ids[labels].astype(np.uint16))
    tifffile.imwrite(tmp_path / "sd_nuclei.tif", nucleus_ids[nuclei].astype(np.int32))
    # One cell left out of the labels: the files, not a segmentation of the image, decide.
    tifffile.imwrite(tmp_path / "fewer.tif", np.where(labels == 1, 0, cell_ids[labels]).astype(np.uint16))
    tifffile.imwrite(tmp_path / "float.tif", rng.random(labels.shape).astype(np.float32))
    tifffile.imwrite(tmp_path / "small.tif", labels[:100, :100].astype(np.uint16))
    given = {**own, "nuclei_labels": "sd_nuclei.tif", "cell_labels": "cp_cells.tif"}
    _sheet(tmp_path, [own, {**given, "sample": "given"},
                      {**given, "sample": "nuclei_only", "cell_labels": ""},
                      {**given, "sample": "fewer", "cell_labels": "fewer.tif"},
                      {**given, "sample": "bad_dtype", "cell_labels": "float.tif"},
                      {**given, "sample": "bad_shape", "nuclei_labels": "small.tif"}])
    run_snakemake(tmp_path, "--config", "samples=samples.tsv")
    cells_given = pd.read_csv(result / "given" / "cells.csv")
    # Matched by position: the numbering differs, the cells do not.
    key = ["y", "x"]
    merged = cells_own.round({"y": 6, "x": 6}).merge(cells_given.round({"y": 6, "x": 6}), on=key,
                                                     suffixes=("_own", "_given"))
    assert len(merged) == len(cells_own) == len(cells_given)
    for column in ("puncta_count", "area_um2", "nucleus_area_um2", "exosome_integrated"):
        np.testing.assert_allclose(merged[f"{column}_given"], merged[f"{column}_own"], rtol=1e-6)
    metrics = json.loads((result / "given" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["segmentation"].startswith("given: ")
    assert json.loads((result / "nuclei_only" / "metrics.json").read_text())["status"] == "ok"
    table = pd.read_csv(tmp_path / "results" / "tables" / "samples.csv").set_index("sample")
    assert table.loc["own", "n_cells"] == table.loc["given", "n_cells"] == table.loc["fewer", "n_cells"] + 1
    assert "cells label image float.tif holds float32 values, not labels" in table.loc["bad_dtype", "status"]
    assert "nuclei label image small.tif has shape (100, 100)" in table.loc["bad_shape", "status"]


def test_label_image_shapes(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", np.arange(12, dtype=np.uint8).reshape(3, 4))
    movie = read_label_image(tmp_path / "one.tif", shape_tzyx=(5, 1, 3, 4), role="cells")
    assert movie.shape == (5, 1, 3, 4) and (movie[4, 0] == movie[0, 0]).all()  # one frame serves all
    tifffile.imwrite(tmp_path / "neg.tif", -np.ones((3, 4), np.int16))
    with pytest.raises(io.InputError, match="negative"):
        read_label_image(tmp_path / "neg.tif", shape_tzyx=(1, 1, 3, 4), role="cells")
    with pytest.raises(io.InputError, match=r"\(T, Z, Y, X\) = \(2, 1, 4, 3\)"):
        read_label_image(tmp_path / "one.tif", shape_tzyx=(2, 1, 4, 3), role="nuclei")
