"""Snakemake entry point: results/plots/{modality}.png and .svg."""
import logging

import pandas as pd

from exotrack.aggregate import HEADLINE
from exotrack.plots import group_figure, save
from exotrack.stats import metric_order, subject_values

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
modality = snakemake.wildcards.modality
samples = pd.read_csv(snakemake.input.samples)
samples = samples[samples["modality"] == modality]
groups = pd.read_csv(snakemake.input.groups)
values = subject_values(samples, HEADLINE[modality], marker_ratio=snakemake.params.marker_ratio)
figure = group_figure(values, groups, metric_order(values["metric"], HEADLINE[modality]),
                      control=snakemake.params.control, title=f"{modality}: one point per subject")
save(figure, snakemake.output.png, snakemake.output.svg)
