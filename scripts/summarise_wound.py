"""Snakemake entry point: results/tables/wound_timecourse.csv, every well's closure over time."""
import logging

import pandas as pd

from exotrack import io

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
tables = []
for sample, path in zip(snakemake.params.samples, snakemake.input.frames):
    frames = pd.read_csv(path)
    row = snakemake.params.rows[sample]
    tables.append(frames.assign(sample=sample, group=row["group"], subject=row["subject"] or sample))
columns = ["sample", "group", "subject", "time_h", "wound_area_mm2", "mean_width_um", "pct_closure", "found"]
table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
io.write_table(table.reindex(columns=columns), snakemake.output[0])
