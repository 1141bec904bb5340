"""Puncta detection against trackpy.locate, and end-to-end time of a large field against its floor.

Run on demand:  pip install ".[bench]" && python benchmarks/bench_fluorescence.py

1. trackpy's best case: ``minmass`` (and ``diameter``) tuned for F1 on a separate calibration
   field with known truth; then both detectors run on the same test fields (PBS to heavily loaded
   macrophages). Printed: F1 and time per field for both, and the time ratio.
2. The real smFISH image of ../shared/data/spots_smfish (268 expert spots): exotrack with its
   defaults (spot width measured, threshold against the image's own dips) against trackpy with an
   automatic minmass (Otsu's threshold on the candidates' masses) and with minmass tuned on the
   truth itself (trackpy's ceiling); F1 at 3 px and time.
3. One 2048 x 2048 x 3 field through ``process_sample`` (read, segment, detect, measure, write
   every output and the QC image) against the floor: reading the file plus one Gaussian blur
   (sigma 2 px) of every channel.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

from exotrack.demo import CHANNELS, PIXEL_SIZE_UM, simulate_uptake_field, write_ome_tiff
from exotrack.evaluate import match_points
from exotrack.fluorescence import DEFAULTS, calibrate_spots, padding, process_sample
from exotrack.puncta import detect_puncta
from skimage.filters import threshold_otsu

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

RADIUS_PX = 3.0
PIXEL = (PIXEL_SIZE_UM, PIXEL_SIZE_UM)


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def f1_of(table, truth):
    return match_points(table[["y", "x"]].to_numpy(), truth[["y", "x"]].to_numpy(), radius=RADIUS_PX)[3]


def tune_trackpy(tp, field):
    best = (-1.0, None)
    image = field.image[1]
    for diameter in (5, 7):
        for minmass in np.geomspace(5, 20000, 48):
            f1 = f1_of(tp.locate(image, diameter, minmass=minmass), field.puncta)
            if f1 > best[0]:
                best = (f1, (diameter, float(minmass)))
    return best


def detect_defaults(image, pixel):
    """exotrack's detection as a sample gets it: spot width measured, then detection."""
    diameter, _, _ = calibrate_spots(image[None, None], spatial=pixel, options=DEFAULTS)
    return detect_puncta(image, pixel_size_um=pixel, spot_diameter_um=diameter, snr_threshold=DEFAULTS["snr_threshold"],
                         fdr=DEFAULTS["puncta_fdr"], exclude=padding(image))


def real_smfish(repeats: int) -> None:
    import pandas as pd
    import trackpy as tp

    folder = SHARED / "spots_smfish"
    if not folder.exists():
        print(f"real smFISH skipped: {folder} not found")
        return
    tp.quiet()
    image = tifffile.imread(folder / "smfish_293T_TFRC_700.tif")
    truth = pd.read_csv(folder / "gt_smfish_yx_0based.csv")
    t_ours, ours = best_time(lambda: detect_defaults(image, (0.1, 0.1)), repeats)
    diameter = 7  # odd, about 2.5 FWHM of the PSF (sigma 1.2 px)
    t_tp, candidates = best_time(lambda: tp.locate(image, diameter, minmass=0), repeats)
    otsu = candidates[candidates["mass"] > threshold_otsu(candidates["mass"].to_numpy())]
    tuned = max((f1_of(candidates[candidates["mass"] > m], truth), m)
                for m in np.quantile(candidates["mass"], np.linspace(0.5, 0.999, 200)))
    print(f"real smFISH ({len(truth)} expert spots): F1 exotrack {f1_of(ours, truth):.3f} ({len(ours)} found), "
          f"trackpy Otsu minmass {f1_of(otsu, truth):.3f} ({len(otsu)}), trackpy tuned on the truth "
          f"{tuned[0]:.3f} (minmass {tuned[1]:.0f}); time exotrack {1e3 * t_ours:.0f} ms, trackpy "
          f"{1e3 * t_tp:.0f} ms, ratio {t_ours / t_tp:.3f}")


def compare_with_trackpy(repeats: int) -> None:
    import trackpy as tp

    tp.quiet()
    calibration = simulate_uptake_field(puncta_per_cell=60, seed=9001)
    f1_cal, (diameter, minmass) = tune_trackpy(tp, calibration)
    print(f"trackpy tuned on a calibration field: diameter={diameter}, minmass={minmass:.0f} "
          f"(calibration F1 {f1_cal:.3f})")
    print(f"{'field':<16}{'truth':>7}{'F1 exotrack':>13}{'F1 trackpy':>12}{'ms exotrack':>13}{'ms trackpy':>12}{'ratio':>8}")
    totals = np.zeros(2)
    f1s = []
    for name, dose, seed in [("PBS", 1, 1), ("low uptake", 15, 2), ("uptake", 40, 3),
                             ("high uptake", 80, 4), ("loaded", 120, 5)]:
        field = simulate_uptake_field(puncta_per_cell=dose, seed=seed)
        image = field.image[1]
        t_ours, ours = best_time(lambda: detect_defaults(image, PIXEL), repeats)
        t_tp, theirs = best_time(lambda: tp.locate(image, diameter, minmass=minmass), repeats)
        f_ours, f_tp = f1_of(ours, field.puncta), f1_of(theirs, field.puncta)
        f1s.append((f_ours, f_tp))
        totals += (t_ours, t_tp)
        print(f"{name:<16}{len(field.puncta):>7}{f_ours:>13.3f}{f_tp:>12.3f}{1e3 * t_ours:>13.1f}"
              f"{1e3 * t_tp:>12.1f}{t_ours / t_tp:>8.3f}")
    mean = np.mean(f1s, axis=0)
    print(f"{'all':<16}{'':>7}{mean[0]:>13.3f}{mean[1]:>12.3f}{1e3 * totals[0]:>13.1f}{1e3 * totals[1]:>12.1f}"
          f"{totals[0] / totals[1]:>8.3f}")
    print(f"time ratio exotrack / trackpy: {totals[0] / totals[1]:.3f} (target <= 0.1); "
          f"F1 {mean[0]:.3f} vs {mean[1]:.3f} (target: >= trackpy's)")


def end_to_end(repeats: int) -> None:
    field = simulate_uptake_field(shape=(2048, 2048), n_cells=160, puncta_per_cell=40, seed=77)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "field.ome.tif"
        write_ome_tiff(path, field.image, axes="CYX", channel_names=CHANNELS, pixel_size_um=field.pixel_size_um)

        def floor():
            data = tifffile.imread(path).astype(np.float32)
            return [ndi.gaussian_filter(channel, 2.0) for channel in data]

        outputs = {k: tmp / "out" / f"{k}.{ext}" for k, ext in
                   [("cells", "csv"), ("puncta", "csv"), ("labels", "tif"), ("nuclei", "tif"),
                    ("metrics", "json"), ("qc", "png")]}

        def full():
            return process_sample(sample="big", path=path, options={}, outputs=outputs)

        t_floor, _ = best_time(floor, repeats)
        t_full, metrics = best_time(full, repeats)
    assert metrics["status"] == "ok", metrics["status"]
    print(f"2048 x 2048 x 3 field: end to end {t_full:.2f} s, floor (read + one Gaussian blur per channel) "
          f"{t_floor:.2f} s, ratio {t_full / t_floor:.2f} (target <= 6); "
          f"{metrics['n_cells']:.0f} cells of {field.cells.max()}, {metrics['n_puncta']:.0f} puncta of {len(field.puncta)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    compare_with_trackpy(args.repeats)
    real_smfish(args.repeats)
    end_to_end(args.repeats)


if __name__ == "__main__":
    main()
