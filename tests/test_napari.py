"""Visual QC in real napari windows (under Xvfb via pytest-xvfb): each kind of result opens with
its layers, scales and tables, screenshots show the overlays, and a QC decision made in the
sample browser goes through the workflow."""
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile

pytest.importorskip("napari", reason="napari is installed with the test extra")
if not (os.environ.get("DISPLAY") or shutil.which("Xvfb")):
    if os.environ.get("CI"):
        raise RuntimeError("CI must provide Xvfb for the napari tests (see .ci/run)")
    pytest.skip("no display and no Xvfb for napari windows", allow_module_level=True)

from conftest import planned_jobs, run_snakemake  # noqa: E402


def _open(viewer, demo_run, modality, sample):
    viewer.open(str(demo_run / "results" / modality / sample), plugin="exotrack")
    return {layer.name: layer for layer in viewer.layers}


def _shot(viewer):
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    assert shot.shape[0] > 100 and shot.std() > 5, "blank canvas"
    return shot


def test_fluorescence_still_and_time_lapse(make_napari_viewer, demo_run):
    viewer = make_napari_viewer(show=True)
    layers = _open(viewer, demo_run, "fluorescence", "exo_w1")
    assert {"Hoechst", "CD63-RFP", "CellMask", "cells", "nuclei", "puncta"} <= set(layers)
    np.testing.assert_allclose(layers["CD63-RFP"].scale, [0.1625, 0.1625])
    assert layers["cells"].data.max() == len(pd.read_csv(demo_run / "results/fluorescence/exo_w1/cells.csv"))
    puncta = layers["puncta"]
    assert len(puncta.data) == len(puncta.features) and "cell_id" in puncta.features
    shot = _shot(viewer)
    # Cell labels are drawn in colours no grey or blue channel gives: some pixels are strongly coloured.
    assert (np.ptp(shot, axis=-1) > 80).mean() > 0.01
    viewer.layers.clear()
    layers = _open(viewer, demo_run, "fluorescence", "live_w1")
    assert layers["tracks"].data.shape[1] == 4 and layers["CD63-RFP"].data.ndim == 3  # (T, Y, X)
    assert layers["CD63-RFP"].scale[0] == 1.0
    _shot(viewer)


def test_bli_radiance_over_the_photograph_with_rois(make_napari_viewer, demo_run):
    viewer = make_napari_viewer(show=True)
    layers = _open(viewer, demo_run, "bli", "m4-m6_d21")
    assert list(layers)[:2] == ["photograph", "radiance (p/s/cm²/sr)"]
    rois = layers["ROIs"]
    assert set(rois.features["subject"].astype(str)) == {"m4", "m5", "m6"}
    assert len(rois.data) == len(rois.features) == 9  # tumour, node and background per mouse
    # Both layers span the same 22.4 cm field, in mm.
    for name in ("photograph", "radiance (p/s/cm²/sr)"):
        extent = layers[name].data.shape[-1] * layers[name].scale[-1]
        assert extent == pytest.approx(224.0)
    shot = _shot(viewer)
    assert (np.ptp(shot, axis=-1) > 100).mean() > 0.005  # the turbo-coloured hotspots


def test_photoacoustic_node_mask(make_napari_viewer, demo_run):
    viewer = make_napari_viewer(show=True)
    layers = _open(viewer, demo_run, "photoacoustic", "m4_pa")
    assert {"US", "PA750", "PA850", "lymph node"} <= set(layers)
    np.testing.assert_allclose(layers["lymph node"].scale, [150.0, 50.0, 75.0])
    assert layers["lymph node"].data.shape == layers["US"].data.shape and layers["lymph node"].data.any()
    viewer.dims.set_point(0, int(np.argwhere(layers["lymph node"].data).mean(axis=0)[0]) * 150.0)
    _shot(viewer)


def test_histology_cells_by_class(make_napari_viewer, demo_run):
    viewer = make_napari_viewer(show=True)
    layers = _open(viewer, demo_run, "histology", "m4_CD206")
    assert layers["section"].rgb and layers["section"].scale[0] == pytest.approx(0.5)
    cells = layers["cells"]
    assert {"class", "positive", "marker_mean"} <= set(cells.features)
    colours = np.unique(cells.face_color, axis=0)
    assert len(colours) == 4  # negative, 1+, 2+, 3+
    _shot(viewer)


def test_sample_data_opens_the_demo(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("exotrack", "demo_uptake")
    assert {"Hoechst", "CD63-RFP", "cells", "puncta"} <= {layer.name for layer in viewer.layers}


def test_decision_in_the_browser_goes_through_the_workflow(make_napari_viewer, demo_run, tmp_path):
    from exotrack.cli import open_viewer
    from exotrack.napari_plugin import SampleBrowser

    work = tmp_path / "run"
    shutil.copytree(demo_run, work, symlinks=True)
    viewer = make_napari_viewer(show=True)
    browser = SampleBrowser(viewer, results=work / "results")
    browser.group.value = "exosome"
    browser.status.value = "ok"
    assert "pbs_w1" not in browser.sample.choices and "exo_w2" in browser.sample.choices
    browser.sample.value = "exo_w2"
    assert "CD63-RFP" in [layer.name for layer in viewer.layers] and "n_cells" in browser.info.value
    browser.step(1)
    browser.step(-1)
    assert browser.sample.value == "exo_w2"
    browser.decision.value = "fail"
    browser.comment.value = "out of focus"
    browser.save.clicked.emit()
    decisions = pd.read_csv(work / "results" / "qc" / "decisions.csv")
    assert decisions[["sample", "decision", "comment"]].values.tolist() == [["exo_w2", "fail", "out of focus"]]

    # Only the study-level outputs are redone.
    jobs = planned_jobs(work)
    assert set(jobs) == {"summarise_study", "all"}
    run_snakemake(work)
    samples = pd.read_csv(work / "results" / "tables" / "samples.csv").set_index("sample")
    assert samples.loc["exo_w2", "status"] == "excluded_qc: out of focus"
    assert samples.loc["exo_w2", "n_cells"] > 0  # its values are kept
    groups = pd.read_csv(work / "results" / "tables" / "groups.csv")
    uptake = groups[groups["metric"] == "puncta_per_cell_mean"].set_index("group")
    assert uptake.loc["exosome", "n"] == 4  # was 5

    browser.decision.value = "pass"
    browser.save.clicked.emit()
    run_snakemake(work)
    samples = pd.read_csv(work / "results" / "tables" / "samples.csv").set_index("sample")
    assert samples.loc["exo_w2", "status"] == "ok"

    # The command line's viewer: the browser docked, the sample shown.
    cli_viewer, cli_browser = open_viewer(work / "results", "m4_CD206")
    try:
        assert cli_browser.sample.value == "m4_CD206" and "cells" in [layer.name for layer in cli_viewer.layers]
    finally:
        cli_viewer.close()


def test_seed_clicked_on_a_photoacoustic_sample_reruns_only_that_sample(make_napari_viewer, demo_run, tmp_path):
    import json

    from exotrack.napari_plugin import SampleBrowser

    work = tmp_path / "run"
    shutil.copytree(demo_run, work, symlinks=True)
    viewer = make_napari_viewer(show=True)
    browser = SampleBrowser(viewer, results=work / "results")
    browser.sample.value = "m4_pa"
    seeds = viewer.layers["node seed"]
    assert seeds.mode == "add" and len(seeds.data) == 0
    node = np.load(work / "demo" / "truth" / "m4_pa" / "node.npy")
    inside = np.argwhere(node)
    point = inside[len(inside) // 3]  # a voxel of the node away from its centre
    # What napari's add mode does on a click at that voxel of the B-mode.
    seeds.add(point.astype(float))
    _shot(viewer)
    table = pd.read_csv(work / "results" / "qc" / "seeds.csv", dtype=str)
    assert table[["sample", "seed"]].values.tolist() == [["m4_pa", ",".join(map(str, point))]]
    assert "recorded" in browser.message.value

    jobs = planned_jobs(work)
    jobs.pop("record_provenance", None)  # study level, like summarise_study
    assert jobs == {"analyse_photoacoustic": 1, "summarise_study": 1, "all": 1}
    run_snakemake(work)
    metrics = json.loads((work / "results" / "photoacoustic" / "m4_pa" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["seed"] == ",".join(map(str, point))
    mask = tifffile.imread(work / "results" / "photoacoustic" / "m4_pa" / "node.tif").astype(bool)
    assert mask[tuple(point)]
    assert 2 * (mask & node).sum() / (mask.sum() + node.sum()) >= 0.85
    assert set(planned_jobs(work)) == set()  # nothing left to do
