"""Job spec files: reading a buyer's YAML, deriving its schema, checking it before posting,
and writing a commented starting point from a CSV (``pollen job init``).

Keys only this file understands (removed before the spec is sent):

- ``schema_from: FILE`` — derive the schema from the buyer's own data (path relative to the
  YAML), with ``label:`` (the label column, default ``label``), ``classes:`` (the full class
  list, when the file may not show every class), ``standardize:`` (default true: numeric
  columns are standardized on the buyer's data, and so is a regression target),
  ``fill:`` (columns, or ``all``, that get a fill value and a missing indicator even if the
  buyer's file has no missing cell in them) and ``categorical:`` (integer columns to treat as
  categories).

``task:`` is a job field (classification or regression); it is required when the label is
numeric with many distinct values, so a regression is never silently turned into classes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import yaml

__all__ = ["budget_problem", "init_yaml", "load_spec"]


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"no job spec at {path}")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        message = f"{path}: not valid YAML at {where}: {problem}".replace(" at :", ":")
        raise ValueError(message) from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path} must hold a mapping of job fields (key: value lines)")
    return spec


def load_spec(path: Path) -> dict[str, Any]:
    """Read a job spec YAML; ``schema_from: FILE`` derives the schema from the buyer's data."""
    from agents.table_schema import derive_job_schema
    from agents.tabular import read_table

    spec = _read_yaml(path)
    source = spec.pop("schema_from", None)
    label = spec.pop("label", None)
    classes = spec.pop("classes", None)
    standardize = bool(spec.pop("standardize", True))
    fill = spec.pop("fill", ())
    categorical = spec.pop("categorical", ())
    if source and "schema" not in spec:
        table = read_table(path.parent / str(source))
        task = spec.get("task")
        if task not in (None, "classification", "regression"):
            raise ValueError(f"task must be classification or regression, not {task!r}")
        schema = derive_job_schema(
            table,
            label=str(label or "label"),
            task=task,
            classes=classes,
            standardize=standardize,
            fill="all" if fill == "all" else [str(f) for f in fill or ()],
            categorical=[str(c) for c in categorical or ()],
        )
        spec["schema"] = schema.model_dump(exclude_none=True)
        spec.setdefault("task", schema.task)
    elif label is not None or classes is not None:
        raise ValueError(f"{path}: `label:` and `classes:` go with `schema_from:`")
    return spec


def budget_problem(spec: dict[str, Any]) -> str | None:
    """Why the budget cannot pay the providers the job needs (None: it can).

    The job needs ``min_providers`` for every round, each paid up to ``price_cap_cents`` a
    round; matching only offers a job to a listing whose ask for the remaining rounds fits in
    what is left of the budget, so a budget below ``min_providers × rounds × price_cap`` leaves
    the expensive listings out and may leave the job waiting forever.
    """
    try:
        budget = int(spec["budget_cents"])
        cap = int(spec["price_cap_cents"])
        rounds = int(spec["rounds"])
        providers = int(spec.get("min_providers", 2))
    except (KeyError, TypeError, ValueError):
        return None  # the server names missing or malformed fields
    need = providers * rounds * cap
    if budget >= need:
        return None
    affordable = budget // (providers * rounds)
    return (
        f"budget_cents {budget} pays {providers} providers × {rounds} rounds only at asks of "
        f"≤ {affordable} cents per round, below price_cap_cents {cap}: raise budget_cents to "
        f"{need} or lower price_cap_cents to {affordable} (--allow-low-budget to post anyway)"
    )


_TEMPLATE = """\
# A Pollen training job, derived from {data}.
# Post it with:  pollen job post {out}
title: {title}
task: {task}                  # classification | regression
schema_from: {data}           # the schema is derived from this file when the job is posted
label: {label}                # the label column
{classes_line}
# Preprocessing every provider applies exactly (fitted on {data} at post time):
#   numeric columns standardized: {numeric}
#   categorical columns (vocabulary from the file, unseen values -> "other"): {categorical}
#   columns with missing cells (filled with the mean / most frequent value, plus an
#   indicator input): {missing}
standardize: true
# fill: all                   # declare a fill for every column (providers may have gaps)
model:
  arch: {arch}                # logreg | mlp (hidden: [64]) | linear (regression) | cnn
rounds: 10
local_epochs: 1
learning_rate: 0.1
batch_size: 32
min_providers: 2
max_providers: 4
quorum: 2
min_samples: 20
sample_cap: 5000
# Money: every round pays each provider its ask, at most price_cap_cents.
# The budget must cover min_providers x rounds x price_cap_cents (2 x 10 x 100 here).
price_cap_cents: 100
budget_cents: 2000
currency: usd
round_deadline_s: 600
seed: 0
# privacy: {{epsilon: 8}}      # record-level DP-SGD every provider trains under
"""


def init_yaml(data: Path, *, label: str, task: str | None, out: Path) -> str:
    """A commented job YAML for ``data`` (its schema is derived again at post time)."""
    from agents.table_schema import derive_job_schema
    from agents.tabular import read_table

    table = read_table(data)
    schema = derive_job_schema(table, label=label, task=task)  # type: ignore[arg-type]
    numeric = [f.name for f in schema.features if f.categories is None]
    categorical = [f.name for f in schema.features if f.categories is not None]
    missing = [f.name for f in schema.features if f.fill is not None]
    classes = schema.label.classes
    rel = Path(data).resolve()
    with contextlib.suppress(ValueError):
        rel = rel.relative_to(out.resolve().parent)
    return _TEMPLATE.format(
        data=rel,
        out=out,
        title=f"{data.stem} {schema.task}",
        task=schema.task,
        label=label,
        classes_line=(
            f"# classes found: {classes}"
            if classes
            else "# regression: the target is "
            "standardized on this file; RMSE, MAE and R² are reported in its own units"
        ),
        numeric=", ".join(numeric) or "none",
        categorical=", ".join(categorical) or "none",
        missing=", ".join(missing) or "none",
        arch="logreg" if schema.task == "classification" else "linear",
    )
