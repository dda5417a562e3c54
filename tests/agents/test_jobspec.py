"""Job spec files: one-line YAML errors, the budget check, `job init` (agents.jobspec)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.cli import app
from agents.jobspec import budget_problem, load_spec
from agents.sample_tables import loan_table, write_table_csv
from market.models.jobs import JobCreate


def test_malformed_yaml_is_one_line_naming_the_place(tmp_path: Path) -> None:
    """A YAML syntax error prints one line with the file, line and column, no traceback."""
    path = tmp_path / "job.yaml"
    path.write_text("title: x\n  model: [\n")
    result = CliRunner().invoke(app, ["job", "post", str(path), "--api-key", "k"])
    assert result.exit_code == 1
    assert "not valid YAML at line 2, column 8" in result.output
    assert "Traceback" not in result.output
    path.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_spec(path)


def test_budget_that_cannot_pay_the_providers_is_refused_before_posting(tmp_path: Path) -> None:
    """min_providers x rounds x price cap above the budget: job post refuses, with numbers."""
    spec = {"budget_cents": 500, "price_cap_cents": 100, "rounds": 10, "min_providers": 2}
    assert budget_problem(spec) == (
        "budget_cents 500 pays 2 providers × 10 rounds only at asks of ≤ 25 cents per round, "
        "below price_cap_cents 100: raise budget_cents to 2000 or lower price_cap_cents to 25 "
        "(--allow-low-budget to post anyway)"
    )
    assert budget_problem({**spec, "budget_cents": 2000}) is None
    path = tmp_path / "job.yaml"
    path.write_text(
        "title: t\nmodel: {arch: logreg}\nrounds: 10\nbudget_cents: 500\nprice_cap_cents: 100\n"
        "schema: {features: [{name: a}], label: {classes: [0, 1]}}\n"
    )
    result = CliRunner().invoke(app, ["job", "post", str(path), "--api-key", "k"])
    assert result.exit_code == 1 and "raise budget_cents to 2000" in result.output


def test_job_init_writes_a_commented_yaml_that_posts(tmp_path: Path) -> None:
    """`job init` on a loan CSV writes a YAML whose derived spec the server accepts."""
    data = tmp_path / "loans.csv"
    write_table_csv(loan_table(120, seed=0), data)
    out = tmp_path / "job.yaml"
    result = CliRunner().invoke(
        app, ["job", "init", "--data", str(data), "--label", "outcome", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "categorical columns" in text and "region" in text and "# classes found" in text
    spec = load_spec(out)
    job = JobCreate.model_validate(spec)
    assert job.task == "classification" and job.dataset_schema.label.classes == [
        "default",
        "repaid",
    ]
    assert budget_problem(spec) is None


def test_job_init_asks_for_the_task_of_a_numeric_label(tmp_path: Path) -> None:
    """A label with many numeric values makes `job init` ask for --task, then write linear."""
    data = tmp_path / "d.csv"
    data.write_text("x,y\n" + "".join(f"{i},{i * 1.5 + 0.25}\n" for i in range(40)))
    args = ["job", "init", "--data", str(data), "--label", "y", "--out", str(tmp_path / "j.yaml")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "task: regression" in result.output
    result = CliRunner().invoke(app, [*args, "--task", "regression"])
    assert result.exit_code == 0, result.output
    spec = load_spec(tmp_path / "j.yaml")
    assert spec["task"] == "regression" and spec["model"] == {"arch": "linear"}
    JobCreate.model_validate(spec)


def test_unknown_key_is_one_line_before_anything_is_sent(tmp_path: Path) -> None:
    """A misspelt job field is named in one line; no server is contacted, no key made."""
    path = tmp_path / "job.yaml"
    path.write_text(
        "title: t\nmodel: {arch: logreg}\nrounds: 2\nbudget_cents: 5000\nprice_cap_cents: 10\n"
        "colour: blue\nschema: {features: [{name: a}], label: {classes: [0, 1]}}\n"
    )
    keys = tmp_path / "buyer.key"
    args = ["job", "post", str(path), "--api-key", "k", "--server", "http://127.0.0.1:9",
            "--keys", str(keys)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {path}: unknown key 'colour'"
    assert not list(tmp_path.glob("buyer.key*"))


def test_missing_key_is_refused_before_an_identity_is_created(tmp_path: Path) -> None:
    """`job post` without `keys init` says so in one line and leaves no identity file."""
    path = tmp_path / "job.yaml"
    path.write_text(
        "title: t\nmodel: {arch: logreg}\nrounds: 2\nbudget_cents: 5000\nprice_cap_cents: 10\n"
        "schema: {features: [{name: a}], label: {classes: [0, 1]}}\n"
    )
    keys = tmp_path / "buyer.key"
    args = ["job", "post", str(path), "--api-key", "k", "--keys", str(keys)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "run `pollen keys init`" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not list(tmp_path.glob("buyer.key*"))


def test_many_valued_numeric_label_without_task_is_one_line(tmp_path: Path) -> None:
    """`schema_from` on a label with 40 numeric values and no `task`: one line asking for it."""
    (tmp_path / "d.csv").write_text("x,y\n" + "".join(f"{i},{i * 3}\n" for i in range(40)))
    path = tmp_path / "job.yaml"
    path.write_text(
        "title: t\nschema_from: d.csv\nlabel: y\nmodel: {arch: linear}\nrounds: 2\n"
        "budget_cents: 5000\nprice_cap_cents: 10\n"
    )
    result = CliRunner().invoke(app, ["job", "post", str(path), "--api-key", "k"])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert "40 distinct numeric values" in line and "`task: regression`" in line
