"""Segmentation and background on synthetic fields with known objects."""
import numpy as np
import pytest

from exotrack.background import background_surface, pixel_noise
from exotrack.demo import simulate_uptake_field
from exotrack.evaluate import match_labels
from exotrack.segmentation import segment_nuclei_and_cells


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_touching_cells_with_stain(seed):
    field = simulate_uptake_field(n_cells=12, puncta_per_cell=0, seed=seed)
    nuclei, cells = segment_nuclei_and_cells(field.image[0], field.image[2], pixel_size_um=field.pixel_size_um[1:])
    assert match_labels(nuclei, field.nuclei) >= 0.9
    assert match_labels(cells, field.cells) >= 0.9
    assert set(np.unique(nuclei)) <= set(np.unique(cells))


def test_cells_without_stain_are_bounded_expansions():
    field = simulate_uptake_field(n_cells=8, puncta_per_cell=0, seed=24)
    nuclei, cells = segment_nuclei_and_cells(field.image[0], None, pixel_size_um=field.pixel_size_um[1:],
                                             cell_expansion_um=6.0)
    from scipy import ndimage as ndi

    reach = ndi.distance_transform_edt(nuclei == 0) * field.pixel_size_um[-1]
    assert reach[cells > 0].max() <= 6.0 + 2 * field.pixel_size_um[-1] * 4  # working-scale rounding
    assert match_labels(cells, field.cells) >= 0.8


def test_3d_stack_is_segmented_in_3d():
    field = simulate_uptake_field(shape=(256, 256), n_z=20, n_cells=3, puncta_per_cell=0, seed=25)
    nuclei, cells = segment_nuclei_and_cells(field.image[:, 0], field.image[:, 2], pixel_size_um=field.pixel_size_um)
    assert cells.shape == field.cells.shape
    assert match_labels(cells, field.cells) >= 0.9
    assert match_labels(nuclei, field.nuclei) >= 0.9


def test_empty_field_has_no_objects():
    rng = np.random.default_rng(0)
    noise = rng.poisson(50, (256, 256)).astype(np.uint16)
    nuclei, cells = segment_nuclei_and_cells(noise, noise, pixel_size_um=(0.1625, 0.1625))
    assert nuclei.max() == 0 and cells.max() == 0


def test_background_surface_recovers_a_tilted_field_under_objects():
    yy, xx = np.mgrid[0:200, 0:300] / 100.0
    truth = 100 + 20 * xx - 10 * yy + 5 * xx * yy
    image = truth.copy()
    image[50:90, 60:120] += 500  # objects cover part of the field
    image[120:180, 200:260] += 300
    fit = background_surface(image)
    assert np.abs(fit - truth).max() < 3


def test_pixel_noise_ignores_blurred_structure():
    rng = np.random.default_rng(1)
    from scipy import ndimage as ndi

    structure = ndi.gaussian_filter(rng.uniform(0, 2000, (256, 256)), 3)
    assert pixel_noise(structure + rng.normal(0, 5, structure.shape)) == pytest.approx(5, rel=0.1)
