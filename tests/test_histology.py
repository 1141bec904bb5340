"""Histology against known sections: stains, classes, tiles, fluorescence, real IHC, bad input."""
import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from conftest import run_snakemake, shared_if_present
from exotrack import histology as h
from exotrack.demo_histology import simulate_section, write_section_tiff


def _analyse(path, pixel_size_um=0.5, **options):
    section = h.open_section(path)
    try:
        roles = None if section.brightfield else {"nuclei": 0, "marker": 1}
        return h.analyse_section(section, roles=roles, pixel_size_um=pixel_size_um, options=options)
    finally:
        section.close()


def test_deconvolution_recovers_known_stain_amounts():
    rng = np.random.default_rng(0)
    amounts = rng.uniform(0, 1, size=(50, 2))
    matrix = h.stain_matrix()
    od = amounts[:, :1] * matrix[0] + amounts[:, 1:] * matrix[1]
    rgb = 255.0 * 10 ** (-od)
    stains = h.deconvolve(h.optical_density(rgb, np.full(3, 255.0)), matrix)
    np.testing.assert_allclose(stains[:, :2], amounts, atol=1e-4)
    np.testing.assert_allclose(stains[:, 2], 0, atol=1e-4)


def test_stain_vectors_are_estimated_from_the_slide():
    hema, dab = np.array([0.55, 0.75, 0.37]), np.array([0.35, 0.60, 0.72])  # not QuPath's defaults
    section = simulate_section(fractions=(0.2, 0.15, 0.1), stain_vectors=(hema, dab), seed=3)
    od = h.optical_density(section.image.astype(np.float32), np.array([242.0, 240.0, 236.0]))
    found_h, found_dab = h.estimate_stain_vectors(od[section.tissue])
    assert h._angle_deg(found_h, hema) < 4 and h._angle_deg(found_dab, dab) < 4
    assert h._angle_deg(found_h, h.HEMATOXYLIN) > 6  # the defaults would have been wrong
    # A slide with one stain only: no second stain to find, the defaults stay.
    plain = simulate_section(fractions=(0, 0, 0), stain_vectors=(h.HEMATOXYLIN, h.HEMATOXYLIN), seed=4)
    od = h.optical_density(plain.image.astype(np.float32), np.array([242.0, 240.0, 236.0]))
    _, source = h.choose_stain_vectors(od[plain.tissue], "auto")
    assert source.startswith("default")


@pytest.mark.parametrize("seed, fractions, stains", [
    (1, (0.2, 0.1, 0.05), None),
    (2, (0.05, 0.02, 0.01), None),
    (3, (0.3, 0.2, 0.15), (np.array([0.55, 0.75, 0.37]), np.array([0.35, 0.60, 0.72]))),
])
def test_brightfield_positive_percentage_and_h_score(tmp_path, seed, fractions, stains):
    kwargs = {"stain_vectors": stains} if stains else {}
    section = simulate_section(fractions=fractions, seed=seed, **kwargs)
    write_section_tiff(tmp_path / "s.tif", section.image, pixel_size_um=0.5)
    cells, summary, view = _analyse(tmp_path / "s.tif")
    row = summary.iloc[0]
    assert abs(row["positive_pct"] - section.positive_pct) <= 3.0
    assert abs(row["h_score"] - section.h_score) <= 0.1 * section.h_score
    assert row["n_cells"] == pytest.approx(len(section.cells), rel=0.05)
    assert row["tissue_area_mm2"] == pytest.approx(section.tissue.sum() * 0.25e-6, rel=0.05)
    assert row["positive_cells_per_mm2"] == pytest.approx(row["n_positive"] / row["tissue_area_mm2"])
    assert (cells["class"] > 0).sum() == row["n_positive"]


def test_immunofluorescence_section(tmp_path):
    section = simulate_section(fractions=(0.15, 0.1, 0.05), kind="fluorescence", seed=5)
    tifffile.imwrite(tmp_path / "if.tif", section.image, photometric="minisblack", metadata={"axes": "CYX"})
    _, summary, view = _analyse(tmp_path / "if.tif")
    assert view.matrix is None and view.dark > 90  # camera offset measured on the bare slide
    assert abs(summary["positive_pct"].iloc[0] - section.positive_pct) <= 3.0
    assert abs(summary["h_score"].iloc[0] - section.h_score) <= 0.1 * section.h_score


def test_tiles_give_the_same_cells_as_one_piece(tmp_path):
    section = simulate_section(shape=(1100, 900), fractions=(0.2, 0.1, 0.05), seed=6)
    write_section_tiff(tmp_path / "pyramid.tif", section.image, pixel_size_um=0.5, tile=128, levels=3)
    whole, whole_summary, _ = _analyse(tmp_path / "pyramid.tif", tile_px=4096)
    tiled, tiled_summary, _ = _analyse(tmp_path / "pyramid.tif", tile_px=256)  # 20 tiles
    # Every cell once: no duplicates along tile seams, none lost.
    assert abs(len(tiled) - len(whole)) <= 0.01 * len(whole)
    from exotrack.evaluate import match_points

    _, _, _, f1 = match_points(tiled[["y", "x"]].to_numpy(), whole[["y", "x"]].to_numpy(), radius=2)
    assert f1 > 0.98
    assert abs(tiled_summary["positive_pct"].iloc[0] - whole_summary["positive_pct"].iloc[0]) < 1.0
    assert tiled_summary["tissue_area_mm2"].iloc[0] == pytest.approx(whole_summary["tissue_area_mm2"].iloc[0])


def test_jpeg_needs_a_pixel_size_and_bad_files_are_named(tmp_path):
    section = simulate_section(shape=(256, 256), seed=7)
    Image.fromarray(section.image).save(tmp_path / "field.jpg", quality=95)
    outputs = {k: tmp_path / "out" / f"{k}.{ext}" for k, ext in
               [("summary", "csv"), ("cells", "csv"), ("metrics", "json"), ("qc", "png")]}
    metrics = h.process_sample(sample="f1", path=tmp_path / "field.jpg", options={}, outputs=outputs)
    assert "pixel size" in metrics["status"]
    assert pd.read_csv(outputs["summary"]).empty and outputs["qc"].exists()
    metrics = h.process_sample(sample="f1", path=tmp_path / "field.jpg", options={}, outputs=outputs,
                               pixel_size_um="0.5", marker="CD206")
    assert metrics["status"] == "ok" and metrics["n_cells"] > 50
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 64, 64), np.uint8), metadata={"axes": "ZYX"})
    metrics = h.process_sample(sample="s", path=tmp_path / "stack.tif", options={}, outputs=outputs,
                               pixel_size_um="0.5")
    assert "one 2-D plane" in metrics["status"]
    tifffile.imwrite(tmp_path / "if.tif", np.ones((2, 64, 64), np.uint16), metadata={"axes": "CYX"})
    metrics = h.process_sample(sample="s", path=tmp_path / "if.tif", options={}, outputs=outputs,
                               pixel_size_um="0.5", channels="nuclei=DAPI;marker=1")
    assert "nuclei channel 'DAPI' not found" in metrics["status"]


def test_real_ihc_images_through_the_workflow(tmp_path):
    import skimage.data

    Image.fromarray(skimage.data.immunohistochemistry()).save(tmp_path / "skimage_ihc.png")
    rows = [{"sample": "skimage_ihc", "modality": "histology", "path": "skimage_ihc.png", "group": "A",
             "marker": "DAB", "pixel_size_um": "0.5"}]
    alex = shared_if_present("Alex_Pan_06.jpg")  # the scikit-image field needs no shared folder
    if alex is not None:
        rows.append({"sample": "alex_pan_06", "modality": "histology", "path": str(alex), "group": "A",
                     "marker": "DAB", "pixel_size_um": "0.5"})
    pd.DataFrame(rows).to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    run_snakemake(tmp_path, "--config", "samples=samples.tsv")
    table = pd.read_csv(tmp_path / "results" / "tables" / "samples.csv").set_index("sample")
    assert (table["status"] == "ok").all(), table["status"]
    for sample in table.index:
        cells = pd.read_csv(tmp_path / "results" / "histology" / sample / "cells.csv")
        assert len(cells) > 150
        # Both slides hold brown (DAB) epithelium next to blue (hematoxylin-only) stroma.
        assert 20 < table.loc[sample, "positive_pct"] < 85
        png = np.asarray(Image.open(tmp_path / "results" / "qc" / f"{sample}.png"))
        assert png.shape[0] >= 500 and png.std() > 20
    # The skimage field: the stroma on the right is negative, the epithelium at top left positive.
    cells = pd.read_csv(tmp_path / "results" / "histology" / "skimage_ihc" / "cells.csv")
    stroma = cells[(cells["x"] > 440) & (cells["y"] > 100) & (cells["y"] < 300)]
    epithelium = cells[(cells["x"] < 200) & (cells["y"] < 200)]
    assert stroma["positive"].mean() < 0.2 and epithelium["positive"].mean() > 0.7
