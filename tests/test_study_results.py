"""Study-level outputs of the demo run: tables, plots, the report in a real browser, and reruns
that recompute exactly what changed."""
import importlib.util
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile

from exotrack.demo import CHANNELS, PIXEL_SIZE_UM, write_ome_tiff

from conftest import planned_jobs, run_snakemake


def test_tables_and_plots(demo_run):
    tables = demo_run / "results" / "tables"
    samples = pd.read_csv(tables / "samples.csv")
    pd.testing.assert_frame_equal(pd.read_parquet(tables / "samples.parquet"), samples, check_dtype=False)
    subjects = pd.read_csv(tables / "subjects.csv").set_index("subject")
    # A mouse is one subject across its IVIS acquisitions (days 7, 14 and the three-mouse one on
    # day 21), its photoacoustic volume and its CD206 and NOS2 sections, with both markers and
    # their ratio.
    assert len(subjects) == samples["subject"].nunique()
    mouse = subjects.loc["m4"]
    assert mouse["n_samples"] == 6 and mouse["tumor_total_flux_p_s_timepoint"] == 21
    assert mouse["m2_m1_ratio"] == pytest.approx(
        mouse["CD206_positive_cells_per_mm2"] / mouse["NOS2_positive_cells_per_mm2"])
    groups = pd.read_csv(tables / "groups.csv")
    uptake = groups[groups["metric"] == "puncta_per_cell_mean"].set_index("group")
    assert uptake.loc["exosome", "n"] == 5 and uptake.loc["PBS", "n"] == 4
    assert uptake.loc["exosome", "p_value"] < 0.05 and uptake.loc["exosome", "effect_size"] == 1.0
    ratio = groups[groups["metric"] == "m2_m1_ratio"].set_index("group")
    assert ratio.loc["exosome", "mean"] > 2 * ratio.loc["PBS", "mean"]
    for modality in ("fluorescence", "histology"):
        for suffix in ("png", "svg"):
            assert (demo_run / "results" / "plots" / f"{modality}.{suffix}").stat().st_size > 10_000


@pytest.fixture(scope="module")
def demo_copy(demo_run, tmp_path_factory):
    """A copy of the shared demo run, with its time stamps and Snakemake's records, for tests that
    run Snakemake in it or change a raw image: the session's ``demo_run`` stays as it was."""
    copy = tmp_path_factory.mktemp("demo_copy") / "run"
    shutil.copytree(demo_run, copy, symlinks=True)
    return copy


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if importlib.util.find_spec("playwright") is None:
        path = None
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide chromium and playwright (see .ci/run)")
        pytest.skip("chromium or playwright not installed")
    return path


def test_report_shows_its_plots_in_a_browser(demo_copy, tmp_path):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    run_snakemake(demo_copy, "--report", str(tmp_path / "report.html"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto((tmp_path / "report.html").as_uri())
        page.get_by_text("Plots", exact=True).click()
        page.get_by_text("fluorescence", exact=True).locator("xpath=..").locator("a[iconname=eye]").click()
        plot = page.locator("img[src^='data:image/png']").first
        plot.wait_for(state="visible", timeout=15_000)
        box = plot.bounding_box()
        page.screenshot(path=str(tmp_path / "report.png"))
        browser.close()
    assert box["width"] > 600 and box["height"] > 300
    shot = np.asarray(Image.open(tmp_path / "report.png").convert("L"), float)
    region = shot[int(box["y"]):int(box["y"] + box["height"]), int(box["x"]):int(box["x"] + box["width"])]
    # A rendered figure: mostly white paper with dark axes, text and points.
    assert (region < 100).mean() > 0.005 and (region > 240).mean() > 0.5


def test_reruns_recompute_exactly_what_changed(demo_copy):
    work = demo_copy
    assert planned_jobs(work) == {}
    # A statistics setting: the study level (tables, statistics, plots) and the provenance only.
    assert planned_jobs(work, "--config", "control_group=exosome") == {
        "summarise_study": 1, "record_provenance": 1, "all": 1}
    # One raw image replaced: that sample and what aggregates it.
    image = work / "demo" / "images" / "PBS" / "pbs_w2.ome.tif"
    before, original = image.stat(), image.read_bytes()
    changed = {"analyse_fluorescence_batch0": 1, "summarise_study": 1, "record_provenance": 1, "all": 1}
    try:
        os.utime(image)  # touched: size and time stamp are what is compared, as make does
        assert planned_jobs(work) == changed
        data = tifffile.imread(image)
        data[0, 0, 0] += 1  # one pixel of one raw image changed
        write_ome_tiff(image, data, axes="CYX", channel_names=CHANNELS, pixel_size_um=(1, PIXEL_SIZE_UM, PIXEL_SIZE_UM))
        assert planned_jobs(work) == changed
    finally:
        image.write_bytes(original)
        os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert planned_jobs(work) == {}
    # Per-sample outputs that nothing downstream reads, deleted: their jobs are planned again
    # (before: "Nothing to be done", as only metrics.json and the study tables were targets).
    for path in ("histology/m1_CD206/cells.csv", "fluorescence/pbs_w1/labels.tif", "qc/m2_NOS2.png"):
        (work / "results" / path).unlink()
    assert planned_jobs(work) == {"analyse_histology": 2, "analyse_fluorescence_batch0": 1, "summarise_study": 1,
                                  "record_provenance": 1, "all": 1}
