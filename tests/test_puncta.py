"""Puncta detection on images whose every spot is known (Poisson, offset, read noise, PSF).

The spots are drawn with the test's own PSF (sigma 1.2 px laterally, 3.3 times that along z), not
the analysis's model of it; the analysis measures it (fluorescence.calibrate_spots), as it does on
a user's image.
"""
import numpy as np
import pandas as pd
import pytest

from exotrack import fluorescence as fl
from exotrack.demo import camera as _camera
from exotrack.demo import gaussian_spots as _gaussian_spots
from exotrack.evaluate import match_points
from exotrack.fluorescence import padding
from exotrack.puncta import detect_puncta, path_evidence, path_puncta, snr_image

PIXEL = (0.1625, 0.1625)
SIGMA_PX = np.array([1.2, 1.2])


def _stack_sigma(z_step_um):
    return np.array([3.3 * SIGMA_PX[0] * PIXEL[0] / z_step_um, *SIGMA_PX])


def _diameter(image, pixel=PIXEL):
    """The spot diameter the analysis measures on ``image`` (2-D or a stack)."""
    planes = image[None, None] if image.ndim == 2 else image[None]
    diameter, measured, warnings = fl.calibrate_spots(planes, spatial=pixel, options=fl.DEFAULTS)
    assert not warnings and measured["spot_fwhm_n_spots"] >= 5
    return diameter


def _field(rng, n, *, shape=(256, 256), photons=1500.0, background=50.0, min_distance=3.0):
    points = []
    while len(points) < n:
        p = rng.uniform(4, np.array(shape) - 4)
        if all(np.hypot(*(p - q)) >= min_distance for q in points):
            points.append(p)
    points = np.array(points)
    amplitude = np.full(n, photons) if np.isscalar(photons) else photons
    image = _camera(rng, _gaussian_spots(shape, points, amplitude, SIGMA_PX) + background)
    return image, points, amplitude


def test_isolated_spots_positions_and_intensities():
    rng = np.random.default_rng(1)
    image, truth, photons = _field(rng, 60, min_distance=12)
    found = detect_puncta(image, pixel_size_um=PIXEL, spot_diameter_um=_diameter(image))
    pairs, precision, recall, f1 = match_points(found[["y", "x"]].to_numpy(), truth, radius=3)
    assert f1 == 1.0
    error = found[["y", "x"]].to_numpy()[pairs[:, 0]] - truth[pairs[:, 1]]
    assert np.sqrt((error ** 2).sum(1)).mean() < 0.25  # pixels
    ratio = found["intensity"].to_numpy()[pairs[:, 0]] / photons[pairs[:, 1]]
    assert abs(np.median(ratio) - 1) < 0.1


def test_position_sd_is_the_scatter_of_positions_under_background_noise():
    # Gaussian pixel noise alone, which the error model accounts for: the reported standard
    # deviation is a lower bound (the sub-pixel fit is not quite linear in the noise), but close.
    rng = np.random.default_rng(2)
    sigma = SIGMA_PX
    grid = np.array([(y, x) for y in range(12, 256, 20) for x in range(12, 256, 20)], float)
    for amplitude in (10.0, 16.0):
        error, sd = [], []
        for _ in range(4):
            points = grid + rng.uniform(-0.5, 0.5, grid.shape)
            spots = _gaussian_spots((256, 256), points, np.full(len(points), amplitude * 2 * np.pi * sigma[0] ** 2), sigma)
            image = spots + rng.normal(100, 3.0, spots.shape)
            found = detect_puncta(image, pixel_size_um=PIXEL, snr_threshold=3,
                                  spot_diameter_um=_diameter(spots + rng.normal(100, 0.3, spots.shape)))
            pairs = match_points(found[["y", "x"]].to_numpy(), points, radius=2)[0]
            error.append(found[["y", "x"]].to_numpy()[pairs[:, 0]] - points[pairs[:, 1]])
            sd.append(found["position_sd_px"].to_numpy()[pairs[:, 0]])
        ratio = np.sqrt((np.concatenate(error) ** 2).mean() / (np.concatenate(sd) ** 2).mean())
        assert 1.0 <= ratio <= 1.3


def test_pure_noise_gives_almost_no_detections():
    rng = np.random.default_rng(2)
    image = _camera(rng, np.full((1024, 1024), 80.0))
    assert len(detect_puncta(image, pixel_size_um=PIXEL)) <= 2


def test_crowded_puncta_are_counted_not_saturated():
    rng = np.random.default_rng(3)
    photons = rng.lognormal(np.log(1500), 0.4, 700)
    # one spot per 23 px², no closer than 2.75 PSF sigmas
    image, truth, _ = _field(rng, 700, shape=(128, 128), photons=photons, min_distance=3.3)
    found = detect_puncta(image, pixel_size_um=PIXEL, spot_diameter_um=_diameter(image))
    _, _, recall, f1 = match_points(found[["y", "x"]].to_numpy(), truth, radius=3)
    assert f1 >= 0.9, f1
    assert len(found) >= 0.9 * len(truth)


def test_threshold_follows_noise_when_bleached():
    """A dimmer copy (bleached to 30%) of the same scene loses only spots that sink into noise."""
    rng = np.random.default_rng(4)
    image, truth, _ = _field(rng, 80, photons=3000.0, min_distance=8)
    dim, _, _ = _field(np.random.default_rng(4), 80, photons=900.0, background=15.0, min_distance=8)
    for img in (image, dim):
        found = detect_puncta(img, pixel_size_um=PIXEL, spot_diameter_um=_diameter(img))
        assert match_points(found[["y", "x"]].to_numpy(), truth, radius=3)[3] >= 0.97


def test_3d_spots():
    rng = np.random.default_rng(5)
    shape = (16, 96, 96)
    sigma = _stack_sigma(0.4)
    points = np.column_stack([rng.uniform(3, 13, 30), rng.uniform(5, 91, (30, 2))])
    keep = [0]
    for i in range(1, 30):
        if all(np.linalg.norm((points[i] - points[j]) / sigma) > 6 for j in keep):
            keep.append(i)
    points = points[keep]
    image = _camera(rng, _gaussian_spots(shape, points, np.full(len(points), 3000.0), sigma) + 40)
    found = detect_puncta(image, pixel_size_um=(0.4, *PIXEL), spot_diameter_um=_diameter(image), axial_ratio=3.3)
    assert match_points(found[["z", "y", "x"]].to_numpy(), points, radius=3)[3] == 1.0


def test_3d_spots_by_the_first_and_last_slices_are_found_and_noise_there_is_not():
    rng = np.random.default_rng(6)
    shape, size = (12, 96, 96), (0.4, *PIXEL)
    sigma = _stack_sigma(0.4)
    grid = np.stack(np.meshgrid(np.arange(12, 90, 16), np.arange(12, 90, 16), indexing="ij"), -1).reshape(-1, 2)
    depth = np.resize([0.0, 0.5, 1.0, 10.0, 10.5, 11.0], len(grid))  # within a slice of either end
    points = np.column_stack([depth, grid])
    image = _camera(rng, _gaussian_spots(shape, points, np.full(len(points), 1500.0), sigma) + 10.0)
    diameter = _diameter(image)
    found = detect_puncta(image, pixel_size_um=size, spot_diameter_um=diameter, axial_ratio=3.3)
    pairs, _, _, f1 = match_points(found[["z", "y", "x"]].to_numpy(), points, radius=2)
    assert f1 == 1.0
    # The filter's extension of the end slices puts each such spot on the end slice.
    assert np.abs(found["z"].to_numpy()[pairs[:, 0]] - depth[pairs[:, 1]]).max() <= 1.0
    # The end slices' noise, raised by that extension, is thresholded as such.
    noise = [detect_puncta(_camera(rng, np.full((12, 256, 256), 10.0)), pixel_size_um=size, spot_diameter_um=diameter,
                           axial_ratio=3.3) for _ in range(5)]
    assert sum(map(len, noise)) <= 2


def test_flat_padding_is_not_detected():
    rng = np.random.default_rng(6)
    image = _camera(rng, np.full((256, 256), 300.0))
    image[150:, 180:] = 0  # a blacked-out corner, as in ImageJ's HeLa sample
    found = detect_puncta(image, pixel_size_um=PIXEL, exclude=padding(image))
    assert len(found) <= 1


def _drifting_puncta(rng, photons, *, n=12, shape=(128, 128), frames=30, background=50.0):
    sigma = SIGMA_PX
    paths = rng.uniform(10, 118, (n, 2)) + np.cumsum(rng.normal(0, 0.5, (frames, n, 2)), axis=0)
    movie = [_camera(rng, _gaussian_spots(shape, p, np.full(n, photons), sigma) + background) for p in paths]
    return np.stack(movie).astype(np.float32), paths


def test_path_evidence_finds_puncta_too_dim_for_any_frame():
    # Twelve puncta drifting ~0.7 px per frame at about 1.8 sigma of noise in each frame; the
    # noise is judged on a movie of the same background without them.
    rng = np.random.default_rng(5)
    movie, paths = _drifting_puncta(rng, 60.0)
    noise, _ = _drifting_puncta(rng, 0.0)
    # Too dim to measure the spot width on: it is measured on a bright copy of the first frame.
    diameter = _diameter(_drifting_puncta(np.random.default_rng(5), 3000.0, frames=1)[0][0])
    spot = {"pixel_size_um": PIXEL, "spot_diameter_um": diameter}
    snr = np.stack([snr_image(f, **spot) for f in movie])
    noise_snr = np.stack([snr_image(f, **spot) for f in noise])

    def maxima(score, threshold):
        return path_puncta(score, **spot, threshold=threshold)

    def recall(scores, noise_scores):
        # at the threshold that lets one noise maximum per frame through
        threshold = np.sort(np.concatenate([maxima(s, 0.0)["snr"] for s in noise_scores]))[-len(noise_scores)]
        return np.mean([match_points(maxima(s, threshold)[["y", "x"]].to_numpy(), paths[t], radius=3)[2]
                        for t, s in enumerate(scores)])

    step = 1.5 * SIGMA_PX
    single = recall(snr, noise_snr)
    along = recall(path_evidence(snr, step_px=step), path_evidence(noise_snr, step_px=step))
    assert single < 0.15 and along > 0.45


def test_path_evidence_does_not_linger_after_a_punctum():
    still = np.zeros((40, 15, 15), np.float32)
    still[:20, 7, 7] = 2.0  # there for 20 frames, then gone
    evidence = path_evidence(still, step_px=1.6)[:, 7, 7]
    empty = evidence[30]
    assert evidence[10] > empty + 2
    assert evidence[22] < empty + 0.5
    # Excluded pixels (around puncta every frame shows) carry no evidence.
    excluded = path_evidence(still, step_px=1.6, exclude=still > 0)[:, 7, 7]
    assert excluded[10] < evidence[10] - 2


def test_spot_width_is_measured_and_a_wrong_configured_width_is_flagged():
    rng = np.random.default_rng(8)
    image, _, _ = _field(rng, 80, photons=3000.0, min_distance=12)
    planes = image[None, None]
    auto, measured, warnings = fl.calibrate_spots(planes, spatial=PIXEL, options=fl.DEFAULTS)
    # FWHM of the drawn PSF, pixel-integrated: 2.355 * sqrt(1.2² + 1/12) px.
    assert measured["spot_fwhm_um"] == pytest.approx(2.3548 * np.hypot(1.2, 12 ** -0.5) * PIXEL[0], rel=0.05)
    assert measured["spot_fwhm_n_spots"] >= 40 and not warnings
    fixed, _, warnings = fl.calibrate_spots(planes, spatial=PIXEL, options={**fl.DEFAULTS, "spot_diameter_um": 1.0})
    assert fixed == 1.0 and len(warnings) == 1 and "configured spot_diameter_um is 1" in warnings[0]
    close, _, warnings = fl.calibrate_spots(planes, spatial=PIXEL, options={**fl.DEFAULTS, "spot_diameter_um": 0.6})
    assert close == 0.6 and not warnings  # within 30% of the measured 0.57


def test_a_field_without_puncta_falls_back_to_the_prior_and_says_so():
    rng = np.random.default_rng(9)
    empty = _camera(rng, np.full((1, 1, 256, 256), 60.0))
    diameter, measured, warnings = fl.calibrate_spots(empty, spatial=PIXEL, options=fl.DEFAULTS)
    assert diameter == fl.DEFAULTS["spot_diameter_prior_um"] and measured["spot_fwhm_n_spots"] < 3
    assert len(warnings) == 1 and "too few to measure the spot width" in warnings[0]


def test_saturated_puncta_are_flagged():
    rng = np.random.default_rng(10)
    image, truth, _ = _field(rng, 20, photons=3000.0, min_distance=12)
    puncta = pd.DataFrame({"frame": 0, "z": 0.0, "y": truth[:, 0], "x": truth[:, 1]})
    assert fl.saturation_warnings(image[None, None], puncta) == []
    clipped = np.minimum(image, np.percentile(image[tuple(np.round(truth[:5]).astype(int).T)], 50)).astype(np.uint16)
    clipped = (clipped.astype(float) / clipped.max() * 4095).round().astype(np.uint16)  # a 12-bit camera's ceiling
    warnings = fl.saturation_warnings(clipped[None, None], puncta)
    assert len(warnings) == 1 and "4095" in warnings[0]


def test_a_spot_wider_than_the_model_stays_one_detection():
    # The model is the width measured on spots of sigma 1.2 px; the spots are 20-50% wider (a
    # configured spot_diameter_um that is too small). Before, 35% wider split 64 spots into 129.
    rng = np.random.default_rng(12)
    points = np.array([(y, x) for y in range(16, 256, 30) for x in range(16, 256, 30)], float)
    points += rng.uniform(-0.5, 0.5, points.shape)
    narrow = _camera(rng, _gaussian_spots((256, 256), points, np.full(len(points), 3000.0), SIGMA_PX) + 100)
    model = _diameter(narrow)
    for factor in (1.2, 1.35, 1.5):
        wide = _camera(rng, _gaussian_spots((256, 256), points, np.full(len(points), 3000.0), factor * SIGMA_PX) + 100)
        found = detect_puncta(wide, pixel_size_um=PIXEL, spot_diameter_um=model)
        assert len(found) == len(points), factor
        assert match_points(found[["y", "x"]].to_numpy(), points, radius=3)[3] == 1.0
