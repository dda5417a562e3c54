"""Local datasets for provider agents and buyers: loading, schema and preprocessing.

The :class:`Dataset` type itself (and :class:`DataError`) is :mod:`agents.dataset`,
re-exported here with the rest of the public names.

A provider's records never leave its machine; what it publishes is a :class:`DatasetSchema`
(feature names and types, label name and classes) so a buyer can match a job to it. Before
training, an agent runs :func:`prepare`, which

1. checks the local data against the job's schema (:func:`check_schema`, raising a
   :class:`DataError` that names the first mismatch),
2. applies the schema's **fixed** per-feature transform ``(x - offset) * scale`` — declared by
   the buyer in the schema, so no provider needs anybody else's data to preprocess (for the
   digits demo: ``scale = 1/16``), and
3. encodes labels as indices into ``schema.label.classes`` (the model's output units).

Supported files (by suffix): ``.csv`` (header row, one column per feature plus the label
column), ``.npz`` (arrays ``X``, ``y`` and optional ``feature_names``, or one 1-D array per
column) and ``.parquet`` / ``.pq`` (needs the optional ``pyarrow`` package).

Type rules: a column is ``int`` if every value is an integer, else ``float``. An ``int`` column
satisfies a ``float`` schema feature (widening), but not the other way round.
"""

from __future__ import annotations

import csv
import importlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agents.dataset import DEFAULT_LABEL, DataError, Dataset, FeatureType, concat, is_integral
from dataspec import JobDatasetSchema, JobFeatureSpec, JobLabelSpec

__all__ = [
    "DEFAULT_LABEL",
    "DataError",
    "Dataset",
    "DatasetSchema",
    "FeatureSpec",
    "FeatureType",
    "LabelSpec",
    "check_schema",
    "concat",
    "derive_schema",
    "load_dataset",
    "prepare",
    "standardized_schema",
    "write_csv",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- schema

# One definition for server and agents (dataspec); the names agents have always used.
FeatureSpec = JobFeatureSpec
LabelSpec = JobLabelSpec
DatasetSchema = JobDatasetSchema


def derive_schema(data: Dataset, *, classes: Sequence[int] | None = None) -> DatasetSchema:
    """The schema describing ``data`` (identity transform; classes = the labels present).

    Pass ``classes`` when the data may not show every class (a non-IID provider often does not).
    """
    present = sorted({int(v) for v in np.unique(data.y)})
    return DatasetSchema(
        features=[
            FeatureSpec(name=n, type=t)
            for n, t in zip(data.feature_names, data.feature_types, strict=True)
        ],
        label=LabelSpec(name=data.label_name, classes=list(classes) if classes else present),
    )


def standardized_schema(schema: DatasetSchema, reference: Dataset) -> DatasetSchema:
    """``schema`` with offset/scale set to standardize using ``reference``'s mean and std.

    Meant for the buyer, who fits it on data it owns (e.g. its test set) and publishes the
    result, so every provider applies the same fixed transform.
    """
    ref = check_schema(reference, schema)
    mean = ref.X.astype(np.float64).mean(axis=0)
    std = ref.X.astype(np.float64).std(axis=0)
    features = [
        f.model_copy(update={"offset": float(m), "scale": 1.0 / float(s) if s > 0 else 1.0})
        for f, m, s in zip(schema.features, mean, std, strict=True)
    ]
    return schema.model_copy(update={"features": features})


def check_schema(data: Dataset, schema: DatasetSchema) -> Dataset:
    """Check ``data`` against ``schema``; return it with columns in schema order.

    Raises :class:`DataError` naming the first mismatch: label column, missing column, extra
    column, wrong type, non-finite value, or a label outside the schema's classes.
    """
    if len(data) == 0:
        raise DataError("dataset is empty")
    if data.label_name != schema.label.name:
        raise DataError(
            f"label column is {data.label_name!r} but the schema expects {schema.label.name!r}"
        )
    have = set(data.feature_names)
    for spec in schema.features:
        if spec.name not in have:
            raise DataError(f"missing column {spec.name!r} required by the schema")
    wanted = set(schema.feature_names)
    for name in data.feature_names:
        if name not in wanted:
            raise DataError(f"unexpected column {name!r} (not in the schema)")
    position = {n: j for j, n in enumerate(data.feature_names)}
    order = [position[s.name] for s in schema.features]
    X = data.X[:, order]
    for j, spec in enumerate(schema.features):
        col = X[:, j]
        bad = np.flatnonzero(~np.isfinite(col))
        if bad.size:
            raise DataError(
                f"column {spec.name!r} has a missing or non-finite value at row {int(bad[0])}"
            )
        if spec.type == "int":
            frac = np.flatnonzero(col != np.round(col))
            if frac.size:
                r = int(frac[0])
                raise DataError(
                    f"column {spec.name!r} should hold integers but row {r} has {float(col[r])!r}"
                )
    known = np.asarray(schema.label.classes or [], dtype=object)
    unknown = np.flatnonzero(~np.isin(data.y.astype(object), known))
    if schema.label.classes is not None and unknown.size:
        r = int(unknown[0])
        raise DataError(
            f"label {int(data.y[r])} at row {r} is not one of the schema's classes "
            f"{schema.label.classes}"
        )
    types: list[FeatureType] = ["int" if data.feature_types[i] == "int" else "float" for i in order]
    return Dataset(X, data.y.copy(), schema.feature_names, data.label_name, types)


def prepare(data: Any, schema: DatasetSchema) -> Dataset:
    """Check, transform and encode ``data`` (a :class:`Dataset` or an
    :class:`agents.tabular.Table`) for training a model built for ``schema``.

    Exactly the job's declared preprocessing (:func:`agents.tabular.encode`): the result's
    ``X`` holds the model's inputs and ``y`` the indices into ``schema.label.classes`` (or,
    for a regression, the target after the job's transform).
    """
    from agents.tabular import Table, encode

    if isinstance(data, Dataset):
        plain = schema.task == "classification" and all(
            f.fill is None and f.categories is None for f in schema.features
        )
        if plain:
            check_schema(data, schema)  # the numeric checks, with their row-numbered messages
        data = Table.from_dataset(data)
    if not isinstance(data, Table):
        raise TypeError(f"cannot prepare a {type(data).__name__}")
    return encode(data, schema)


# --------------------------------------------------------------------------- files


def _numeric_column(name: str, cells: Sequence[str], source: str) -> npt.NDArray[Any]:
    """Parse one CSV column, as int64 if every cell is an integer literal, else float64."""
    try:
        return np.array([int(c) for c in cells], dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.array([float(c) for c in cells], dtype=np.float64)
    except ValueError:
        pass
    for i, cell in enumerate(cells):
        try:
            float(cell)
        except ValueError:
            what = "is empty" if not cell.strip() else f"has {cell!r}, not a number"
            # +2: one for the header line, one because humans count lines from 1.
            raise DataError(f"{source}: line {i + 2}, column {name!r} {what}") from None
    raise AssertionError("unreachable: some cell failed to parse")


def _from_columns(columns: Mapping[str, npt.NDArray[Any]], label: str, source: str) -> Dataset:
    if label not in columns:
        raise DataError(f"{source}: no label column {label!r}; columns are {sorted(columns)}")
    lengths = {k: np.asarray(v).shape for k, v in columns.items()}
    n = np.asarray(columns[label]).shape
    for key, shape in lengths.items():
        if len(shape) != 1 or shape != n:
            raise DataError(f"{source}: column {key!r} has shape {shape}, expected {n}")
    names = [k for k in columns if k != label]
    if not names:
        raise DataError(f"{source}: no feature columns besides the label {label!r}")
    types: list[FeatureType] = []
    for name in names:
        col = np.asarray(columns[name])
        if col.dtype.kind not in "biuf":
            raise DataError(f"{source}: column {name!r} is {col.dtype}, not numeric")
        types.append("int" if col.dtype.kind in "biu" else "float")
    y = np.asarray(columns[label])
    if y.dtype.kind not in "biu" and not (y.dtype.kind == "f" and is_integral(y)):
        raise DataError(f"{source}: label column {label!r} must hold integers")
    X = np.stack([np.asarray(columns[k], dtype=np.float64) for k in names], axis=1)
    return Dataset(X.astype(np.float32), y.astype(np.int64), names, label, types)


def _load_csv(path: Path, label: str) -> Dataset:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise DataError(f"{path}: empty file (a header row is required)")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise DataError(f"{path}: line {i + 2} has {len(row)} cells, header has {len(header)}")
    if len(set(header)) != len(header):
        raise DataError(f"{path}: duplicate column names in the header")
    columns = {
        name: _numeric_column(name, [row[j].strip() for row in body], str(path))
        for j, name in enumerate(header)
    }
    return _from_columns(columns, label, str(path))


def _load_npz(path: Path, label: str) -> Dataset:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if "X" in arrays:
        if "y" not in arrays:
            raise DataError(f"{path}: has an 'X' array but no 'y' array")
        X = arrays["X"]
        if X.ndim != 2:
            raise DataError(f"{path}: 'X' must be 2-D, got shape {X.shape}")
        if "feature_names" in arrays:
            names = [str(n) for n in arrays["feature_names"]]
        else:
            names = [f"x{j}" for j in range(X.shape[1])]
        if len(names) != X.shape[1]:
            raise DataError(f"{path}: {len(names)} feature_names for {X.shape[1]} columns")
        columns = {n: X[:, j] for j, n in enumerate(names)}
        columns[label] = arrays["y"]
        return _from_columns(columns, label, str(path))
    return _from_columns(arrays, label, str(path))


def _load_parquet(path: Path, label: str) -> Dataset:
    try:
        # Imported by name so the package stays optional and mypy needs no stubs for it.
        pq: Any = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise DataError(
            f"{path}: reading Parquet needs the optional package 'pyarrow', which is not "
            "installed (pip install pyarrow), or convert the file to CSV"
        ) from None
    table = pq.read_table(path)
    columns = {name: table.column(name).to_numpy() for name in table.column_names}
    return _from_columns(columns, label, str(path))


def load_dataset(path: str | Path, *, label: str = DEFAULT_LABEL) -> Dataset:
    """Load a local dataset from ``.csv``, ``.npz`` or ``.parquet``/``.pq``."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        ds = _load_csv(p, label)
    elif suffix == ".npz":
        ds = _load_npz(p, label)
    elif suffix in (".parquet", ".pq"):
        ds = _load_parquet(p, label)
    else:
        raise DataError(f"{p}: unsupported file type {suffix!r}; use .csv, .npz or .parquet")
    logger.info("loaded %d rows with %d features from %s", len(ds), ds.n_features, p)
    return ds


def write_csv(dataset: Dataset, path: str | Path) -> None:
    """Write ``dataset`` as CSV that :func:`load_dataset` reads back exactly.

    ``int`` features are written as integers; floats use the shortest repr that round-trips.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    is_int = [t == "int" for t in dataset.feature_types]
    with p.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*dataset.feature_names, dataset.label_name])
        for row, label in zip(dataset.X.tolist(), dataset.y.tolist(), strict=True):
            cells = [str(int(v)) if i else repr(v) for v, i in zip(row, is_int, strict=True)]
            writer.writerow([*cells, str(label)])
