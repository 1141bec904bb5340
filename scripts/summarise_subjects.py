"""Snakemake entry point: results/tables/subjects.csv."""
import logging

import pandas as pd

from exotrack import io
from exotrack.aggregate import all_metrics
from exotrack.stats import subject_table

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
samples = pd.read_csv(snakemake.input.samples)
io.write_table(subject_table(samples, all_metrics(), marker_ratio=snakemake.params.marker_ratio), snakemake.output[0])
