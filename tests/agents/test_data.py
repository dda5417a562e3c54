"""Tests for local dataset loading, schemas and preprocessing (agents.data)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from agents.data import (
    DataError,
    Dataset,
    DatasetSchema,
    FeatureSpec,
    LabelSpec,
    check_schema,
    concat,
    derive_schema,
    load_dataset,
    prepare,
    standardized_schema,
    write_csv,
)
from crypto.errors import PollenError


def _small() -> Dataset:
    X = np.array([[1, 0.5, 3], [2, -1.25, 4], [3, 1e-7, 5]], dtype=np.float32)
    return Dataset(X, np.array([0, 1, 2]), ["count", "ratio", "age"])


def _schema(**overrides: object) -> DatasetSchema:
    base: dict[str, object] = {
        "features": [
            {"name": "count", "type": "int"},
            {"name": "ratio", "type": "float"},
            {"name": "age", "type": "int"},
        ],
        "label": {"name": "label", "classes": [0, 1, 2]},
    }
    base.update(overrides)
    return DatasetSchema.model_validate(base)


def test_csv_round_trip_is_exact(tmp_path: Path) -> None:
    """A dataset written as CSV loads back with identical values, names and types."""
    ds = _small()
    path = tmp_path / "data.csv"
    write_csv(ds, path)
    back = load_dataset(path)
    assert back.X.tobytes() == ds.X.tobytes()
    assert back.y.tolist() == [0, 1, 2]
    assert back.feature_names == ["count", "ratio", "age"]
    assert back.feature_types == ["int", "float", "int"]
    assert path.read_text().splitlines()[1] == "1,0.5,3,0"


def test_csv_with_custom_label_column(tmp_path: Path) -> None:
    """``--label`` picks the label column by name, wherever it is in the file."""
    path = tmp_path / "d.csv"
    path.write_text("target,a,b\n1,0.5,2\n0,1.5,3\n")
    ds = load_dataset(path, label="target")
    assert ds.feature_names == ["a", "b"]
    assert ds.y.tolist() == [1, 0]
    with pytest.raises(DataError, match="no label column 'label'"):
        load_dataset(path)


def test_csv_bad_cell_names_line_and_column(tmp_path: Path) -> None:
    """A non-numeric or empty cell is reported with its line number and column name."""
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,0\n3,oops,1\n")
    with pytest.raises(DataError, match=r"line 3, column 'b' has 'oops', not a number"):
        load_dataset(path)
    path.write_text("a,b,label\n1,,0\n")
    with pytest.raises(DataError, match=r"line 2, column 'b' is empty"):
        load_dataset(path)


def test_npz_arrays_and_columns(tmp_path: Path) -> None:
    """An .npz with X/y/feature_names or with one array per column loads the same data."""
    X = np.arange(6, dtype=np.float64).reshape(3, 2) / 4
    y = np.array([1, 0, 1])
    np.savez(tmp_path / "xy.npz", X=X, y=y, feature_names=np.array(["p", "q"]))
    np.savez(tmp_path / "cols.npz", p=X[:, 0], q=X[:, 1], label=y)
    a = load_dataset(tmp_path / "xy.npz")
    b = load_dataset(tmp_path / "cols.npz")
    for ds in (a, b):
        assert ds.feature_names == ["p", "q"]
        assert np.array_equal(ds.X, X.astype(np.float32))
        assert ds.y.tolist() == [1, 0, 1]


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow installed")
def test_parquet_without_pyarrow_names_the_package(tmp_path: Path) -> None:
    """Loading Parquet without pyarrow says which package is missing."""
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DataError, match="pyarrow"):
        load_dataset(path)


def test_unknown_file_type_is_refused(tmp_path: Path) -> None:
    """An unsupported file suffix is refused, as a PollenError, listing the supported ones."""
    path = tmp_path / "d.xlsx"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"use .csv, .npz or .parquet") as info:
        load_dataset(path)
    assert isinstance(info.value, PollenError)
    assert info.value.code == "data-error"


def test_derived_schema_describes_the_data() -> None:
    """The derived schema lists columns, inferred types and present classes, and is JSON-safe."""
    schema = derive_schema(_small())
    assert schema == _schema()
    assert DatasetSchema.model_validate_json(schema.model_dump_json()) == schema
    assert derive_schema(_small(), classes=range(5)).label.classes == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (_schema(label={"name": "target", "classes": [0, 1, 2]}), "schema expects 'target'"),
        (
            _schema(features=[{"name": "count"}, {"name": "ratio"}, {"name": "height"}]),
            "missing column 'height'",
        ),
        (_schema(features=[{"name": "count"}, {"name": "ratio"}]), "unexpected column 'age'"),
        (
            _schema(
                features=[{"name": "count"}, {"name": "ratio", "type": "int"}, {"name": "age"}]
            ),
            r"column 'ratio' should hold integers but row 0 has 0.5",
        ),
        (
            _schema(label={"name": "label", "classes": [0, 1]}),
            r"label 2 at row 2 is not one of the schema's classes \[0, 1\]",
        ),
    ],
)
def test_check_schema_names_the_first_mismatch(schema: DatasetSchema, message: str) -> None:
    """Each kind of schema mismatch raises a DataError whose message names it."""
    with pytest.raises(DataError, match=message):
        check_schema(_small(), schema)


def test_check_schema_reorders_columns_and_widens_int_to_float() -> None:
    """Columns come back in schema order; integer data satisfies a float feature."""
    schema = _schema(
        features=[{"name": "age"}, {"name": "count", "type": "float"}, {"name": "ratio"}]
    )
    out = check_schema(_small(), schema)
    assert out.feature_names == ["age", "count", "ratio"]
    assert out.X[:, 0].tolist() == [3, 4, 5]


def test_non_finite_values_are_refused() -> None:
    """A NaN feature (e.g. an empty spreadsheet cell) is reported with its row."""
    ds = _small()
    ds.X[1, 1] = np.nan
    with pytest.raises(DataError, match=r"'ratio' has a missing or non-finite value at row 1"):
        check_schema(ds, _schema())


def test_prepare_applies_declared_transform_and_encodes_labels() -> None:
    """prepare scales features as the schema says and maps labels to class indices."""
    ds = Dataset(np.array([[16.0], [8.0], [0.0]]), np.array([7, 3, 7]), ["px"])
    schema = DatasetSchema(
        features=[FeatureSpec(name="px", type="int", scale=1 / 16)],
        label=LabelSpec(classes=[3, 7]),
    )
    out = prepare(ds, schema)
    assert out.X[:, 0].tolist() == [1.0, 0.5, 0.0]
    assert out.y.tolist() == [1, 0, 1]


def test_standardized_schema_centres_reference_data() -> None:
    """A schema standardized on reference data maps that data to mean 0, std 1."""
    rng = np.random.default_rng(0)
    ref = Dataset(rng.normal(50, 7, size=(200, 2)), rng.integers(0, 2, 200), ["a", "b"])
    schema = standardized_schema(derive_schema(ref), ref)
    out = prepare(ref, schema)
    assert np.allclose(out.X.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(out.X.std(axis=0), 1, atol=1e-4)


def test_concat_requires_same_columns() -> None:
    """Datasets stack only when their columns agree."""
    ds = _small()
    assert len(concat([ds, ds])) == 6
    other = Dataset(ds.X, ds.y, ["x", "y", "z"])
    with pytest.raises(DataError, match="same columns"):
        concat([ds, other])
