"""The bad-input corpus: every class of bad input the issue lists, for every modality, generated here
and run through the real workflow next to one good sample per modality.

Each bad sample must end with a ``status`` that names the problem in words (no traceback, no
"analysis failed"), its QC image must say so, and every good sample must finish as if alone. Sheet
and configuration errors are in ``test_workflow_errors.py``: they stop the run before any job.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from conftest import REPO, run_snakemake
from exotrack.demo import CHANNELS, simulate_movie, simulate_uptake_field
from exotrack.demo_bli import Mouse, simulate_acquisition
from exotrack.demo_histology import simulate_section, write_section_tiff
from exotrack.demo_photoacoustic import simulate_volume
from exotrack.io import write_ome_tiff


def _good_fluorescence(path):
    field = simulate_uptake_field(shape=(192, 192), n_cells=3, seed=3)
    write_ome_tiff(path, field.image, axes="CYX", channel_names=CHANNELS, pixel_size_um=field.pixel_size_um)
    return field.image


def _good_volume(path):
    volume = simulate_volume(shape=(12, 100, 120), radii_mm=(0.6, 0.6, 0.8), depth_mm=2.5, seed=26)
    write_ome_tiff(path, volume.image, axes="CZYX", channel_names=volume.channel_names,
                   pixel_size_um=volume.voxel_size_um)
    return volume


def _good_section(path):
    section = simulate_section(shape=(256, 256), seed=7)
    write_section_tiff(path, section.image, pixel_size_um=0.5)
    return section.image


def _good_ivis(folder):
    simulate_acquisition(folder, [Mouse("m1", 1e7, 1e6)], binning=8, roi_source="csv", seed=5)


def _truncate(source, target):
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def _with_nan(image):
    image = image.astype(np.float32)
    image.flat[:: 97] = np.nan
    image.flat[1:: 997] = np.inf
    return image


def _write_volume(path, data, volume, names=None):
    write_ome_tiff(path, data, axes="CZYX", channel_names=names or volume.channel_names,
                   pixel_size_um=volume.voxel_size_um)


def _write_fluorescence(path, data, names=CHANNELS):
    write_ome_tiff(path, data, axes="CYX", channel_names=names, pixel_size_um=(None, 0.16, 0.16))


def _ivis_variant(root, name, change):
    folder = shutil.copytree(root / "good_bli", root / name)
    change(folder)
    return folder


def _drop_calibration(folder):
    for name in ("ClickInfo.txt", "AnalyzedClickInfo.txt"):
        text = (folder / name).read_text()
        (folder / name).write_text("\n".join(l for l in text.splitlines() if not l.startswith("Coef C-ccd")))


def _luminescent(data):
    return lambda folder: tifffile.imwrite(folder / "luminescent.TIF", data)


def _dicom_without_pixels(path):
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)


def _move_tumour_roi(folder):
    rois = pd.read_csv(folder / "rois.csv")
    rois.loc[rois["roi"] == "tumor", ["yc", "xc"]] = 5000.0
    rois.to_csv(folder / "rois.csv", index=False)


def _write_strict_metadata_cases(root, image, add):
    """Files whose metadata, read loosely, gave a wrong number under ``ok`` (issue 29)."""
    roles = {"channels": "nuclei=0;exosomes=1;cells=2"}
    tifffile.imwrite(root / "f_300_dpi.tif", image, metadata={"axes": "CYX"}, resolution=(300, 300),
                     resolutionunit="INCH")  # was read as 84.67 µm pixels: 0 puncta, cells of 10^7 µm²
    add("f_300_dpi", root / "f_300_dpi.tif", **roles)
    tifffile.imwrite(root / "f_unit_not_a_length.ome.tif", image, ome=True, metadata={
        "axes": "CYX", "Channel": {"Name": CHANNELS}, "PhysicalSizeX": 0.16, "PhysicalSizeXUnit": "furlong",
        "PhysicalSizeY": 0.16, "PhysicalSizeYUnit": "furlong"})
    add("f_unit_not_a_length", root / "f_unit_not_a_length.ome.tif")
    with tifffile.TiffWriter(root / "f_two_series.ome.tif", ome=True) as tif:  # two stage positions
        for _ in range(2):
            tif.write(image, metadata={"axes": "CYX", "Channel": {"Name": CHANNELS}, "PhysicalSizeX": 0.16,
                                       "PhysicalSizeY": 0.16})
    add("f_two_series", root / "f_two_series.ome.tif")
    with tifffile.TiffWriter(root / "f_pages_unnamed.tif") as tif:  # were planned as a 3-frame movie
        for page in image:
            tif.write(page, metadata=None, contiguous=False)
    add("f_pages_unnamed", root / "f_pages_unnamed.tif", pixel_size_um="0.16", **roles)
    (root / "f_folder").mkdir()
    (root / "f_folder" / "field1.tif").write_bytes(b"x")
    add("f_folder", root / "f_folder")
    tifffile.imwrite(root / "f_huge_header.tif", np.ones((64, 64), np.uint16))
    raw = bytearray((root / "f_huge_header.tif").read_bytes())
    with tifffile.TiffFile(root / "f_huge_header.tif") as tif:
        for name in ("ImageWidth", "ImageLength"):
            tag = tif.pages[0].tags[name]
            size = 4 if tag.dtype == 4 else 2
            raw[tag.valueoffset:tag.valueoffset + size] = (100_000).to_bytes(size, "little")
    (root / "f_huge_header.tif").write_bytes(bytes(raw))
    add("f_huge_header", root / "f_huge_header.tif", pixel_size_um="0.16", channels="exosomes=0")
    _write_fluorescence(root / "f_too_small.ome.tif", image[:, :6, :6])
    add("f_too_small", root / "f_too_small.ome.tif")
    # Right numbers: the same field calibrated in ångström, and a movie too short for any track.
    tifffile.imwrite(root / "f_angstrom.ome.tif", image, ome=True, metadata={
        "axes": "CYX", "Channel": {"Name": CHANNELS}, "PhysicalSizeX": ANGSTROM_PER_PIXEL,
        "PhysicalSizeXUnit": "Å", "PhysicalSizeY": ANGSTROM_PER_PIXEL, "PhysicalSizeYUnit": "Å"})
    add("f_angstrom", root / "f_angstrom.ome.tif")
    movie = simulate_movie(shape=(96, 96), n_frames=2, n_particles=15, seed=4)
    write_ome_tiff(root / "f_two_frames.ome.tif", movie.image, axes="TCYX", channel_names=["CD63-RFP"],
                   pixel_size_um=(None, movie.pixel_size_um, movie.pixel_size_um),
                   frame_interval_s=movie.frame_interval_s)
    add("f_two_frames", root / "f_two_frames.ome.tif", channels="exosomes=CD63-RFP")


# The good field's pixel size in ångström (1 Å = 1e-4 µm), as an instrument may write it.
ANGSTROM_PER_PIXEL = 1625.0
# sample -> (modality, what the status must say). The generator below writes each one.
EXPECTED = {
    "f_truncated": ("fluorescence", "cannot read f_truncated.ome.tif as a TIFF image"),
    "f_not_an_image": ("fluorescence", "cannot read f_not_an_image.tif as a TIFF image"),
    "f_wrong_dimensions": ("fluorescence", "cannot interpret image axes"),
    "f_missing_channel": ("fluorescence", "exosomes channel 'CD63-RFP' not found"),
    "f_all_zero": ("fluorescence", "image is empty: every pixel is 0"),
    "f_saturated": ("fluorescence", "saturated: 100.0% of pixels are at the camera's maximum (65535)"),
    "f_nan": ("fluorescence", "NaN or infinite values in"),
    "f_zero_bytes": ("fluorescence", "image file is empty (0 bytes)"),
    "h_truncated": ("histology", "cannot read h_truncated.tif as a TIFF image"),
    "h_not_an_image": ("histology", "cannot read h_not_an_image.tif as a TIFF image"),
    "h_wrong_dimensions": ("histology", "a section must be one 2-D plane"),
    "h_missing_channel": ("histology", "nuclei channel 'DAPI' not found"),
    "h_all_zero": ("histology", "empty: every pixel is 0"),
    "h_saturated": ("histology", "saturated: 100.0% of pixels are at the camera's maximum (255)"),
    "h_nan": ("histology", "NaN or infinite values in"),
    "h_zero_bytes": ("histology", "image file is empty (0 bytes)"),
    "b_truncated": ("bli", "cannot read luminescent.TIF (luminescent image) as a TIFF image: the file is damaged"),
    "b_not_an_image": ("bli", "cannot read luminescent.TIF (luminescent image) as a TIFF image: the file is damaged"),
    "b_wrong_dimensions": ("bli", "luminescent.TIF (luminescent image) should be one 2-D image"),
    "b_missing_part": ("bli", "has no luminescent.TIF"),
    "b_no_calibration": ("bli", "no calibration line 'Coef C-ccd at FOV"),
    "b_all_zero": ("bli", "empty: every pixel is 0"),
    "b_saturated": ("bli", "saturated: 100.0% of pixels are at the camera's maximum (65535)"),
    "b_nan": ("bli", "NaN or infinite values in"),
    "b_rois_for_another_mouse": ("bli", "the ROIs name subject(s) 'm1', but this acquisition's animal(s) are "
                                        "'b_rois_for_another_mouse'"),
    "b_zero_bytes": ("bli", "luminescent.TIF (luminescent image) is empty (0 bytes)"),
    "p_truncated": ("photoacoustic", "cannot read p_truncated.ome.tif as a TIFF image"),
    "p_not_an_image": ("photoacoustic", "cannot read p_not_an_image.tif as a TIFF image"),
    "p_wrong_dimensions": ("photoacoustic", "expected a (C)ZYX stack, but the file has 3 time points"),
    "p_missing_channel": ("photoacoustic", "no ultrasound channel: expected one named 'US'"),
    "p_all_zero": ("photoacoustic", "empty: every pixel is 0"),
    "p_saturated": ("photoacoustic", "saturated: 100.0% of pixels are at the camera's maximum (65535)"),
    "p_nan": ("photoacoustic", "NaN or infinite values in"),
    "p_zero_bytes": ("photoacoustic", "image file is empty (0 bytes)"),
    "p_dicom_no_pixels": ("photoacoustic", "cannot read p_dicom_no_pixels.dcm as a DICOM image with pixel data"),
    # Metadata read strictly: a print resolution is no calibration, nor a unit that is no length.
    "f_300_dpi": ("fluorescence", "the file does not state its pixel size; give pixel_size_um in the sample sheet"),
    "f_unit_not_a_length": ("fluorescence", "PhysicalSizeY in 'furlong', which is not a unit of length"),
    "f_two_series": ("fluorescence", "holds 2 image series (positions or scenes"),
    "f_pages_unnamed": ("fluorescence", "has 3 pages and no metadata saying whether they are time points, channels "
                                        "or z slices; give the sample sheet's axes column"),
    "f_folder": ("fluorescence", "f_folder is a folder, not an image file (it holds field1.tif)"),
    "f_huge_header": ("fluorescence", "its header declares 100000 x 100000 pixels (YX) uncompressed (18.6 GiB), "
                                      "but the file is only"),
    "f_too_small": ("fluorescence", "image is too small to analyse"),
    "h_marker_empty": ("histology", "the marker channel is empty"),
    "b_rois_outside": ("bli", "ROI(s) 'tumor' lie outside the luminescent image"),
    "p_no_node": ("photoacoustic", "no lymph node found: the darkest blob at the seed"),
}
GOOD = {"good_fluorescence": "fluorescence", "good_histology": "histology", "good_bli": "bli",
        "good_photoacoustic": "photoacoustic"}
# Inputs that gave a wrong number under ok; each has a test of its number below.
RIGHT_NUMBER = {"f_angstrom": "fluorescence", "f_two_frames": "fluorescence"}


def write_corpus(root):
    """Write the good and bad samples under ``root``; return the sample-sheet rows."""
    rows = []

    def add(sample, path, **extra):
        rows.append({"sample": sample, "modality": {**GOOD, **RIGHT_NUMBER}.get(sample) or EXPECTED[sample][0],
                     "path": path.name, "group": "bad" if sample in EXPECTED else "good", **extra})

    good = root / "good_fluorescence.ome.tif"
    image = _good_fluorescence(good)
    add("good_fluorescence", good)
    _truncate(good, root / "f_truncated.ome.tif")
    add("f_truncated", root / "f_truncated.ome.tif")
    (root / "f_not_an_image.tif").write_text("Exported by the microscope: see attached images.\n")
    add("f_not_an_image", root / "f_not_an_image.tif")
    tifffile.imwrite(root / "f_wrong_dimensions.tif", np.zeros((2, 2, 2, 2, 32, 32), np.uint16))
    add("f_wrong_dimensions", root / "f_wrong_dimensions.tif")
    _write_fluorescence(root / "f_missing_channel.ome.tif", image, names=["Hoechst", "GFP", "CellMask"])
    add("f_missing_channel", root / "f_missing_channel.ome.tif")
    _write_fluorescence(root / "f_all_zero.ome.tif", np.zeros_like(image))
    add("f_all_zero", root / "f_all_zero.ome.tif")
    _write_fluorescence(root / "f_saturated.ome.tif", np.full_like(image, 65535))
    add("f_saturated", root / "f_saturated.ome.tif")
    _write_fluorescence(root / "f_nan.ome.tif", _with_nan(image))
    add("f_nan", root / "f_nan.ome.tif")
    (root / "f_zero_bytes.tif").touch()
    add("f_zero_bytes", root / "f_zero_bytes.tif")
    _write_strict_metadata_cases(root, image, add)

    good = root / "good_histology.tif"
    rgb = _good_section(good)
    add("good_histology", good, marker="CD206")
    _truncate(good, root / "h_truncated.tif")
    add("h_truncated", root / "h_truncated.tif")
    (root / "h_not_an_image.tif").write_text("<html>slide scanner export failed</html>")
    add("h_not_an_image", root / "h_not_an_image.tif")
    tifffile.imwrite(root / "h_wrong_dimensions.tif", np.stack([rgb] * 3), photometric="rgb",
                     metadata={"axes": "ZYXS"}, resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    add("h_wrong_dimensions", root / "h_wrong_dimensions.tif")
    tifffile.imwrite(root / "h_missing_channel.tif", np.moveaxis(rgb, -1, 0)[:2], photometric="minisblack",
                     metadata={"axes": "CYX", "Labels": ["Hoechst", "CD206"]}, imagej=True)
    add("h_missing_channel", root / "h_missing_channel.tif", channels="nuclei=DAPI;marker=CD206",
        pixel_size_um="0.5")
    write_section_tiff(root / "h_all_zero.tif", np.zeros_like(rgb), pixel_size_um=0.5)
    add("h_all_zero", root / "h_all_zero.tif")
    write_section_tiff(root / "h_saturated.tif", np.full_like(rgb, 255), pixel_size_um=0.5)
    add("h_saturated", root / "h_saturated.tif")
    tifffile.imwrite(root / "h_nan.tif", _with_nan(np.moveaxis(rgb, -1, 0)[:2]), imagej=True,
                     metadata={"axes": "CYX", "Labels": ["DAPI", "CD206"]})
    add("h_nan", root / "h_nan.tif", channels="nuclei=DAPI;marker=CD206", pixel_size_um="0.5")
    (root / "h_zero_bytes.tif").touch()
    add("h_zero_bytes", root / "h_zero_bytes.tif")
    immunofluorescence = np.stack([255 - rgb[..., 2], np.zeros_like(rgb[..., 0])]).astype(np.uint16)
    immunofluorescence[1, :4, :4] = 3  # a marker channel without signal (not a constant image)
    tifffile.imwrite(root / "h_marker_empty.tif", immunofluorescence, imagej=True,
                     metadata={"axes": "CYX", "Labels": ["DAPI", "CD206"]})
    add("h_marker_empty", root / "h_marker_empty.tif", channels="nuclei=DAPI;marker=CD206", pixel_size_um="0.5")

    _good_ivis(root / "good_bli")
    add("good_bli", root / "good_bli", subject="m1")
    counts = tifffile.imread(root / "good_bli" / "luminescent.TIF")
    for sample, change in {
        "b_truncated": lambda f: _truncate(root / "good_bli" / "luminescent.TIF", f / "luminescent.TIF"),
        "b_not_an_image": lambda f: (f / "luminescent.TIF").write_text("IVIS export log"),
        "b_wrong_dimensions": _luminescent(np.stack([counts] * 2)),
        "b_missing_part": lambda f: (f / "luminescent.TIF").unlink(),
        "b_no_calibration": _drop_calibration,
        "b_all_zero": _luminescent(np.zeros_like(counts)),
        "b_saturated": _luminescent(np.full_like(counts, 65535)),
        "b_nan": _luminescent(_with_nan(counts)),
        "b_zero_bytes": lambda f: (f / "luminescent.TIF").write_bytes(b""),
        "b_rois_for_another_mouse": lambda f: None,  # rois.csv names m1; the sheet names no subject
    }.items():
        add(sample, _ivis_variant(root, sample, change))
    add("b_rois_outside", _ivis_variant(root, "b_rois_outside", _move_tumour_roi), subject="m1")

    good = root / "good_photoacoustic.ome.tif"
    volume = _good_volume(good)
    add("good_photoacoustic", good)
    _truncate(good, root / "p_truncated.ome.tif")
    add("p_truncated", root / "p_truncated.ome.tif")
    (root / "p_not_an_image.tif").write_text("scan aborted")
    add("p_not_an_image", root / "p_not_an_image.tif")
    tifffile.imwrite(root / "p_wrong_dimensions.tif", volume.image[0, :3], imagej=True,
                     metadata={"axes": "TYX"})
    add("p_wrong_dimensions", root / "p_wrong_dimensions.tif", pixel_size_um="150,50,75")
    _write_volume(root / "p_missing_channel.ome.tif", volume.image, volume, names=["Doppler", "PA750", "PA850"])
    add("p_missing_channel", root / "p_missing_channel.ome.tif")
    as_uint16 = np.zeros(volume.image.shape, np.uint16)
    _write_volume(root / "p_all_zero.ome.tif", as_uint16, volume)
    add("p_all_zero", root / "p_all_zero.ome.tif")
    _write_volume(root / "p_saturated.ome.tif", as_uint16 + 65535, volume)
    add("p_saturated", root / "p_saturated.ome.tif")
    _write_volume(root / "p_nan.ome.tif", _with_nan(volume.image), volume)
    add("p_nan", root / "p_nan.ome.tif")
    (root / "p_zero_bytes.tif").touch()
    add("p_zero_bytes", root / "p_zero_bytes.tif")
    add("p_no_node", good, seed="11,99,119")  # a seed in bright tissue, far from the node
    _dicom_without_pixels(root / "p_dicom_no_pixels.dcm")
    add("p_dicom_no_pixels", root / "p_dicom_no_pixels.dcm", pixel_size_um="150,50,75")
    return rows


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    pd.DataFrame(write_corpus(root)).to_csv(root / "samples.tsv", sep="\t", index=False)
    run_snakemake(root, "--config", "samples=samples.tsv")
    table = pd.read_csv(root / "results" / "tables" / "samples.csv").drop_duplicates("sample")
    return root, table.set_index("sample")


@pytest.mark.parametrize("sample", sorted(EXPECTED))
def test_bad_sample_is_named_in_words(corpus_run, sample):
    root, table = corpus_run
    status = table.loc[sample, "status"]
    modality, words = EXPECTED[sample]
    assert status.startswith("error: ") and words in status, status
    assert "Traceback" not in status and "analysis failed" not in status
    metrics = pd.read_json(root / "results" / modality / sample / "metrics.json", typ="series")
    assert metrics["status"] == status
    assert (root / "results" / "qc" / f"{sample}.png").stat().st_size > 0


@pytest.mark.parametrize("sample", sorted(GOOD))
def test_good_samples_finish_next_to_bad_ones(corpus_run, sample):
    root, table = corpus_run
    assert table.loc[sample, "status"] == "ok"
    headline = {"fluorescence": "n_cells", "histology": "positive_cells_per_mm2", "bli": "tumor_total_flux_p_s",
                "photoacoustic": "ln_volume_mm3"}[GOOD[sample]]
    assert table.loc[sample, headline] > 0


def test_angstrom_calibration_gives_the_micrometre_result(corpus_run):
    """The good field again, its 0.1625 µm pixels written as 1625 Å (read as 1625 µm before)."""
    root, table = corpus_run
    metrics = json.loads((root / "results" / "fluorescence" / "f_angstrom" / "metrics.json").read_text())
    assert metrics["pixel_size_um"][1:] == pytest.approx([0.1625, 0.1625])
    assert table.loc["f_angstrom", "n_cells"] == table.loc["good_fluorescence", "n_cells"]
    assert table.loc["f_angstrom", "n_puncta"] == table.loc["good_fluorescence", "n_puncta"]


def test_two_frame_movie_counts_no_track_shorter_than_min_track_length(corpus_run):
    """15 puncta over 2 frames: before, 15 tracks of 2 frames with min_track_length 3."""
    root, table = corpus_run
    base = root / "results" / "fluorescence" / "f_two_frames"
    assert len(pd.read_csv(base / "tracks.csv")) > 0  # the puncta were linked ...
    summary = pd.read_csv(base / "track_summary.csv")
    assert len(summary) == 0  # ... but none lasts the 3 frames a track needs
    assert table.loc["f_two_frames", "status"] == "ok" and table.loc["f_two_frames", "n_tracks"] == 0


def test_metrics_files_are_strict_json(corpus_run):
    root, _ = corpus_run
    files = list((root / "results").glob("*/*/metrics.json"))
    assert len(files) == len(EXPECTED) + len(GOOD) + len(RIGHT_NUMBER)
    for path in files:
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path}: {c} is not JSON"))


def test_corpus_leaves_no_partial_files(corpus_run):
    root, _ = corpus_run
    assert not [p for p in (root / "results").rglob("*") if p.name.startswith(".") and p.is_file()]


def test_file_vanishing_between_planning_and_running(tmp_path):
    """Planning sees every file; the bad ones are deleted while the first job (``stays``, alone
    on one core) is held stopped, so that no other job can have read its file yet."""
    rows = []
    for modality, writer, name in [("fluorescence", _good_fluorescence, "f.ome.tif"),
                                   ("histology", _good_section, "h.tif"),
                                   ("photoacoustic", _good_volume, "p.ome.tif")]:
        writer(tmp_path / name)
        rows.append({"sample": f"{modality}_vanishing", "modality": modality, "path": name})
    _good_ivis(tmp_path / "ivis")
    rows.append({"sample": "bli_vanishing", "modality": "bli", "path": "ivis"})
    _good_fluorescence(tmp_path / "stays.ome.tif")
    rows.insert(0, {"sample": "stays", "modality": "fluorescence", "path": "stays.ome.tif"})
    pd.DataFrame(rows).to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(REPO / "config.yaml"), "--cores", "1", "--config", "samples=samples.tsv",
           "batch_size=1", "--prioritize", "results/fluorescence/stays/metrics.json"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as process:
        job = _first_job(process, "analyse_fluorescence.py")
        os.kill(job, signal.SIGSTOP)  # the only job running: nothing else starts while it is held
        try:
            assert not (tmp_path / "results" / "fluorescence" / "stays" / "metrics.json").exists()
            # No other job has started (stays is batch 0, the first field of the sheet).
            assert not [p for p in (tmp_path / "logs").rglob("*.log") if p.name != "batch0.log"]
            for row in rows[1:]:
                path = tmp_path / row["path"]
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        finally:
            os.kill(job, signal.SIGCONT)
        log = process.communicate(timeout=600)[0]
        assert process.returncode == 0, log
    table = pd.read_csv(tmp_path / "results" / "tables" / "samples.csv").set_index("sample")
    assert table.loc["stays", "status"] == "ok"
    for row in rows[1:]:
        status = table.loc[row["sample"], "status"]
        assert status.startswith("error: ") and "not found" in status and row["path"] in status, status


def _first_job(process, script, timeout=600):
    """The pid of the first process of the run ``process`` (its session) running ``script``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for entry in os.listdir("/proc"):
            try:
                stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
                if stat and int(stat.rsplit(")", 1)[1].split()[3]) == process.pid and script in Path(
                        f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    return int(entry)
            except OSError:
                continue
        time.sleep(0.005)
    raise AssertionError(f"no {script} job started:\n{process.stdout.read()[-4000:]}")
