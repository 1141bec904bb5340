# Scratch (wound-healing) assays: cell-free area, width and closure per well (exotrack.wound).


rule analyse_wound:
    wildcard_constraints:
        sample=sample_regex(samples_of("wound")),
    output:
        frames=f"{RESULTS}/wound/{{sample}}/frames.csv",
        metrics=f"{RESULTS}/wound/{{sample}}/metrics.json",
        qc=f"{RESULTS}/qc/{{sample}}.png",
    params:
        path=sample_field("path"),
        raw=sample_raw_state,
        options=config["wound"],
        pixel_size_um=sample_field("pixel_size_um"),
    log:
        "logs/analyse_wound/{sample}.log",
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=lambda wildcards, attempt: 5 * attempt,
    script:
        "../../scripts/analyse_wound.py"


rule summarise_wound:
    input:
        frames=[f"{RESULTS}/wound/{s}/frames.csv" for s in samples_of("wound")],
    output:
        timecourse=f"{RESULTS}/tables/wound_timecourse.csv",
        groups=f"{RESULTS}/tables/wound_groups.csv",
        png=f"{RESULTS}/plots/wound_timecourse.png",
        svg=f"{RESULTS}/plots/wound_timecourse.svg",
    params:
        control=config["control_group"],
        statistics=config["statistics"],
        samples=samples_of("wound"),
        rows={s: {c: _ROWS[s][c] for c in ("group", "subject", "timepoint")} for s in samples_of("wound")},
    log:
        "logs/summarise_wound.log",
    script:
        "../../scripts/summarise_wound.py"
