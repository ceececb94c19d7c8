"""Benchmark: link generated registries with our engine and with Splink; accuracy, time, memory.

Usage: python benchmarks/bench_linking.py --persons 20000 --seed 0 [--engines linkage,splink]
       [--workdir DIR] [--threshold 0.9] [--splink-u-pairs 5e6] [--splink-contact separate]
Registries are generated once (reused from --workdir when persons and seed match); each engine
then runs in its own subprocess so its peak RSS and stage times are its own. Both engines read
and standardize the files with linkage's standardizer, each in its own process: that time is
in both totals (column read+std). Splink (the ``bench`` extra) gets the same standardized columns.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from linkage import schema
from linkage.evaluate import evaluate_files, recall_by_tag

logger = logging.getLogger(__name__)

ENGINES = ("linkage", "splink")
# Table columns: (header, key in the worker's "seconds" dict).
STAGES = (
    ("read+std", "read_standardize"),
    ("block", "block"),
    ("cmp/pred", "compare_predict"),
    ("train", "train"),
    ("cluster", "cluster"),
    ("other", "other"),
    ("total", "total"),
)


def _peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare_data(workdir: Path, persons: int, seed: int) -> Path:
    """Generate the registries under ``workdir/data`` unless a matching set is there; return it."""
    from linkage.synth import generate

    data = workdir / "data"
    meta_path = data / "meta.json"
    meta = {"persons": persons, "seed": seed}
    if meta_path.exists() and json.loads(meta_path.read_text()) == meta:
        print(f"reusing registries in {data}")
        return data
    t = time.perf_counter()
    result = generate(persons, seed=seed, output=data)
    meta_path.write_text(json.dumps(meta))
    print(
        f"generated {len(result.truth):,} records for {persons:,} persons in "
        f"{time.perf_counter() - t:.1f}s -> {data}"
    )
    return data


# ----------------------------------------------------------------------------- workers


def _work_linkage(data: Path, out: Path, threshold: float) -> dict:
    """Run our engine end to end (Linker.run, golden records included)."""
    from linkage.config import load_config
    from linkage.io import write_csv
    from linkage.linker import Linker

    t = time.perf_counter()
    config = load_config(data / "run.yaml")
    config.clustering.threshold = threshold
    result = Linker(config).run()
    total = time.perf_counter() - t
    write_csv(result.identities, out / "identities.csv")
    s = result.summary["seconds"]
    return {
        "records": result.summary["records"],
        "candidate_pairs": result.summary["candidate_pairs"],
        "seconds": {
            "read_standardize": s["read"] + s["standardize"],
            "block": s["block"],
            "compare_predict": s["compare"] + s["score"],
            "train": s["train"],
            "cluster": s["cluster"],
            "other": s["merge"],  # golden records
            "total": total,
        },
        "cluster_stats": result.summary["cluster_stats"],
    }


def _work_splink(args: argparse.Namespace, data: Path, out: Path) -> dict:
    """Read and standardize with linkage, then link with Splink on the standardized columns."""
    from splink_runner import run_splink

    from linkage.config import load_config
    from linkage.io import read_sources, write_csv
    from linkage.standardize.combine import standardize

    t = time.perf_counter()
    config = load_config(data / "run.yaml")
    records = standardize(read_sources(config), config.standardize)
    read_std = time.perf_counter() - t
    identities, s, info = run_splink(
        records,
        threshold=args.threshold,
        u_max_pairs=args.splink_u_pairs,
        seed=args.seed,
        contact=args.splink_contact,
    )
    total = time.perf_counter() - t
    write_csv(identities, out / "identities.csv")
    sizes = identities[schema.IDENTITY_ID].value_counts()
    return {
        "records": len(records),
        "candidate_pairs": info["candidate_pairs"],
        "seconds": {
            "read_standardize": read_std,
            "block": s["block"],
            "compare_predict": s["predict"],
            "train": s["train"],
            "cluster": s["cluster"],
            "other": s["register"],  # loading the tables into DuckDB
            "total": total,
        },
        "cluster_stats": {"clusters": int(len(sizes)), "max_size": int(sizes.max())},
        "prior": info["probability_two_random_records_match"],
        "settings": {"u_max_pairs": args.splink_u_pairs, "contact": args.splink_contact},
    }


def worker(engine: str, args: argparse.Namespace) -> None:
    """Run one engine and write ``workdir/<engine>/identities.csv`` and ``stats.json``."""
    out = args.workdir / engine
    out.mkdir(parents=True, exist_ok=True)
    data = args.workdir / "data"
    if engine == "linkage":
        stats = _work_linkage(data, out, args.threshold)
    else:
        stats = _work_splink(args, data, out)
    stats["engine"] = engine
    stats["peak_rss_mib"] = _peak_rss_mib()
    (out / "stats.json").write_text(json.dumps(stats, indent=2))


# ----------------------------------------------------------------------------- report


def _run_worker(engine: str, args: argparse.Namespace, workdir: Path) -> dict | None:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        engine,
        "--workdir",
        str(workdir),
        "--threshold",
        str(args.threshold),
        "--seed",
        str(args.seed),
        "--splink-u-pairs",
        str(args.splink_u_pairs),
        "--splink-contact",
        args.splink_contact,
    ]
    stats_path = workdir / engine / "stats.json"
    stats_path.unlink(missing_ok=True)
    print(f"running {engine} ...", flush=True)
    t = time.perf_counter()
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0 or not stats_path.exists():
        print(f"{engine}: worker failed with exit code {done.returncode}")
        return None
    print(f"{engine}: finished in {time.perf_counter() - t:.1f}s (process wall time)")
    stats = json.loads(stats_path.read_text())
    truth = workdir / "data" / "truth.csv"
    predicted = workdir / engine / "identities.csv"
    stats["scores"] = evaluate_files(truth, predicted)
    truth_frame = pd.read_csv(truth, dtype=str, keep_default_na=False)
    pred_frame = pd.read_csv(predicted, dtype=str, keep_default_na=False)
    stats["by_tag"] = recall_by_tag(truth_frame, pred_frame).to_dict(orient="records")
    return stats


def format_report(results: dict[str, dict]) -> str:
    """Return the accuracy/time/memory table and the per-corruption recall table as text."""
    head = f"{'engine':<8} {'prec':>6} {'recall':>6} {'F1':>6} {'B3 F1':>6}"
    head += "".join(f" {h:>9}" for h, _ in STAGES) + f" {'peak MiB':>9} {'pairs':>10}"
    lines = [head, "-" * len(head)]
    for engine, r in results.items():
        pw, b3 = r["scores"]["pairwise"], r["scores"]["bcubed"]
        row = f"{engine:<8} {pw['precision']:6.4f} {pw['recall']:6.4f} {pw['f1']:6.4f} {b3['f1']:6.4f}"
        row += "".join(f" {r['seconds'][k]:9.1f}" for _, k in STAGES)
        row += f" {r['peak_rss_mib']:9.0f} {r['candidate_pairs']:10,}"
        lines.append(row)
    lines.append(
        "seconds per stage; read+std = read + standardize (same linkage code, run in each "
        "engine's process, counted in both totals); other = golden records (linkage) or "
        "loading tables into DuckDB (splink)"
    )
    tags = None
    for engine, r in results.items():
        frame = pd.DataFrame(r["by_tag"])
        if frame.empty:
            continue
        frame = frame.set_index("tag")
        if tags is None:
            tags = frame[["records", "true_pairs"]].copy()
        tags[f"recall_{engine}"] = frame["recall"]
    if tags is not None:
        lines += ["", "pairwise recall over true pairs touching a record with each corruption:"]
        lines.append(tags.sort_values("true_pairs", ascending=False).to_string(float_format="%.4f"))
    return "\n".join(lines)


def main() -> None:
    """Parse arguments; as parent generate data and run workers, as worker run one engine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engines", default="linkage,splink", help="comma-separated")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and outputs here")
    parser.add_argument("--threshold", type=float, default=0.9, help="match probability")
    parser.add_argument("--splink-u-pairs", type=float, default=5e6, help="Splink u max_pairs")
    parser.add_argument(
        "--splink-contact",
        choices=("separate", "combined"),
        default="separate",
        help="Splink: phone and current address as two comparisons, or one household contact",
    )
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        worker(args.worker, args)
        return

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engine(s) {unknown}; expected {', '.join(ENGINES)}")
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="linkage-bench-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    prepare_data(workdir, args.persons, args.seed)
    results = {}
    for engine in engines:
        stats = _run_worker(engine, args, workdir)
        if stats is not None:
            results[engine] = stats
    if not results:
        sys.exit(1)
    report = format_report(results)
    (workdir / "report.txt").write_text(report + "\n", encoding="utf-8")
    (workdir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print()
    print(report)
    print(f"\noutputs in {workdir}")


if __name__ == "__main__":
    main()
