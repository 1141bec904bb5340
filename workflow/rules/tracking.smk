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
        trackmate_spots=f"{RESULTS}/fluorescence/{{sample}}/trackmate_spots.csv",
        trackmate_tracks=f"{RESULTS}/fluorescence/{{sample}}/trackmate_tracks.csv",
        msd=f"{RESULTS}/fluorescence/{{sample}}/msd.csv",
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
        labels=lambda wildcards: [[_ROWS[wildcards.sample][c] for c in ("nuclei_labels", "cell_labels")]],
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


# The MSD curves of the study's time-lapses, one per group (pooled over its samples' tracks).
rule plot_msd:
    input:
        msd=[f"{RESULTS}/fluorescence/{s}/msd.csv" for s in timelapse_samples()],
    output:
        png=report(
            f"{RESULTS}/plots/msd.png",
            caption="../report/plot_msd.rst",
            category="Plots",
            labels={"modality": "fluorescence time-lapse MSD"},
        ),
        svg=f"{RESULTS}/plots/msd.svg",
    params:
        samples=timelapse_samples(),
        groups=[_ROWS[s]["group"] for s in timelapse_samples()],
    log:
        "logs/plot_msd.log",
    script:
        "../../scripts/plot_msd.py"
