"""Snakemake entry point: results/tables/wound_timecourse.csv (every well's closure over time),
wound_groups.csv (groups compared at each time and by the area under each well's curve) and
results/plots/wound_timecourse.png."""
import logging

import pandas as pd

from exotrack import io
from exotrack.plots import group_figure, save
from exotrack.stats import group_table, subject_values

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
params, output = snakemake.params, snakemake.output
tables = []
for sample, path in zip(params.samples, snakemake.input.frames):
    frames = pd.read_csv(path)
    row = params.rows[sample]
    tables.append(frames.assign(sample=sample, group=row["group"], subject=row["subject"] or sample))
columns = ["sample", "group", "subject", "time_h", "wound_area_mm2", "mean_width_um", "pct_closure", "found"]
table = pd.concat(tables, ignore_index=True).reindex(columns=columns) if tables else pd.DataFrame(columns=columns)
io.write_table(table, output.timecourse)
metrics = ["pct_closure", "mean_width_um", "wound_area_mm2"]
long = table.assign(timepoint=table["time_h"], status="ok", modality="wound", marker="")
groups = group_table(long, metrics, control=params.control, test=params.statistics["test"],
                     min_n=params.statistics["min_n"])
io.write_table(groups, output.groups)
figure = group_figure(subject_values(long, metrics), groups, metrics, control=params.control,
                      title="scratch assays: closure over time (h), one curve per well")
save(figure, output.png, output.svg)
