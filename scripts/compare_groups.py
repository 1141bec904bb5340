"""Snakemake entry point: results/tables/groups.csv."""
import logging

import pandas as pd

from exotrack import io
from exotrack.aggregate import all_metrics
from exotrack.stats import group_table

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
samples = pd.read_csv(snakemake.input.samples)
table = group_table(samples, all_metrics(), control=snakemake.params.control,
                    test=snakemake.params.statistics["test"], min_n=snakemake.params.statistics["min_n"],
                    marker_ratio=snakemake.params.marker_ratio)
io.write_table(table, snakemake.output[0])
