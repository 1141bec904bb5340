# In-vitro uptake: segmentation, puncta, per-cell tables, QC overlay.


rule analyse_fluorescence:
    wildcard_constraints:
        sample=sample_regex(still_samples()),
    output:
        cells=f"{RESULTS}/fluorescence/{{sample}}/cells.csv",
        puncta=f"{RESULTS}/fluorescence/{{sample}}/puncta.csv",
        labels=f"{RESULTS}/fluorescence/{{sample}}/labels.tif",
        nuclei=f"{RESULTS}/fluorescence/{{sample}}/nuclei.tif",
        metrics=f"{RESULTS}/fluorescence/{{sample}}/metrics.json",
        qc=report(
            f"{RESULTS}/qc/{{sample}}.png",
            caption="../report/qc_fluorescence.rst",
            category="QC",
            subcategory="fluorescence",
            labels={"sample": "{sample}"},
        ),
    params:
        path=sample_field("path"),
        raw=raw_state,
        options=config["fluorescence"],
        channels=sample_field("channels"),
        pixel_size_um=sample_field("pixel_size_um"),
        axes=sample_field("axes"),
    log:
        "logs/analyse_fluorescence/{sample}.log",
    benchmark:
        "logs/benchmark/analyse_fluorescence/{sample}.tsv"
    threads: 1
    resources:
        # Labels, filtered copies and float images: about 40 bytes per input pixel.
        mem_mb=lambda wildcards, attempt: int(1000 + 40 * raw_size_mb(wildcards) * attempt),
        runtime=lambda wildcards, attempt: 10 * attempt,
    script:
        "../../scripts/analyse_fluorescence.py"
