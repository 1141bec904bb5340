"""Linking detections into tracks, and how tracks move.

Linking follows Jaqaman et al. (2008), as u-track and TrackMate do: a global linear assignment
(LAP) between consecutive frames, in which every detection may also end its track or start a
new one, then a second LAP that closes gaps between track segments over missed detections
(blinking, defocus). Costs are squared displacements under two motion models, Brownian and
directed (a track's last velocity predicts its next position); each candidate link takes the
cheaper, except for a track whose velocity carries it beyond the reach of random steps: that one
is transported, and sought only around its predicted position. The assignments are solved on
sparse matrices, so a frame with thousands of puncta costs milliseconds and there are no
"subnetworks" to blow up.

The search radius and the longest gap default from the data: the radius from the displacements
of unambiguous nearest-neighbour pairs between frames (a Brownian reach for their size, or their
observed tail where chained steps show that transport makes them large), the gap from how often
detections go missing for one frame, bounded by how crowded track starts are.

A track's positions can then be smoothed (:func:`smooth_tracks`): each punctum's position is
weighed against its neighbours' in time by its own localisation error, so a dim punctum's
position error shrinks while a bright one's position stands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree
from scipy.special import gammaincinv

# A link may cost at most this much more than the largest allowed displacement before ending
# the track is preferred (Jaqaman's 1.05).
_NO_LINK_FACTOR = 1.05
_MAX_GAP = 5
# Largest augmented LAP (rows) solved as a dense matrix.
_DENSE_LAP = 200
# Weight of the past in a track's running-mean velocity: a memory of about five steps, over which
# transport keeps its direction; a Brownian track's mean drift then stays near zero (a third of a
# step's scatter, against over half with an even split between the last step and the past).
_VELOCITY_MEMORY = 0.8
# A velocity from this many steps may mark a track as transported: one step alone is as likely a
# wrong link or a noise detection.
_SETTLED_STEPS = 2


@dataclass
class LinkingParameters:
    """Search radius (pixels, per frame) and longest bridged gap (frames)."""

    max_distance: float
    max_gap: int
    step_sigma: float  # per-axis displacement sd per frame, pixels


def _chi2_quantile(p: float, dof: int) -> float:
    """Quantile of the chi-squared distribution (scipy.stats would add half a second to every
    job's start-up for this one function)."""
    return float(2 * gammaincinv(dof / 2, p))


def solve_links(rows, cols, costs, n_sources, n_targets, no_link):
    """Solve the augmented linking assignment problem of Jaqaman et al. (2008, Fig. 1).

    Sources can end (cost ``no_link``), targets can start (same cost); the lower-right block
    lets an unlinked source and an unlinked target coexist.

    Parameters
    ----------
    rows, cols : ndarray of int
        Source and target index of each candidate link.
    costs : ndarray of float
        Each candidate's cost.
    n_sources, n_targets : int
        How many sources and targets there are (candidates need not name them all).
    no_link : float
        The cost of leaving a source unlinked, and of a target starting anew.

    Returns
    -------
    ndarray of int, shape (n_links, 2)
        The (source, target) pairs that link.
    """
    if n_sources == 0 or n_targets == 0 or len(costs) == 0:
        return np.zeros((0, 2), int)
    lower = np.min(costs)
    # A candidate that shares neither end with another is a problem of its own: linking costs
    # its cost plus the lower-right block's, leaving both ends unlinked costs no_link twice. In
    # all but crowded frames most candidates are such pairs.
    alone = ((np.bincount(rows, minlength=n_sources)[rows] == 1)
             & (np.bincount(cols, minlength=n_targets)[cols] == 1))
    direct = alone & (costs + lower < 2 * no_link)
    pairs = [np.column_stack([rows[direct], cols[direct]])]
    if not alone.all():
        rows, cols = rows[~alone], cols[~alone]
        sources, r = _compact(rows, n_sources)
        targets, c = _compact(cols, n_targets)
        matched = _match(r, c, costs[~alone], len(sources), len(targets), no_link, lower)
        pairs.append(np.column_stack([sources[matched[:, 0]], targets[matched[:, 1]]]))
    return np.concatenate(pairs)


def _compact(index, n):
    """The distinct values of ``index`` (all below ``n``), and ``index`` renumbered into them."""
    used = np.zeros(n, bool)
    used[index] = True
    return np.flatnonzero(used), (np.cumsum(used) - 1)[index]


def _match(rows, cols, costs, n, m, no_link, lower):
    """:func:`solve_links`'s augmented matrix, with ``lower`` in its lower-right block, solved."""
    r = np.concatenate([rows, np.arange(n), n + np.arange(m), n + cols])
    c = np.concatenate([cols, m + np.arange(n), np.arange(m), m + rows])
    w = np.concatenate([costs, np.full(n, no_link), np.full(m, no_link), np.full(len(rows), lower)])
    if n + m <= _DENSE_LAP:
        # Small problems (a frame's few contested puncta) are solved dense: the sparse
        # solver's fixed cost per call is larger than the whole dense solution.
        matrix = np.full((n + m, m + n), np.inf)
        matrix[r, c] = w
        targets = linear_sum_assignment(matrix)[1][:n]
    else:
        # A constant added to every entry leaves the optimum unchanged and keeps zero costs from
        # being read as missing edges. Built as CSR directly: every (row, column) occurs once,
        # and the COO route costs more than the matching itself.
        order = np.argsort(r, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n + m))]).astype(np.int32)
        matrix = sparse.csr_matrix((w[order] + 1.0, c[order].astype(np.int32), indptr), shape=(n + m, m + n))
        targets = min_weight_full_bipartite_matching(matrix)[1][:n]
    linked = targets < m
    return np.column_stack([np.flatnonzero(linked), targets[linked]])


def _candidates(a, b, radius, velocity=None):
    """Sparse costs between points ``a`` and ``b`` (arrays, or their k-d trees) within
    ``radius``: the squared distance, or the squared distance to ``a + velocity`` where that is
    cheaper (directed motion; rows without a finite velocity have none)."""
    tree_a, tree_b = (p if isinstance(p, cKDTree) else cKDTree(p) for p in (a, b))
    origins = [(np.arange(tree_a.n), tree_a)]
    if velocity is not None:
        moving = np.flatnonzero(np.isfinite(velocity).all(1))
        if len(moving):
            origins.append((moving, cKDTree(tree_a.data[moving] + velocity[moving])))
    pairs = []
    for index, origin in origins:
        found = origin.sparse_distance_matrix(tree_b, radius, output_type="ndarray")
        pairs.append((index[found["i"]], found["j"], found["v"] ** 2))
    rows, cols, cost = pairs[0]
    if len(pairs) > 1:
        # Each pair at the cheaper model's cost: the directed cost of pairs near in space, and
        # the pairs only the directed model reaches (a margin keeps a pair at the radius itself,
        # which rounding may put on either side, from being counted twice).
        predicted = tree_a.data + np.nan_to_num(velocity)
        cost = np.minimum(cost, ((tree_b.data[cols] - predicted[rows]) ** 2).sum(1))
        extra_rows, extra_cols, extra_cost = pairs[1]
        beyond = ((tree_b.data[extra_cols] - tree_a.data[extra_rows]) ** 2).sum(1) > radius ** 2 * (1 + 1e-9)
        rows, cols = np.concatenate([rows, extra_rows[beyond]]), np.concatenate([cols, extra_cols[beyond]])
        cost = np.concatenate([cost, extra_cost[beyond]])
    return rows, cols, cost


def _transported(rows, cols, cost, a, b, velocity, reach):
    """Candidate links (from :func:`_candidates`) where a row's ``velocity`` exceeds ``reach``,
    the reach of random steps, kept only within ``reach`` of its predicted position and costed
    by the distance from it. Such a track is transported: where random steps alone would take
    it, another punctum is likelier than this one, and for fast transport the search radius is
    wide enough to hold puncta that appear or vanish beside it."""
    moving = np.linalg.norm(np.nan_to_num(velocity), axis=1) > reach
    if not moving.any():
        return rows, cols, cost
    moving = moving[rows]
    miss = ((b[cols] - a[rows] - np.nan_to_num(velocity)[rows]) ** 2).sum(1)
    keep = ~moving | (miss <= reach ** 2)
    return rows[keep], cols[keep], np.where(moving, miss, cost)[keep]


def space_time_points(positions, frames, *, reach: float) -> np.ndarray:
    """Positions with their frame as one more coordinate, frames set further apart than
    ``reach``: one k-d tree search within ``reach`` then finds points of the same frame only,
    where searching space alone would pair points across every frame, most of them unwanted."""
    return np.column_stack([positions, np.asarray(frames) * (2.0 * reach + 1.0)])


def _gap_candidates(end_frames, end_positions, start_frames, start_positions, radius, *, gaps, velocity=None):
    """Pairs (end, start) within ``radius`` (see :func:`_candidates`) where the start comes
    ``gaps`` frames after the end: one search per gap, in space and time."""
    ends = space_time_points(end_positions, end_frames, reach=radius)
    if velocity is not None:
        velocity = np.column_stack([velocity, np.zeros(len(velocity))])
    rows, cols = [np.zeros(0, int)], [np.zeros(0, int)]
    for gap in gaps:
        starts = space_time_points(start_positions, start_frames - gap, reach=radius)
        r, c, _ = _candidates(ends, starts, radius, velocity)
        rows.append(r)
        cols.append(c)
    return np.concatenate(rows), np.concatenate(cols)


def _clear_pairs(a, b, spacing):
    """Indices into ``a`` and ``b`` (k-d trees) of unambiguous nearest-neighbour pairs, and their
    distances: mutual, twice as close as the runner-up, and well inside the typical ``spacing``
    (sparse, noisy detections also pair up by chance, at distances of the order of the spacing)."""
    if a.n < 3 or b.n < 3:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    d, j = b.query(a.data, k=2)
    back = a.query(b.data)[1]
    clear = (back[j[:, 0]] == np.arange(a.n)) & (d[:, 0] < 0.5 * d[:, 1]) & (d[:, 0] < spacing / 3)
    return np.flatnonzero(clear), j[clear, 0], d[clear, 0]


def estimate_parameters(points: list[np.ndarray], *, max_gap: int | None = None) -> LinkingParameters:
    """Search radius from the data (see module docstring); ``max_gap`` is set later, after
    frame-to-frame linking, unless given."""
    ndim = next((p.shape[1] for p in points if len(p)), 2)
    # Ten runs of three evenly spread frames tell the spacing and the step size as well as all
    # would.
    sample = np.unique(np.linspace(0, max(len(points) - 3, 0), 10).astype(int))
    trees = {i: cKDTree(points[i]) for i in np.unique(sample[:, None] + np.arange(3)) if i < len(points)}
    nn = [trees[i].query(points[i], k=2)[0][:, 1] for i in sample if len(points[i]) > 2]
    spacing = float(np.median(np.concatenate(nn))) if nn else 10.0
    steps, turns = [np.zeros(0)], [np.zeros(0)]
    for i in sample:
        if i + 1 >= len(points):
            continue
        first = _clear_pairs(trees[i], trees[i + 1], spacing)
        steps.append(first[2])
        if i + 2 >= len(points):
            continue
        second = _clear_pairs(trees[i + 1], trees[i + 2], spacing)
        steps.append(second[2])
        # Chained steps through a middle point: their difference cancels a steady velocity.
        middle, at_first, at_second = np.intersect1d(first[1], second[0], return_indices=True)
        before = points[i + 1][middle] - points[i][first[0][at_first]]
        after = points[i + 2][second[1][at_second]] - points[i + 1][middle]
        turns.append(np.linalg.norm(after - before, axis=1))
    steps, turns = np.concatenate(steps), np.concatenate(turns)
    if len(steps) >= 20:
        # |step|^2 / sigma^2 follows chi-square with ndim degrees of freedom for Brownian steps.
        sigma = float(np.sqrt(np.median(steps ** 2) / _chi2_quantile(0.5, ndim)))
        if len(turns) >= 20:
            # Directed transport inflates the steps but not the differences of chained steps,
            # whose spread is that of the random part (times sqrt 2; the 90th percentile, as
            # the slow movers' small differences would pull a median down). Where the steps
            # exceed twice that, transport dominates, and a Brownian reach for steps that large
            # would take in unrelated puncta: the observed steps' tail sets the radius instead.
            random = float(np.percentile(turns, 90) / np.sqrt(2 * _chi2_quantile(0.9, ndim)))
            if random < sigma / 2:
                sigma = random
    else:
        sigma = spacing / 8
    sigma = max(sigma, 0.5)  # localisation noise alone moves a spot by a fraction of a pixel
    # 99.9 % of Brownian steps fall inside this radius; a population with mixed speeds (cells
    # migrating, vesicles transported) has a heavier tail, which the observed 95th percentile
    # catches.
    radius = float(np.sqrt(_chi2_quantile(0.999, ndim)) * sigma)
    if len(steps) >= 20:
        radius = max(radius, 1.5 * float(np.percentile(steps, 95)))
    return LinkingParameters(max_distance=radius, max_gap=_MAX_GAP if max_gap is None else max_gap,
                             step_sigma=sigma)


def link(detections: pd.DataFrame, *, columns=("y", "x"), max_distance: float | None = None,
         max_gap: int | None = None, predicts=None, certain=None) -> tuple[np.ndarray, LinkingParameters]:
    """Track ids for ``detections`` (a table with ``frame`` and position ``columns``, pixels).

    Parameters
    ----------
    max_distance : float, optional
        Largest displacement per frame (pixels) for a link; estimated from the data if omitted.
    max_gap : int, optional
        Most consecutive frames a track may miss; estimated from the data if omitted.
    predicts : array of bool, optional
        Per row, whether its velocity (directed motion) may predict where it goes next; all rows
        if omitted. Steps of uncertain detections (dim, possibly noise) predict nothing.
    certain : array of bool, optional
        Per row, whether the detection is surely real; all rows if omitted. A gap between two
        detections not both certain is bridged only within ``max_distance``, not the reach a
        Brownian track gains over the missed frames: among uncertain detections, noise that
        happens to lie farther along is likelier than a long excursion.

    Returns
    -------
    track_id : ndarray of int
        One id per row of ``detections``, numbered from 1 in order of first appearance.
    parameters : LinkingParameters
        What was used.
    """
    frames = detections["frame"].to_numpy(int)
    positions = detections[list(columns)].to_numpy(float)
    n = len(detections)
    if n == 0:
        return np.zeros(0, int), LinkingParameters(max_distance or 0.0, max_gap or 0, 0.0)
    order = np.argsort(frames, kind="stable")
    first, last = frames.min(), frames.max()
    by_frame = np.split(order, np.searchsorted(frames[order], np.arange(first + 1, last + 1)))
    params = estimate_parameters([positions[i] for i in by_frame])
    if max_distance is not None:
        params.max_distance = float(max_distance)
        params.step_sigma = max_distance / np.sqrt(_chi2_quantile(0.999, positions.shape[1]))
    radius = params.max_distance
    no_link = _NO_LINK_FACTOR * radius ** 2

    # Frame to frame.
    successor = np.full(n, -1)
    predecessor = np.full(n, -1)
    velocity = np.full(positions.shape, np.nan)
    n_steps = np.zeros(n, int)
    # Random steps stay within this reach; a track whose velocity carries it further is
    # transported (see _transported).
    transport_reach = float(np.sqrt(_chi2_quantile(0.999, positions.shape[1])) * params.step_sigma)
    # Each frame's tree serves as target, then as source.
    trees = [cKDTree(positions[i]) if len(i) else None for i in by_frame]
    for t, (a, b) in enumerate(zip(by_frame[:-1], by_frame[1:])):
        if len(a) == 0 or len(b) == 0:
            continue
        v = velocity[a] if predicts is None else np.where(predicts[a][:, None], velocity[a], np.nan)
        rows, cols, cost = _candidates(trees[t], trees[t + 1], radius, v)
        settled = np.where((n_steps[a] >= _SETTLED_STEPS)[:, None], v, np.nan)
        rows, cols, cost = _transported(rows, cols, cost, positions[a], positions[b], settled, transport_reach)
        pairs = solve_links(rows, cols, cost, len(a), len(b), no_link)
        src, dst = a[pairs[:, 0]], b[pairs[:, 1]]
        successor[src], predecessor[dst] = dst, src
        # Velocity as a running mean of steps: one Brownian step predicts nothing, while a
        # directed track's steps agree, so averaging keeps its velocity and damps the rest.
        step = positions[dst] - positions[src]
        previous = velocity[src]
        velocity[dst] = np.where(np.isfinite(previous),
                                 _VELOCITY_MEMORY * previous + (1 - _VELOCITY_MEMORY) * step, step)
        n_steps[dst] = n_steps[src] + 1

    # Segments: chains of successors.
    starts = np.flatnonzero(predecessor < 0)
    segment = np.full(n, -1)
    segment[starts] = np.arange(len(starts))
    for b in by_frame:
        linked = b[predecessor[b] >= 0]
        segment[linked] = segment[predecessor[linked]]
    ends = np.empty_like(starts)
    tails = np.flatnonzero(successor < 0)
    ends[segment[tails]] = tails

    # Gap closing between segment ends and later segment starts.
    params.max_gap = int(max_gap) if max_gap is not None else _estimate_gap(
        positions, frames, starts, ends, n_links=int((successor >= 0).sum()), radius=radius)
    parent = np.arange(len(starts))
    if params.max_gap > 0 and len(starts) > 1:
        end_frames, start_frames = frames[ends], frames[starts]
        reach = radius * np.sqrt(params.max_gap + 1)
        rows, cols = _gap_candidates(end_frames, positions[ends], start_frames, positions[starts], reach,
                                     gaps=range(2, params.max_gap + 2), velocity=velocity[ends])
        gap = start_frames[cols] - end_frames[rows]
        # Re-cost: a Brownian displacement over `gap` frames spreads as sqrt(gap); the velocity
        # prediction is extrapolated over the gap.
        step = positions[starts[cols]] - positions[ends[rows]]
        distance2 = (step ** 2).sum(1)
        v = np.nan_to_num(velocity[ends[rows]])
        d_vel = ((step - v * gap[:, None]) ** 2).sum(1) / gap
        cost = np.minimum(distance2 / gap, d_vel)
        allowed = cost <= radius ** 2
        if certain is not None:
            allowed &= (certain[ends[rows]] & certain[starts[cols]]) | (distance2 <= radius ** 2)
        pairs = solve_links(rows[allowed], cols[allowed], cost[allowed], len(starts), len(starts), no_link)
        for e, s in pairs:
            parent[s] = e
    # Resolve chains of joined segments to their first segment.
    root = parent.copy()
    for _ in range(len(root)):
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    _, track = np.unique(root[segment], return_inverse=True)
    # Number tracks by first appearance.
    first_seen = np.full(track.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(first_seen, track, frames * (n + 1) + np.arange(n))
    rank = np.empty_like(first_seen)
    rank[np.argsort(first_seen)] = np.arange(1, len(first_seen) + 1)
    return rank[track], params


def _estimate_gap(positions, frames, starts, ends, *, n_links, radius):
    """Longest gap worth bridging, from how often detections go missing.

    Segment ends that find a segment start one missed frame later (within reach) estimate the
    per-frame miss probability q; a gap of k frames then happens with probability q^k, and gaps
    rarer than 1 % are not bridged, since there a death next to a birth is the likelier story.
    The bound is tightened further where track starts are so crowded that a bridged gap would
    often find an unrelated start.
    """
    if len(starts) < 2 or n_links == 0:
        return 1
    rows, _ = _gap_candidates(frames[ends], positions[ends], frames[starts], positions[starts], radius * np.sqrt(2),
                              gaps=[2])
    n_missed = len(np.unique(rows))
    q = min(max(n_missed / (n_links + n_missed), 1e-3), 0.9)
    by_misses = int(np.ceil(np.log(0.01) / np.log(q)))
    area = np.prod(np.ptp(positions, axis=0) + 1)
    start_density = len(starts) / max(frames.max() - frames.min() + 1, 1) / area
    crowd = start_density * np.pi * radius ** 2  # unrelated starts within reach, per frame
    by_crowding = int(np.floor(0.1 / max(crowd, 1e-12))) - 1
    return int(np.clip(min(by_misses, by_crowding), 1, _MAX_GAP))


def smooth_tracks(track_id: np.ndarray, frames: np.ndarray, positions: np.ndarray, variances: np.ndarray, *,
                  step_variance) -> np.ndarray:
    """Most probable positions along tracks, given each point's localisation error.

    A Rauch-Tung-Striebel smoother for a random walk: per axis, a point's position is
    ``positions`` with variance ``variances`` (same shape), and the true position moves between
    frames by steps of variance ``step_variance`` per frame (positive; per axis, or per track and
    axis with tracks in the order of ``np.unique(track_id)``). An exact point keeps its position;
    a poorly localised one moves towards what its neighbours in time say. Steady transport is
    kept too: inside a track the smoother averages symmetrically over time, which leaves a
    straight path straight.
    """
    order = np.lexsort((frames, track_id))
    tracks, first, inverse = np.unique(np.asarray(track_id)[order], return_index=True, return_inverse=True)
    observed, r = np.asarray(positions, float)[order], np.asarray(variances, float)[order]
    q = np.asarray(step_variance, float)
    q = q[inverse] if q.ndim == 2 else np.broadcast_to(q, observed.shape)
    dt = np.diff(np.asarray(frames)[order], prepend=0)[:, None]
    # All tracks advance together, one point of each per step, so the loops run over a track's
    # length rather than over every point.
    rank = np.arange(len(order)) - first[inverse]
    by_rank = np.split(np.argsort(rank, kind="stable"), np.cumsum(np.bincount(rank))[:-1])
    filtered, filtered_var, predicted_var = observed.copy(), r.copy(), r.copy()
    for rows in by_rank[1:]:
        predicted_var[rows] = filtered_var[rows - 1] + q[rows] * dt[rows]
        gain = predicted_var[rows] / (predicted_var[rows] + r[rows])
        filtered[rows] = filtered[rows - 1] + gain * (observed[rows] - filtered[rows - 1])
        filtered_var[rows] = (1 - gain) * predicted_var[rows]
    smoothed = filtered.copy()
    last = np.append(first[1:], len(order)) - 1
    for rows in reversed(by_rank[:-1]):
        rows = rows[rows != last[inverse[rows]]]
        back = filtered_var[rows] / predicted_var[rows + 1]
        smoothed[rows] = filtered[rows] + back * (smoothed[rows + 1] - filtered[rows])
    out = np.empty_like(smoothed)
    out[order] = smoothed
    return out


def msd(frames: np.ndarray, positions: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Time-averaged mean squared displacement for lags 1..max_lag (frames) of one track,
    skipping missed frames. Returns lags and MSD (NaN where no pair exists)."""
    span = frames.max() - frames.min() + 1
    filled = np.full((span, positions.shape[1]), np.nan)
    filled[frames - frames.min()] = positions
    lags = np.arange(1, max_lag + 1)
    values = np.full(len(lags), np.nan)
    for k, lag in enumerate(lags):
        if lag >= span:
            break
        d2 = ((filled[lag:] - filled[:-lag]) ** 2).sum(1)
        if np.isfinite(d2).any():
            values[k] = np.nanmean(d2)
    return lags, values


def motion_summary(frames: np.ndarray, positions_um: np.ndarray, *, frame_interval_s: float) -> dict:
    """Speed, diffusion coefficient and anomalous exponent of one track.

    ``diffusion_um2_s`` comes from a straight-line fit MSD = 2 d D t + c over lags 1..4, whose
    intercept absorbs localisation error; ``msd_alpha`` from a log-log fit of the
    offset-corrected MSD over lags 1..max(4, n/4), capped at 10 lags, and the lag range used is
    reported. Tracks with fewer than 5 points get NaN; ``msd_alpha`` needs 10.
    """
    order = np.argsort(frames)
    frames, positions_um = frames[order], positions_um[order]
    n, ndim = positions_um.shape
    steps = np.linalg.norm(np.diff(positions_um, axis=0), axis=1) / (np.diff(frames) * frame_interval_s)
    out = {"mean_speed_um_s": float(steps.mean()) if len(steps) else np.nan,
           "diffusion_um2_s": np.nan, "msd_alpha": np.nan, "msd_lag_min": np.nan, "msd_lag_max": np.nan}
    if n < 5:
        return out
    max_lag = int(min(10, max(4, n // 4)))
    lags, values = msd(frames, positions_um, max_lag)
    ok = np.isfinite(values)
    short = ok & (lags <= 4)
    if short.sum() >= 2:
        slope, intercept = np.polyfit(lags[short] * frame_interval_s, values[short], 1)
        out["diffusion_um2_s"] = float(slope / (2 * ndim))
        corrected = values - max(intercept, 0.0)
        good = ok & (corrected > 0)
        if n >= 10 and good.sum() >= 3:
            out["msd_alpha"] = float(np.polyfit(np.log(lags[good]), np.log(corrected[good]), 1)[0])
            out["msd_lag_min"], out["msd_lag_max"] = int(lags[good].min()), int(lags[good].max())
    return out


def path_summary(frames: np.ndarray, positions_um: np.ndarray, *, frame_interval_s: float) -> dict:
    """Cell-migration measures of one track: mean speed (µm/min), path length (µm) and
    straightness (net displacement over path length, 1 for a straight path)."""
    order = np.argsort(frames)
    frames, positions_um = frames[order], positions_um[order]
    steps = np.linalg.norm(np.diff(positions_um, axis=0), axis=1)
    path = float(steps.sum())
    duration_min = (frames[-1] - frames[0]) * frame_interval_s / 60 if len(frames) > 1 else 0.0
    net = float(np.linalg.norm(positions_um[-1] - positions_um[0]))
    return {"mean_speed_um_min": path / duration_min if duration_min > 0 else np.nan,
            "path_length_um": path, "straightness": net / path if path > 0 else np.nan}
