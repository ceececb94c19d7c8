"""Lookup-service benchmark: p50/p99 latency and requests per second on loopback.

Builds a store (``linkage synth`` + ``linkage run --store``) of ``--persons`` persons, or
takes ``--store``; starts ``linkage serve`` on a free 127.0.0.1 port with the shipped
sharing policy; sends a fixed number of searches (name + birth date, ID number, phone,
name + birth date + phone, in turn) for three departments; prints the figures. Every loop
is bounded by a count and by ``--max-seconds``; nothing leaves the machine.

Two ways to send them:

- closed loop (default): ``--concurrency`` clients, each sending its next request when the
  last is answered. It finds the most requests per second, but its latencies include the
  queue the clients themselves make (Little's law: 8 clients at 200 requests/s wait 40 ms
  on average, however fast each search is).
- open loop (``--rate R``): requests sent on a fixed schedule of R per second, whatever the
  answers do, over at most ``--concurrency`` connections; each latency runs from the
  request's scheduled send time, so a stall delays and counts against every request due
  during it (the "coordinated omission" correction of wrk2 and HdrHistogram). It answers
  "what p99 does a department see at R requests/s".

    python benchmarks/bench_serve.py --persons 100000 --workers 2 --requests 2000
    python benchmarks/bench_serve.py --store big.duckdb --rate 200 --requests 4000
    python benchmarks/bench_serve.py --store big.duckdb --in-process --requests 500 --warmup 100

Target (issue: a lookup service for departments): p99 <= 50 ms warm and >= 200 requests/s
on 2 cores at 1 M identities.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of a process and of each live descendant, by pid, from
    /proc (fields 14 and 15 of stat: utime and stime in clock ticks)."""
    stats = _proc_stats()
    tick = os.sysconf("SC_CLK_TCK")
    return {
        p: (int(stats[p][11]) + int(stats[p][12])) / tick
        for p in sorted(_descendants(pid, stats))
        if p in stats
    }


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


class _Connection:
    """One keep-alive HTTP/1.1 connection over asyncio streams, for the load's requests.

    Written here rather than with httpx: the benchmark's clients share the server's cores,
    and httpx spends ~3-4 ms of CPU per request on its request/response models (measured
    with this benchmark's ``--client httpx``); this writes one request and reads the status
    line, headers and a Content-Length (or chunked) body, nothing more.
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """Send one POST; return the status code and the body."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                "Content-Type: application/json", f"Content-Length: {len(body)}"]  # fmt: skip
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        status_line, *lines = (await self.reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        fields = {}
        for line in lines:
            if ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if "content-length" in fields:
            data = await self.reader.readexactly(int(fields["content-length"]))
        else:  # chunked
            parts = []
            while size := int((await self.reader.readline()).strip().split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            await self.reader.readline()
            data = b"".join(parts)
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return int(status_line.split()[1]), data

    async def close(self) -> None:
        """Close the connection (a later post opens a new one)."""
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
        self.reader = self.writer = None


async def load(
    base: str,
    tokens: dict,
    qs: list[dict],
    total: int,
    concurrency: int,
    max_seconds: float,
    client: str = "raw",
) -> tuple[list[float], int, float, float]:
    """Send ``total`` searches from ``concurrency`` clients (one keep-alive connection each,
    in this one process); return latencies, errors, wall seconds and this process's CPU
    seconds (the clients' share of the machine)."""
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + max_seconds
    counter = iter(range(total))
    host, port = base.removeprefix("http://").rsplit(":", 1)
    # the request bodies and headers, built before the clock starts
    bodies = [json.dumps(q).encode() for q in qs]
    auth = {d: {"Authorization": f"Bearer {tokens[d]}"} for d in tokens}

    async def client_loop(send) -> None:
        nonlocal errors
        for i in counter:  # shared iterator: the total is fixed across clients
            if time.monotonic() > deadline:
                return
            # a department may search only by fields it sees unmasked (else 403): send each
            # query to one that may, in turn
            q = qs[i % len(qs)]
            dept = department_for(i, q)
            t = time.perf_counter()
            status = await send(bodies[i % len(qs)], auth[dept])
            latencies.append(time.perf_counter() - t)
            if status != 200:
                errors += 1
                statuses[status] = statuses.get(status, 0) + 1

    cpu = time.process_time()
    start = time.perf_counter()
    if client == "httpx":
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:

            async def send(body: bytes, headers: dict) -> int:
                headers = {**headers, "Content-Type": "application/json"}
                return (await http.post("/v1/search", content=body, headers=headers)).status_code

            await asyncio.gather(*(client_loop(send) for _ in range(concurrency)))
    else:
        connections = [_Connection(host, int(port)) for _ in range(concurrency)]

        def sender(conn: _Connection):
            async def send(body: bytes, headers: dict) -> int:
                return (await asyncio.wait_for(conn.post("/v1/search", body, headers), 30))[0]

            return send

        try:
            await asyncio.gather(*(client_loop(sender(c)) for c in connections))
        finally:
            for c in connections:
                await c.close()
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    if statuses:
        print(f"non-200 answers by status: {dict(sorted(statuses.items()))}")
    return latencies, errors, wall, cpu


async def open_loop(
    base: str,
    tokens: dict,
    qs: list[dict],
    total: int,
    rate: float,
    connections: int,
    max_seconds: float,
) -> tuple[list[float], int, float, float, float]:
    """Send ``total`` searches on a fixed schedule, ``rate`` per second, over at most
    ``connections`` keep-alive connections; return latencies (each from its request's
    scheduled send time), errors, the seconds from the first scheduled send to the last
    answer, the seconds the sender fell behind its schedule at most, and this process's CPU
    seconds.

    Measured from the schedule, not from when a connection was free or the bytes left:
    a closed-loop client that waits out a stall sends nothing during it and so hides it
    (Tene's "coordinated omission"; wrk2 and HdrHistogram correct it the same way). A
    request that finds every connection busy waits for one, and that wait counts too.
    """
    host, port = base.removeprefix("http://").rsplit(":", 1)
    bodies = [json.dumps(q).encode() for q in qs]
    auth = {d: {"Authorization": f"Bearer {tokens[d]}"} for d in tokens}
    free: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(connections):
        free.put_nowait(_Connection(host, int(port)))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    behind = 0.0

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        q = qs[i % len(qs)]
        conn = await free.get()
        try:
            status, _ = await asyncio.wait_for(
                conn.post("/v1/search", bodies[i % len(qs)], auth[department_for(i, q)]), 30
            )
        except (
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ):
            status = 0  # a broken or stalled connection: counted, and a fresh one opened
            await conn.close()
        finally:
            free.put_nowait(conn)
        latencies.append(time.perf_counter() - scheduled)
        if status != 200:
            errors += 1
            statuses[status] = statuses.get(status, 0) + 1

    cpu = time.process_time()
    start = time.perf_counter() + 0.05
    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        now = time.perf_counter()
        if now - start > max_seconds:
            break
        if scheduled > now:
            await asyncio.sleep(scheduled - now)
        else:
            behind = max(behind, now - scheduled)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    while not free.empty():
        await free.get_nowait().close()
    if statuses:
        print(f"non-200 answers by status (0: no answer): {dict(sorted(statuses.items()))}")
    return latencies, errors, wall, behind, cpu


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


def report(args, rate, lat, errors, wall, behind, client_cpu, cpu) -> None:
    """Print one load phase: requests, latency percentiles, rate, server CPU (per process)."""
    ms = np.array(lat) * 1000
    if rate:
        print(f"open loop: offered {rate:.1f} requests/s, achieved {len(lat) / wall:.1f} "
              f"(answers over {wall:.1f}s); {len(lat):,} requests after {args.warmup} warm-up, "
              f"at most {args.concurrency} connections, errors {errors}; the sender fell "
              f"behind its schedule by at most {behind * 1000:.1f} ms")  # fmt: skip
        print("latency ms from each request's scheduled send: ", end="")
    else:
        print(f"closed loop: {len(lat):,} requests after {args.warmup} warm-up, "
              f"concurrency {args.concurrency}, errors {errors}")  # fmt: skip
        print(f"throughput: {len(lat) / wall:.1f} requests/s over {wall:.1f}s")
        print("latency ms: ", end="")
    print(f"p50 {np.percentile(ms, 50):.1f}  p90 {np.percentile(ms, 90):.1f}  "
          f"p99 {np.percentile(ms, 99):.1f}  max {ms.max():.1f}")  # fmt: skip
    total = sum(cpu.values())
    per = total / max(len(lat), 1)
    # on a machine shared with other work, wall-clock figures measure the contention; the
    # server's own CPU seconds per request bound what dedicated cores can serve
    print(f"server CPU: {per * 1000:.1f} ms per request; on {args.workers} dedicated core(s) "
          f"at most {args.workers / per if per else float('inf'):.0f} requests/s")  # fmt: skip
    # the first is the uvicorn parent (settings checked, no tables), the others its workers
    print("server CPU share per process: " + ", ".join(
        f"{p}: {c / total if total else 0:.0%}" for p, c in cpu.items()))  # fmt: skip
    # the clients run on the same cores: their CPU is taken from the server's share
    print(f"client CPU ({'raw' if rate else args.client}, one process): "
          f"{client_cpu / max(len(lat), 1) * 1000:.1f} ms per request")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, help="an existing identity store")
    parser.add_argument("--persons", type=int, default=100_000, help="persons to build")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "bench_serve")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="closed loop: the clients; open loop: the most connections (requests in flight)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="open loop: send this many requests per second on a fixed schedule and time "
        "each from its scheduled send (default: closed loop, as fast as answered)",
    )
    parser.add_argument(
        "--also-closed",
        action="store_true",
        help="with --rate: then the closed loop too, on the same server (one start-up)",
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=240.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ready-seconds",
        type=float,
        default=300.0,
        help="wait this long for the service to load (each worker reads the store)",
    )
    parser.add_argument(
        "--in-process", action="store_true", help="time LookupService.search here, no HTTP"
    )
    parser.add_argument(
        "--no-in-memory", action="store_true", help="the service reads the store per search"
    )
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="the load's HTTP client: raw keep-alive HTTP/1.1 (light, default) or httpx",
    )
    args = parser.parse_args()
    if args.rate is not None and (args.rate <= 0 or args.client != "raw"):
        parser.error("--rate takes a positive number and the raw client")
    if args.also_closed and not args.rate:
        parser.error("--also-closed goes with --rate")

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
        deadline = time.monotonic() + args.ready_seconds
        while True:
            if server.poll() is not None:
                sys.exit(f"server exited with {server.returncode}")
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"server not ready in {args.ready_seconds:.0f} s")
            time.sleep(0.5)
        # /healthz answers once one worker has loaded: wait for the others too (a worker
        # still loading a large store uses its core; a loaded one sits idle)
        quiet = tree_cpu_seconds(server.pid)
        while time.monotonic() < deadline:
            time.sleep(2)
            now = tree_cpu_seconds(server.pid)
            if all(now[p] - quiet.get(p, 0.0) < 0.3 for p in now):
                break
            quiet = now
        ready = time.perf_counter() - t
        asyncio.run(
            load(base, tokens, qs, args.warmup, args.concurrency, args.max_seconds, args.client)
        )
        phases = []
        rates = [args.rate, None] if args.also_closed else [args.rate]
        for rate in rates:
            before = tree_cpu_seconds(server.pid)
            if rate:
                lat, errors, wall, behind, client_cpu = asyncio.run(
                    open_loop(
                        base, tokens, qs, args.requests, rate, args.concurrency, args.max_seconds
                    )
                )
            else:
                lat, errors, wall, client_cpu = asyncio.run(
                    load(base, tokens, qs, args.requests, args.concurrency, args.max_seconds,
                         args.client)
                )  # fmt: skip
                behind = 0.0
            after = tree_cpu_seconds(server.pid)
            # per process: the workers' shares tell whether connections are spread over them
            cpu = {p: after[p] - before.get(p, 0.0) for p in after}
            phases.append((rate, lat, errors, wall, behind, client_cpu, cpu))
        rss = tree_rss_gb(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"store: {store} ({identities:,} identities, {records:,} records)")
    print(f"server: {args.workers} worker(s), all loaded in {ready:.1f}s; cores: {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    for rate, lat, errors, wall, behind, client_cpu, cpu in phases:
        report(args, rate, lat, errors, wall, behind, client_cpu, cpu)
    # the first is the uvicorn parent (settings checked, no tables), the others its workers
    print("resident GB per process (now / peak): " + ", ".join(
        f"{p}: {now:.2f} / {peak:.2f}" for p, (now, peak) in rss.items()))  # fmt: skip
    print("target: p99 <= 50 ms, >= 200 requests/s (2 cores, 1 M identities)")


if __name__ == "__main__":
    main()
