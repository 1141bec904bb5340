"""The sample sheet and the configuration: validation with plain-language messages, parsing of
per-sample overrides, and writing a sheet from an image folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import yaml

from .io import InputError

MODALITIES = ("fluorescence", "bli", "photoacoustic", "histology", "wound", "transwell")
# Channel roles a sample sheet's channels column may assign, per modality.
CHANNEL_ROLES = {"fluorescence": ("nuclei", "exosomes", "cells", "markers"), "histology": ("nuclei", "marker")}
SHEET_COLUMNS = ["sample", "modality", "path", "group", "subject", "timepoint", "marker",
                 "channels", "pixel_size_um", "axes", "seed"]


class SheetError(InputError):
    """A problem with the sample sheet or configuration; stops the run before any job starts."""


def _load_schema(schema) -> dict:
    if isinstance(schema, dict):
        return schema
    with open(schema) as fh:
        return yaml.safe_load(fh)


def _describe(error) -> str:
    """A jsonschema error in words, without the schema's internals."""
    value = error.instance
    if error.validator == "enum":
        return f"{value!r} is not one of: " + ", ".join(map(str, error.validator_value))
    if error.validator == "type":
        kinds = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return f"{value!r} should be a " + " or ".join(kinds)
    if error.validator == "pattern":
        return f"{value!r} is not valid here: expected {error.schema.get('description', 'another format')}"
    if error.validator == "required":
        return error.message.replace("is a required property", "is required but missing")
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown setting(s)")
    if error.validator in ("oneOf", "anyOf"):
        return f"{value!r} is not valid here: expected {error.schema.get('description', 'another value')}"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        return f"{value!r} is out of range ({error.message.split(' is ', 1)[-1]})"
    return error.message


def _validator(schema: dict):
    # jsonschema is imported here, not at the top: every analysis job imports this module for its
    # cell parsers, and should not pay a tenth of a second for a validator it never uses.
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema)


def validate_config(config: dict, schema) -> dict:
    """Check ``config`` against the JSON schema; fill defaults; raise :class:`SheetError` listing
    every problem as ``key.path: what is wrong``."""
    schema = _load_schema(schema)
    config = _coerce(config, schema)
    errors = sorted(_validator(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        lines = [f"  {'.'.join(map(str, e.path)) or '(top level)'}: {_describe(e)}" for e in errors]
        raise SheetError("the configuration has problems:\n" + "\n".join(lines))
    return _with_defaults(config, schema)


def _coerce(value, schema):
    """Numbers given as text (``snakemake --config`` passes nested values as strings) become
    numbers where the schema asks for one."""
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties", {})
        return {k: _coerce(v, props[k]) if k in props else v for k, v in value.items()}
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if isinstance(value, str) and ({"number", "integer"} & set(kinds)):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if "integer" in kinds and number.is_integer() else number
    return value


def _with_defaults(value, schema):
    if schema.get("type") == "object" and isinstance(value, dict):
        out = dict(value)
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = sub["default"]
            if key in out:
                out[key] = _with_defaults(out[key], sub)
        return out
    return value


def load_sample_sheet(path, schema, *, check_paths: bool = True) -> pd.DataFrame:
    """Read and validate a sample sheet (TSV); paths become absolute, resolved against the
    sheet's folder. Every problem is reported with its row and column.

    ``check_paths=False`` skips checking that each sample's data exist: for steps after planning,
    where a file that has vanished since is that sample's status, not a sheet error.
    """
    path = Path(path)
    if not path.exists():
        raise SheetError(f"sample sheet not found: {path}")
    try:
        sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    except Exception as exc:
        raise SheetError(f"cannot read sample sheet {path} as a tab-separated table ({exc})") from exc
    sheet.columns = [c.strip() for c in sheet.columns]
    problems = []
    missing = [c for c in ("sample", "modality", "path") if c not in sheet.columns]
    if missing:
        raise SheetError(f"sample sheet {path}: required column(s) missing: {', '.join(missing)} "
                         f"(columns found: {', '.join(sheet.columns)})")
    unknown = [c for c in sheet.columns if c not in SHEET_COLUMNS]
    if unknown:
        problems.append(f"unknown column(s) {', '.join(map(repr, unknown))}; known columns are "
                        + ", ".join(SHEET_COLUMNS))
    validator = _validator(_load_schema(schema))
    rows = sheet.to_dict("records")  # iterrows builds a Series per row: slow for a plate screen
    for i, row in enumerate(rows):
        record = {k: v.strip() for k, v in row.items() if k in SHEET_COLUMNS and v.strip() != ""}
        for error in validator.iter_errors(record):
            column = error.path[0] if error.path else ""
            where = f"row {i + 2} (sample {record.get('sample', '?')!r})"
            problems.append(f"{where}, column {column!r}: {_describe(error)}" if column
                            else f"{where}: {_describe(error)}")
    dupes = sheet["sample"][sheet["sample"].duplicated()].unique()
    for d in dupes:
        lines = [str(i + 2) for i in sheet.index[sheet["sample"] == d]]
        problems.append(f"sample id {d!r} is used more than once (rows {', '.join(lines)})")
    for i, row in enumerate(rows):
        raw = row["path"].strip()
        if check_paths and raw and not (path.parent / raw).exists():
            problems.append(f"row {i + 2} (sample {row['sample']!r}), column 'path': "
                            f"{raw!r} does not exist (looked in {(path.parent / raw).resolve()})")
        roles = CHANNEL_ROLES.get(row["modality"].strip(), ())
        for column, parser in (("channels", lambda v: parse_channels(v, roles=roles)),
                               ("pixel_size_um", parse_pixel_size)):
            if column in sheet.columns and row[column].strip():
                try:
                    parser(row[column])
                except InputError as exc:
                    problems.append(f"row {i + 2} (sample {row['sample']!r}), column {column!r}: {exc}")
    if problems:
        raise SheetError(f"sample sheet {path} has problems:\n  " + "\n  ".join(problems))
    for column in SHEET_COLUMNS:
        if column not in sheet.columns:
            sheet[column] = ""
    sheet = sheet.apply(lambda col: col.str.strip())
    sheet["path"] = [_display_path(path.parent.resolve() / p) for p in sheet["path"]]
    return sheet.set_index("sample", drop=False)


def _display_path(path: Path) -> str:
    """Relative to the working directory when inside it, so that a study folder can move (or be
    copied) without Snakemake seeing new input files; absolute otherwise."""
    path = Path(os.path.normpath(path))
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def parse_channels(text: str | None, *, roles=CHANNEL_ROLES["fluorescence"]) -> dict[str, str]:
    """``"nuclei=Hoechst;exosomes=1"`` → ``{"nuclei": "Hoechst", "exosomes": "1"}``; ``roles`` are
    the role names the modality knows."""
    known = roles
    if text is None or not str(text).strip():
        return {}
    roles = {}
    for part in str(text).split(";"):
        if not part.strip():
            continue
        if "=" not in part:
            raise InputError(f"{part.strip()!r} should be role=channel, e.g. nuclei=Hoechst")
        role, name = (s.strip() for s in part.split("=", 1))
        if role not in known:
            raise InputError(f"unknown channel role {role!r} (roles are {', '.join(known)})")
        roles[role] = name
    return roles


def parse_pixel_size(value) -> tuple[float, float, float] | None:
    """``0.2`` or ``"0.5,0.2,0.2"`` (z,y,x) → ``(z, y, x)`` in µm; a single number is used for
    every axis."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parts = [value] if isinstance(value, (int, float)) else [p for p in re.split(r"[,;\s]+", str(value).strip()) if p]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"{value!r} is not a number or z,y,x numbers") from None
    if len(numbers) not in (1, 3) or any(not n > 0 for n in numbers):
        raise InputError(f"{value!r} should be one positive number, or three (z,y,x)")
    return tuple(numbers * 3) if len(numbers) == 1 else tuple(numbers)


def samples_from_pattern(directory, pattern: str, *, modality: str = "fluorescence") -> pd.DataFrame:
    """Build a sample sheet from the files under ``directory`` whose relative path matches
    ``pattern``, a path with ``{field}`` placeholders such as ``{group}/{subject}_d{timepoint}.tif``.

    Fields named after sheet columns fill those columns; ``sample`` defaults to the path without its
    extension, with disallowed characters replaced by ``_``.
    """
    directory = Path(directory)
    regex, last, seen = "", 0, set()
    for m in re.finditer(r"{(\w+)}", pattern):
        regex += re.escape(pattern[last:m.start()])
        name = m.group(1)
        regex += f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+?)"
        seen.add(name)
        last = m.end()
    regex = re.compile(regex + re.escape(pattern[last:]) + "$")
    rows = []
    for file in sorted(p for p in directory.rglob("*") if p.is_file() or p.is_dir()):
        rel = file.relative_to(directory).as_posix()
        m = regex.match(rel)
        if not m:
            continue
        # Fields that are not sheet columns only match (e.g. {plate}); they are not recorded.
        found = {k: v for k, v in m.groupdict().items() if k in SHEET_COLUMNS}
        row = {"sample": "", "modality": modality, "path": rel, **found}
        if not row["sample"]:
            stem = re.sub(r"(\.ome)?\.[A-Za-z0-9]+$", "", rel)
            row["sample"] = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
        rows.append(row)
    if not rows:
        raise SheetError(f"no file under {directory} matches the pattern {pattern!r}")
    table = pd.DataFrame(rows)
    return table[[c for c in SHEET_COLUMNS if c in table.columns]]
