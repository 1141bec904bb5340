"""Puncta detection on images whose every spot is known (Poisson, offset, read noise, PSF)."""
import numpy as np

from exotrack.demo import _camera, _gaussian_spots
from exotrack.evaluate import match_points
from exotrack.puncta import detect_puncta, path_puncta, path_snr, snr_image, spot_sigma_px

PIXEL = (0.1625, 0.1625)


def _field(rng, n, *, shape=(256, 256), photons=1500.0, background=50.0, min_distance=3.0):
    points = []
    while len(points) < n:
        p = rng.uniform(4, np.array(shape) - 4)
        if all(np.hypot(*(p - q)) >= min_distance for q in points):
            points.append(p)
    points = np.array(points)
    amplitude = np.full(n, photons) if np.isscalar(photons) else photons
    sigma = spot_sigma_px(PIXEL, spot_diameter_um=0.5)
    image = _camera(rng, _gaussian_spots(shape, points, amplitude, sigma) + background)
    return image, points, amplitude


def test_isolated_spots_positions_and_intensities():
    rng = np.random.default_rng(1)
    image, truth, photons = _field(rng, 60, min_distance=12)
    found = detect_puncta(image, pixel_size_um=PIXEL)
    pairs, precision, recall, f1 = match_points(found[["y", "x"]].to_numpy(), truth, radius=3)
    assert f1 == 1.0
    error = found[["y", "x"]].to_numpy()[pairs[:, 0]] - truth[pairs[:, 1]]
    assert np.sqrt((error ** 2).sum(1)).mean() < 0.25  # pixels
    ratio = found["intensity"].to_numpy()[pairs[:, 0]] / photons[pairs[:, 1]]
    assert abs(np.median(ratio) - 1) < 0.1


def test_pure_noise_gives_almost_no_detections():
    rng = np.random.default_rng(2)
    image = _camera(rng, np.full((1024, 1024), 80.0))
    assert len(detect_puncta(image, pixel_size_um=PIXEL)) <= 2


def test_crowded_puncta_are_counted_not_saturated():
    rng = np.random.default_rng(3)
    photons = rng.lognormal(np.log(1500), 0.4, 700)
    image, truth, _ = _field(rng, 700, shape=(128, 128), photons=photons)  # one spot per 23 px²
    found = detect_puncta(image, pixel_size_um=PIXEL)
    _, _, recall, f1 = match_points(found[["y", "x"]].to_numpy(), truth, radius=3)
    assert f1 >= 0.9, f1
    assert len(found) >= 0.9 * len(truth)


def test_threshold_follows_noise_when_bleached():
    """A dimmer copy (bleached to 30%) of the same scene loses only spots that sink into noise."""
    rng = np.random.default_rng(4)
    image, truth, _ = _field(rng, 80, photons=3000.0, min_distance=8)
    dim, _, _ = _field(np.random.default_rng(4), 80, photons=900.0, background=15.0, min_distance=8)
    for img in (image, dim):
        found = detect_puncta(img, pixel_size_um=PIXEL)
        assert match_points(found[["y", "x"]].to_numpy(), truth, radius=3)[3] >= 0.97


def test_3d_spots():
    rng = np.random.default_rng(5)
    shape = (16, 96, 96)
    sigma = spot_sigma_px((0.4, *PIXEL), spot_diameter_um=0.5)
    points = np.column_stack([rng.uniform(3, 13, 30), rng.uniform(5, 91, (30, 2))])
    keep = [0]
    for i in range(1, 30):
        if all(np.linalg.norm((points[i] - points[j]) / sigma) > 6 for j in keep):
            keep.append(i)
    points = points[keep]
    image = _camera(rng, _gaussian_spots(shape, points, np.full(len(points), 3000.0), sigma) + 40)
    found = detect_puncta(image, pixel_size_um=(0.4, *PIXEL))
    assert match_points(found[["z", "y", "x"]].to_numpy(), points, radius=3)[3] == 1.0


def test_flat_padding_is_not_detected():
    rng = np.random.default_rng(6)
    image = _camera(rng, np.full((256, 256), 300.0))
    image[150:, 180:] = 0  # a blacked-out corner, as in ImageJ's HeLa sample
    from exotrack.fluorescence import _padding

    found = detect_puncta(image, pixel_size_um=PIXEL, exclude=_padding(image))
    assert len(found) <= 1


def test_path_evidence_finds_puncta_too_dim_for_any_frame():
    # Twelve puncta drifting ~0.7 px per frame, each at about 1.7 sigma of noise in every frame.
    rng = np.random.default_rng(5)
    shape, frames, background = (128, 128), 30, 50.0
    sigma = spot_sigma_px(PIXEL, spot_diameter_um=0.5)
    start = rng.uniform(10, 118, (12, 2))
    paths = start + np.cumsum(rng.normal(0, 0.5, (frames, 12, 2)), axis=0)
    movie = np.stack([_camera(rng, _gaussian_spots(shape, p, np.full(12, 120.0), sigma) + background)
                      for p in paths]).astype(np.float32)
    snr = np.stack([snr_image(f, pixel_size_um=PIXEL) for f in movie])

    def recall(found, t):
        return match_points(found[["y", "x"]].to_numpy(), paths[t], radius=3)[2]

    single = np.mean([recall(detect_puncta(f, pixel_size_um=PIXEL, snr_threshold=2.5), t)
                      for t, f in enumerate(movie)])
    evidence, decoy = path_snr(snr), path_snr(-snr)
    threshold = np.quantile(decoy, 0.9999)  # about one noise maximum per frame
    found = [path_puncta(f, e, pixel_size_um=PIXEL, threshold=threshold) for f, e in zip(movie, evidence)]
    decoys = [path_puncta(-f, e, pixel_size_um=PIXEL, threshold=threshold) for f, e in zip(movie, decoy)]
    along = np.mean([recall(f, t) for t, f in enumerate(found)])
    assert single < 0.3 and along > 0.7
    assert sum(map(len, decoys)) < 0.15 * sum(map(len, found))
    # Evidence is scaled to a frame's SNR: a punctum that stays put scores about its own SNR.
    still = np.zeros((40, 9, 9), np.float32)
    still[:, 4, 4] = 2.0
    assert abs(path_snr(still)[20, 4, 4] - 2.0) < 0.05
