"""Benchmark: standardize N generated records and print the time per field group.

Usage: python benchmarks/bench_standardize.py [--records 1000000] [--seed 0]
Target (issue 2): 1,000,000 records in at most 60 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from linkage.config import load_config
from linkage.io import read_sources
from linkage.standardize.combine import standardize
from linkage.synth import generate


def main() -> None:
    """Generate registries of about ``--records`` records, read them and standardize them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="reuse/keep generated files here")
    args = parser.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="linkage-bench-"))
    config_path = work / "run.yaml"
    if not config_path.exists():
        # the generator writes about 2.44 records per person across the three registries
        persons = max(1, int(args.records / 2.43))
        t = time.perf_counter()
        result = generate(persons, seed=args.seed, output=work)
        n = len(result.police) + len(result.civil_affairs) + len(result.health)
        print(f"generate: {persons:,} persons -> {n:,} records in {time.perf_counter() - t:.1f}s")
    config = load_config(config_path)
    t = time.perf_counter()
    records = read_sources(config)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    out = standardize(records, config.standardize)
    std_s = time.perf_counter() - t
    print(f"read: {len(records):,} records in {read_s:.1f}s")
    for stage, seconds in out.attrs.get("timings", {}).items():
        print(f"  {stage:<18} {seconds:6.1f}s")
    print(f"standardize: {len(out):,} records in {std_s:.1f}s ({len(out) / std_s:,.0f} records/s)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
