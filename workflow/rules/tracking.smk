# Time-lapses: the same analysis, plus puncta and cells linked through time.


rule track_fluorescence:
    wildcard_constraints:
        sample=sample_regex(timelapse_samples()),
    output:
        cells=f"{RESULTS}/fluorescence/{{sample}}/cells.csv",
        puncta=f"{RESULTS}/fluorescence/{{sample}}/puncta.csv",
        labels=f"{RESULTS}/fluorescence/{{sample}}/labels.tif",
        nuclei=f"{RESULTS}/fluorescence/{{sample}}/nuclei.tif",
        metrics=f"{RESULTS}/fluorescence/{{sample}}/metrics.json",
        tracks=f"{RESULTS}/fluorescence/{{sample}}/tracks.csv",
        track_summary=f"{RESULTS}/fluorescence/{{sample}}/track_summary.csv",
        cell_tracks=f"{RESULTS}/fluorescence/{{sample}}/cell_tracks.csv",
        qc=report(
            f"{RESULTS}/qc/{{sample}}.png",
            caption="../report/qc_fluorescence.rst",
            category="QC",
            subcategory="time-lapse",
            labels={"sample": "{sample}"},
        ),
    params:
        # Lists, as for a batch of still fields: one script serves both.
        samples=lambda wildcards: [wildcards.sample],
        path=lambda wildcards: [_ROWS[wildcards.sample]["path"]],
        raw=lambda wildcards: [raw_state(wildcards.sample)],
        options=config["fluorescence"],
        channels=lambda wildcards: [_ROWS[wildcards.sample]["channels"]],
        pixel_size_um=lambda wildcards: [_ROWS[wildcards.sample]["pixel_size_um"]],
        axes=lambda wildcards: [_ROWS[wildcards.sample]["axes"]],
    log:
        "logs/track_fluorescence/{sample}.log",
    benchmark:
        "logs/benchmark/track_fluorescence/{sample}.tsv"
    threads: 1
    resources:
        # A movie holds every frame's labels as well as the pixels.
        mem_mb=lambda wildcards, attempt: int(1000 + 60 * sample_raw_size_mb(wildcards) * attempt),
        runtime=lambda wildcards, attempt: int(10 + sample_raw_size_mb(wildcards)) * attempt,
        # Which attempt this is: a retry of a killed job skips the field it was killed in.
        attempt=lambda wildcards, attempt: attempt,
    script:
        "../../scripts/analyse_fluorescence.py"
