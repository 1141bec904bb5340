"""Accuracy measures against ground truth (used by the tests and the benchmarks)."""

from __future__ import annotations

import numpy as np
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
