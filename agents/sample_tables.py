"""Small generated tables with what real files have: text categories, empty cells, text
labels, a numeric target. Used by the tests, the e2e runs and ``python -m bench tasks``;
nothing is downloaded (the regression table is scikit-learn's shipped diabetes set).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from agents.tabular import Column, Table

__all__ = ["diabetes_table", "loan_table", "split_rows", "write_table_csv"]

REGIONS = ("north", "south", "east", "west")


def loan_table(n: int, *, seed: int = 0, missing: float = 0.1) -> Table:
    """Loans: ``income`` (float, some empty), ``age`` (int), ``region`` (text, some empty),
    ``term`` (int months) and ``outcome`` ("repaid" / "default"), learnable from all four."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(mean=10.5, sigma=0.5, size=n)
    age = rng.integers(21, 70, size=n)
    region = rng.choice(REGIONS, size=n)
    term = rng.choice([12, 24, 36, 60], size=n)
    effect = {"north": 0.8, "south": -0.8, "east": 0.3, "west": -0.3}
    score = (
        1.6 * (np.log(income) - 10.5) / 0.5
        + 0.03 * (age - 45)
        + np.array([effect[r] for r in region])
        - 0.02 * (term - 36)
        + rng.normal(0, 0.7, size=n)
    )
    outcome = np.where(score > 0, "repaid", "default").astype(object)
    income_col = np.round(income, 2)
    income_col[rng.random(n) < missing] = math.nan
    region_col = region.astype(object)
    region_col[rng.random(n) < missing] = None
    cols = {
        "income": Column("income", "float", income_col.astype(np.float64)),
        "age": Column("age", "int", age.astype(np.float64)),
        "region": Column("region", "categorical", region_col),
        "term": Column("term", "int", term.astype(np.float64)),
        "outcome": Column("outcome", "categorical", outcome),
    }
    return Table(cols, "loans")


def diabetes_table() -> Table:
    """scikit-learn's diabetes set (442 rows, 10 features, target 25–346) as a table."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    cols = {
        str(name): Column(str(name), "float", bunch.data[:, j].astype(np.float64))
        for j, name in enumerate(bunch.feature_names)
    }
    cols["sex"] = Column("sex", "int", bunch.data[:, 1].astype(np.float64))
    cols["target"] = Column("target", "float", bunch.target.astype(np.float64))
    return Table(cols, "diabetes")


def split_rows(table: Table, parts: int, *, seed: int = 0) -> list[Table]:
    """``table``'s rows shuffled and cut into ``parts`` near-equal tables."""
    order = np.random.default_rng(seed).permutation(len(table))
    return [table.take(chunk) for chunk in np.array_split(order, parts)]


def write_table_csv(table: Table, path: str | Path) -> None:
    """Write ``table`` as CSV (empty cells for missing values) that ``read_table`` reads back."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    cols = list(table.columns.values())
    with p.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([c.name for c in cols])
        for i in range(len(table)):
            cells = []
            for c in cols:
                v = c.values[i]
                if c.kind == "categorical":
                    cells.append("" if v is None else str(v))
                elif math.isnan(v):
                    cells.append("")
                elif c.kind == "int":
                    cells.append(str(int(v)))
                else:
                    cells.append(repr(float(v)))
            writer.writerow(cells)
