# Ultrasound-guided photoacoustics: the lymph node segmented, its PA signal and oxygenation.


rule analyse_photoacoustic:
    wildcard_constraints:
        sample=sample_regex(samples_of("photoacoustic")),
    output:
        regions=f"{RESULTS}/photoacoustic/{{sample}}/regions.csv",
        mask=f"{RESULTS}/photoacoustic/{{sample}}/node.tif",
        metrics=f"{RESULTS}/photoacoustic/{{sample}}/metrics.json",
        qc=report(
            f"{RESULTS}/qc/{{sample}}.png",
            caption="../report/qc_photoacoustic.rst",
            category="QC",
            subcategory="photoacoustic",
            labels={"sample": "{sample}"},
        ),
    params:
        path=sample_field("path"),
        raw=sample_raw_state,
        options=config["photoacoustic"],
        pixel_size_um=sample_field("pixel_size_um"),
        seed=photoacoustic_seed,
    log:
        "logs/analyse_photoacoustic/{sample}.log",
    benchmark:
        "logs/benchmark/analyse_photoacoustic/{sample}.tsv"
    threads: 1
    resources:
        # Smoothed copies, labels and unmixed maps: about 40 bytes per voxel and channel.
        mem_mb=lambda wildcards, attempt: int(1000 + 40 * sample_raw_size_mb(wildcards) * attempt),
        runtime=lambda wildcards, attempt: 10 * attempt,
    script:
        "../../scripts/analyse_photoacoustic.py"
