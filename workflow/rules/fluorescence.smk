# In-vitro uptake: segmentation, puncta, per-cell tables, QC overlay.
#
# Still fields are analysed in batches (config batch_size): a small field takes a fraction of a
# second, Python and the imaging libraries take over a second to start, so one job per field would
# spend most of a plate screen starting up. Each batch is a rule of its own, listing its fields'
# outputs; a field that fails is recorded in its status and the batch goes on.

for _index, _members in enumerate(still_batches()):

    rule:
        name:
            f"analyse_fluorescence_batch{_index}"
        output:
            cells=[f"{RESULTS}/fluorescence/{s}/cells.csv" for s in _members],
            puncta=[f"{RESULTS}/fluorescence/{s}/puncta.csv" for s in _members],
            labels=[f"{RESULTS}/fluorescence/{s}/labels.tif" for s in _members],
            nuclei=[f"{RESULTS}/fluorescence/{s}/nuclei.tif" for s in _members],
            metrics=[f"{RESULTS}/fluorescence/{s}/metrics.json" for s in _members],
            qc=[
                report(
                    f"{RESULTS}/qc/{s}.png",
                    caption="../report/qc_fluorescence.rst",
                    category="QC",
                    subcategory="fluorescence",
                    labels={"sample": s},
                )
                for s in _members
            ],
        params:
            samples=_members,
            path=[_ROWS[s]["path"] for s in _members],
            raw=[raw_state(s) for s in _members],
            options=config["fluorescence"],
            channels=[_ROWS[s]["channels"] for s in _members],
            pixel_size_um=[_ROWS[s]["pixel_size_um"] for s in _members],
            axes=[_ROWS[s]["axes"] for s in _members],
            labels=[[_ROWS[s]["nuclei_labels"], _ROWS[s]["cell_labels"]] for s in _members],
        log:
            f"logs/analyse_fluorescence/batch{_index}.log",
        benchmark:
            f"logs/benchmark/analyse_fluorescence/batch{_index}.tsv"
        threads: 1
        resources:
            # Labels, filtered copies and float images: about 40 bytes per input pixel of the
            # largest field (fields run one after another); a minute per field.
            mem_mb=lambda wildcards, attempt, _members=_members: int(
                1000 + 40 * max(raw_size_mb(s) for s in _members) * attempt
            ),
            runtime=lambda wildcards, attempt, _members=_members: (10 + len(_members)) * attempt,
            # Which attempt this is: a retry of a killed job skips the field it was killed in.
            attempt=lambda wildcards, attempt: attempt,
        script:
            "../../scripts/analyse_fluorescence.py"
