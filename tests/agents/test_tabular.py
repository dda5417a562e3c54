"""Real tables: categories, missing cells, text labels, regression targets (agents.tabular)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

import agents.data
import market.models.schema
from agents.data import DataError, prepare
from agents.sample_tables import loan_table, write_table_csv
from agents.table_schema import derive_job_schema, listing_schema
from agents.tabular import encode, read_table
from dataspec import JobDatasetSchema, input_names

LOANS = "income,age,region,outcome\n50000,30,west,repaid\n,41,east,default\n72000.5,52,,repaid\n"


@pytest.fixture
def loans(tmp_path: Path) -> Path:
    path = tmp_path / "loans.csv"
    path.write_text(LOANS)
    return path


def test_a_real_loan_file_is_read_and_its_schema_derived(loans: Path) -> None:
    """Empty cells, text columns and text labels are read; the schema declares what to do."""
    schema = derive_job_schema(read_table(loans), label="outcome")
    income, age, region = schema.features
    assert (income.type, income.fill) == ("float", pytest.approx(61000.25))
    assert age.fill is None and age.type == "int"
    assert (region.type, region.categories, region.fill) == (
        "categorical",
        ["east", "west"],
        "east",
    )
    assert schema.label.classes == ["default", "repaid"] and schema.task == "classification"
    assert input_names(schema) == [
        "income", "income__missing", "age",
        "region=east", "region=west", "region=__other__", "region__missing",
    ]  # fmt: skip


def test_encode_applies_fill_indicator_one_hot_and_other_slot(loans: Path, tmp_path: Path) -> None:
    """Missing cells take the declared fill plus an indicator; unseen categories go to other."""
    schema = derive_job_schema(read_table(loans), label="outcome", standardize=False)
    other = tmp_path / "other.csv"
    other.write_text("income,age,region,outcome\n,20,north,default\n10,30,west,repaid\n")
    ds = encode(read_table(other), schema)
    assert ds.X[0].tolist() == [61000.25, 1.0, 20.0, 0.0, 0.0, 1.0, 0.0]
    assert ds.X[1].tolist() == [10.0, 0.0, 30.0, 0.0, 1.0, 0.0, 0.0]
    assert ds.y.tolist() == [0, 1]


def test_encode_names_the_line_it_cannot_accept(loans: Path, tmp_path: Path) -> None:
    """A gap without a fill, text in a numeric column, an unknown class: each names its line."""
    schema = derive_job_schema(read_table(loans), label="outcome")
    bad = tmp_path / "bad.csv"
    bad.write_text("income,age,region,outcome\n1,,west,repaid\n")
    with pytest.raises(DataError, match=r"line 2, column 'age' is empty and the job declares no"):
        encode(read_table(bad), schema)
    bad.write_text("income,age,region,outcome\n1,2,west,repaid\n1,old,west,repaid\n")
    with pytest.raises(DataError, match=r"line 3, column 'age' has 'old', not a number"):
        encode(read_table(bad), schema)
    bad.write_text("income,age,region,outcome\n1,2,west,late\n")
    with pytest.raises(DataError, match=r"line 2, label 'late' is not one of the job's classes"):
        encode(read_table(bad), schema)
    bad.write_text("income,age,region,outcome,extra\n1,2,west,repaid,9\n")
    with pytest.raises(DataError, match="unexpected column 'extra'"):
        encode(read_table(bad), schema)


def test_a_many_valued_numeric_label_is_never_silently_classes(tmp_path: Path) -> None:
    """A label like diabetes' 52.0, 151.0, ... needs `task:`; regression standardizes it."""
    rng = np.random.default_rng(0)
    path = tmp_path / "d.csv"
    rows = [
        f"{x:.3f},{t:.1f}"
        for x, t in zip(rng.normal(size=60), rng.integers(25, 346, 60), strict=False)
    ]
    path.write_text("x,target\n" + "\n".join(rows) + "\n")
    table = read_table(path)
    with pytest.raises(DataError, match="distinct numeric values: say `task: regression`"):
        derive_job_schema(table, label="target")
    schema = derive_job_schema(table, label="target", task="regression")
    assert schema.task == "regression" and schema.n_classes == 1
    ds = prepare(table, schema)
    assert ds.continuous and abs(float(ds.y.mean())) < 1e-5 and abs(float(ds.y.std()) - 1) < 1e-4
    few = tmp_path / "few.csv"
    few.write_text("x,label\n1,0\n2,1\n3,2\n")
    assert derive_job_schema(read_table(few), label="label").label.classes == [0, 1, 2]


def test_listing_schema_says_kinds_gaps_and_classes(loans: Path) -> None:
    """What a provider publishes: column kinds, which have gaps, the classes it holds."""
    listing = listing_schema(read_table(loans), "outcome")
    assert [(f.name, f.type, f.missing) for f in listing.features] == [
        ("income", "float", True), ("age", "int", False), ("region", "categorical", True),
    ]  # fmt: skip
    assert listing.label.classes == ["default", "repaid"]


def test_server_and_agents_share_one_schema_definition() -> None:
    """The server's and the agents' schema classes are the same objects, so the same rules."""
    assert agents.data.DatasetSchema is market.models.schema.JobDatasetSchema
    assert agents.data.FeatureSpec is market.models.schema.JobFeatureSpec
    for bad in (
        {"name": "r", "type": "categorical"},  # no vocabulary
        {"name": "r", "type": "categorical", "categories": ["a", "a"]},
        {"name": "x", "fill": "west"},  # a numeric column filled with text
        {"name": "x", "scale": 0},
        {"name": "r", "type": "categorical", "categories": ["a"], "scale": 2},
    ):
        with pytest.raises(ValidationError):
            JobDatasetSchema.model_validate({"features": [bad], "label": {"classes": [0, 1]}})
    with pytest.raises(ValidationError):
        JobDatasetSchema.model_validate(
            {"features": [{"name": "x"}], "label": {"classes": [0, 1], "offset": 3}}
        )


def test_generated_loans_round_trip_through_csv(tmp_path: Path) -> None:
    """The sample loan table written as CSV reads back with its kinds and gaps."""
    table = loan_table(80, seed=1)
    write_table_csv(table, tmp_path / "l.csv")
    back = read_table(tmp_path / "l.csv")
    assert {k: c.kind for k, c in back.columns.items()} == {
        k: c.kind for k, c in table.columns.items()
    }
    assert back.columns["income"].missing.tolist() == table.columns["income"].missing.tolist()
    assert back.columns["region"].missing.tolist() == table.columns["region"].missing.tolist()
