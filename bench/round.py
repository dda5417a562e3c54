"""`python -m bench round`: what encryption costs per round, through the same API and processes.

An MLP of about a million parameters trained by 10 provider agents, each its own process,
against the marketplace under uvicorn on loopback. Two jobs run one after the other with the
same agents, data and buyer code: one with the default CKKS preset, one with the
benchmark-only plaintext preset (float32 in the clear, same envelopes and accumulators). A
round is timed from the buyer publishing the global model to the buyer holding the next one
(train, encrypt, upload, validate + add, close, download, decrypt, optimizer step, evaluate),
and each of those phases is timed where it runs (bench/phases.py): `breakdown` in
bench/results/round.json holds, per configuration, seconds per agent and round (train, encode,
encrypt, upload: the upload includes the server's validation and addition, which answer it),
the server's seconds per round (validate: the uploads' own validation; add: every ciphertext
addition; replay: reading stored envelopes back for a group's sum or the close; server_other:
writing the sums, the database and waiting for the job's lock, summed over a round's
submissions; close, which holds some of the adds and replays) and the
buyer's per round (download, decrypt, step: robust average, optimizer step, evaluation,
publishing).
"""

from __future__ import annotations

import functools
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import agents.buyer
from agents.buyer import BuyerRun, buyer_identity, model_record, post_job
from agents.client import PollenClient
from agents.data import write_csv
from agents.demo import free_port, job_spec, start_agent, stop, wait_ready
from agents.experiment import load_digits_split
from bench.common import console, print_table, write_result
from bench.phases import Stopwatch, agent_phases, server_lines, start_timed_server
from crypto import DEFAULT_PRESET_ID, PLAIN_PRESET_ID, BuyerKeys

PROVIDERS = int(os.environ.get("POLLEN_BENCH_PROVIDERS", 10))
HIDDEN = [1200, 760]  # 64·1200 + 1200 + 1200·760 + 760 + 760·10 + 10 = 998,370 parameters
ROUNDS = 3  # round 1 includes start-up; rounds 2.. are timed
PHASES = (
    "train",
    "encode",
    "encrypt",
    "upload",
    "validate",
    "add",
    "replay",
    "server_other",
    "close",
    "download",
    "decrypt",
    "step",
)
_watch = Stopwatch()
# The buyer's decryption, timed where BuyerRun calls it.
agents.buyer.decrypt_aggregate_file = _watch.wrap("decrypt", agents.buyer.decrypt_aggregate_file)


def _running_job(
    url: str, admin: PollenClient, keys: BuyerKeys, split: Any, preset: str, workdir: Path
) -> BuyerRun:
    """A new buyer's funded, signed job under `preset`, once every agent has joined it."""
    anon = PollenClient(url, None)
    buyer = PollenClient(url, anon.register(role="buyer", name=f"bench-{preset}").api_key)
    spec = job_spec(ROUNDS, PROVIDERS, split.schema.model_dump())
    spec.update(
        title=f"round bench ({preset})",
        preset=preset,
        local_epochs=1,
        model={"arch": "mlp", "hidden": HIDDEN},
        quorum=PROVIDERS,
        round_deadline_s=600,
    )
    # Agents trust only jobs whose manifest and models the buyer signed.
    identity = buyer_identity(workdir / preset)
    job = post_job(buyer, keys, spec, identity=identity)
    admin.credit_job(job.id, spec["budget_cents"])
    run = BuyerRun(
        buyer, keys, job.id, split.test, out_dir=workdir / preset, poll_s=0.05, identity=identity
    )
    for name in ("download_aggregate", "download_group_aggregate"):
        setattr(run.client, name, _watch.wrap("download", getattr(run.client, name)))
    run._wait(run._job_if_running, "the job to start")
    return run


def _timed_rounds(
    run: BuyerRun, preset: str, log: Path
) -> tuple[list[float], float, dict[str, float], int]:
    """Every round of the job, the buyer publishing each model: the seconds of rounds 2..,
    the last accuracy, the buyer's seconds per phase over them, and where in the server log
    round 2 starts."""
    buyer, job_id, identity = run.client, run.job_id, run.identity
    offset = 0
    buyer_s: dict[str, float] = {"download": 0.0, "decrypt": 0.0, "step": 0.0}
    times: list[float] = []
    accuracy = 0.0
    for number in range(1, ROUNDS + 1):
        if number == 2:
            _, offset = server_lines(log, 0)
        started = time.perf_counter()
        if number > 1:
            model = run.model_path.read_bytes()
            buyer.post_record(job_id, model_record(identity, job_id, number, model))
            buyer.publish_model(job_id, number, model)
        run._wait(functools.partial(run._closed, number), f"round {number}")
        _watch.take()
        applying = time.perf_counter()
        report = run.apply_round(number)
        buyer.post_metrics(job_id, number, {"loss": report.loss, "accuracy": report.accuracy})
        accuracy = report.accuracy
        spent = _watch.take()
        if number > 1:
            times.append(time.perf_counter() - started)
            buyer_s["download"] += spent.get("download", 0.0)
            buyer_s["decrypt"] += spent.get("decrypt", 0.0)
            buyer_s["step"] += (
                time.perf_counter()
                - applying
                - spent.get("download", 0.0)
                - spent.get("decrypt", 0.0)
            )
        console.print(f"  {preset}: round {number} in {time.perf_counter() - started:.2f}s")
    return times, accuracy, buyer_s, offset


def _phases(
    workdir: Path, job_id: str, log: Path, offset: int, buyer_s: dict[str, float]
) -> dict[str, float]:
    """Seconds per phase over the timed rounds: per agent and round, then per round."""
    timed = list(range(2, ROUNDS + 1))
    phases = agent_phases([workdir / f"agent{i}" for i in range(PROVIDERS)], job_id, timed)
    server, _ = server_lines(log, offset)
    validate, add = sum(server.get("validate", [])), sum(server.get("add", []))
    replay = sum(server.get("replay", []))
    # The rest of the submissions' time: writing the sums, the database, the job's lock.
    other = sum(server.get("submit", [])) - validate - add - replay
    phases.update(
        validate=validate / len(timed),
        add=add / len(timed),
        replay=replay / len(timed),
        server_other=other / len(timed),
        close=sum(server.get("close", [])) / len(timed),
    )
    phases.update({name: seconds / len(timed) for name, seconds in buyer_s.items()})
    return {name: round(phases.get(name, 0.0), 4) for name in PHASES}


def _timed_job(
    url: str, admin: PollenClient, keys: BuyerKeys, split: Any, preset: str, workdir: Path
) -> tuple[list[float], int, float, dict[str, float]]:
    run = _running_job(url, admin, keys, split, preset, workdir)
    log = workdir / "server" / "server.log"
    times, accuracy, buyer_s, offset = _timed_rounds(run, preset, log)
    run.client.put_final_model(run.job_id, run.model_path.read_bytes())
    run.client.complete_job(run.job_id)
    params = int(run.client.get_job(run.job_id).param_count)
    return times, params, accuracy, _phases(workdir, run.job_id, log, offset, buyer_s)


def _start_agents(
    agents: list[subprocess.Popen[bytes]],
    url: str,
    workdir: Path,
    split: Any,
    admin: PollenClient,
) -> None:
    """One agent process per provider's data, each added to `agents` as it starts; each takes
    the two jobs and then exits."""
    for i, ds in enumerate(split.providers):
        csv = workdir / f"p{i}.csv"
        write_csv(ds, csv)
        proc = start_agent(
            url,
            csv,
            workdir / f"agent{i}",
            i,
            workdir / f"agent{i}.log",
            extra=["--max-jobs", "2", "--exit-after-jobs", "2", "--poll", "0.05"],
            operator=admin,
        )
        agents.append(proc)


def _report(
    params: int,
    enc: list[float],
    plain: list[float],
    accuracies: tuple[float, float],
    enc_phases: dict[str, float],
    plain_phases: dict[str, float],
) -> None:
    """The two tables, the ratio, and bench/results/round.json."""
    enc_acc, plain_acc = accuracies
    encrypted_s, plaintext_s = statistics.mean(enc), statistics.mean(plain)
    print_table(
        f"One round, {params:,} parameters, {PROVIDERS} providers (mean of {len(enc)} rounds)",
        ["config", "round seconds", "accuracy after last round"],
        [
            ["encrypted (CKKS)", f"{encrypted_s:.2f}", f"{enc_acc:.4f}"],
            ["plaintext", f"{plaintext_s:.2f}", f"{plain_acc:.4f}"],
        ],
    )
    print_table(
        "Seconds per phase: per agent and round (train … upload), per round (the rest)",
        ["phase", "encrypted (CKKS)", "plaintext"],
        [[name, f"{enc_phases[name]:.3f}", f"{plain_phases[name]:.3f}"] for name in PHASES],
    )
    ratio = encrypted_s / plaintext_s
    console.print(f"encrypted / plaintext = {ratio:.2f}")
    write_result(
        "round",
        {
            "params": params,
            "providers": PROVIDERS,
            "encrypted_round_s": encrypted_s,
            "plaintext_round_s": plaintext_s,
            "ratio": ratio,
            "encrypted_rounds_s": enc,
            "plaintext_rounds_s": plain,
            "breakdown": {"encrypted": enc_phases, "plaintext": plain_phases},
        },
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pollen-bench-round-") as tmp:
        workdir = Path(tmp)
        (workdir / "server").mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        admin_key = secrets.token_urlsafe(16)
        server = start_timed_server(
            workdir / "server",
            port,
            admin_key,
            extra_env={"POLLEN_ALLOW_PLAINTEXT_JOBS": "1", "POLLEN_DEADLINE_TICK_S": "0.2"},
        )
        agents: list[subprocess.Popen[bytes]] = []
        try:
            wait_ready(url, server)
            split = load_digits_split(PROVIDERS, alpha=1.0, seed=1)
            admin = PollenClient(url, admin_key)
            _start_agents(agents, url, workdir, split, admin)
            keys = BuyerKeys.generate()
            console.print(f"{PROVIDERS} agents, MLP {HIDDEN}, {ROUNDS} rounds per job")
            enc, params, enc_acc, enc_phases = _timed_job(
                url, admin, keys, split, DEFAULT_PRESET_ID, workdir
            )
            plain, _, plain_acc, plain_phases = _timed_job(
                url, admin, keys, split, PLAIN_PRESET_ID, workdir
            )
        finally:
            for proc in agents:
                stop(proc)
            stop(server)
    _report(params, enc, plain, (enc_acc, plain_acc), enc_phases, plain_phases)


if __name__ == "__main__":
    main()
