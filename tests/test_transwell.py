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
        table, _ = transwell.count_cells(density, pixel_size_um=membrane.pixel_size_um)
        assert membrane.n_pores > membrane.n_cells  # more pores than cells in every field
        assert abs(table["cells"].sum() / membrane.n_cells - 1) <= 0.05, (kind, seed, table["cells"].sum())


def test_pores_beside_a_cell_are_not_counted():
    density = np.zeros((200, 200))
    yy, xx = np.mgrid[0:200, 0:200]
    for cy, cx in [(40, 40), (40, 140), (140, 40)]:
        density[np.hypot(yy - cy, xx - cx) < 6] = 0.4  # 8 µm pores at 0.65 µm/px: dim
    density[np.hypot(yy - 140, xx - 140) < 10] = 1.0  # one stained cell of 13 µm
    table, _ = transwell.count_cells(density, pixel_size_um=0.65)
    assert table["cells"].sum() == 1, table
