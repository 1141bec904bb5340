"""Tracks out in the forms other tools read: TrackMate-compatible spot and track tables, and the
mean squared displacement (MSD) per track and over the ensemble, in µm and s.

The TrackMate tables use TrackMate's feature keys as column names (``TRACK_ID``, ``POSITION_X``,
``POSITION_T``, ``FRAME``, ...) with one header row, so that pandas, R and Fiji's TrackMate CSV
importer read them directly (TrackMate's own export adds three rows of display names and units
below the keys; here the units are fixed: µm, s, µm/s). Positions are the measured ones (those of
``puncta.csv``), as TrackMate reports its spots; ``tracks.csv`` holds the smoothed path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import io

SPOT_COLUMNS = ["LABEL", "ID", "TRACK_ID", "QUALITY", "POSITION_X", "POSITION_Y", "POSITION_Z", "POSITION_T",
                "FRAME", "MEAN_INTENSITY_CH1", "CELL_ID"]
TRACK_COLUMNS = ["LABEL", "TRACK_ID", "NUMBER_SPOTS", "NUMBER_GAPS", "TRACK_START", "TRACK_STOP",
                 "TRACK_DURATION", "TRACK_DISPLACEMENT", "TRACK_MEAN_SPEED", "TRACK_X_LOCATION",
                 "TRACK_Y_LOCATION", "TRACK_Z_LOCATION"]
MSD_COLUMNS = ["kind", "track_id", "lag_frames", "lag_s", "msd_um2", "n_pairs"]


def _positions_um(spots: pd.DataFrame, pixel_size_um) -> np.ndarray:
    """``(n, 3)`` positions ``z, y, x`` in µm of rows with pixel columns ``z, y, x``."""
    scale = np.array([s if s is not None else 0.0 for s in pixel_size_um], float)
    z = spots["z"].to_numpy(float) if "z" in spots else np.zeros(len(spots))
    return np.column_stack([np.nan_to_num(z), spots["y"].to_numpy(float), spots["x"].to_numpy(float)]) * scale


def track_spots(tracks: pd.DataFrame, puncta: pd.DataFrame) -> pd.DataFrame:
    """Each tracked punctum (``tracks.csv`` rows) with its measured position and SNR from
    ``puncta.csv``, matched by ``spot_id``."""
    measured = puncta.set_index("spot_id")[["z", "y", "x", "snr", "intensity"]]
    spots = tracks[["track_id", "frame", "spot_id", "cell_id"]].join(measured, on="spot_id")
    return spots.sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)


def trackmate_tables(spots: pd.DataFrame, *, pixel_size_um, frame_interval_s: float):
    """TrackMate spot and track tables (µm, s) of :func:`track_spots` output.

    Parameters
    ----------
    spots : DataFrame
        ``track_id, frame, spot_id, cell_id, z, y, x, snr, intensity``; positions in pixels.
    pixel_size_um : (z, y, x)
        Pixel size in µm.
    frame_interval_s : float
        Time between frames in s.

    Returns
    -------
    spot_table, track_table : DataFrame
        Columns :data:`SPOT_COLUMNS` and :data:`TRACK_COLUMNS`.
    """
    position = _positions_um(spots, pixel_size_um)
    frame = spots["frame"].to_numpy(int)
    spot_table = pd.DataFrame({
        "LABEL": [f"ID{i}" for i in spots["spot_id"]], "ID": spots["spot_id"].to_numpy(int),
        "TRACK_ID": spots["track_id"].to_numpy(int), "QUALITY": spots["snr"].to_numpy(float),
        "POSITION_X": position[:, 2], "POSITION_Y": position[:, 1], "POSITION_Z": position[:, 0],
        "POSITION_T": frame * frame_interval_s, "FRAME": frame,
        "MEAN_INTENSITY_CH1": spots["intensity"].to_numpy(float), "CELL_ID": spots["cell_id"].to_numpy(),
    }, columns=SPOT_COLUMNS)
    rows = []
    for tid, block in spot_table.groupby("TRACK_ID", sort=True):
        xyz = block[["POSITION_X", "POSITION_Y", "POSITION_Z"]].to_numpy()
        t = block["POSITION_T"].to_numpy()
        steps = np.linalg.norm(np.diff(xyz, axis=0), axis=1)
        speeds = steps / np.diff(t) if len(t) > 1 else np.array([])
        rows.append({
            "LABEL": f"Track_{tid}", "TRACK_ID": tid, "NUMBER_SPOTS": len(block),
            "NUMBER_GAPS": int((np.diff(block["FRAME"].to_numpy()) > 1).sum()),
            "TRACK_START": t.min(), "TRACK_STOP": t.max(), "TRACK_DURATION": t.max() - t.min(),
            "TRACK_DISPLACEMENT": float(np.linalg.norm(xyz[-1] - xyz[0])),
            "TRACK_MEAN_SPEED": float(speeds.mean()) if len(speeds) else np.nan,
            "TRACK_X_LOCATION": xyz[:, 0].mean(), "TRACK_Y_LOCATION": xyz[:, 1].mean(),
            "TRACK_Z_LOCATION": xyz[:, 2].mean()})
    return spot_table, pd.DataFrame(rows, columns=TRACK_COLUMNS)


def msd_table(spots: pd.DataFrame, *, pixel_size_um, frame_interval_s: float,
              max_lag: int | None = None) -> pd.DataFrame:
    """Time-averaged MSD of each track and the ensemble MSD, by lag, in µm² and s.

    A track's MSD at a lag is the mean squared displacement over all its pairs of points that lag
    apart (missed frames give no pair); the ensemble's pools every track's pairs, so each lag is
    weighted by the pairs that measure it. ``n_pairs`` says how many.

    Parameters
    ----------
    spots : DataFrame
        ``track_id, frame, z, y, x`` (pixels), e.g. from :func:`track_spots`.
    pixel_size_um : (z, y, x)
        Pixel size in µm.
    frame_interval_s : float
        Time between frames in s.
    max_lag : int, optional
        Longest lag in frames; every lag a track spans by default.

    Returns
    -------
    DataFrame
        Columns :data:`MSD_COLUMNS`: ``kind`` is ``track`` (with its ``track_id``) or
        ``ensemble``.
    """
    position = _positions_um(spots, pixel_size_um)
    rows = []
    total_sq, total_n = {}, {}
    for tid, index in spots.groupby("track_id", sort=True).indices.items():
        frames = spots["frame"].to_numpy(int)[index]
        order = np.argsort(frames)
        frames, xyz = frames[order], position[index][order]
        filled = np.full((frames[-1] - frames[0] + 1, 3), np.nan)
        filled[frames - frames[0]] = xyz
        longest = len(filled) - 1 if max_lag is None else min(max_lag, len(filled) - 1)
        for lag in range(1, longest + 1):
            d2 = ((filled[lag:] - filled[:-lag]) ** 2).sum(1)
            d2 = d2[np.isfinite(d2)]
            if not len(d2):
                continue
            rows.append(("track", tid, lag, d2.mean(), len(d2)))
            total_sq[lag] = total_sq.get(lag, 0.0) + d2.sum()
            total_n[lag] = total_n.get(lag, 0) + len(d2)
    rows += [("ensemble", pd.NA, lag, total_sq[lag] / total_n[lag], total_n[lag]) for lag in sorted(total_n)]
    table = pd.DataFrame(rows, columns=["kind", "track_id", "lag_frames", "msd_um2", "n_pairs"])
    table["track_id"] = table["track_id"].astype("Int64")
    table.insert(3, "lag_s", table["lag_frames"] * frame_interval_s)
    return table[MSD_COLUMNS]


def write_track_exports(metrics: dict, outputs: dict) -> None:
    """Write ``trackmate_spots``, ``trackmate_tracks`` and ``msd`` (output key -> path) of one
    analysed time-lapse from its ``tracks`` and ``puncta`` tables and ``metrics``
    (``pixel_size_um``, ``frame_interval_s``); header-only tables for a failed sample."""
    empty = {"trackmate_spots": SPOT_COLUMNS, "trackmate_tracks": TRACK_COLUMNS, "msd": MSD_COLUMNS}
    if metrics.get("status") != "ok":
        for key, columns in empty.items():
            io.write_table(pd.DataFrame(columns=columns), outputs[key])
        return
    tracks = pd.read_csv(outputs["tracks"])
    spots = track_spots(tracks, pd.read_csv(outputs["puncta"]))
    size, interval = metrics["pixel_size_um"], metrics["frame_interval_s"]
    spot_table, track_table = trackmate_tables(spots, pixel_size_um=size, frame_interval_s=interval)
    io.write_table(spot_table, outputs["trackmate_spots"])
    io.write_table(track_table, outputs["trackmate_tracks"])
    io.write_table(msd_table(spots, pixel_size_um=size, frame_interval_s=interval), outputs["msd"])
