"""Benchmark: incremental ingest into a large identity store, and single-record search latency.

Usage: python benchmarks/bench_incremental.py --persons 400000 --new 10000 --workdir /tmp/bench_inc
       [--queries 300] [--full]   (--full also runs the batch on the union and reports F1)
Steps are cached in --workdir: registries, the held-out split and the store built by
``linkage run old.yaml --store``; ingest runs on a fresh copy of that store each time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from linkage import schema


def _sh(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - start


def prepare(workdir: Path, persons: int, n_new: int, seed: int) -> dict:
    """Generate registries and hold ``n_new`` records of the health registry out as a new batch."""
    data = workdir / "data"
    if not (data / "run.yaml").exists():
        print(f"generating {persons:,} persons", flush=True)
        _sh(
            [
                "linkage",
                "synth",
                "--persons",
                str(persons),
                "--seed",
                str(seed),
                "-o",
                str(data),
                "-q",
            ]
        )
    if not (data / "new.yaml").exists():
        health = pd.read_csv(data / "health.csv", dtype=str, encoding="utf-8-sig")
        new = health.sample(n=min(n_new, len(health)), random_state=seed)
        health.drop(new.index).to_csv(data / "health_old.csv", index=False, encoding="utf-8-sig")
        new.to_csv(data / "health_new.csv", index=False, encoding="utf-8-sig")
        cfg = yaml.safe_load((data / "run.yaml").read_text(encoding="utf-8"))
        src = cfg["sources"]
        for name, sources in (
            ("old.yaml", dict(src, health=dict(src["health"], path="health_old.csv"))),
            ("new.yaml", {"health": dict(src["health"], path="health_new.csv")}),
        ):
            doc = dict(cfg, sources=sources)
            (data / name).write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    figures = {}
    store = workdir / "store.duckdb"
    if not store.exists():
        print("building the store: linkage run old.yaml --store", flush=True)
        figures["batch_with_store_s"] = _sh(
            [
                "linkage",
                "run",
                str(data / "old.yaml"),
                "--store",
                str(store),
                "-o",
                str(workdir / "out_old"),
                "-q",
            ]
        )
    return figures


def bench_ingest(workdir: Path) -> dict:
    """Ingest the held-out batch into a copy of the store; return timings and summary."""
    from linkage.config import load_config
    from linkage.incremental import ingest
    from linkage.store import Store

    copy = workdir / "store_ingest.duckdb"
    shutil.copyfile(workdir / "store.duckdb", copy)
    start = time.perf_counter()
    with Store.open(copy, create=False) as store:
        n_stored = store.counts()["records"]
        result = ingest(store, load_config(workdir / "data" / "new.yaml"))
    seconds = time.perf_counter() - start
    return {"stored_records": n_stored, "ingest_s": round(seconds, 2), **result.summary}


def bench_search(workdir: Path, n_queries: int, seed: int) -> dict:
    """Time ``incremental.search`` on queries built from stored records (name + ID or name + birth + phone)."""
    from linkage.incremental import search
    from linkage.store import Store

    rng = np.random.default_rng(seed)
    with Store.open(workdir / "store_ingest.duckdb", create=False) as store:
        sample = (
            store.con.sql(
                "SELECT source, record_id, name, id_std, birth_date_std, phone_std FROM records "
                "USING SAMPLE 2000 ROWS"
            )
            .to_arrow_table()
            .to_pandas()
        )
        links = store.links_for(sample).set_index([schema.SOURCE, schema.RECORD_ID])
        # one-time warm-up (model, term counts, lazily built standardizer tables), not timed
        for _, row in sample.tail(10).iterrows():
            search(store, {"name": row["name"], "id_number": row["id_std"]})
            search(
                store,
                {
                    "name": row["name"],
                    "birth_date": row["birth_date_std"],
                    "phone": row["phone_std"],
                },
            )
        times, hits = [], 0
        for i in range(n_queries):
            row = sample.iloc[i % (len(sample) - 10)]
            query = {"name": row["name"]}
            if rng.random() < 0.5 and row["id_std"] is not None:
                query["id_number"] = row["id_std"]
            else:
                query["birth_date"] = row["birth_date_std"]
                query["phone"] = row["phone_std"]
            start = time.perf_counter()
            found = search(store, {k: v for k, v in query.items() if v is not None}, top=5)
            times.append(time.perf_counter() - start)
            want = links[schema.IDENTITY_ID].get((row[schema.SOURCE], row[schema.RECORD_ID]))
            hits += bool(found) and found[0]["identity_id"] == want
    ms = np.array(times) * 1000
    return {
        "queries": n_queries,
        "median_ms": round(float(np.median(ms)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "top1_is_source_identity": round(hits / n_queries, 4),
    }


def bench_agreement(workdir: Path) -> dict:
    """Pairwise F1 of the store after ingest against a full batch run on the union."""
    from linkage.evaluate import pairwise_scores
    from linkage.store import Store

    full = workdir / "out_full"
    seconds = None
    if not (full / "identities.csv").exists():
        seconds = _sh(["linkage", "run", str(workdir / "data" / "run.yaml"), "-o", str(full), "-q"])
    batch = pd.read_csv(full / "identities.csv", dtype=str)
    with Store.open(workdir / "store_ingest.duckdb", create=False) as store:
        inc = store.links()
    both = batch.merge(inc, on=[schema.SOURCE, schema.RECORD_ID], suffixes=("_full", "_inc"))
    scores = pairwise_scores(both["identity_id_full"], both["identity_id_inc"])
    return {"full_run_s": seconds, "records_compared": len(both), **scores}


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--persons", type=int, default=400_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_incremental"))
    parser.add_argument("--full", action="store_true", help="also compare with a full batch run")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    figures = prepare(args.workdir, args.persons, args.new, args.seed)
    figures["ingest"] = bench_ingest(args.workdir)
    print(json.dumps(figures, indent=2, ensure_ascii=False), flush=True)
    figures["search"] = bench_search(args.workdir, args.queries, args.seed)
    print(json.dumps(figures["search"], indent=2), flush=True)
    if args.full:
        figures["agreement"] = bench_agreement(args.workdir)
        print(json.dumps(figures["agreement"], indent=2), flush=True)
    (args.workdir / "figures.json").write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
