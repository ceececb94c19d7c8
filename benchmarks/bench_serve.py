"""Lookup-service benchmark: p50/p99 latency and requests per second on loopback.

Builds a store (``linkage synth`` + ``linkage run --store``) of ``--persons`` persons, or
takes ``--store``; starts ``linkage serve`` on a free 127.0.0.1 port with the shipped
sharing policy; sends a fixed number of searches (name + birth date, ID number, phone,
name + birth date + phone, in turn) for three departments from ``--concurrency``
concurrent clients; prints the figures. Every loop is bounded by a count and by
``--max-seconds``; nothing leaves the machine.

    python benchmarks/bench_serve.py --persons 100000 --workers 2 --requests 2000
    python benchmarks/bench_serve.py --store big.duckdb --requests 3000
    python benchmarks/bench_serve.py --store big.duckdb --in-process --requests 500 --warmup 100

Target (issue: a lookup service for departments): p99 <= 50 ms warm and >= 200 requests/s
on 2 cores at 1 M identities.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import httpx
import numpy as np

from linkage.serve import add_token

DEPARTMENTS = ("police", "health", "social_security")


def _granted() -> dict[str, set[str]]:
    """Query fields each department may search by under the shipped policy."""
    from linkage.serve import QUERY_FIELDS
    from linkage.share import effective_department, load_policy

    policy = load_policy()
    out = {}
    for d in DEPARTMENTS:
        fields = effective_department(policy, d).fields
        out[d] = {k for k, f in QUERY_FIELDS.items() if fields.get(f) == "none"}
    return out


GRANTED = _granted()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_stats() -> dict[int, list[str]]:
    """Each live process's /proc/PID/stat fields after the command name, by pid."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        stats[int(entry.name)] = text[text.rindex(")") + 2 :].split()
    return stats


def _descendants(pid: int, stats: dict[int, list[str]] | None = None) -> set[int]:
    """A process and its live descendants, from /proc (field 1 after the name: parent pid)."""
    parents = {p: int(f[1]) for p, f in (stats or _proc_stats()).items()}
    found, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def tree_rss_gb(pid: int) -> dict[int, tuple[float, float]]:
    """Resident and peak resident GB (VmRSS, VmHWM from /proc) of a process and each live
    descendant (uvicorn's parent and its workers)."""
    out = {}
    for p in sorted(_descendants(pid)):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        kb = {
            line.split(":")[0]: int(line.split()[1])
            for line in status.splitlines()
            if line.startswith(("VmRSS", "VmHWM"))
        }
        if kb:
            out[p] = (kb.get("VmRSS", 0) / 2**20, kb.get("VmHWM", 0) / 2**20)
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants, from /proc."""
    stats = _proc_stats()
    ticks = sum(int(stats[p][11]) + int(stats[p][12]) for p in _descendants(pid, stats) if p in stats)
    return ticks / os.sysconf("SC_CLK_TCK")


def build_store(persons: int, folder: Path) -> Path:
    """Generate registries for ``persons`` persons and write a batch run into a store."""
    store = folder / f"store_{persons}.duckdb"
    if store.exists():
        return store
    data = folder / f"data_{persons}"
    t = time.perf_counter()
    subprocess.run(
        ["linkage", "synth", "--persons", str(persons), "-o", str(data), "-q"], check=True
    )
    subprocess.run(
        ["linkage", "run", str(data / "run.yaml"), "--store", str(store), "--output",
         str(folder / f"out_{persons}"), "-q"],
        check=True,
    )  # fmt: skip
    print(f"built a store of {persons:,} persons in {time.perf_counter() - t:.0f}s: {store}")
    return store


def queries(store: Path, n: int, seed: int) -> list[dict]:
    """Queries from stored golden records: four shapes a registration desk would send."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        rows = con.execute(
            "SELECT name, birth_date, id_number, phone FROM golden "
            "WHERE name IS NOT NULL AND birth_date IS NOT NULL "
            "ORDER BY hash(identity_id) LIMIT ?",
            [n],
        ).fetchall()
    finally:
        con.close()
    rng = random.Random(seed)
    out = []
    for i, (name, birth, id_number, phone) in enumerate(rows):
        shape = i % 4
        if shape == 0:
            q = {"name": name, "birth_date": birth}
        elif shape == 1 and id_number:
            q = {"id_number": id_number}
        elif shape == 2 and phone:
            q = {"phone": phone}
        else:
            q = {"name": name, "birth_date": birth, "phone": phone}
        out.append({k: v for k, v in q.items() if v})
    rng.shuffle(out)
    return out


async def load(
    base: str, tokens: dict, qs: list[dict], total: int, concurrency: int, max_seconds: float
) -> tuple[list[float], int, float]:
    """Send ``total`` searches from ``concurrency`` clients; return latencies, errors, wall."""
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + max_seconds
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:  # shared iterator: the total is fixed across clients
            if time.monotonic() > deadline:
                return
            # a department may search only by fields it sees unmasked (else 403): send each
            # query to one that may, in turn
            q = qs[i % len(qs)]
            dept = department_for(i, q)
            t = time.perf_counter()
            r = await client.post(
                "/v1/search",
                json=q,
                headers={"Authorization": f"Bearer {tokens[dept]}"},
            )
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                errors += 1
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    if statuses:
        print(f"non-200 answers by status: {dict(sorted(statuses.items()))}")
    return latencies, errors, time.perf_counter() - start


def department_for(i: int, q: dict) -> str:
    """A department granted every field of the query, in turn (else 403 answers)."""
    allowed = [d for d in DEPARTMENTS if set(q) <= GRANTED[d]] or list(DEPARTMENTS)
    return allowed[i % len(allowed)]


def in_process(store: Path, tokens_file: Path, qs: list[dict], args) -> None:
    """CPU per search of ``LookupService.search`` in this process (no HTTP, no other jobs'
    share of the clock): ``--warmup`` searches, then ``--requests`` timed by process_time."""
    import resource

    from linkage.serve import LookupService, SearchQuery, ServiceSettings
    from linkage.share import DEFAULT_POLICY_PATH

    t = time.process_time()
    service = LookupService(
        ServiceSettings(
            store=str(store),
            policy=str(DEFAULT_POLICY_PATH),
            tokens=str(tokens_file),
            in_memory=not args.no_in_memory,
        )
    )
    start_cpu = time.process_time() - t
    try:
        for i in range(args.warmup):
            q = qs[i % len(qs)]
            service.search(department_for(i, q), SearchQuery(**q))
        hits = 0
        t = time.process_time()
        for i in range(args.warmup, args.warmup + args.requests):
            q = qs[i % len(qs)]
            hits += len(service.search(department_for(i, q), SearchQuery(**q))["hits"])
        cpu = time.process_time() - t
    finally:
        service.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"in process: {args.requests:,} searches after {args.warmup} warm-up, {hits:,} hits; "
          f"in-memory tables {'off' if args.no_in_memory else 'on'}")  # fmt: skip
    print(f"CPU: {cpu / args.requests * 1000:.2f} ms per search; start-up {start_cpu:.1f} s; "
          f"peak RSS {peak:.2f} GB; load average {os.getloadavg()[0]:.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, help="an existing identity store")
    parser.add_argument("--persons", type=int, default=100_000, help="persons to build")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "bench_serve")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=240.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--in-process", action="store_true", help="time LookupService.search here, no HTTP"
    )
    parser.add_argument(
        "--no-in-memory", action="store_true", help="the service reads the store per search"
    )
    args = parser.parse_args()

    args.folder.mkdir(parents=True, exist_ok=True)
    store = args.store or build_store(args.persons, args.folder)
    con = duckdb.connect(str(store), read_only=True)
    identities, records = (
        con.execute("SELECT count(*) FROM golden").fetchall()[0][0],
        con.execute("SELECT count(*) FROM records").fetchall()[0][0],
    )
    con.close()
    tokens_file = args.folder / "tokens.yaml"
    tokens_file.unlink(missing_ok=True)
    tokens = {d: add_token(tokens_file, d) for d in DEPARTMENTS}
    qs = queries(store, 2000, args.seed)
    if args.in_process:
        in_process(store, tokens_file, qs, args)
        return
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = ["linkage", "serve", "--store", str(store), "--tokens", str(tokens_file),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
           "--audit", str(args.folder / "audit.jsonl"), "-q",
           # capacity, not the per-token limit: a few tokens send every request here
           "--rate-limit", "1000000", "--rate-burst", "1000000"]  # fmt: skip
    if args.no_in_memory:
        cmd.append("--no-in-memory")
    t = time.perf_counter()
    server = subprocess.Popen(cmd, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                sys.exit(f"server exited with {server.returncode}")
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                sys.exit("server not ready in 300 s")
            time.sleep(0.5)
        ready = time.perf_counter() - t
        asyncio.run(load(base, tokens, qs, args.warmup, args.concurrency, args.max_seconds))
        cpu = tree_cpu_seconds(server.pid)
        lat, errors, wall = asyncio.run(
            load(base, tokens, qs, args.requests, args.concurrency, args.max_seconds)
        )
        cpu = tree_cpu_seconds(server.pid) - cpu
        rss = tree_rss_gb(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    ms = np.array(lat) * 1000
    load_avg = os.getloadavg()[0]
    print(f"store: {store} ({identities:,} identities, {records:,} records)")
    print(f"server: {args.workers} worker(s), ready in {ready:.1f}s; cores: {os.cpu_count()}, "
          f"load average {load_avg:.1f}")  # fmt: skip
    print(f"requests: {len(lat):,} after {args.warmup} warm-up, concurrency {args.concurrency}, "
          f"errors {errors}")  # fmt: skip
    print(f"latency ms: p50 {np.percentile(ms, 50):.1f}  p90 {np.percentile(ms, 90):.1f}  "
          f"p99 {np.percentile(ms, 99):.1f}  max {ms.max():.1f}")  # fmt: skip
    print(f"throughput: {len(lat) / wall:.1f} requests/s over {wall:.1f}s")
    per = cpu / max(len(lat), 1)
    # on a machine shared with other work, wall-clock figures measure the contention; the
    # server's own CPU seconds per request bound what dedicated cores can serve
    print(f"server CPU: {per * 1000:.1f} ms per request; on {args.workers} dedicated core(s) "
          f"at most {args.workers / per if per else float('inf'):.0f} requests/s")  # fmt: skip
    # the first is the uvicorn parent (settings checked, no tables), the others its workers
    print("resident GB per process (now / peak): " + ", ".join(
        f"{p}: {now:.2f} / {peak:.2f}" for p, (now, peak) in rss.items()))  # fmt: skip
    print("target: p99 <= 50 ms, >= 200 requests/s (2 cores, 1 M identities)")


if __name__ == "__main__":
    main()
