"""Snakemake entry point: results/plots/msd.png and .svg, the MSD curve of each group."""
import logging

import pandas as pd

from exotrack.plots import msd_figure, save

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
params = snakemake.params
curves = [pd.read_csv(path).assign(sample=sample, group=group)
          for path, sample, group in zip(snakemake.input.msd, params.samples, params.groups)]
figure = msd_figure(pd.concat(curves, ignore_index=True))
save(figure, snakemake.output.png, snakemake.output.svg)
