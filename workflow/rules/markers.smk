# Polarization markers: the study's gate from the control group's cells (exotrack.markers).
#
# Each fluorescence job gates its own cells (cells.csv <marker>_positive, samples.csv
# <marker>_pct_positive); this step re-gates every sample on the pooled cells of the control
# group, the study's default answer, in results/tables/markers.csv.


rule gate_markers:
    input:
        cells=[f"{RESULTS}/fluorescence/{s}/cells.csv" for s in marker_samples()],
        metrics=[f"{RESULTS}/fluorescence/{s}/metrics.json" for s in marker_samples()],
    output:
        markers=f"{RESULTS}/tables/markers.csv",
        gates=f"{RESULTS}/tables/markers_gates.csv",
        groups=f"{RESULTS}/tables/markers_groups.csv",
        png=f"{RESULTS}/plots/markers.png",
        svg=f"{RESULTS}/plots/markers.svg",
        uptake_png=f"{RESULTS}/plots/markers_uptake.png",
        uptake_svg=f"{RESULTS}/plots/markers_uptake.svg",
    params:
        samples=marker_samples(),
        groups={s: _ROWS[s]["group"] for s in marker_samples()},
        subjects={s: _ROWS[s]["subject"] or s for s in marker_samples()},
        control=config["control_group"],
        statistics=config["statistics"],
    log:
        "logs/gate_markers.log",
    script:
        "../../scripts/gate_markers.py"
