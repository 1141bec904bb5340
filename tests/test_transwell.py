"""Transwell counts against the truth of simulated membranes with pores."""

import numpy as np
import pytest

from exotrack import background, transwell
from exotrack.demo_vitro import simulate_membrane


@pytest.mark.parametrize("kind", ["crystal_violet", "fluorescence"])
def test_counts_within_5_percent_with_pores_ignored(kind):
    for seed in range(3):
        membrane = simulate_membrane(kind=kind, seed=seed)
        if kind == "crystal_violet":
            density = transwell.crystal_violet_density(membrane.image)
        else:
            plane = membrane.image.astype(np.float32)
            density = plane - background.background_surface(plane)
        table, _, pores_seen = transwell.count_cells(density, pixel_size_um=membrane.pixel_size_um)
        assert membrane.n_pores > membrane.n_cells  # more pores than cells in every field
        if kind == "fluorescence":  # autofluorescent pores pass the first threshold and are set aside
            assert pores_seen >= 0.7 * membrane.n_pores
        assert abs(table["cells"].sum() / membrane.n_cells - 1) <= 0.05, (kind, seed, table["cells"].sum())


def test_pores_as_large_as_nuclei_are_told_apart_by_stain():
    rng = np.random.default_rng(3)
    density = rng.normal(0, 0.02, (400, 400))
    yy, xx = np.mgrid[0:400, 0:400]
    for cy in range(20, 400, 46):  # 8 µm pores at 0.65 µm/px, a third as bright as nuclei
        for cx in range(20, 400, 46):
            density[np.hypot(yy - cy, xx - cx) < 6.2] += 0.3
    nuclei = [(43, 43), (135, 89), (227, 227), (320, 135), (89, 320), (89, 334)]  # the last two touch
    for cy, cx in nuclei:
        density[np.hypot(yy - cy, xx - cx) < 7.5] += 1.0  # 10 µm nuclei, as large as a pore
    table, _, pores_seen = transwell.count_cells(density, pixel_size_um=0.65, cell_diameter_um=10.0)
    assert table["cells"].sum() == len(nuclei), table
    assert pores_seen >= 60
