"""Background estimation shared by the image-analysis stages.

Uneven illumination (vignetting, a tilted field) is smooth across the field, so it is modelled as a
low-order polynomial fitted to coarse block means that are judged to be background. Fitting block
means instead of pixels keeps the cost to a few passes over the image.
"""

from __future__ import annotations

import numpy as np


def robust_sigma(values: np.ndarray) -> float:
    """Standard deviation estimated from the median absolute deviation (robust to outliers)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def checkerboard(image: np.ndarray) -> np.ndarray:
    """The checkerboard combination of each 2 x 2 block of pixels (last two axes).

    It passes white noise with unit gain but little of what the optics have blurred (a few per
    cent of a spot with a one-pixel PSF sigma, far less of anything wider), so its median
    absolute value measures pixel noise (photon and read noise) in crowded, textured images.
    """
    y0, x0 = image.shape[-2] // 2 * 2, image.shape[-1] // 2 * 2
    im = image[..., :y0, :x0].astype(np.float32, copy=False)
    return 0.5 * (im[..., 0::2, 0::2] - im[..., 1::2, 0::2] - im[..., 0::2, 1::2] + im[..., 1::2, 1::2])


def pixel_noise(image: np.ndarray) -> float:
    """Standard deviation of the pixel noise of an image (robust, from :func:`checkerboard`)."""
    return float(np.median(np.abs(checkerboard(image)))) / 0.6745


def block_reduce_mean(image: np.ndarray, block: tuple[int, ...], *, exclude=None):
    """Mean of each block of ``image``, ignoring excluded pixels.

    Returns the block means and, per block, the fraction of pixels that were used. Edge blocks
    that stick out of the image are averaged over the pixels they contain.
    """
    pad = [(0, (-n) % b) for n, b in zip(image.shape, block)]
    shape = []
    for n, (_, p), b in zip(image.shape, pad, block):
        shape += [(n + p) // b, b]
    inner = tuple(range(1, 2 * image.ndim, 2))
    if exclude is None and not any(p for _, p in pad):
        # The common case, without copies: every block is whole and every pixel counts.
        means = image.reshape(shape).mean(axis=inner, dtype=np.float64)
        return means, np.ones(means.shape)
    used = np.ones(image.shape, bool) if exclude is None else ~exclude
    values = np.where(used, image, 0).astype(np.float32, copy=False)
    if any(p for _, p in pad):
        values, used = np.pad(values, pad), np.pad(used, pad)
    count = used.reshape(shape).sum(axis=inner)
    total = values.reshape(shape).sum(axis=inner, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = total / count
    return means, count / int(np.prod(block))


def _flat_blocks(image: np.ndarray, block: tuple[int, ...]) -> np.ndarray:
    """Blocks in which every pixel has the same value: padding (a black frame), not background."""
    crop = tuple(slice(0, n - n % b) if n >= b else slice(None) for n, b in zip(image.shape, block))
    whole = image[crop]
    shape = []
    for n, b in zip(whole.shape, block):
        shape += [max(n // b, 1), min(b, n)]
    inner = tuple(range(1, 2 * image.ndim, 2))
    blocks = whole.reshape(shape)
    flat = blocks.max(axis=inner) == blocks.min(axis=inner)
    full = np.zeros([-(-n // b) for n, b in zip(image.shape, block)], bool)
    full[tuple(slice(0, m) for m in flat.shape)] = flat
    return full


def _design(coords: list[np.ndarray], order: int) -> list[tuple[int, ...]]:
    """Exponent tuples of every monomial up to total degree ``order``."""
    ndim = len(coords)
    powers = [()]
    for _ in range(ndim):
        powers = [p + (k,) for p in powers for k in range(order + 1)]
    return [p for p in powers if sum(p) <= order]


def background_surface(image: np.ndarray, *, exclude: np.ndarray | None = None, order: int = 2,
                       grid: int = 32, clip_sigma: float = 2.5) -> np.ndarray:
    """Smooth background of ``image`` as a polynomial surface.

    Parameters
    ----------
    image : ndarray
        One channel, 2-D or 3-D.
    exclude : ndarray of bool, optional
        Pixels known not to be background (e.g. cells). Without it, the darker half of the blocks
        seeds the fit and bright blocks are rejected iteratively, which works while objects cover
        less than about half the field.
    order : int
        Total degree of the polynomial.
    grid : int
        Number of blocks along each lateral axis.
    clip_sigma : float
        Blocks brighter than the fit by this many robust standard deviations are rejected.

    Returns
    -------
    ndarray of float32, same shape as ``image``.
    """
    image = np.asarray(image)
    # Axes shorter than a few blocks (thin z stacks) are averaged whole rather than fitted.
    block = tuple(max(1, int(np.ceil(n / grid))) if n >= 8 else n for n in image.shape)
    means, used = block_reduce_mean(image, block, exclude=exclude)
    flat = _flat_blocks(image, block) if exclude is None else np.zeros(means.shape, bool)
    valid = np.isfinite(means) & (used >= 0.25) & ~flat
    if valid.sum() < 4:
        finite = image[~exclude] if exclude is not None and (~exclude).any() else image
        return np.full(image.shape, np.median(finite), dtype=np.float32)

    centres = [(np.arange(m) * b + (min(b, n) - 1) / 2.0) for m, b, n in zip(means.shape, block, image.shape)]
    scale = [max(n - 1, 1) / 2.0 for n in image.shape]
    axes_used = [i for i, m in enumerate(means.shape) if m > 1]
    powers = _design(axes_used, order)
    grids = np.meshgrid(*[(c - s) / s for c, s in zip(centres, scale)], indexing="ij")
    columns = []
    for p in powers:
        term = np.ones(means.shape)
        for axis, k in zip(axes_used, p):
            term = term * grids[axis] ** k
        columns.append(term[valid])
    design = np.stack(columns, axis=1)
    values = means[valid]
    keep = values <= np.percentile(values, 50) if exclude is None else np.ones(values.shape, bool)
    coef = np.zeros(len(powers))
    for _ in range(5):
        if keep.sum() < len(powers):
            break
        coef = np.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
        resid = values - design @ coef
        sigma = robust_sigma(resid[keep]) or 1e-6
        new_keep = resid < clip_sigma * sigma
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep

    out = np.zeros(image.shape, np.float32)
    axis_coords = [((np.arange(n, dtype=np.float32) - s) / s) for n, s in zip(image.shape, scale)]
    for c, p in zip(coef, powers):
        term = np.float32(c)
        for axis, k in zip(axes_used, p):
            shape = [1] * image.ndim
            shape[axis] = -1
            term = term * (axis_coords[axis] ** k).reshape(shape)
        out += term
    return out
