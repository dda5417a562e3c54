"""`python -m bench big [--params N]`: one large model through the real server, and memory.

P parameters (20,000,000 by default: an MLP with three equal hidden layers) trained by 4 provider
agents, each its own process, against the marketplace under uvicorn on loopback, for 2 rounds
(the first encrypts on the spot, the second with the encryptions of zero made while the agent
waited). Reported: the peak resident memory of every agent, of the server and of the buyer
(this process), each read from the kernel's own accounting for that process (`wait4`'s
rusage), beside one envelope's size; and the seconds per phase, timed where they run
(bench/phases.py). No DP here (the jobs ask for none): per-example gradients of 20M
parameters would measure opacus, not the round. Writes bench/results/big.json.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import resource
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import agents.buyer
from agents.buyer import BuyerRun, model_record, post_job
from agents.client import PollenClient
from agents.data import write_csv
from agents.demo import free_port, job_spec, start_agent, wait_ready
from agents.experiment import FederatedSplit, load_digits_split
from bench.common import console, print_table, write_result
from bench.phases import Stopwatch, agent_phases, server_lines, start_timed_server
from crypto import BuyerKeys
from crypto.identity import IdentityKey
from crypto.presets import Preset, get_preset

PROVIDERS = 4
ROUNDS = 2
DEFAULT_PARAMS = 20_000_000
_watch = Stopwatch()
agents.buyer.decrypt_aggregate_file = _watch.wrap("decrypt", agents.buyer.decrypt_aggregate_file)


def hidden_for(params: int) -> int:
    """h, three hidden layers of h (a layer is at most 4096 wide): 64·h + h + 2·(h·h + h) +
    10·h + 10 = 2·h² + 77·h + 10 parameters, the closest to `params` from below."""
    return max(1, int((-77 + math.sqrt(77**2 + 8 * max(params - 10, 0))) / 4))


def _peak_mb(proc: subprocess.Popen[bytes], *, terminate: bool, timeout_s: float) -> float:
    """Wait for the process (asking it to stop first if `terminate`); its peak RSS in MB."""
    if terminate and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_maxrss / 1024
        if time.monotonic() > deadline:
            proc.kill()
            timeout_s, deadline = 0.0, math.inf
        time.sleep(0.1)


def _start_agents(
    procs: list[subprocess.Popen[bytes]],
    url: str,
    workdir: Path,
    split: FederatedSplit,
    admin: PollenClient,
) -> None:
    """One provider agent process per share of the data, each added to `procs` as it starts."""
    for i, ds in enumerate(split.providers):
        csv = workdir / f"p{i}.csv"
        write_csv(ds, csv)
        procs.append(
            start_agent(
                url,
                csv,
                workdir / f"agent{i}",
                i,
                workdir / f"agent{i}.log",
                extra=["--no-dp", "--poll", "0.2"],
                operator=admin,  # only verified providers are matched
            )
        )


def _buyer_run(
    url: str, admin: PollenClient, workdir: Path, split: FederatedSplit, preset: Preset, hidden: int
) -> tuple[BuyerRun, int]:
    """The buyer's funded job of three hidden layers of `hidden`, running; its parameter count."""
    keys = BuyerKeys.generate(preset.id)
    anon = PollenClient(url, None)
    buyer = PollenClient(url, anon.register(role="buyer", name="bench-big").api_key, timeout=1800)
    spec = job_spec(ROUNDS, PROVIDERS, split.schema.model_dump())
    spec.update(title="big bench", local_epochs=1, model={"arch": "mlp",
                "hidden": [hidden] * 3}, quorum=PROVIDERS, round_deadline_s=3600,
                privacy="off")  # fmt: skip
    identity = IdentityKey.load_or_create(workdir / "buyer.identity")
    job = post_job(buyer, keys, spec, identity=identity)
    admin.credit_job(job.id, spec["budget_cents"])
    params = int(buyer.get_job(job.id).param_count or 0)
    console.print(
        f"{PROVIDERS} agents, MLP [{hidden}] × 3: {params:,} parameters, "
        f"envelope {preset.payload_bytes(params) / 1e6:.0f} MB"
    )
    run = BuyerRun(
        buyer, keys, job.id, split.test, out_dir=workdir / "buyer", poll_s=0.2, identity=identity
    )
    for name in ("download_aggregate", "download_group_aggregate"):
        setattr(run.client, name, _watch.wrap("download", getattr(run.client, name)))
    run._wait(run._job_if_running, "the job to start")
    return run, params


def _timed_round(
    run: BuyerRun, number: int, workdir: Path, offset: int
) -> tuple[dict[str, float], int]:
    """Round `number` driven by the buyer, its seconds per phase, and how far the server log
    has been read."""
    buyer, job_id = run.client, run.job_id
    started = time.perf_counter()
    if number > 1:
        model = run.model_path.read_bytes()
        buyer.post_record(job_id, model_record(run.identity, job_id, number, model))
        buyer.publish_model(job_id, number, model)
    run._wait(functools.partial(run._closed, number), f"round {number}")
    collected = time.perf_counter()
    _watch.take()
    run.apply_round(number)
    spent = _watch.take()
    round_s = time.perf_counter() - started
    lines, offset = server_lines(workdir / "server" / "server.log", offset)
    validate, add = sum(lines.get("validate", [])), sum(lines.get("add", []))
    other = sum(lines.get("submit", [])) - validate - add
    step = time.perf_counter() - collected - sum(spent.values())
    phases = {
        **agent_phases([workdir / f"agent{i}" for i in range(PROVIDERS)], job_id, [number]),
        "validate": validate, "add": add, "server_other": other,
        "close": sum(lines.get("close", [])),
        "download": spent.get("download", 0.0), "decrypt": spent.get("decrypt", 0.0),
        "step": step, "round": round_s,
    }  # fmt: skip
    return phases, offset


def _print_tables(
    params: int,
    phases: dict[str, dict[str, float]],
    envelope_mb: float,
    agent_mb: list[float],
    server_mb: float,
    buyer_mb: float,
) -> None:
    names = list(phases["1"])
    print_table(
        f"Seconds per phase, {params:,} parameters, {PROVIDERS} providers "
        "(agents: mean per agent; server and buyer: per round)",
        ["phase", *(f"round {n}" for n in phases)],
        [[name, *(f"{phases[n].get(name, 0.0):.2f}" for n in phases)] for name in names],
    )
    print_table(
        f"Peak resident memory (MB); one envelope is {envelope_mb:.0f} MB",
        ["process", "peak RSS MB", "envelopes' worth"],
        [[f"agent {i}", f"{mb:.0f}", f"{mb / envelope_mb:.1f}"] for i, mb in enumerate(agent_mb)]
        + [
            ["server", f"{server_mb:.0f}", f"{server_mb / envelope_mb:.1f}"],
            ["buyer", f"{buyer_mb:.0f}", f"{buyer_mb / envelope_mb:.1f}"],
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench big")
    parser.add_argument("--params", type=int, default=DEFAULT_PARAMS)
    args = parser.parse_args(argv or [])
    hidden = hidden_for(args.params)
    preset = get_preset("ckks-add-2048-v1")
    phases: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="pollen-bench-big-") as tmp:
        workdir = Path(tmp)
        (workdir / "server").mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        admin_key = secrets.token_urlsafe(16)
        server = start_timed_server(
            workdir / "server", port, admin_key, {"POLLEN_DEADLINE_TICK_S": "0.5"}
        )
        procs: list[subprocess.Popen[bytes]] = []
        try:
            wait_ready(url, server)
            split = load_digits_split(PROVIDERS, alpha=1.0, seed=1)
            admin = PollenClient(url, admin_key, timeout=1800)
            _start_agents(procs, url, workdir, split, admin)
            run, params = _buyer_run(url, admin, workdir, split, preset, hidden)
            offset = 0
            round_s: list[float] = []
            for number in range(1, ROUNDS + 1):
                phases[str(number)], offset = _timed_round(run, number, workdir, offset)
                round_s.append(phases[str(number)]["round"])
                console.print(f"  round {number} in {round_s[-1]:.1f}s")
            run.client.put_final_model(run.job_id, run.model_path.read_bytes())
            run.client.complete_job(run.job_id)
            agent_mb = [_peak_mb(p, terminate=False, timeout_s=120) for p in procs]
            server_mb = _peak_mb(server, terminate=True, timeout_s=30)
        finally:
            for proc in [*procs, server]:
                if proc.poll() is None:
                    proc.kill()
    buyer_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    envelope_mb = preset.payload_bytes(params) / 1e6
    _print_tables(params, phases, envelope_mb, agent_mb, server_mb, buyer_mb)
    result: dict[str, Any] = {
        "params": params, "providers": PROVIDERS, "rounds": ROUNDS, "hidden": [hidden] * 3,
        "envelope_mb": envelope_mb, "round_s": round_s, "phases": phases,
        "peak_rss_mb": {"agents": agent_mb, "server": server_mb, "buyer": buyer_mb},
    }  # fmt: skip
    write_result("big", result)


if __name__ == "__main__":
    main()
