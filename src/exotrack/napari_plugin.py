"""The napari plugin: a reader for result folders, the sample-browser widget that records QC
decisions, and the demo as sample data. Layer data come from :mod:`exotrack.viewer`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from magicgui.widgets import ComboBox, Container, Label, LineEdit, PushButton, RadioButtons

from .viewer import read_decisions, read_result, record_decision, record_seed, result_folder


def get_reader(path):
    """napari reader hook: a ``results/<modality>/<sample>`` folder, else not ours."""
    if isinstance(path, list) or result_folder(path) is None:
        return None
    return lambda p: read_result(p)


def demo_uptake():
    """A demo uptake field, analysed on the spot, as it appears when opened from results."""
    from .demo import CHANNELS, simulate_uptake_field
    from .fluorescence import process_sample
    from .io import write_ome_tiff

    folder = Path(tempfile.mkdtemp(prefix="exotrack-demo-"))
    field = simulate_uptake_field(shape=(512, 512), n_cells=10, puncta_per_cell=40, seed=1)
    write_ome_tiff(folder / "exo_demo.ome.tif", field.image, axes="CYX", channel_names=CHANNELS,
                   pixel_size_um=field.pixel_size_um)
    result = folder / "results" / "fluorescence" / "exo_demo"
    outputs = {k: result / f"{k}.{e}" for k, e in [("cells", "csv"), ("puncta", "csv"), ("labels", "tif"),
                                                    ("nuclei", "tif"), ("metrics", "json")]}
    outputs["qc"] = folder / "results" / "qc" / "exo_demo.png"
    process_sample(sample="exo_demo", path=folder / "exo_demo.ome.tif", options={}, outputs=outputs)
    return read_result(result)


class SampleBrowser(Container):
    """Browse ``results/tables/samples.csv``: filter by group and status, step through samples
    (each opens with its layers), read its headline metrics, and record a QC decision (pass or
    fail, with a comment) in ``results/qc/decisions.csv``, which the workflow honours. On a
    photoacoustic sample a click on the B-mode (the ``node seed`` layer is in add mode) records a
    seed inside the lymph node in ``results/qc/seeds.csv``; rerunning the workflow redoes that
    sample from it."""

    def __init__(self, napari_viewer=None, results: str | Path = "results"):
        self.viewer = napari_viewer
        self.table = pd.DataFrame(columns=["sample", "modality", "group", "status"])
        # Choices as callables: napari calls reset_choices() on docked widgets, which would
        # otherwise restore the lists given here.
        self.group = ComboBox(label="group", choices=self._groups)
        self.status = ComboBox(label="status", choices=["all", "ok", "not ok"])
        self.sample = ComboBox(label="sample", choices=self._samples)
        self.previous, self.next = PushButton(text="◀ previous"), PushButton(text="next ▶")
        self.info = Label(value="")
        self.decision = RadioButtons(label="QC", choices=["pass", "fail"], value="pass")
        self.comment = LineEdit(label="comment")
        self.save = PushButton(text="record decision")
        self.message = Label(value="")
        super().__init__(widgets=[self.group, self.status, self.sample, Container(
            widgets=[self.previous, self.next], layout="horizontal", labels=False), self.info, self.decision,
            self.comment, self.save, self.message])
        self.group.changed.connect(self._filter)
        self.status.changed.connect(self._filter)
        self.sample.changed.connect(self._show)
        self.previous.changed.connect(lambda: self.step(-1))
        self.next.changed.connect(lambda: self.step(1))
        self.save.changed.connect(self.record)
        self.load(results)

    @property
    def decisions_path(self) -> Path:
        return self.results / "qc" / "decisions.csv"

    @property
    def seeds_path(self) -> Path:
        return self.results / "qc" / "seeds.csv"

    def load(self, results) -> None:
        """Open a results folder (the one holding ``tables/samples.csv``)."""
        self.results = Path(results)
        table_path = self.results / "tables" / "samples.csv"
        self.table = pd.read_csv(table_path) if table_path.exists() else pd.DataFrame(
            columns=["sample", "modality", "group", "status"])
        self.group.reset_choices()
        self._filter()

    def _groups(self, *_) -> list[str]:
        return ["all"] + sorted(self.table["group"].dropna().astype(str).unique())

    def _samples(self, *_) -> list[str]:
        rows = self.table
        if self.group.value not in (None, "all"):
            rows = rows[rows["group"].astype(str) == self.group.value]
        if self.status.value == "ok":
            rows = rows[rows["status"] == "ok"]
        elif self.status.value == "not ok":
            rows = rows[rows["status"] != "ok"]
        return list(dict.fromkeys(rows["sample"]))

    def _filter(self, *_):
        self.sample.reset_choices()

    def step(self, offset: int) -> None:
        choices = list(self.sample.choices)
        if not choices:
            return
        index = choices.index(self.sample.value) if self.sample.value in choices else -offset
        self.sample.value = choices[(index + offset) % len(choices)]

    def _show(self, *_):
        """Describe the selected sample and open its layers."""
        sample = self.sample.value
        if sample is None:
            return
        row = self._describe(sample)
        folder = self.results / str(row["modality"]) / sample
        if self.viewer is not None and result_folder(folder):
            self.viewer.layers.clear()
            try:
                for data, kwargs, kind in read_result(folder):
                    layer = getattr(self.viewer, f"add_{kind}")(data, **kwargs)
                    if kwargs.get("name") == "node seed":
                        layer.mode = "add"
                        layer.events.data.connect(lambda event, layer=layer: self._seed_clicked(layer, event))
                self.message.value = ""
            except (ValueError, OSError) as exc:
                self.message.value = str(exc)

    def _describe(self, sample: str) -> pd.Series:
        rows = self.table[self.table["sample"] == sample]
        row = rows.iloc[0]
        metrics = rows.iloc[:1].dropna(axis=1).drop(columns=["sample", "modality"], errors="ignore")
        lines = [f"{sample} ({row['modality']})"] + [
            f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in metrics.iloc[0].items()]
        decided = read_decisions(self.decisions_path)
        previous = decided[decided["sample"] == sample]
        if len(previous):
            self.decision.value = previous["decision"].iloc[0]
            self.comment.value = previous["comment"].iloc[0]
            lines.append(f"QC: {previous['decision'].iloc[0]} {previous['comment'].iloc[0]}".rstrip())
        self.info.value = "\n".join(lines)
        return row

    def _seed_clicked(self, layer, event) -> None:
        """A point added to the ``node seed`` layer: the last one is the sample's seed."""
        if getattr(event, "action", "added") != "added" or not len(layer.data) or self.sample.value is None:
            return
        point = tuple(int(round(v)) for v in layer.data[-1])
        record_seed(self.seeds_path, self.sample.value, point)
        self.message.value = (f"{self.sample.value}: seed z,y,x {','.join(map(str, point))} recorded in "
                              f"{self.seeds_path}; rerun snakemake to find the node from it")

    def record(self, *_):
        if self.sample.value is None:
            return
        record_decision(self.decisions_path, self.sample.value, self.decision.value, self.comment.value)
        self.message.value = (f"{self.sample.value}: {self.decision.value} recorded in {self.decisions_path}; "
                              "rerun snakemake to update the tables")
        self._describe(self.sample.value)
