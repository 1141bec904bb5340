"""The sample sheet and the configuration: validation with plain-language messages, parsing of
per-sample overrides, and writing a sheet from an image folder."""

from __future__ import annotations

import csv
import io
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
                 "channels", "pixel_size_um", "axes", "seed", "nuclei_labels", "cell_labels"]
# Columns naming files besides ``path``: resolved against the sheet's folder as ``path`` is.
FILE_COLUMNS = ("nuclei_labels", "cell_labels")


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
        return f"{value!r} should be " + " or ".join(("an " if k[0] in "aeiou" else "a ") + k for k in kinds)
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


def _decode_sheet(path: Path) -> str:
    """The sheet's text: UTF-8 (with or without Excel's byte-order mark), UTF-16 (Excel's
    "Unicode text") or Windows-1252 (Excel's "Text (tab-delimited)" on Windows)."""
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        encodings = ["utf-16"]
    elif raw[:3] == b"\xef\xbb\xbf":
        encodings = ["utf-8-sig"]
    elif len(raw) > 1 and raw.count(b"\0") > len(raw) // 4:  # UTF-16 without its mark
        encodings = ["utf-16-le" if raw[1:2] == b"\0" else "utf-16-be"]
    else:
        encodings = ["utf-8", "cp1252"]
    for encoding in encodings:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise SheetError(f"sample sheet {path} is not text this reader knows (UTF-8, UTF-16 or Windows-1252): "
                     "save the sheet as UTF-8 (Excel: Save As > 'UTF-8 (Comma delimited)' then use tabs, "
                     "or 'Unicode Text')")


def _sheet_rows(path: Path) -> tuple[pd.DataFrame, list[int], list[str]]:
    """The sheet as text cells, each row's line number in the file, and the layout problems.

    Every cell is data: ``#`` starts no comment (a group ``exosome #2`` or a path ``Plate #3/``
    is kept whole). Rows of empty cells (a line of tabs) are skipped; empty cells beyond the
    header (Excel ends every row with a tab) are dropped; a value beyond the header is a problem.
    """
    lines = list(csv.reader(io.StringIO(_decode_sheet(path), newline=""), delimiter="\t"))
    numbered = [(n, [c.strip() for c in cells]) for n, cells in enumerate(lines, start=1)]
    numbered = [(n, cells) for n, cells in numbered if any(cells)]
    if not numbered:
        raise SheetError(f"sample sheet {path} is empty")
    _, header = numbered[0]
    while header and not header[-1]:
        header.pop()
    problems = []
    if "" in header:
        problems.append(f"column {header.index('') + 1} of the header has no name")
    rows, line_numbers = [], []
    for n, cells in numbered[1:]:
        extra = cells[len(header):]
        if any(extra):
            problems.append(f"row {n} has {len(header) + max(i for i, c in enumerate(extra) if c) + 1} cells but "
                            f"the header names {len(header)} columns: a value without a column, or a tab "
                            "inside a cell?")
        rows.append((cells + [""] * len(header))[:len(header)])
        line_numbers.append(n)
    return pd.DataFrame(rows, columns=header, dtype=str), line_numbers, problems


def load_sample_sheet(path, schema, *, check_paths: bool = True) -> pd.DataFrame:
    """Read and validate a sample sheet (TSV); paths become absolute, resolved against the
    sheet's folder. Every problem is reported with its row (the line in the file) and column.

    Cells are compared as written less surrounding spaces and tabs, here and in every later
    step. ``check_paths=False`` skips checking that each sample's data exist: for steps after
    planning, where a file that has vanished since is that sample's status, not a sheet error.
    """
    path = Path(path)
    if not path.exists():
        raise SheetError(f"sample sheet not found: {path}")
    try:
        sheet, line, problems = _sheet_rows(path)
    except csv.Error as exc:
        raise SheetError(f"cannot read sample sheet {path} as a tab-separated table ({exc})") from exc
    missing = [c for c in ("sample", "modality", "path") if c not in sheet.columns]
    if missing:
        raise SheetError(f"sample sheet {path}: required column(s) missing: {', '.join(missing)} "
                         f"(columns found: {', '.join(map(repr, sheet.columns))}; the sheet must be "
                         "tab-separated)")
    unknown = [c for c in sheet.columns if c and c not in SHEET_COLUMNS]
    if unknown:
        problems.append(f"unknown column(s) {', '.join(map(repr, unknown))}; known columns are "
                        + ", ".join(SHEET_COLUMNS))
    validator = _validator(_load_schema(schema))
    rows = sheet.to_dict("records")  # iterrows builds a Series per row: slow for a plate screen
    for i, row in enumerate(rows):
        record = {k: v for k, v in row.items() if k in SHEET_COLUMNS and v != ""}
        for error in validator.iter_errors(record):
            column = error.path[0] if error.path else ""
            where = f"row {line[i]} (sample {record.get('sample', '?')!r})"
            problems.append(f"{where}, column {column!r}: {_describe(error)}" if column
                            else f"{where}: {_describe(error)}")
    by_id = {}
    for i, row in enumerate(rows):
        by_id.setdefault(row["sample"].lower(), []).append(i)
    for indices in by_id.values():
        ids = [rows[i]["sample"] for i in indices]
        where = ", ".join(str(line[i]) for i in indices)
        if len(indices) > 1 and len(set(ids)) == 1:
            problems.append(f"sample id {ids[0]!r} is used more than once (rows {where})")
        elif len(indices) > 1:
            problems.append(f"sample ids {' and '.join(map(repr, dict.fromkeys(ids)))} (rows {where}) differ "
                            "only in case: on macOS, Windows and network shares their results would be one "
                            "folder; give each sample an id of its own")
    for i, row in enumerate(rows):
        raw = row["path"]
        if check_paths and raw and not (path.parent / raw).exists():
            problems.append(f"row {line[i]} (sample {row['sample']!r}), column 'path': "
                            f"{raw!r} does not exist (looked in {(path.parent / raw).resolve()})")
        for column in FILE_COLUMNS:
            given = row.get(column, "").strip()
            if check_paths and given and not (path.parent / given).is_file():
                problems.append(f"row {line[i]} (sample {row['sample']!r}), column {column!r}: {given!r} is "
                                f"not a file (looked in {(path.parent / given).resolve()})")
        roles = CHANNEL_ROLES.get(row["modality"], ())
        for column, parser in (("channels", lambda v: parse_channels(v, roles=roles)),
                               ("pixel_size_um", parse_pixel_size)):
            if column in sheet.columns and row[column]:
                try:
                    parser(row[column])
                except InputError as exc:
                    problems.append(f"row {line[i]} (sample {row['sample']!r}), column {column!r}: {exc}")
    if problems:
        raise SheetError(f"sample sheet {path} has problems:\n  " + "\n  ".join(problems))
    for column in SHEET_COLUMNS:
        if column not in sheet.columns:
            sheet[column] = ""
    sheet["path"] = [_display_path(path.parent.resolve() / p) for p in sheet["path"]]
    for column in FILE_COLUMNS:
        sheet[column] = [_display_path(path.parent.resolve() / p) if p else "" for p in sheet[column]]
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
