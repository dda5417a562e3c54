"""Raw tables as users have them, and the job's preprocessing applied to them.

A :class:`Table` is a file read as it is: numeric columns (``int`` or ``float``, missing cells
as NaN) and text columns (``categorical``, missing cells as None). Nothing is refused at
reading time — empty cells, text and text labels are all legal — because only the job's
schema says what is acceptable: :func:`encode` applies exactly the preprocessing the job
declares (:mod:`dataspec.schema`) and names the first cell it cannot accept, by file line.

The same function serves the provider (training rows), the buyer (held-out rows) and
``pollen model predict`` (new rows, label not needed), so a model always sees its inputs the
way it was trained on them. :mod:`agents.table_schema` fits a job schema on the buyer's data
and describes a provider's data for its listing.
"""

from __future__ import annotations

import csv
import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from agents.data import DataError, Dataset
from dataspec import (
    JobDatasetSchema,
    JobFeatureSpec,
    canonical_class,
    input_names,
)

__all__ = [
    "AUTO_CLASSES_MAX",
    "MISSING_MARKERS",
    "Column",
    "Table",
    "encode",
    "read_table",
]

Kind = Literal["int", "float", "categorical"]
# Cells read as missing (compared case-insensitively after stripping spaces).
MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
# A numeric label with at most this many distinct integer values may be taken for classes
# without asking; more, or any fraction, and the buyer must say `task:`.
AUTO_CLASSES_MAX = 20


@dataclass(frozen=True)
class Column:
    """One column: float64 with NaN for missing (numeric kinds), or str/None objects."""

    name: str
    kind: Kind
    values: npt.NDArray[Any]

    @property
    def missing(self) -> npt.NDArray[np.bool_]:
        if self.kind == "categorical":
            return np.array([v is None for v in self.values], dtype=bool)
        return np.asarray(np.isnan(self.values))

    def text(self) -> list[str | None]:
        """Every cell as the text a category or class is compared by (None: missing)."""
        if self.kind == "categorical":
            return list(self.values)
        return [None if math.isnan(v) else canonical_class(float(v)) for v in self.values]


@dataclass(frozen=True)
class Table:
    """A file's columns, in file order; ``source`` and ``header_lines`` name rows in errors."""

    columns: dict[str, Column]
    source: str = "data"
    header_lines: int | None = None

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())).values) if self.columns else 0

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def where(self, row: int) -> str:
        """A row as a person finds it: the file line for CSV, else the 0-based row."""
        if self.header_lines is not None:
            return f"{self.source}: line {row + self.header_lines + 1}"
        return f"{self.source}: row {row}"

    def take(self, rows: npt.ArrayLike) -> Table:
        idx = np.asarray(rows, dtype=np.int64)
        cols = {k: Column(c.name, c.kind, c.values[idx]) for k, c in self.columns.items()}
        return Table(cols, self.source, None)

    @classmethod
    def from_dataset(cls, data: Dataset) -> Table:
        """A numeric :class:`Dataset` (features and label) as a table."""
        cols: dict[str, Column] = {}
        for j, (name, kind) in enumerate(zip(data.feature_names, data.feature_types, strict=True)):
            cols[name] = Column(name, kind, data.X[:, j].astype(np.float64))
        label_kind: Kind = "float" if data.continuous else "int"
        cols[data.label_name] = Column(data.label_name, label_kind, data.y.astype(np.float64))
        return cls(cols, "data", None)


# --------------------------------------------------------------------------- reading


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_MARKERS


def _column_from_cells(name: str, cells: Sequence[str]) -> Column:
    present = [c.strip() for c in cells if not _is_missing(c)]
    try:
        ints = [int(c) for c in present]
        del ints
        kind: Kind = "int"
    except ValueError:
        try:
            for c in present:
                float(c)
            kind = "float"
        except ValueError:
            kind = "categorical"
    if kind == "categorical":
        values = np.array([None if _is_missing(c) else c.strip() for c in cells], dtype=object)
        return Column(name, kind, values)
    nums = np.array([math.nan if _is_missing(c) else float(c) for c in cells], dtype=np.float64)
    if kind == "float" and not np.all(np.isfinite(nums[~np.isnan(nums)])):
        kind = "float"  # inf stays a value; encode refuses it
    return Column(name, kind, nums)


def _column_from_array(name: str, arr: npt.NDArray[Any]) -> Column:
    if arr.ndim != 1:
        raise DataError(f"column {name!r} has shape {arr.shape}, expected one value per row")
    if arr.dtype.kind in "biu":
        return Column(name, "int", arr.astype(np.float64))
    if arr.dtype.kind == "f":
        vals = arr.astype(np.float64)
        present = vals[~np.isnan(vals)]
        integral = bool(np.all(present == np.round(present))) if present.size else False
        return Column(name, "int" if integral else "float", vals)
    cells = ["" if v is None else str(v) for v in arr.tolist()]
    return _column_from_cells(name, cells)


def _read_csv(path: Path) -> Table:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise DataError(f"{path}: empty file (a header row is required)")
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if r]
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise DataError(f"{path}: line {i + 2} has {len(row)} cells, header has {len(header)}")
    if len(set(header)) != len(header):
        raise DataError(f"{path}: duplicate column names in the header")
    if not body:
        raise DataError(f"{path}: no data rows")
    cols = {n: _column_from_cells(n, [r[j] for r in body]) for j, n in enumerate(header)}
    return Table(cols, str(path), 1)


def _read_npz(path: Path) -> Table:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if "X" in arrays:
        X = arrays.pop("X")
        names = [str(n) for n in arrays.pop("feature_names", [])] or [
            f"x{j}" for j in range(X.shape[1])
        ]
        if X.ndim != 2 or len(names) != X.shape[1]:
            raise DataError(f"{path}: 'X' must be 2-D with one feature name per column")
        cols = {n: _column_from_array(n, X[:, j]) for j, n in enumerate(names)}
        for key, arr in arrays.items():
            cols[key if key != "y" else "label"] = _column_from_array(key, arr)
        return Table(cols, str(path))
    return Table({k: _column_from_array(k, v) for k, v in arrays.items()}, str(path))


def read_table(path: str | Path) -> Table:
    """Read ``.csv``, ``.npz`` or ``.parquet``/``.pq`` as it is (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        table = _read_csv(p)
    elif suffix == ".npz":
        table = _read_npz(p)
    elif suffix in (".parquet", ".pq"):
        try:
            pq: Any = importlib.import_module("pyarrow.parquet")
        except ImportError:
            raise DataError(
                f"{p}: reading Parquet needs the optional package 'pyarrow' "
                "(pip install pyarrow), or convert the file to CSV"
            ) from None
        t = pq.read_table(p)
        table = Table(
            {n: _column_from_array(n, t.column(n).to_numpy()) for n in t.column_names}, str(p)
        )
    else:
        raise DataError(f"{p}: unsupported file type {suffix!r}; use .csv, .npz or .parquet")
    if not table.columns:
        raise DataError(f"{p}: no columns")
    return table


# --------------------------------------------------------------------------- encoding


def _numeric(table: Table, col: Column, spec: JobFeatureSpec) -> npt.NDArray[np.float64]:
    if col.kind == "categorical":
        for i, v in enumerate(col.values):
            if v is not None:
                try:
                    float(v)
                except ValueError:
                    raise DataError(
                        f"{table.where(i)}, column {col.name!r} has {v!r}, not a number "
                        f"(the job declares it {spec.type})"
                    ) from None
        values = np.array([math.nan if v is None else float(v) for v in col.values])
    else:
        values = col.values.astype(np.float64)
    inf = np.flatnonzero(np.isinf(values))
    if inf.size:
        raise DataError(f"{table.where(int(inf[0]))}, column {col.name!r} is infinite")
    if spec.type == "int":
        frac = np.flatnonzero(~np.isnan(values) & (values != np.round(values)))
        if frac.size:
            r = int(frac[0])
            raise DataError(
                f"{table.where(r)}, column {col.name!r} should hold integers but has "
                f"{float(values[r])!r}"
            )
    return values


def _missing_check(table: Table, name: str, missing: npt.NDArray[np.bool_], fill: object) -> None:
    if fill is None and missing.any():
        r = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{table.where(r)}, column {name!r} is empty and the job declares no fill for it"
        )


def _encode_feature(table: Table, col: Column, spec: JobFeatureSpec) -> list[npt.NDArray[Any]]:
    missing = col.missing
    _missing_check(table, col.name, missing, spec.fill)
    parts: list[npt.NDArray[Any]] = []
    if spec.categories is not None:
        slot = {c: i for i, c in enumerate(spec.categories)}
        other = len(spec.categories)
        fill = None if spec.fill is None else str(spec.fill)
        cells = [fill if t is None else t for t in col.text()]
        idx = np.array([slot.get(c, other) if c is not None else other for c in cells])
        onehot = np.zeros((len(cells), other + 1), dtype=np.float64)
        onehot[np.arange(len(cells)), idx] = 1.0
        parts.append(onehot)
    else:
        values = _numeric(table, col, spec)
        if spec.fill is not None:
            values = np.where(np.isnan(values), float(spec.fill), values)
        parts.append(((values - spec.offset) * spec.scale)[:, None])
    if spec.fill is not None:
        parts.append(missing.astype(np.float64)[:, None])
    return parts


def _encode_label(table: Table, col: Column, schema: JobDatasetSchema) -> npt.NDArray[Any]:
    label = schema.label
    missing = col.missing
    if missing.any():
        r = int(np.flatnonzero(missing)[0])
        raise DataError(f"{table.where(r)}, the label {col.name!r} is empty")
    if label.classes is None:
        values = _numeric(table, col, JobFeatureSpec(name=col.name))
        return ((values - label.offset) * label.scale).astype(np.float32)
    index = {canonical_class(c): i for i, c in enumerate(label.classes)}
    out = np.empty(len(col.values), dtype=np.int64)
    for i, t in enumerate(col.text()):
        if t not in index:
            raise DataError(
                f"{table.where(i)}, label {t!r} is not one of the job's classes "
                f"{schema.class_names}"
            )
        out[i] = index[t]
    return out


def encode(
    table: Table, schema: JobDatasetSchema, *, need_label: bool = True, exact_columns: bool = True
) -> Dataset:
    """The model's inputs (and label indices or scaled targets) for ``table``.

    ``need_label=False`` (prediction) accepts rows without the label; ``exact_columns=False``
    ignores columns the schema does not name (an id column in a file to predict on).
    """
    if len(table) == 0:
        raise DataError(f"{table.source}: no rows")
    label = schema.label.name
    for spec in schema.features:
        if spec.name not in table.columns:
            raise DataError(f"{table.source}: missing column {spec.name!r} required by the job")
    if exact_columns:
        wanted = {*schema.feature_names, label}
        for name in table.names:
            if name not in wanted:
                raise DataError(f"{table.source}: unexpected column {name!r} (not in the job)")
    parts: list[npt.NDArray[Any]] = []
    for spec in schema.features:
        parts.extend(_encode_feature(table, table.columns[spec.name], spec))
    X = np.concatenate(parts, axis=1).astype(np.float32)
    if label in table.columns:
        y = _encode_label(table, table.columns[label], schema)
    elif need_label:
        raise DataError(f"{table.source}: no label column {label!r}; columns are {table.names}")
    else:
        y = np.zeros(len(table), dtype=np.float32 if schema.task == "regression" else np.int64)
    names = input_names(schema)
    return Dataset(
        X, y, names, label, ["float"] * len(names), continuous=schema.task == "regression"
    )
