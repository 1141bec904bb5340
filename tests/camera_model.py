"""An image formation model of the tests' own, independent of exotrack's generator and analyser:
pixel-integrated Gaussian puncta (a widefield PSF's core), Poisson photon noise, a camera gain,
offset and Gaussian read noise, rounded to 16-bit counts."""
import numpy as np
from scipy.special import erf


def render_puncta(shape, positions, photons, *, sigma_um, voxel_um, rng, background_photons=10.0,
                  gain=2.0, offset=100.0, read_noise=1.5):
    """A stack of ``shape`` (any number of axes) with a punctum of ``photons`` at each of
    ``positions`` (pixels, one row per punctum), each axis's PSF sigma ``sigma_um`` sampled at
    ``voxel_um``."""
    expected = np.full(shape, background_photons, float)
    edges = [np.arange(n + 1) - 0.5 for n in shape]
    for point, n in zip(np.atleast_2d(positions), np.broadcast_to(photons, len(np.atleast_2d(positions)))):
        profile = n
        for axis, (edge, s, v) in enumerate(zip(edges, sigma_um, voxel_um)):
            share = np.diff(erf((edge - point[axis]) / (np.sqrt(2) * s / v))) / 2
            profile = np.multiply.outer(profile, share) if axis else profile * share
        expected += profile
    counts = rng.poisson(expected) * gain + offset + rng.normal(0, read_noise, shape)
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)
