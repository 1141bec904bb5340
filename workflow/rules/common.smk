# Validation of the config and the sample sheet, and input functions shared by the rules.
import functools
import re
import sys
import threading
from pathlib import Path

from exotrack import io as exo_io
from exotrack import sheet as exo_sheet

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"
RESULTS = "results"


def _load():
    # A biologist should see what is wrong and where, not a traceback.
    try:
        validated = exo_sheet.validate_config(dict(config), SCHEMAS / "config.schema.yaml")
        sheet_path = Path(validated["samples"])
        demo_dir = Path(validated["demo"]["dir"])
        if not sheet_path.exists() and sheet_path.parent.resolve() == demo_dir.resolve():
            # Imported only here: the simulators cost half a second of every run's planning.
            from exotrack.demo import write_demo

            write_demo(demo_dir, seed=validated["demo"]["seed"])
        for key in ("dab_thresholds", "fluorescence_thresholds"):
            if sorted(validated["histology"][key]) != list(validated["histology"][key]):
                raise exo_sheet.SheetError(f"the configuration has problems:\n  histology.{key}: "
                                           "the thresholds for 1+, 2+ and 3+ must be in ascending order")
        return validated, exo_sheet.load_sample_sheet(sheet_path, SCHEMAS / "samples.schema.yaml")
    except exo_sheet.SheetError as exc:
        # Said in words and nothing else: a WorkflowError would be followed by Snakemake's
        # "File ...common.smk, line ..." lines, which point at our code, not the user's input.
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


_validated, samples = _load()
config.update(_validated)
# Row lookups by id for the input and params functions: pandas' .loc costs tens of microseconds a
# call, and planning a plate screen makes several per sample.
_ROWS = samples.to_dict("index")


wildcard_constraints:
    sample=r"[A-Za-z0-9_.-]+",
    modality="fluorescence|bli|photoacoustic|histology|wound|transwell",


def samples_of(modality):
    return samples.index[samples["modality"] == modality].tolist()


# Time-lapses (T > 1) get the tracking rule; the header says so without reading pixels.
_FRAMES = {
    s: exo_io.count_frames(_ROWS[s]["path"], axes=_ROWS[s]["axes"] or None)
    for s in samples_of("fluorescence")
}


def timelapse_samples():
    return [s for s, n in _FRAMES.items() if n > 1]


def still_samples():
    return [s for s, n in _FRAMES.items() if n <= 1]


def still_batches():
    """Still fields in sheet order, ``batch_size`` to a job."""
    stills, size = still_samples(), config["batch_size"]
    return [stills[i : i + size] for i in range(0, len(stills), size)]


_ID = r"[A-Za-z0-9_.-]+"


def _id_trie(names):
    """Regex matching these ids, built as a prefix tree (a plain alternation of thousands of ids
    costs a scan of every alternative for every file matched)."""
    trie = {}
    for name in names:
        node = trie
        for char in name:
            node = node.setdefault(char, {})
        node[""] = {}

    def pattern(node):
        branches = [re.escape(char) + pattern(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # a complete id may stop here
            return f"(?:{body})?"
        return body

    return pattern(trie)


def sample_regex(names):
    """Wildcard constraint matching exactly these sample ids (or nothing).

    Snakemake copies a rule's constraint into each of its file patterns and rescans that text
    whenever it fills in a pattern, so the constraint stays short even for a 10,000-field screen:
    it lists the ids, or, when they are most of the sheet, excludes the others (an excluded id is
    one followed by the end of its folder name, ``/``, or of its QC image name, ``.png``).
    """
    names = set(names)
    others = set(samples.index) - names
    if not names:
        return "(?!)"
    if len(others) < len(names):
        return f"(?!{_id_trie(others)}(?:/|\\.png$)){_ID}" if others else _ID
    return _id_trie(names)


def sample_field(column):
    """Input/params function: one column of the sample's sheet row."""
    return lambda wildcards: _ROWS[wildcards.sample][column]


@functools.lru_cache(maxsize=None)
def _raw_stat(sample):
    """``(name, size, mtime_ns)`` of each file of a sample's raw data, once per planning."""
    path = Path(_ROWS[sample]["path"])
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    found = []
    for file in files:
        try:
            stat = file.stat()
        except FileNotFoundError:
            continue
        found.append((file.name, stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def raw_state(sample):
    """Size and modification time of each file of a sample's raw data.

    Raw data reach the analysis as a param, not an input: Snakemake fails a job whose input
    vanished after planning, and with it every table of the study, while the analysis records a
    missing file as that sample's status. As a param, a changed file still reruns the sample.
    """
    return ";".join(f"{name}:{size}:{mtime}" for name, size, mtime in _raw_stat(sample))


def raw_size_mb(sample):
    return sum(size for _, size, _ in _raw_stat(sample)) / 1e6


def sample_raw_state(wildcards):
    return raw_state(wildcards.sample)


def sample_raw_size_mb(wildcards):
    return raw_size_mb(wildcards.sample)


# Modalities this version analyses; each has a rule writing results/<modality>/<sample>/metrics.json.
MODALITIES = ("fluorescence", "bli", "photoacoustic", "histology", "wound", "transwell")


def metrics_files():
    return [f"{RESULTS}/{m}/{s}/metrics.json" for m in MODALITIES for s in samples_of(m)]


def analysed_modalities():
    """Modalities with at least one sample that this version analyses."""
    return [m for m in MODALITIES if samples_of(m)]


def group_plots():
    """The study's plots, one per analysed modality (PNG for the report, SVG for figures), as named
    outputs ``png_<modality>`` / ``svg_<modality>``."""
    plots = {}
    for modality in analysed_modalities():
        plots[f"png_{modality}"] = report(
            f"{RESULTS}/plots/{modality}.png",
            caption="../report/plot_groups.rst",
            category="Plots",
            labels={"modality": modality},
        )
        plots[f"svg_{modality}"] = f"{RESULTS}/plots/{modality}.svg"
    return plots


def marker_ratio():
    """Histology markers whose ratio per subject is reported (M2 over M1)."""
    return [config["histology"]["m2_marker"], config["histology"]["m1_marker"]]


def qc_decisions():
    """Visual QC decisions recorded in napari, when there are any."""
    path = Path(RESULTS) / "qc" / "decisions.csv"
    return [str(path)] if path.exists() else []


def per_sample_outputs():
    """Every output of every sample's analysis (tables, label images, QC images, metrics).

    All are targets, not only what the study level reads: a deleted ``cells.csv`` or QC image is
    then rebuilt by the next run instead of "Nothing to be done". Called once the rules exist.
    """
    per_sample = {"track_fluorescence": timelapse_samples(), "analyse_histology": samples_of("histology"),
                  "analyse_bli": samples_of("bli"), "analyse_photoacoustic": samples_of("photoacoustic"),
                  "analyse_wound": samples_of("wound"), "analyse_transwell": samples_of("transwell")}
    files = []
    for name, members in per_sample.items():
        if members:
            files += expand([str(f) for f in getattr(rules, name).output], sample=members)
    for index in range(len(still_batches())):
        files += [str(f) for f in getattr(rules, f"analyse_fluorescence_batch{index}").output]
    return files


def marker_samples():
    """Fluorescence samples with marker channels (the sheet's markers= role, or the config's)."""
    configured = bool(config["fluorescence"]["markers"]["names"])
    return [s for s in samples_of("fluorescence")
            if configured or "markers=" in (_ROWS[s]["channels"] or "")]


def vitro_tables():
    """Study tables of the in-vitro assays present in the sheet."""
    tables = []
    if marker_samples():
        tables += [f"{RESULTS}/tables/{n}.csv" for n in ("markers", "markers_gates", "markers_groups")]
        tables += [f"{RESULTS}/plots/markers.png", f"{RESULTS}/plots/markers_uptake.png"]
    if samples_of("wound"):
        tables += [f"{RESULTS}/tables/wound_timecourse.csv", f"{RESULTS}/plots/wound_timecourse.png"]
    return tables


def all_outputs():
    tables = [f"{RESULTS}/tables/{name}.csv" for name in ("samples", "subjects", "groups")]
    if samples_of("bli"):
        tables.append(f"{RESULTS}/tables/timecourse.csv")
    tables += vitro_tables()  # workflow/rules/markers.smk, wound.smk
    plots = expand(f"{RESULTS}/plots/{{modality}}.png", modality=analysed_modalities())
    if timelapse_samples():
        plots.append(f"{RESULTS}/plots/msd.png")
    return tables + plots + [f"{RESULTS}/provenance/versions.json"] + per_sample_outputs()


def cancel_rescheduling_timers():
    """Cancel the timers Snakemake's job-rate limiter leaves behind once every job is done.

    Each scheduling round starts a one-second ``threading.Timer`` to look again; the last one
    has nothing left to schedule, but the interpreter waits for it before it exits, a second
    on every run (there is no setting for it: ``--max-jobs-per-timespan`` cannot go below 1 s).
    """
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()


def write_study_from_finished():
    """After a failed run: the study level from the samples that finished, the others marked.

    Called by ``onerror``. A sample whose analysis job died (killed for its memory or time, and
    out of retries) has no metrics.json, and Snakemake does not run the study level without it;
    every other sample's result would be missing from the tables. The tables are written here,
    outside Snakemake's bookkeeping; the next run rebuilds the lost samples and then the tables.
    """
    metrics = metrics_files()
    finished = [m for m in metrics if Path(m).exists()]
    if len(finished) == len(metrics):  # nothing lost: the failure was elsewhere, and is reported
        return
    outputs = {name: str(path) for name, path in rules.summarise_study.output.items()}
    try:
        from exotrack.aggregate import write_study

        write_study(config["samples"], str(SCHEMAS / "samples.schema.yaml"), finished, outputs,
                    decisions=(qc_decisions() or [None])[0], modalities=analysed_modalities(),
                    control=config["control_group"], statistics=config["statistics"],
                    marker_ratio=marker_ratio())
    except Exception as exc:  # the run has failed already; say why the tables are missing too
        print(f"exotrack: the study tables could not be written: {exc}", file=sys.stderr)
        return
    print(f"exotrack: {len(metrics) - len(finished)} sample(s) did not finish; the study tables "
          f"({outputs['samples']} and the others) were written from the {len(finished)} that did, the others "
          "marked 'error: analysis did not finish'. Run again to analyse them.", file=sys.stderr)


# --- photoacoustics ---


def _clicked_seeds():
    """Lymph-node seeds clicked in napari (results/qc/seeds.csv); they override the sheet's. As a
    param, a new seed reruns that sample's analysis (and the study level) only."""
    path = Path(RESULTS) / "qc" / "seeds.csv"
    if not path.exists():
        return {}
    from exotrack.viewer import read_seeds

    try:
        table = read_seeds(path)
    except ValueError as exc:
        raise WorkflowError(str(exc)) from None
    return dict(zip(table["sample"], table["seed"]))


_SEEDS = _clicked_seeds()


def photoacoustic_seed(wildcards):
    return _SEEDS.get(wildcards.sample) or _ROWS[wildcards.sample]["seed"]
