"""Snakemake entry point: results/tables/markers.csv (every sample gated on the control group's
cells), markers_gates.csv, markers_groups.csv and results/plots/markers.png."""
import json
import logging

import pandas as pd

from exotrack import io
from exotrack.markers import study_gates
from exotrack.plots import group_figure, save, uptake_figure
from exotrack.stats import group_table, subject_values

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
params, output = snakemake.params, snakemake.output
cells, metrics = {}, {}
for sample, cell_path, metric_path in zip(params.samples, snakemake.input.cells, snakemake.input.metrics):
    record = json.loads(open(metric_path).read())
    if record.get("status") == "ok" and record.get("markers"):  # failed samples keep their status
        cells[sample], metrics[sample] = pd.read_csv(cell_path), record
table, gates = study_gates(cells, metrics, dict(params.groups), control=params.control)
io.write_table(table, output.markers)
io.write_table(gates, output.gates)
# Group statistics per subject, as for samples.csv: one column per marker metric.
wide = pd.DataFrame({"sample": list(metrics)})
names = []
if not table.empty:
    value_columns = [c for c in table.columns if c == "pct_positive" or c == "spearman_puncta"
                     or c.startswith("pct_positive_uptake_")]
    pivot = table.pivot(index="sample", columns="marker", values=value_columns)
    pivot.columns = [f"{marker}_{value}" for value, marker in pivot.columns]
    names = list(pivot.columns) + ["m2_m1_positive_ratio"]
    ratio = table.groupby("sample")["m2_m1_positive_ratio"].first()
    wide = wide.merge(pivot.assign(m2_m1_positive_ratio=ratio).reset_index(), on="sample", how="left")
wide = wide.assign(group=wide["sample"].map(params.groups), subject=wide["sample"].map(params.subjects),
                   timepoint=float("nan"), status="ok", modality="fluorescence", marker="")
groups = group_table(wide, names, control=params.control, test=params.statistics["test"],
                     min_n=params.statistics["min_n"])
io.write_table(groups, output.groups)
headline = [n for n in names if n.endswith(("_pct_positive", "_spearman_puncta", "_uptake_gt20"))
            or n == "m2_m1_positive_ratio"]
figure = group_figure(subject_values(wide, headline), groups, headline, control=params.control,
                      title="markers (control-group gate): one point per subject")
save(figure, output.png, output.svg)
save(uptake_figure(table, control=params.control, title="marker-positive cells by uptake (control-group gate)"),
     output.uptake_png, output.uptake_svg)
