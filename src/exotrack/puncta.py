"""Detection of diffraction-limited puncta (CD63-RFP exosomes, lysosomes).

The image is band-pass filtered with a difference of Gaussians matched to the spot size, which
removes the diffuse cytoplasmic signal and the background. A punctum must stand ``snr_threshold``
times above the *local* noise of the filtered image, so the threshold follows photon noise
(higher inside bright cells, lower after photobleaching) without per-image tuning.

Crowded puncta, as in the cytoplasm of a macrophage after uptake, hide each other: a dim punctum
beside a bright one sits in the bright one's negative surround and is no local maximum at all.
Detection therefore works like CLEAN / DAOPHOT: the amplitudes of all detected spots are solved
jointly from their overlapping responses, the model of every spot is subtracted, and the residual
is searched again.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy import sparse
from scipy.spatial import cKDTree

from .background import checkerboard

PUNCTA_COLUMNS = ["z", "y", "x", "intensity", "snr", "position_sd_px"]

# The wide Gaussian of the band-pass is this many times the spot's.
_SURROUND = 2.0
# Noise is estimated in tiles about this many spot sigmas across.
_NOISE_TILE_SIGMAS = 24
# Rounds of subtract-and-search.
_ROUNDS = 3
# A maximum of the residual within _RESIDUE_REACH spot sigmas of a known spot is that spot's
# residue unless it exceeds _RESIDUE_FRACTION of its amplitude (see _not_residue).
_RESIDUE_REACH = 4.0
_RESIDUE_FRACTION = 0.3
# The band-pass image's spread away from puncta, over the photon-noise estimate, beyond which
# the image's own dips set the threshold (clean demo fields: 1.00-1.03; smFISH 2.7; the microscope
# family 0.99-17.8).
_NOISE_EXCESS = 1.15
# A dip of the band-pass image is no decoy where the surrounds of the puncta kept explain this
# much of it (see _fdr_threshold). Measured: 0.5 lets the texture of real smFISH cells excuse its
# own dips (F1 0.51), 1.0 takes crowded puncta's dips for noise (demo at 120 puncta per cell,
# F1 0.98 -> 0.88); 0.75 gives 0.87 and 0.976.
_EXPLAINED = 0.75


def spot_sigma_px(pixel_size_um, *, spot_diameter_um: float, axial_ratio: float = 3.0):
    """Gaussian sigma of a spot in pixels per axis (TrackMate's radius-to-sigma convention)."""
    sigma_um = spot_diameter_um / (2 * np.sqrt(2))
    sigmas = [sigma_um / p for p in pixel_size_um]
    if len(sigmas) == 3:
        sigmas[0] *= axial_ratio
    return np.array(sigmas)


def _tile_noise(image: np.ndarray, tile: tuple[int, ...]) -> np.ndarray:
    """Pixel noise per tile, from the image's highest spatial frequency.

    Puncta, cells and background gradients do not inflate the checkerboard, however crowded;
    its median absolute value per tile estimates the local noise, photon noise included.
    """
    values = np.abs(checkerboard(image))
    tile = tuple(list(tile[:-2]) + [max(1, tile[-2] // 2), max(1, tile[-1] // 2)])
    pad = [(0, (-n) % t) for n, t in zip(values.shape, tile)]
    if any(p for _, p in pad):
        values = np.pad(values, pad, mode="reflect")
    shape = []
    for n, t in zip(values.shape, tile):
        shape += [n // t, t]
    order = list(range(0, 2 * values.ndim, 2)) + list(range(1, 2 * values.ndim, 2))
    flat = values.reshape(shape).transpose(order).reshape(*(shape[0::2]), -1)
    return np.median(flat, axis=-1) / 0.6745


@functools.lru_cache(maxsize=16)
def _kernel(sigma: tuple[float, ...]) -> np.ndarray:
    """The band-pass filter's kernel."""
    sigma = np.array(sigma)
    half = np.ceil(3 * _SURROUND * sigma).astype(int)
    delta = np.zeros(tuple(2 * h + 1 for h in half), np.float64)
    delta[tuple(half)] = 1
    return ndi.gaussian_filter(delta, sigma, truncate=3.0) - ndi.gaussian_filter(delta, sigma * _SURROUND, truncate=3.0)


def _filter_gain(sigma: tuple[float, ...]) -> float:
    """How much the band-pass scales white noise: the L2 norm of its kernel."""
    return float(np.sqrt((_kernel(sigma) ** 2).sum()))


@functools.lru_cache(maxsize=16)
def _axial_gain(sigma: tuple[float, float, float], depth: int) -> np.ndarray:
    """Per slice of a stack ``depth`` slices deep, the band-pass's white-noise gain over
    :func:`_filter_gain`: the filter extends the first and last slices beyond the stack, which
    weighs their noise more than once."""
    # The band-pass is a difference of two separable Gaussians. Per output slice, each one's
    # weights on the input slices are a row of its depth filter applied to the identity, and
    # in-plane its weights are a kernel; the gain is the norm of the weights' difference.
    narrow, wide = (ndi.gaussian_filter1d(np.eye(depth), sigma[0] * f, axis=0, mode="nearest", truncate=3.0)
                    for f in (1, _SURROUND))
    half = np.ceil(3 * _SURROUND * np.array(sigma[1:])).astype(int)
    delta = np.zeros(tuple(2 * half + 1))
    delta[tuple(half)] = 1
    inner, outer = (ndi.gaussian_filter(delta, np.array(sigma[1:]) * f, truncate=3.0) for f in (1, _SURROUND))
    variance = ((narrow ** 2).sum(1) * (inner ** 2).sum() - 2 * (narrow * wide).sum(1) * (inner * outer).sum()
                + (wide ** 2).sum(1) * (outer ** 2).sum())
    return np.sqrt(variance) / _filter_gain(sigma)


def position_sd_px(snr, *, pixel_size_um, spot_diameter_um: float = 0.5, axial_ratio: float = 3.0) -> np.ndarray:
    """Standard deviation (pixels) of the position of a punctum of band-pass significance ``snr``
    (as :func:`detect_puncta` reports it), per axis along a new last axis.

    Only background noise counts, so this is the error's lower bound: a bright spot's own
    photon noise adds to it.
    """
    sigma = spot_sigma_px(pixel_size_um, spot_diameter_um=spot_diameter_um, axial_ratio=axial_ratio)
    return _position_sd(tuple(sigma), snr)


def _position_sd(sigma: tuple[float, ...], snr) -> np.ndarray:
    """:func:`position_sd_px` for spot ``sigma``.

    :func:`_refine` puts a spot at 0.5 (a - c) / (a - 2b + c) from its peak pixel b, with a and c
    the neighbours along the axis. Noise moves it by half the noise in a - c over the spot's
    curvature a - 2b + c, and noise in that curvature scales the error by 1 + 3 (its relative
    spread)^2 in variance, to second order. Both spreads follow from the filter's kernel.
    """
    slope, curvature = _position_noise(sigma)
    snr = np.maximum(np.asarray(snr, float), 1e-12)[..., None]
    return slope / snr * np.sqrt(1 + 3 * (curvature / snr) ** 2)


@functools.lru_cache(maxsize=16)
def _position_noise(sigma: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per axis, the spreads of the noise in (a - c) / 2 and in a - 2b + c (see
    :func:`_position_sd`), each relative to the band-pass noise and to a unit spot's curvature."""
    kernel = _kernel(sigma)
    norm = np.sqrt((kernel ** 2).sum())
    model = _SpotModel(np.array(sigma))
    slope, curvature = [], []
    for axis in range(kernel.ndim):
        after, before = np.roll(kernel, -1, axis), np.roll(kernel, 1, axis)
        unit = np.zeros((1, kernel.ndim))
        unit[0, axis] = 1
        spot = abs(float(model(unit)[0] * 2 - 2))
        slope.append(np.sqrt(((0.5 * (after - before)) ** 2).sum()) / norm / spot)
        curvature.append(np.sqrt(((after - 2 * kernel + before) ** 2).sum()) / norm / spot)
    return np.array(slope), np.array(curvature)


class _SpotModel:
    """Band-pass response of one unit Gaussian spot, evaluated at offsets in pixels.

    The response is a difference of two separable Gaussians, which :meth:`render` exploits: it
    builds each spot's window from per-axis profiles instead of evaluating it pixel by pixel.
    """

    def __init__(self, sigma: np.ndarray):
        self.narrow = 2 * sigma ** 2  # spot (sigma) seen through G(sigma)
        self.wide = (1 + _SURROUND ** 2) * sigma ** 2  # spot seen through G(k sigma)
        self.norm_narrow = 1 / np.sqrt(np.prod(2 * np.pi * self.narrow))
        self.norm_wide = 1 / np.sqrt(np.prod(2 * np.pi * self.wide))
        self.peak = self.norm_narrow - self.norm_wide
        self.half = np.ceil(2.5 * np.sqrt(self.wide)).astype(int)

    def __call__(self, delta):
        """Response relative to the spot's own peak response."""
        a = np.exp(-0.5 * (delta ** 2 / self.narrow).sum(-1)) * self.norm_narrow
        b = np.exp(-0.5 * (delta ** 2 / self.wide).sum(-1)) * self.norm_wide
        return (a - b) / self.peak

    def render(self, shape, positions, amplitudes):
        """Flat pixel indices and values of the summed spot responses (peak = amplitude).

        Window pixels outside the image are folded onto the border with zero weight, which
        avoids masking the (spots x window) arrays.
        """
        n, ndim = positions.shape
        base = np.round(positions).astype(np.int64)
        narrow = wide = amplitudes.astype(np.float32).reshape((n,) + (1,) * ndim)
        flat = np.zeros((n,) + (1,) * ndim, np.int64)
        stride = 1
        for axis in reversed(range(ndim)):
            offsets = np.arange(-self.half[axis], self.half[axis] + 1)
            pix = base[:, axis, None] + offsets[None]
            d2 = ((pix - positions[:, axis, None]) ** 2).astype(np.float32)
            inside = (pix >= 0) & (pix < shape[axis])
            view = [n] + [1] * ndim
            view[axis + 1] = offsets.size
            narrow = narrow * (np.exp(-0.5 * d2 / np.float32(self.narrow[axis])) * inside).reshape(view)
            wide = wide * (np.exp(-0.5 * d2 / np.float32(self.wide[axis])) * inside).reshape(view)
            flat = flat + (np.clip(pix, 0, shape[axis] - 1) * stride).reshape(view)
            stride *= shape[axis]
        values = (narrow * np.float32(self.norm_narrow / self.peak)
                  - wide * np.float32(self.norm_wide / self.peak))
        return np.broadcast_to(flat, values.shape).ravel(), values.ravel()

    def subtract(self, response, positions, amplitudes):
        """``response`` minus the model of the given spots."""
        index, values = self.render(response.shape, positions, amplitudes)
        out = response.copy()
        np.subtract.at(out.reshape(-1), index, values)
        return out


def detect_puncta(image: np.ndarray, *, pixel_size_um, spot_diameter_um: float = 0.5,
                  snr_threshold: float = 5.5, axial_ratio: float = 3.0,
                  exclude: np.ndarray | None = None, fdr: float | None = None) -> pd.DataFrame:
    """Find puncta in one 2-D or 3-D image.

    Parameters
    ----------
    image : ndarray
        One channel, ``(Y, X)`` or ``(Z, Y, X)``.
    pixel_size_um : sequence of float
        Pixel size per axis.
    spot_diameter_um : float
        Apparent diameter of a punctum (for a diffraction-limited spot, about 1.2 λ / 2NA).
    snr_threshold : float
        A punctum's band-pass amplitude must exceed the local noise of the band-pass image by
        this factor. The default keeps false detections in pure noise below one per megapixel.
    axial_ratio : float
        Axial over lateral extent of a spot in 3-D (the PSF is elongated along z).
    exclude : ndarray of bool, optional
        Pixels where nothing is reported (e.g. a black frame around the field).
    fdr : float, optional
        Raise the threshold above ``snr_threshold`` until the image's own dark spots (see
        :func:`decoy_threshold`) are at most this fraction of the puncta: on real images,
        autofluorescence, haze, correlated and quantised noise make bumps that photon noise does
        not explain. Puncta (seen without their neighbours) and dips alike must also be round
        (curvatures within a factor of 5): ridges, such as the edge of a cell's haze, are not.
        None keeps ``snr_threshold`` alone.

    Returns
    -------
    DataFrame
        ``z, y, x`` sub-pixel position in pixels (``z`` is 0 for 2-D), ``intensity`` the
        background-corrected integrated intensity of the spot (image units times pixels, from the
        deblended amplitude), ``snr`` the amplitude over the local noise, and ``position_sd_px``
        the standard deviation of ``y`` and of ``x`` that this noise gives (see
        :func:`position_sd_px`).
    """
    image = np.asarray(image, dtype=np.float32)
    ndim = image.ndim
    if min(image.shape[-2:]) < 2:  # no 2 x 2 block: the noise, hence significance, is unknown
        return _empty()
    sigma = spot_sigma_px(pixel_size_um, spot_diameter_um=spot_diameter_um, axial_ratio=axial_ratio)
    response = _band_pass(image, sigma)
    model = _SpotModel(sigma)
    # New detections within two spot sigmas of a known spot (per axis, so the elongated axial
    # PSF counts alike) are the residue of that spot, not a new one.
    min_separation = 2.0

    positions = np.zeros((0, ndim))
    peaks = np.zeros((0, ndim), int)
    amplitudes = np.zeros(0)
    noise, tile = _noise_map(image, sigma)
    if noise is None:
        return _empty()
    residual = response
    for _ in range(_ROUNDS):
        found = _maxima_above(residual, noise, tile, snr_threshold, sigma, exclude)
        if len(positions) and len(found):
            found = found[_not_residue(residual, found, positions, amplitudes, sigma, min_separation)]
        if len(found) == 0:
            break
        peaks = np.vstack([peaks, found])
        positions = np.vstack([positions, found.astype(float)])
        amplitudes = _solve_amplitudes(response, peaks, positions, model)
        residual = model.subtract(response, positions, amplitudes)
        positions = _refine(residual, peaks, positions, amplitudes, model)
    if len(positions) == 0:
        return _empty()
    amplitudes = _solve_amplitudes(response, peaks, positions, model)

    local_noise = noise[tuple(p // t for p, t in zip(peaks.T, tile))]
    keep = amplitudes > snr_threshold * local_noise
    if fdr is not None and keep.any() and _photon_noise_falls_short(response, noise, tile, peaks[keep], sigma):
        # Each spot seen alone (every other spot's model removed) must be round.
        residual = model.subtract(response, positions, amplitudes)
        residual_at = _sampler(residual)

        def alone(pixels):
            return residual_at(pixels) + amplitudes * model(pixels - positions)

        keep &= _round(alone, peaks, max_elongation=_MAX_ELONGATION_DETECTED)
        snr = amplitudes / local_noise
        keep &= snr >= _fdr_threshold(response, noise, tile, sigma, exclude, model, positions[keep],
                                      amplitudes[keep], snr[keep], fdr=fdr, floor=snr_threshold)
    positions, amplitudes, local_noise = positions[keep], amplitudes[keep], local_noise[keep]
    snr = amplitudes / local_noise
    return pd.DataFrame({
        "z": positions[:, 0] if ndim == 3 else np.zeros(len(positions)),
        "y": positions[:, -2],
        "x": positions[:, -1],
        "intensity": amplitudes / model.peak,
        "snr": snr,
        "position_sd_px": _position_sd(tuple(sigma), snr)[:, -1],
    })


def _photon_noise_falls_short(response, noise, tile, peaks, sigma) -> bool:
    """Whether the band-pass image varies, away from every punctum, by more than the photon-noise
    estimate says (by ``_NOISE_EXCESS``): texture, haze, correlated or quantised noise. Where it
    does not (a clean camera image, however crowded its puncta), ``snr_threshold`` holds as is."""
    near = np.zeros(response.shape, bool)
    near[tuple(peaks.T)] = True
    reach = 2 * np.ceil(_SURROUND * 2 * sigma).astype(int) + 1
    far = ~ndi.maximum_filter(near, size=tuple(reach))
    if far.sum() < 1000:
        return True
    full = noise
    for axis, t in enumerate(tile):
        full = np.repeat(full, t, axis=axis)
    ratio = response[far] / full[tuple(slice(0, n) for n in response.shape)][far]
    spread = 1.4826 * np.median(np.abs(ratio - np.median(ratio)))
    return bool(spread > _NOISE_EXCESS)


def decoy_threshold(snr: np.ndarray, decoy_snr: np.ndarray, *, fdr: float, floor: float) -> float:
    """Lowest SNR, from ``floor`` up, at which decoys are at most ``fdr`` of the detections kept.

    Decoys are the dark spots of the band-pass image (see :func:`detect_puncta`): noise, texture and
    quantisation make dips as well as bumps, puncta make bumps only, so the dips above a threshold
    count the bumps there that are no punctum. Without dips above ``floor`` (clean photon noise),
    ``floor`` stands.
    """
    candidates = np.concatenate([[floor], np.sort(snr[snr >= floor])])
    kept = len(snr) - np.searchsorted(np.sort(snr), candidates, side="left")
    false = len(decoy_snr) - np.searchsorted(np.sort(decoy_snr), candidates, side="left")
    good = false <= fdr * kept
    return float(candidates[np.argmax(good)]) if good.any() else np.inf


def _fdr_threshold(response, noise, tile, sigma, exclude, model, positions, amplitudes, snr, *, fdr, floor):
    """The SNR threshold of :func:`detect_puncta`'s ``fdr``: see :func:`decoy_threshold`.

    Decoys are the dips of the band-pass ``response`` (local minima, from ``floor`` down) that the
    negative surrounds of the puncta kept do not explain (``_EXPLAINED``): crowded puncta dig dips
    between them. Which puncta count depends on the threshold itself, so it is raised from
    ``floor`` until it holds: a texture bump that the threshold rejects explains no dip beside it.
    """
    def extrema(sign):
        at = _maxima_above(sign * response, noise, tile, floor, sigma, exclude)
        local = noise[tuple(p // t for p, t in zip(at.T, tile))]
        return at, sign * response[tuple(at.T)] / local, local

    # Bumps and dips are counted alike, as the local extrema of one pass: deblending finds more
    # bumps than the extrema show, which would outnumber the dips of pure noise.
    _, bumps, _ = extrema(1)
    dips, depth, local = extrema(-1)
    threshold = floor
    for _ in range(8):
        kept = snr >= threshold
        surround = (model.subtract(response, positions[kept], amplitudes[kept]) - response)[tuple(dips.T)] / local
        raised = max(threshold, decoy_threshold(bumps, depth[surround < _EXPLAINED * depth], fdr=fdr, floor=floor))
        if raised == threshold:
            break
        threshold = raised
    return threshold


def snr_image(image: np.ndarray, *, pixel_size_um, spot_diameter_um: float = 0.5,
              axial_ratio: float = 3.0) -> np.ndarray:
    """Each pixel's significance as the centre of a punctum: the band-pass image over its local
    noise, the quantity :func:`detect_puncta` thresholds (0 where the noise is unknown)."""
    image = np.asarray(image, dtype=np.float32)
    if min(image.shape[-2:]) < 2:
        return np.zeros(image.shape, np.float32)
    sigma = spot_sigma_px(pixel_size_um, spot_diameter_um=spot_diameter_um, axial_ratio=axial_ratio)
    noise, tile = _noise_map(image, sigma)
    if noise is None:
        return np.zeros(image.shape, np.float32)
    for axis, t in enumerate(tile):
        noise = np.repeat(noise, t, axis=axis)
    return _band_pass(image, sigma) / noise[tuple(slice(0, n) for n in image.shape)]


def path_evidence(snr: np.ndarray, *, step_px, amplitude: float = 1.2, birth: float = 0.1,
                  ceiling: float = 3.0, clip: float = 2.5, exclude: np.ndarray | None = None) -> np.ndarray:
    """Evidence for a punctum at each pixel of each frame of a movie, from all paths through it.

    A punctum too dim to stand out in any one frame does along its path: this is Bayesian
    track-before-detect, a hidden Markov model run forward and backward through the frames. Each
    frame's :func:`snr_image` value ``z`` is the log-likelihood ratio ``amplitude * z -
    amplitude**2 / 2`` of a punctum of that SNR against noise; between frames a punctum moves by
    a Gaussian step of ``step_px`` per axis or is born (probability ``birth``). Summing over paths,
    rather than taking the best one, keeps noise from finding a lucky path among the many it has.

    Parameters
    ----------
    snr : ndarray
        :func:`snr_image` of every frame, time first.
    step_px : float or sequence of float
        Standard deviation of a punctum's step per frame, per spatial axis.
    amplitude : float
        The SNR per frame of the puncta sought.
    ceiling : float
        The log-likelihood ratio a path carries on is capped here. Beyond that a punctum is certain
        anyway, and the cap bounds how long a punctum's evidence lingers after it leaves: an empty
        frame costs ``amplitude**2 / 2``.
    clip : float
        Per-frame values are clipped to ``±clip`` so that no single frame decides a path.
    exclude : ndarray of bool, optional
        Pixels that carry no evidence either way, e.g. around puncta every frame shows anyway,
        whose long paths would otherwise linger into the frames before and after them.

    Returns
    -------
    ndarray (float32)
        Per pixel and frame, the log-likelihood ratio of the paths through it (forward and backward
        passes combined), against noise.
    """
    snr = np.asarray(snr, dtype=np.float32)
    a = np.float32(amplitude)
    ll = a * np.clip(snr, -clip, clip) - a * a / 2
    if exclude is not None:
        ll[exclude] = 0
    step = np.broadcast_to(np.asarray(step_px, float), (snr.ndim - 1,))
    born, stay = np.float32(np.log(birth)), np.float32(1 - birth)

    def passes(order):
        carried = None
        for t in order:
            if carried is None:
                carried = ll[t] + born
            else:
                spread = ndi.gaussian_filter(np.exp(carried), step, truncate=3.0)
                carried = ll[t] + np.log(np.float32(birth) + stay * spread)
            carried = np.minimum(carried, np.float32(ceiling))
            yield t, carried

    evidence = np.empty_like(ll)
    for t, forward in passes(range(len(ll))):
        evidence[t] = forward - ll[t]
    for t, backward in passes(range(len(ll) - 1, -1, -1)):
        evidence[t] += backward
    return evidence


def path_puncta(evidence: np.ndarray, *, pixel_size_um, spot_diameter_um: float = 0.5, axial_ratio: float = 3.0,
                threshold: float, image: np.ndarray | None = None) -> pd.DataFrame:
    """Puncta of one frame where its :func:`path_evidence` has a local maximum above
    ``threshold``: position from the evidence (centroid of the 3 x 3 neighbourhood), ``snr`` the
    path evidence, ``intensity`` from the band-pass of the frame's ``image`` and
    ``position_sd_px`` from its significance there (both NaN without ``image``)."""
    sigma = spot_sigma_px(pixel_size_um, spot_diameter_um=spot_diameter_um, axial_ratio=axial_ratio)
    radius = np.maximum(np.round(2 * sigma).astype(int), 1)
    # Most pixels above a low threshold are on a peak's slope: only 3 x 3 maxima can be peaks.
    candidates = np.flatnonzero((evidence > threshold) & (evidence == ndi.maximum_filter(evidence, size=3)))
    coords = np.array(np.unravel_index(candidates, evidence.shape))
    for axis, n in enumerate(evidence.shape):
        if n > 2:
            coords = coords[:, (coords[axis] > 0) & (coords[axis] < n - 1)]
    peak = evidence[tuple(coords)]
    peaks = coords[:, _is_local_max(evidence, coords, peak, radius)].T
    if len(peaks) == 0:
        return _empty()
    offsets = np.array(list(itertools.product(*[(-1, 0, 1)] * evidence.ndim)))
    around = np.clip(peaks[:, None] + offsets[None], 0, np.array(evidence.shape) - 1)
    weight = np.maximum(evidence[tuple(np.moveaxis(around, -1, 0))], 0)
    positions = (weight[..., None] * around).sum(1) / weight.sum(1)[:, None]
    intensity = sd = np.full(len(peaks), np.nan)
    if image is not None:
        image = np.asarray(image, dtype=np.float32)
        response = _band_pass(image, sigma)[tuple(peaks.T)]
        intensity = np.maximum(response, 0) / _SpotModel(sigma).peak
        noise, tile = _noise_map(image, sigma)
        if noise is not None:
            local_noise = noise[tuple(p // t for p, t in zip(peaks.T, tile))]
            sd = _position_sd(tuple(sigma), response / local_noise)[:, -1]
    return pd.DataFrame({
        "z": positions[:, 0] if evidence.ndim == 3 else np.zeros(len(positions)),
        "y": positions[:, -2],
        "x": positions[:, -1],
        "intensity": intensity,
        "snr": evidence[tuple(peaks.T)],
        "position_sd_px": sd,
    })


def _band_pass(image, sigma):
    # A stack's first and last slices are extended beyond it rather than reflected: reflected,
    # a spot within a slice of either end would merge with its mirror image into one broader
    # response, whose residue after deblending reads as a second spot.
    mode = ("nearest", "reflect", "reflect") if image.ndim == 3 else "reflect"
    response = ndi.gaussian_filter(image, sigma, truncate=3.0, mode=mode)
    response -= ndi.gaussian_filter(image, sigma * _SURROUND, truncate=3.0, mode=mode)
    return response


def _noise_tile(shape, sigma) -> tuple[int, ...]:
    return tuple(int(min(n, max(16, round(_NOISE_TILE_SIGMAS * s)))) for n, s in zip(shape, sigma))


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: np.zeros(0) for c in PUNCTA_COLUMNS})


def _noise_map(image, sigma):
    """Noise of the band-pass image per tile, and the tile (None for the noise of a flat image).
    A stack's tiles are one slice deep, each slice with its own filter gain (see
    :func:`_axial_gain`)."""
    tile = _noise_tile(image.shape, sigma)
    noise = _tile_noise(image, tile) * _filter_gain(tuple(sigma))
    # The checkerboard's half-size tiles can fall one short of covering an odd-sized image.
    short = [max(0, -(-n // t) - m) for n, t, m in zip(image.shape, tile, noise.shape)]
    if any(short):
        noise = np.pad(noise, [(0, k) for k in short], mode="edge")
    positive = noise[noise > 0]
    if positive.size == 0:
        return None, tile
    # Flat tiles (padding) have zero noise; a floor keeps their edges from flooding with maxima.
    noise = np.maximum(noise, 0.25 * float(np.median(positive)))
    if image.ndim == 3:
        depth = image.shape[0]
        noise = np.repeat(noise, tile[0], axis=0)[:depth] * _axial_gain(tuple(sigma), depth)[:, None, None]
        tile = (1, *tile[1:])
    return noise, tile


def _maxima_above(response, noise, tile, snr_threshold, sigma, exclude):
    """Integer positions of local maxima that exceed the local noise threshold."""
    candidates = np.flatnonzero(response > snr_threshold * noise.min())
    coords = np.array(np.unravel_index(candidates, response.shape))
    peak = response.ravel()[candidates]
    keep = peak > snr_threshold * noise[tuple(c // t for c, t in zip(coords, tile))]
    if exclude is not None:
        keep &= ~exclude.ravel()[candidates]
    # A maximum on the outermost pixel of a plane is a spot cut by the field's edge, or filter
    # edge noise. A stack's first and last slices are kept: its depth is a few spot lengths, and
    # a spot within a slice of either end has its maximum there.
    for axis, n in enumerate(response.shape[-2:], start=response.ndim - 2):
        if n > 2:
            keep &= (coords[axis] > 0) & (coords[axis] < n - 1)
    coords, peak = coords[:, keep], peak[keep]
    radius = np.maximum(np.round(sigma).astype(int), 1)
    return coords[:, _is_local_max(response, coords, peak, radius)].T


def _not_residue(residual, found, positions, amplitudes, sigma, min_separation):
    """Whether each new maximum of the residual is a spot of its own rather than what is left of
    a known one: farther than ``min_separation`` spot sigmas from every known spot, and, within
    ``_RESIDUE_REACH`` of one, above ``_RESIDUE_FRACTION`` of its amplitude. A spot wider than
    the model (by up to half) leaves a ring of about a fifth of its amplitude, which would
    otherwise split it in two or three."""
    tree = cKDTree(positions / sigma)
    dist, _ = tree.query(found / sigma)
    keep = dist >= min_separation
    near = tree.query_ball_point(found / sigma, _RESIDUE_REACH)
    value = residual[tuple(found.T)]
    brightest = np.array([amplitudes[i].max() if i else 0.0 for i in near])
    return keep & (value > _RESIDUE_FRACTION * brightest)


def _is_local_max(response, coords, peak, radius):
    """Whether each candidate is the maximum of its neighbourhood; of two equal neighbours only
    the later in raster order counts."""
    is_max = np.ones(coords.shape[1], bool)
    if coords.shape[1] == 0:
        return is_max
    padded = np.pad(response, [(r, r) for r in radius], constant_values=-np.inf)
    for offset in itertools.product(*[range(-r, r + 1) for r in radius]):
        if not any(offset):
            continue
        neighbour = padded[tuple(c + o + r for c, o, r in zip(coords, offset, radius))]
        earlier = offset < tuple(0 for _ in offset)
        is_max &= (peak >= neighbour) if earlier else (peak > neighbour)
    return is_max


def _solve_amplitudes(response, peaks, positions, model, iterations=30):
    """Peak amplitudes of all spots at once, from the response at their peak pixels.

    Each observed peak value is its own amplitude plus every nearby spot's response there.
    Projected Jacobi iterations (amplitudes kept non-negative) separate overlapping spots; the
    coupling between spots at least two sigmas apart is weak, so they converge in a few dozen.
    A spot driven to zero is explained by its neighbours.
    """
    observed = response[tuple(peaks.T)].astype(np.float64)
    reach = float(np.max(model.half))
    pairs = cKDTree(positions).query_pairs(reach, output_type="ndarray")
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    own = model(peaks - positions)
    coupling = sparse.csr_matrix((model(peaks[rows] - positions[cols]), (rows, cols)),
                                 shape=(len(peaks), len(peaks)))
    amplitudes = np.clip(observed / own, 0, None)
    for _ in range(iterations):
        amplitudes = np.clip((observed - coupling @ amplitudes) / own, 0, None)
    return amplitudes


def _refine(residual, peaks, positions, amplitudes, model):
    """Sub-pixel positions from a parabola through each peak and its two neighbours per axis,
    on the residual plus the spot's own model, i.e. with every *other* spot removed."""
    refined = peaks.astype(float)
    shape = np.array(residual.shape)

    def isolated(pixels):
        return residual[tuple(pixels.T)] + amplitudes * model(pixels - positions)

    b = isolated(peaks)
    for axis in range(peaks.shape[1]):
        step = np.zeros(peaks.shape[1], int)
        step[axis] = 1
        a = isolated(np.clip(peaks - step, 0, shape - 1))
        c = isolated(np.clip(peaks + step, 0, shape - 1))
        curvature = a - 2 * b + c
        inside = (peaks[:, axis] > 0) & (peaks[:, axis] < shape[axis] - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = np.where(inside & (curvature < 0), 0.5 * (a - c) / curvature, 0.0)
        refined[:, axis] += np.clip(delta, -0.5, 0.5)
    return refined


def measure_spot_sigma(planes: np.ndarray, *, prior_sigma_px: float, exclude: np.ndarray | None = None,
                       min_spots: int = 3, max_spots: int = 200) -> tuple[float, int]:
    """Lateral Gaussian sigma (pixels) of the puncta in one or more image planes, measured on
    isolated bright puncta.

    Each punctum far from any other (no local maximum of the band-pass image within five sigmas)
    is fitted, in a window of three sigmas, by a Gaussian over a tilted plane for each of a range
    of widths (its position free to first order); its width is the best one. The median over the
    puncta is robust to the clusters and the occasional wide aggregate among them. The search
    starts at ``prior_sigma_px`` and repeats at the measured width until the two agree.

    Parameters
    ----------
    planes : ndarray
        ``(..., Y, X)``: every plane (slices of a stack, frames of a movie) is searched, and the
        puncta of all are pooled.
    prior_sigma_px : float
        The expected sigma, where the search starts.
    exclude : ndarray of bool, optional
        ``(Y, X)`` pixels where no punctum is taken (a blacked-out frame).
    min_spots : int
        Fewer isolated puncta than this measure nothing.
    max_spots : int
        At most this many puncta are fitted, the most significant first.

    Returns
    -------
    sigma_px, n_spots : float, int
        The measured sigma (NaN when fewer than ``min_spots`` puncta qualify) and how many puncta
        measured it.
    """
    planes = np.asarray(planes, dtype=np.float32)
    planes = planes.reshape(-1, *planes.shape[-2:])
    # A search scale far below the puncta's width sees noise maxima on each and none isolated,
    # one far above merges neighbours: the search starts at the prior's octaves that find most.
    # (Where the prior's scale finds plenty that agree with it, the other octaves are not needed.)
    scale = float(prior_sigma_px)
    widths = _isolated_widths(planes, scale, exclude, max_spots)
    if len(widths) < 20 or abs(np.log(np.median(widths) / scale)) > np.log(1.5):
        starts = [(len(widths), 1, widths)] + [
            (len(w), f, w) for f in (0.5, 2, 4) for w in [_isolated_widths(planes, scale * f, exclude, max_spots)]]
        _, factor, widths = max(starts, key=lambda start: start[0])
        scale *= factor
    sigma, n = np.nan, 0
    for _ in range(4):
        n = len(widths)
        if n < min_spots:
            return np.nan, n
        sigma = float(np.median(widths))
        if abs(np.log(sigma / scale)) < np.log(1.15):
            break
        scale = sigma
        widths = _isolated_widths(planes, scale, exclude, max_spots)
    return sigma, n


# Widths tried per punctum, relative to the search scale.
_WIDTH_GRID = 2.0 ** np.linspace(-1.25, 1.25, 17)


def _isolated_widths(planes, scale, exclude, max_spots):
    """Best-fitting Gaussian sigma of each isolated, significant punctum of ``planes`` (searched
    and fitted at ``scale``); puncta whose best width is at an end of the grid are left out."""
    sigma = np.array([scale, scale])
    half = int(np.ceil(3 * scale * _WIDTH_GRID[-1] / 2)) + 1
    windows, offsets, strength = [], [], []
    for plane in planes:
        if min(plane.shape) < 2 * half + 3:
            continue
        response = _band_pass(plane, sigma)
        noise, tile = _noise_map(plane, sigma)
        if noise is None:
            continue
        weak, snr = _plain_maxima(response, noise, tile, sigma, exclude)
        # Significant beyond doubt: above 10 and above every dip away from a bump (correlated
        # noise and texture, which the photon-noise estimate misses, make dips as well as bumps).
        dips, depth = _plain_maxima(-response, noise, tile, sigma, exclude)
        bright = weak[snr >= 10]
        if len(dips) and len(bright):
            ring, _ = cKDTree(bright).query(dips)
            depth = depth[ring > 5 * scale]
        strong = weak[snr >= max(10.0, depth.max(initial=0.0))]
        if len(strong) == 0:
            continue
        count = np.array([len(i) for i in cKDTree(weak).query_ball_point(strong, max(5 * scale, 3.0))])
        inside = np.all((strong >= half) & (strong < np.array(plane.shape) - half), axis=1)
        take = (count == 1) & inside & _round(_sampler(response), strong, max_elongation=_MAX_ELONGATION)
        # Saturated puncta are flat-topped, hence wider.
        top = plane.max()
        for y, x in strong[take]:
            window = plane[y - half:y + half + 1, x - half:x + half + 1]
            if (window >= top).sum() > 1:
                continue
            windows.append(window)
            offsets.append(_centroid_offset(response, y, x))
            strength.append(response[y, x] / noise[y // tile[0], x // tile[1]])
    if not windows:
        return np.zeros(0)
    order = np.argsort(strength)[::-1][:max_spots]
    windows, offsets = np.array(windows)[order], np.array(offsets)[order]
    best = _best_width(windows.astype(np.float64), offsets, scale * _WIDTH_GRID)
    return best[np.isfinite(best)]


def _plain_maxima(response, noise, tile, sigma, exclude, floor: float = 3.0):
    """Maxima of ``response`` over a sigma's neighbourhood (one maximum filter: no tie rule, no
    border rule) from ``floor`` times the local noise up, and their SNR."""
    size = 2 * np.maximum(np.round(sigma).astype(int), 1) + 1
    full = noise
    for axis, t in enumerate(tile):
        full = np.repeat(full, t, axis=axis)
    snr = response / full[tuple(slice(0, n) for n in response.shape)]
    peak = (snr >= floor) & (response == ndi.maximum_filter(response, size=tuple(size)))
    if exclude is not None:
        peak &= ~exclude
    at = np.argwhere(peak)
    return at, snr[tuple(at.T)]


def _round(values, at, *, max_elongation: float) -> np.ndarray:
    """Whether an image is about as curved along every lateral direction at each of its maxima
    ``at`` (``(n, ndim)`` pixels): a punctum is, a ridge (the edge of a cell's haze, a fibre) is
    not. The ratio of the in-plane Hessian's eigenvalues must stay within ``max_elongation``
    (SIFT's edge test). ``values`` maps pixel coordinates (clipped to the image) to values."""
    def at_offset(dy, dx):
        shifted = at.copy()
        shifted[:, -2] += dy
        shifted[:, -1] += dx
        return values(shifted)

    centre = at_offset(0, 0)
    dyy = at_offset(-1, 0) - 2 * centre + at_offset(1, 0)
    dxx = at_offset(0, -1) - 2 * centre + at_offset(0, 1)
    dxy = 0.25 * (at_offset(1, 1) - at_offset(1, -1) - at_offset(-1, 1) + at_offset(-1, -1))
    det, trace = dyy * dxx - dxy ** 2, dyy + dxx
    return (det > 0) & (trace ** 2 < (max_elongation + 1) ** 2 / max_elongation * det)


def _sampler(image):
    """Values of ``image`` at integer pixel coordinates ``(n, ndim)``, clipped to the image."""
    upper = np.array(image.shape) - 1
    return lambda pixels: image[tuple(np.clip(pixels, 0, upper).T)]


# The largest ratio of a calibration punctum's curvatures along its two principal directions,
# and of any punctum's where detect_puncta's fdr is set.
_MAX_ELONGATION = 2.0
_MAX_ELONGATION_DETECTED = 3.0


def _centroid_offset(response, y, x):
    """Sub-pixel offset of a maximum of ``response`` from its pixel (parabola per axis)."""
    out = []
    for a, b, c in ((response[y - 1, x], response[y, x], response[y + 1, x]),
                    (response[y, x - 1], response[y, x], response[y, x + 1])):
        curvature = a - 2 * b + c
        out.append(float(np.clip(0.5 * (a - c) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0)
    return out


def _best_width(windows, offsets, grid):
    """Per window, the sigma of ``grid`` whose Gaussian (amplitude, position shift to first order
    and a tilted background free) fits best by least squares, refined by a parabola in log sigma;
    NaN where the best is at an end of the grid or the spot is no positive bump."""
    n, size, _ = windows.shape
    half = size // 2
    coords = np.arange(size) - half
    dy = np.broadcast_to(coords[None, :, None] - offsets[:, 0, None, None], windows.shape).reshape(n, -1)
    dx = np.broadcast_to(coords[None, None, :] - offsets[:, 1, None, None], windows.shape).reshape(n, -1)
    data = windows.reshape(n, -1)
    ones = np.ones_like(data)
    plane_y = np.broadcast_to(coords[None, :, None], windows.shape).reshape(n, -1).astype(float)
    plane_x = np.broadcast_to(coords[None, None, :], windows.shape).reshape(n, -1).astype(float)
    rss, amplitude = [], []
    for s in grid:
        g = np.exp(-0.5 * (dy ** 2 + dx ** 2) / s ** 2)
        basis = np.stack([g, g * dy, g * dx, ones, plane_y, plane_x], -1)
        transposed = basis.transpose(0, 2, 1)
        gram = transposed @ basis + 1e-9 * np.eye(6)
        coef = np.linalg.solve(gram, transposed @ data[..., None])
        rss.append(((data - (basis @ coef)[..., 0]) ** 2).sum(1))
        coef = coef[..., 0]
        amplitude.append(coef[:, 0])
    rss, amplitude = np.array(rss), np.array(amplitude)
    k = np.argmin(rss, axis=0)
    rows = np.arange(n)
    valid = (k > 0) & (k < len(grid) - 1) & (amplitude[k, rows] > 0)
    k = np.clip(k, 1, len(grid) - 2)
    a, b, c = rss[k - 1, rows], rss[k, rows], rss[k + 1, rows]
    curvature = a - 2 * b + c
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(curvature > 0, np.clip(0.5 * (a - c) / curvature, -0.5, 0.5), 0.0)
    log_grid = np.log(grid)
    step = log_grid[1] - log_grid[0]
    return np.where(valid, np.exp(log_grid[k] + shift * step), np.nan)
