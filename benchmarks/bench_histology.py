"""A whole-slide-sized section: peak memory against the slide's size, time against reading it.

Run on demand:  python benchmarks/bench_histology.py [--side 20000]

A synthetic pyramidal RGB TIFF (default 20,000 x 20,000 pixels at 0.5 µm, 1.2 GB of pixels, an
elliptical piece of lymph node on glass, tiles of a simulated section with known classes) is
written tile by tile, then analysed by ``process_sample`` in a child process whose peak resident
memory is measured. Printed: peak memory / full image size (the peer: any tool that loads the slide
whole needs at least 1.0), and analysis time / time to decode every tile once (the I/O floor).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from exotrack.demo_histology import simulate_section

TILE = 512
PIXEL_SIZE_UM = 0.5


def write_slide(path: Path, side: int, *, seed: int = 0) -> float:
    """Write the slide; returns the true positive percentage of the pattern section."""
    pattern = simulate_section(shape=(2048, 2048), fractions=(0.15, 0.08, 0.04), glass_fraction=0, seed=seed)
    glass = np.array([242, 240, 236], np.uint8)
    n = -(-side // TILE)
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    inside = ((yy - n / 2) / (0.47 * n)) ** 2 + ((xx - n / 2) / (0.40 * n)) ** 2 < 1
    rng = np.random.default_rng(seed)

    def tiles():
        for ty in range(n):
            for tx in range(n):
                if inside[ty, tx]:
                    y0, x0 = rng.integers(0, (2048 - TILE) // 8, size=2) * 8
                    yield pattern.image[y0:y0 + TILE, x0:x0 + TILE]
                else:
                    yield np.broadcast_to(glass, (TILE, TILE, 3))

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                  compression="zlib", resolution=(1e4 / PIXEL_SIZE_UM,) * 2, resolutionunit="CENTIMETER")
    return pattern.positive_pct


def read_floor(path: Path) -> float:
    start = time.perf_counter()
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        for _ in page.segments():
            pass
    return time.perf_counter() - start


_CHILD = """
import json, sys, time
from exotrack.histology import process_sample
start = time.perf_counter()
folder = sys.argv[2]
outputs = {k: f"{folder}/{k}.{e}" for k, e in [("summary", "csv"), ("cells", "csv"), ("metrics", "json"), ("qc", "png")]}
metrics = process_sample(sample="slide", path=sys.argv[1], options={}, outputs=outputs, marker="CD206")
print(json.dumps({"seconds": time.perf_counter() - start, "status": metrics["status"],
                  "n_cells": metrics.get("n_cells"), "positive_pct": metrics.get("positive_pct"),
                  # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec.
                  "peak_mb": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slide.tif"
        start = time.perf_counter()
        truth = write_slide(path, args.side)
        print(f"wrote {args.side} x {args.side} RGB slide ({path.stat().st_size / 1e6:.0f} MB on disk) "
              f"in {time.perf_counter() - start:.0f} s; pattern positive {truth:.1f} %")
        floor = read_floor(path)
        result = subprocess.run([sys.executable, "-c", _CHILD, str(path), tmp], capture_output=True, text=True)
        if result.returncode:
            sys.exit(result.stderr)
        run = json.loads(result.stdout.strip().splitlines()[-1])
    full_mb = args.side ** 2 * 3 / 2 ** 20
    print(f"status {run['status']}: {run['n_cells']} cells, {run['positive_pct']:.1f} % positive (truth {truth:.1f} %)")
    print(f"peak memory {run['peak_mb']:.0f} MB vs full image {full_mb:.0f} MB: ratio {run['peak_mb'] / full_mb:.3f}")
    print(f"analysis {run['seconds']:.0f} s vs decoding every tile {floor:.1f} s: ratio {run['seconds'] / floor:.1f}")


if __name__ == "__main__":
    main()
