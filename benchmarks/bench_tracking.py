"""Particle tracking against trackpy and laptrack on ISBI-style movies.

Run on demand:  pip install ".[bench]" && python benchmarks/bench_tracking.py

Movies of 512 x 512 pixels and 60 frames with vesicle-like particles (Brownian and directed,
births, deaths, blinking) at ISBI signal-to-noise ratios 1, 2, 4 and 7. Per SNR:

- exotrack: the workflow's own analysis of the movie (detection and linking, default settings);
- trackpy: ``locate`` with ``minmass`` tuned for detection F1 on a separate calibration movie at
  the same SNR, then ``link`` with memory 3 and the search range tuned on the same calibration
  movie (trackpy's best case);
- laptrack: linking exotrack's detections with the same search radius and gap length.

Printed: detection F1 (3 px), the ISBI measures alpha and beta (gate 5 px), linking times (the
fastest of five calls; laptrack's, seconds long, of one), and the diffusion coefficient of
Brownian tracks against the truth (length-weighted mean over tracks of 20 frames or more).
``tp.link*`` is trackpy.link (search 5 px, memory 3) on exotrack's own detections, so that the
linking times compare like with like.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from exotrack import io
from exotrack.demo import simulate_movie
from exotrack.evaluate import match_points, tracking_scores
from exotrack.fluorescence import analyse_image
from exotrack.tracking import link

SHAPE = (512, 512)
FRAMES = 60
STEP_PX = 1.2
INTERVAL_S = 1.0
REPEATS = 5


def movie(snr, seed):
    return simulate_movie(shape=SHAPE, n_frames=FRAMES, n_particles=150, snr=snr, step_sigma_px=STEP_PX,
                          frame_interval_s=INTERVAL_S, seed=seed)


def detection_f1(truth, found):
    if len(found) == 0:
        return 0.0
    found = found.loc[:, ~found.columns.duplicated()]
    tp = fp = fn = 0
    for frame, block in truth.groupby("frame"):
        mine = found[found["frame"] == frame]
        pairs = match_points(mine[["y", "x"]].to_numpy(), block[["y", "x"]].to_numpy(), radius=3)[0]
        tp += len(pairs)
        fp += len(mine) - len(pairs)
        fn += len(block) - len(pairs)
    return 2 * tp / (2 * tp + fp + fn)


def timed(function, repeats=REPEATS):
    """``function()``'s result and its fastest time over ``repeats`` calls: linking a movie takes
    tens of milliseconds, where one call's time is as much the machine's noise as the code's."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return result, min(times)


def run_exotrack(m):
    size = (1.0, m.pixel_size_um, m.pixel_size_um)
    image = io.Image(data=m.image[:, -1:, None], channel_names=["CD63-RFP"], pixel_size_um=size)
    start = time.perf_counter()
    result = analyse_image(image, roles={"exosomes": 0}, pixel_size_um=size, options={},
                           frame_interval_s=m.frame_interval_s)
    return result, time.perf_counter() - start


def tp_locate(tp, m, diameter, minmass, frames=None):
    movie = m.image[:frames, -1]
    return tp.batch(movie, diameter, minmass=minmass, processes=1).reset_index(drop=True)


def tune_trackpy(tp, calibration, truth):
    best = (-1, None)
    first = truth[truth["frame"] < 15]
    for diameter in (5, 7):
        for minmass in np.geomspace(5, 5000, 16):
            found = tp_locate(tp, calibration, diameter, minmass, frames=15)
            f1 = detection_f1(first, found)
            if f1 > best[0]:
                best = (f1, (diameter, minmass))
    diameter, minmass = best[1]
    found = tp_locate(tp, calibration, diameter, minmass)
    best_link = (-1, None)
    for search in (3, 4, 5, 6, 8):
        linked = tp.link(found, search, memory=3).reset_index(drop=True)
        alpha = tracking_scores(truth, linked.rename(columns={"particle": "track_id"}))["alpha"]
        if alpha > best_link[0]:
            best_link = (alpha, search)
    return diameter, minmass, best_link[1]


def diffusion_error(result, m):
    """Median D of exotrack's tracks paired with Brownian truth tracks, against the truth."""
    true_d = (STEP_PX * m.pixel_size_um) ** 2 / (2 * INTERVAL_S)
    summary = result.track_summary
    tracks = result.tracks
    brownian = set(m.tracks.loc[m.tracks["motion"] == "brownian", "track_id"])
    # Estimated tracks mostly over Brownian truth: nearest truth point's track, majority vote.
    truth = m.tracks[m.tracks["visible"]]
    owner = {}
    for frame, block in tracks.groupby("frame"):
        t = truth[truth["frame"] == frame]
        pairs = match_points(block[["y", "x"]].to_numpy(), t[["y", "x"]].to_numpy(), radius=3)[0]
        for i, j in pairs:
            owner.setdefault(block["track_id"].iloc[i], []).append(t["track_id"].iloc[j])
    keep = [tid for tid, owners in owner.items()
            if len(owners) >= 20 and pd.Series(owners).mode().iloc[0] in brownian]
    chosen = summary.set_index("track_id").loc[keep].dropna(subset=["diffusion_um2_s"])
    if chosen.empty:
        return np.nan, true_d
    # Ensemble estimate: per-track estimates weighted by track length.
    d = np.average(chosen["diffusion_um2_s"], weights=chosen["n_frames"])
    return d, true_d


def dense(tp, n_points=3000, n_frames=200) -> None:
    """Linking time and peak memory of a crowded movie's true positions (5 % missed), against
    trackpy.link on the same points; each linker runs in a fresh process so that its peak
    resident memory is its own."""
    import json
    import subprocess
    import sys

    code = f"""
import json, resource, sys, time
import numpy as np, pandas as pd
rng = np.random.default_rng(5)
walk = rng.uniform(0, 2000, ({n_points}, 2)) + np.cumsum(rng.normal(0, 1.0, ({n_frames}, {n_points}, 2)), axis=0)
frame = np.repeat(np.arange({n_frames}), {n_points})
table = pd.DataFrame({{"track_id": np.tile(np.arange({n_points}), {n_frames}), "frame": frame,
                      "y": walk[..., 0].ravel(), "x": walk[..., 1].ravel()}})
table = table[rng.random(len(table)) >= 0.05].reset_index(drop=True)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if sys.argv[1] == "exotrack":
    from exotrack.tracking import link
    ids = link(table)[0]
else:
    import trackpy as tp
    tp.quiet()
    ids = tp.link(table[["frame", "y", "x"]].copy(), 5, memory=3)["particle"].to_numpy()
seconds = time.perf_counter() - start
from exotrack.evaluate import tracking_scores
alpha = tracking_scores(table, table.assign(track_id=ids))["alpha"]
print(json.dumps({{"s": seconds, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "base_mib": before / 1024, "alpha": alpha, "n": len(table)}}))
"""
    out = {name: json.loads(subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True,
                                           check=True).stdout.splitlines()[-1])
           for name in ("exotrack", "trackpy")}
    for name, r in out.items():
        print(f"dense {name:<9} {r['n']} detections: link {r['s']:.2f} s, peak RSS {r['rss_mib']:.0f} MiB "
              f"(before linking {r['base_mib']:.0f}), alpha {r['alpha']:.3f}")
    print(f"     ratios: link time exotrack / trackpy.link {out['exotrack']['s'] / out['trackpy']['s']:.2f}, "
          f"peak RSS {out['exotrack']['rss_mib'] / out['trackpy']['rss_mib']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snr", type=float, nargs="*", default=[1, 2, 4, 7])
    parser.add_argument("--dense", action="store_true", help="only the crowded-movie linking time and memory")
    args = parser.parse_args()
    import trackpy as tp
    from laptrack import LapTrack

    tp.quiet()
    warnings.filterwarnings("ignore")
    if args.dense:
        dense(tp)
        return
    print(f"{'SNR':>4} {'tool':<10}{'det F1':>8}{'alpha':>8}{'beta':>8}{'JSC':>7}{'link s':>9}{'total s':>9}")
    for snr in args.snr:
        m, calibration = movie(snr, seed=int(100 + snr)), movie(snr, seed=int(900 + snr))
        truth = m.tracks[m.tracks["visible"]]
        result, t_total = run_exotrack(m)
        detections = result.puncta_table
        _, t_link = timed(lambda: link(detections, columns=("y", "x")))
        ours = tracking_scores(truth, result.tracks)
        rows = [("exotrack", detection_f1(truth, detections), ours, t_link, t_total)]
        same, t_same = timed(lambda: tp.link(detections[["frame", "y", "x"]].copy(), 5, memory=3))
        same = same.reset_index(drop=True)
        rows.append(("tp.link*", detection_f1(truth, detections),
                     tracking_scores(truth, same.rename(columns={"particle": "track_id"})), t_same, np.nan))

        diameter, minmass, search = tune_trackpy(tp, calibration, calibration.tracks[calibration.tracks["visible"]])
        start = time.perf_counter()
        located = tp_locate(tp, m, diameter, minmass)
        t_locate = time.perf_counter() - start
        linked, t_tp_link = timed(lambda: tp.link(located, search, memory=3))
        linked = linked.reset_index(drop=True)
        rows.append(("trackpy", detection_f1(truth, located),
                     tracking_scores(truth, linked.rename(columns={"particle": "track_id"})), t_tp_link,
                     t_locate + t_tp_link))

        _, params = link(detections, columns=("y", "x"))
        lt = LapTrack(cutoff=params.max_distance ** 2, gap_closing_cutoff=params.max_distance ** 2,
                      gap_closing_max_frame_count=params.max_gap + 1, splitting_cutoff=False, merging_cutoff=False)
        start = time.perf_counter()
        lt_df, _, _ = lt.predict_dataframe(detections[["frame", "y", "x"]].copy(), coordinate_cols=["y", "x"],
                                           frame_col="frame", only_coordinate_cols=False)
        t_lt = time.perf_counter() - start
        rows.append(("laptrack", detection_f1(truth, detections),
                     tracking_scores(truth, lt_df.rename(columns={"track_id": "track_id"})), t_lt, np.nan))
        for name, f1, scores, t_l, t_all in rows:
            print(f"{snr:>4g} {name:<10}{f1:>8.3f}{scores['alpha']:>8.3f}{scores['beta']:>8.3f}"
                  f"{scores['jaccard_detections']:>7.3f}{t_l:>9.3f}{t_all:>9.2f}")
        d, true_d = diffusion_error(result, m)
        print(f"     trackpy tuned: diameter {diameter}, minmass {minmass:.0f}, search {search} px; "
              f"exotrack radius {params.max_distance:.1f} px, gap {params.max_gap}; "
              f"Brownian D {d:.4f} vs true {true_d:.4f} um2/s ({100 * (d / true_d - 1):+.1f}%)")
        alpha = {name: scores["alpha"] for name, _, scores, _, _ in rows}
        print(f"     ratios: link time exotrack / trackpy.link {t_link / t_tp_link:.2f} (target <= 1); "
              f"alpha exotrack / trackpy {alpha['exotrack'] / alpha['trackpy']:.3f}, "
              f"/ laptrack {alpha['exotrack'] / alpha['laptrack']:.3f} (targets > 1)")


if __name__ == "__main__":
    main()
