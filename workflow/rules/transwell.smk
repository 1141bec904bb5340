# Transwell migration: migrated cells per field and per mm² (exotrack.transwell).


rule analyse_transwell:
    wildcard_constraints:
        sample=sample_regex(samples_of("transwell")),
    output:
        objects=f"{RESULTS}/transwell/{{sample}}/objects.csv",
        metrics=f"{RESULTS}/transwell/{{sample}}/metrics.json",
        qc=f"{RESULTS}/qc/{{sample}}.png",
    params:
        path=sample_field("path"),
        raw=sample_raw_state,
        options=config["transwell"],
        pixel_size_um=sample_field("pixel_size_um"),
    log:
        "logs/analyse_transwell/{sample}.log",
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=lambda wildcards, attempt: 5 * attempt,
    script:
        "../../scripts/analyse_transwell.py"
