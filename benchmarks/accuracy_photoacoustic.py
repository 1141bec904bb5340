"""Lymph-node accuracy on the randomised B-mode / PA family: Dice, volume and sO2 per volume.

Run on demand:  python benchmarks/accuracy_photoacoustic.py [--seeds 0-19] [--energy 1,0.9]

Each volume of ``simulate_family`` (its own physics, see demo_photoacoustic) is written as an
OME-TIFF and analysed by ``process_sample`` with the default options; printed per volume: what was
drawn, the status, Dice against the true node, found / true volume, found / true node sO2.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import tifffile

from exotrack import photoacoustic
from exotrack.demo_photoacoustic import simulate_family
from exotrack.io import write_ome_tiff


def evaluate(seed: int, folder: Path, *, energy=None, options=None, node=True) -> dict:
    volume = simulate_family(seed, energy=energy, node=node)
    path = folder / f"v{seed}.ome.tif"
    write_ome_tiff(path, volume.image, axes="CZYX", channel_names=volume.channel_names,
                   pixel_size_um=volume.voxel_size_um)
    outputs = {k: folder / f"v{seed}" / f"{k}.{e}" for k, e in
               [("regions", "csv"), ("mask", "tif"), ("metrics", "json"), ("qc", "png")]}
    metrics = photoacoustic.process_sample(sample=f"v{seed}", path=path, options=options or {}, outputs=outputs)
    row = {"seed": seed, "2d": volume.params["two_d"], "d_mm": round(volume.params["diameter_mm"], 2),
           "hilum": bool(volume.params.get("hilum")), "cyst": bool(volume.params.get("cyst")),
           "gel": volume.params["gel_mm"] > 0, "status": metrics["status"][:60],
           "warnings": "; ".join(metrics.get("warnings", []))[:80]}
    if volume.node.any():
        row.update(true_mm3=volume.node_volume_mm3, true_so2=volume.node_so2)
    if metrics["status"] == "ok":
        mask = tifffile.imread(outputs["mask"]).astype(bool).reshape(volume.node.shape)
        row.update(dice=2 * (mask & volume.node).sum() / max(mask.sum() + volume.node.sum(), 1),
                   found_mm3=metrics["ln_volume_mm3"], found_so2=metrics["ln_so2_mean"],
                   contrast_sd=metrics.get("node_contrast_sd", float("nan")))
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0-19")
    parser.add_argument("--energy", default=None)
    parser.add_argument("--no-node", action="store_true")
    args = parser.parse_args()
    lo, hi = (int(v) for v in args.seeds.split("-"))
    energy = [float(v) for v in args.energy.split(",")] if args.energy else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(lo, hi + 1):
            row = evaluate(seed, Path(tmp), energy=energy, node=not args.no_node)
            rows.append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    ok = [r for r in rows if "dice" in r]
    if ok:
        print(f"ok {len(ok)}/{len(rows)}; Dice min {min(r['dice'] for r in ok):.3f}, median "
              f"{np.median([r['dice'] for r in ok]):.3f}")


if __name__ == "__main__":
    main()
