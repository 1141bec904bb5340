"""Snakemake entry point: results/tables/samples.csv (and .parquet), subjects.csv, groups.csv and
results/plots/{modality}.png and .svg."""
import logging

from exotrack import io
from exotrack.aggregate import HEADLINE, all_metrics, read_sample_table
from exotrack.plots import group_figure, save
from exotrack.stats import group_table, metric_order, subject_table, subject_values

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
params, output = snakemake.params, snakemake.output
decisions = snakemake.input.decisions[0] if snakemake.input.decisions else None
samples = read_sample_table(snakemake.input.sheet, params.schema, snakemake.input.metrics, decisions)
io.write_table(samples, output.samples)
io.write_parquet(samples, output.parquet)
io.write_table(subject_table(samples, all_metrics(), marker_ratio=params.marker_ratio), output.subjects)
groups = group_table(samples, all_metrics(), control=params.control, test=params.statistics["test"],
                     min_n=params.statistics["min_n"], marker_ratio=params.marker_ratio)
io.write_table(groups, output.groups)
for modality in params.modalities:
    values = subject_values(samples[samples["modality"] == modality], HEADLINE[modality],
                            marker_ratio=params.marker_ratio)
    figure = group_figure(values, groups, metric_order(values["metric"], HEADLINE[modality]),
                          control=params.control, title=f"{modality}: one point per subject")
    save(figure, output[f"png_{modality}"], output[f"svg_{modality}"])
