# Histology: CD206 / NOS2 positive cells per section.


rule analyse_histology:
    wildcard_constraints:
        sample=sample_regex(samples_of("histology")),
    output:
        summary=f"{RESULTS}/histology/{{sample}}/summary.csv",
        cells=f"{RESULTS}/histology/{{sample}}/cells.csv",
        metrics=f"{RESULTS}/histology/{{sample}}/metrics.json",
        qc=report(
            f"{RESULTS}/qc/{{sample}}.png",
            caption="../report/qc_histology.rst",
            category="QC",
            subcategory="histology",
            labels={"sample": "{sample}"},
        ),
    params:
        path=sample_field("path"),
        raw=sample_raw_state,
        options=config["histology"],
        marker=sample_field("marker"),
        channels=sample_field("channels"),
        pixel_size_um=sample_field("pixel_size_um"),
    log:
        "logs/analyse_histology/{sample}.log",
    benchmark:
        "logs/benchmark/analyse_histology/{sample}.tsv"
    threads: 1
    resources:
        # Tiles bound the memory whatever the slide's size.
        mem_mb=lambda wildcards, attempt: 1500 * attempt,
        runtime=lambda wildcards, attempt: int(10 + sample_raw_size_mb(wildcards) / 20) * attempt,
    script:
        "../../scripts/analyse_histology.py"
