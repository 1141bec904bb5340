"""Accuracy measures against ground truth (used by the tests and the benchmarks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree


def match_points(predicted: np.ndarray, truth: np.ndarray, *, radius: float):
    """One-to-one matching of points within ``radius`` that maximises the number of matches and
    then minimises the total distance. Returns ``(pairs, precision, recall, f1)``; ``pairs`` holds
    index pairs ``(predicted, truth)``."""
    predicted, truth = np.asarray(predicted, float), np.asarray(truth, float)
    if len(predicted) == 0 or len(truth) == 0:
        return np.zeros((0, 2), int), float(len(predicted) == 0), float(len(truth) == 0), 0.0
    tree = cKDTree(truth)
    dist = tree.sparse_distance_matrix(cKDTree(predicted), radius, output_type="coo_matrix")
    # Unmatched pairs cost more than any match, so the assignment maximises matches first.
    cost = np.full((len(predicted), len(truth)), 2.0 * radius + 1.0)
    cost[dist.col, dist.row] = dist.data
    # Duplicate points give a zero distance that the sparse matrix omits.
    pairs_zero = tree.query_ball_point(predicted, 1e-9)
    for i, hits in enumerate(pairs_zero):
        cost[i, hits] = 0.0
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] <= radius
    pairs = np.column_stack([rows[ok], cols[ok]])
    tp = len(pairs)
    precision, recall = tp / len(predicted), tp / len(truth)
    f1 = 2 * tp / (len(predicted) + len(truth))
    return pairs, precision, recall, f1


def match_labels(predicted: np.ndarray, truth: np.ndarray, *, iou: float = 0.5):
    """Object-level F1 of two label images at an intersection-over-union threshold.

    Above IoU 0.5 a truth object can match at most one predicted object, so counting the pairs
    above the threshold is an exact one-to-one matching.
    """
    p, t = predicted.ravel().astype(np.int64), truth.ravel().astype(np.int64)
    n_p, n_t = int(p.max()) + 1, int(t.max()) + 1
    both = (p > 0) & (t > 0)
    joint = np.bincount(p[both] * n_t + t[both], minlength=n_p * n_t).reshape(n_p, n_t)
    size_p, size_t = np.bincount(p, minlength=n_p), np.bincount(t, minlength=n_t)
    union = size_p[:, None] + size_t[None, :] - joint
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(union > 0, joint / union, 0.0)
    matches = int((scores[1:, 1:] > iou).sum())
    count_p, count_t = int((size_p[1:] > 0).sum()), int((size_t[1:] > 0).sum())
    if count_p + count_t == 0:
        return 1.0
    return 2 * matches / (count_p + count_t)


def tracking_scores(truth, estimate, *, gate: float = 5.0, columns=("y", "x")) -> dict:
    """Particle-tracking measures of the ISBI 2012 challenge (Chenouard et al., Nat. Methods 2014).

    ``truth`` and ``estimate`` are tables with ``track_id``, ``frame`` and position ``columns``.
    Ground-truth tracks are paired one-to-one with estimated tracks (or a dummy) to minimise the
    gated distance: the sum over frames of the distance between paired points, capped at
    ``gate``, with ``gate`` for a frame where only one of the pair has a point. Returns ``alpha``
    (1 - distance / distance to no tracks), ``beta`` (alpha also penalised by spurious tracks),
    and the Jaccard indices on detections and on tracks.
    """
    columns = list(columns)
    t_ids, t_index = np.unique(truth["track_id"].to_numpy(), return_inverse=True)
    e_ids, e_index = np.unique(estimate["track_id"].to_numpy(), return_inverse=True)
    t_len = np.bincount(t_index, minlength=len(t_ids))
    e_len = np.bincount(e_index, minlength=len(e_ids))
    # Per (truth, estimate) pair: summed capped distance over shared frames and their count.
    # Only points within the gate of each other matter: found per frame with a k-d tree, as a
    # join of every truth point with every estimate of its frame grows quadratically.
    t_frame, e_frame = truth["frame"].to_numpy(), estimate["frame"].to_numpy()
    t_pos, e_pos = truth[columns].to_numpy(float), estimate[columns].to_numpy(float)
    t_rows, e_rows = [np.zeros(0, int)], [np.zeros(0, int)]
    for frame in np.intersect1d(t_frame, e_frame):
        ti, ei = np.flatnonzero(t_frame == frame), np.flatnonzero(e_frame == frame)
        hits = cKDTree(e_pos[ei]).query_ball_point(t_pos[ti], gate)
        t_rows.append(np.repeat(ti, [len(h) for h in hits]))
        e_rows.append(ei[np.concatenate(hits).astype(int)] if len(hits) else np.zeros(0, int))
    t_rows, e_rows = np.concatenate(t_rows), np.concatenate(e_rows)
    joined = pd.DataFrame({"t": t_index[t_rows], "e": e_index[e_rows],
                           "d": np.sqrt(((t_pos[t_rows] - e_pos[e_rows]) ** 2).sum(axis=1))})
    joined = joined[joined["d"] < gate]
    shared = joined.groupby(["t", "e"])["d"].agg(["sum", "count"]).reset_index()
    n_t, n_e = len(t_ids), len(e_ids)
    # cost(t, e) = sum of capped distances on shared frames + gate for every unshared point.
    dummy_cost = gate * t_len.astype(float)
    cost = np.full((n_t, n_e + n_t), np.inf)
    cost[:, n_e:] = np.where(np.eye(n_t, dtype=bool), dummy_cost[:, None], np.inf)
    t_, e_ = shared["t"].to_numpy(), shared["e"].to_numpy()
    cost[t_, e_] = shared["sum"].to_numpy() + gate * (t_len[t_] + e_len[e_] - 2 * shared["count"].to_numpy())
    big = gate * (t_len.sum() + e_len.sum()) + 1.0
    rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, big))
    paired_cost = cost[rows, cols]
    total = float(paired_cost.sum())
    to_none = float(gate * t_len.sum())
    paired_estimates = cols[cols < n_e]
    spurious = np.setdiff1d(np.arange(n_e), paired_estimates)
    spurious_cost = float(gate * e_len[spurious].sum())
    alpha = 1 - total / to_none if to_none else float("nan")
    beta = (to_none - total) / (to_none + spurious_cost) if to_none else float("nan")
    # Detections: points of a paired estimate within the gate of its truth at the same frame.
    pair_of = dict(zip(rows[cols < n_e], cols[cols < n_e]))
    matched = joined[[pair_of.get(t) == e for t, e in zip(joined["t"], joined["e"])]]
    tp = len(matched)
    fn = int(t_len.sum()) - tp
    fp = int(e_len.sum()) - tp
    n_paired = int((cols < n_e).sum())
    return {
        "alpha": alpha, "beta": beta,
        "jaccard_detections": tp / (tp + fn + fp) if tp + fn + fp else 1.0,
        "jaccard_tracks": n_paired / (n_t + len(spurious)) if n_t + len(spurious) else 1.0,
    }
