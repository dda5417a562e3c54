"""What people see while a job runs: `pollen job run` and `pollen agent run` say, one line
per event when not on a terminal, which round is collecting, how many updates are in, how
long until its deadline, each round's metrics, and each agent's epochs, encryption and upload.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.buyer import post_job
from agents.cli import app
from agents.cli_trust import identity_path
from agents.client import PollenClient
from agents.jobspec import load_spec
from agents.processes import start_agent, stop
from agents.sample_tables import diabetes_table, split_rows, write_table_csv
from crypto import BuyerKeys
from crypto.identity import IdentityKey
from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e
ROUNDS = 2

JOB_YAML = f"""\
title: progress e2e
task: regression
schema_from: buyer.csv
label: target
model: {{arch: linear}}
rounds: {ROUNDS}
local_epochs: 3
learning_rate: 0.1
batch_size: 16
min_providers: 2
max_providers: 2
quorum: 2
min_samples: 20
price_cap_cents: 500
budget_cents: 5000
round_deadline_s: 120
offer_ttl_s: 600
"""

STATUS = re.compile(r"round (\d)/2: (\d) of 2 updates in, deadline in (\d+):(\d\d)")


def test_job_run_and_agent_run_show_progress_line_by_line(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """Piped output: the buyer prints 'round r/N: k of n updates in, deadline in m:ss' and
    RMSE/MAE/R² per round; agents print epochs, encryption and upload; no ANSI codes."""
    buyer_table, *providers = split_rows(diabetes_table(), 3, seed=0)
    write_table_csv(buyer_table, tmp_path / "buyer.csv")
    (tmp_path / "job.yaml").write_text(JOB_YAML)
    keys_path = tmp_path / "buyer.key"
    keys = BuyerKeys.generate()
    keys.save(keys_path)
    identity = IdentityKey.load_or_create(identity_path(keys_path))
    anon = PollenClient(live_server.url, None)
    buyer_key = anon.register(role="buyer", name="b").api_key
    buyer = PollenClient(live_server.url, buyer_key)
    job = post_job(buyer, keys, load_spec(tmp_path / "job.yaml"), identity=identity)
    operator = PollenClient(live_server.url, live_server.admin_key)
    operator.credit_job(job.id, 5000)
    procs = []
    for i, table in enumerate(providers):
        path = tmp_path / f"p{i}.csv"
        write_table_csv(table, path)
        extra = ["--label", "target", "--classes", ""]
        procs.append(
            start_agent(live_server.url, path, tmp_path / f"a{i}", i, tmp_path / f"a{i}.log",
                        extra, operator=operator)
        )  # fmt: skip
    try:
        result = CliRunner().invoke(
            app,
            ["job", "run", job.id, "--test", str(tmp_path / "buyer.csv"), "--server",
             live_server.url, "--api-key", buyer_key, "--keys", str(keys_path), "--out",
             str(tmp_path / "out"), "--poll", "0.2"],
        )  # fmt: skip
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            stop(p)
    out = result.output
    assert result.exit_code == 0, out
    assert "\x1b" not in out
    seen = [m.groups() for m in STATUS.finditer(out)]
    assert {int(r) for r, *_ in seen} == {1, 2}, out
    assert all(0 < int(mm) * 60 + int(ss) <= 120 for _, _, mm, ss in seen), out
    for number in range(1, ROUNDS + 1):
        assert re.search(rf"round +{number}/2: RMSE [\d.]+ +MAE [\d.]+ +R² -?[\d.]+", out), out
    logs = [(tmp_path / f"a{i}.log").read_text() for i in range(len(providers))]
    assert codes == [0, 0], logs
    for log in logs:
        assert "\x1b" not in log
        for number in range(1, ROUNDS + 1):
            head = f"job {job.id} round {number}:"
            assert f"{head} epoch 3/3, loss" in log, log
            assert re.search(rf"{head} encrypting \d+ parameters", log), log
            assert re.search(rf"{head} encrypted in [\d.]+ s", log), log
            assert re.search(rf"{head} uploading [\d.]+ MB", log), log
            assert re.search(rf"{head} uploaded [\d.]+ MB in [\d.]+ s", log), log
