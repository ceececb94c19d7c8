"""Scale benchmark: `linkage run` on independent registries of growing size.

    python -m benchmarks.bench_scale                      # 0.3, 1 and 3 M records
    python -m benchmarks.bench_scale --sizes 0.3 1        # chosen sizes (millions of records)
    python -m benchmarks.bench_scale --large              # adds 10 and 20 M

For each size it generates registries with national name frequencies
(``python -m benchmarks.independent``, ~1.75 records per person; reused when the folder
already holds them), runs ``linkage run`` under ``/usr/bin/time -v`` (peak RSS of the
process), then ``linkage evaluate``, and prints one table: per-stage seconds from the
run's summary.json, candidate pairs per rule, peak RSS, pairwise precision / recall / F1
and the recall of true pairs among the candidate pairs (blocking recall).

Blocking recall needs every candidate pair in pairs.parquet, so the run's config is
copied with ``output.pairs_min_probability: 0`` (``--floor`` changes it; with a floor
above 0 the recall column shows "—"); writing all pairs adds to the ``write`` seconds, not
to any stage's, and keeps every scored pair in the run's memory.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import yaml

RECORDS_PER_PERSON = 1.75
DEFAULT_SIZES = (0.3, 1.0, 3.0)
LARGE_SIZES = (10.0, 20.0)


def _generate(folder: Path, records: float, seed: int) -> float:
    """Generate registries of about ``records`` million records; return seconds (0 if reused)."""
    if (folder / "run.yaml").exists() and (folder / "truth.csv").exists():
        return 0.0
    persons = int(records * 1e6 / RECORDS_PER_PERSON)
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "benchmarks.independent", "--persons", str(persons),
         "--seed", str(seed), "--output", str(folder), "--quiet"],
        check=True,
    )
    return time.perf_counter() - t


def _config(folder: Path, floor: float, extra: dict | None) -> Path:
    """Copy run.yaml with the pairs floor (and any extra settings) changed."""
    config = yaml.safe_load((folder / "run.yaml").read_text(encoding="utf-8"))
    config.setdefault("output", {})["pairs_min_probability"] = floor
    for section, values in (extra or {}).items():
        config.setdefault(section, {}).update(values)
    path = folder / "bench_run.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def _time_v(stderr: str) -> dict[str, float]:
    """Peak RSS (GB) and wall seconds from GNU time -v's report."""
    out: dict[str, float] = {}
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    if rss:
        out["peak_rss_gb"] = int(rss.group(1)) / 1024**2
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", stderr)
    if wall:
        secs = 0.0
        for part in wall.group(1).split(":"):
            secs = secs * 60 + float(part)
        out["wall_s"] = secs
    return out


def _true_pairs(truth: pd.DataFrame) -> int:
    sizes = truth.groupby("person_id").size()
    return int((sizes * (sizes - 1) // 2).sum())


def candidate_recall(truth_csv: Path, pairs_parquet: Path) -> tuple[int, int, float]:
    """(true pairs among the candidates, true pairs, recall) from truth.csv and pairs.parquet."""
    truth = pd.read_csv(truth_csv, dtype=str, usecols=["source", "record_id", "person_id"])
    person = dict(zip(zip(truth["source"], truth["record_id"]), truth["person_id"], strict=True))
    total = _true_pairs(truth)
    found = 0
    table = pq.ParquetFile(pairs_parquet)
    cols = ["source_l", "record_id_l", "source_r", "record_id_r"]
    for batch in table.iter_batches(columns=cols, batch_size=1_000_000):
        frame = batch.to_pandas()
        left = [person.get(k) for k in zip(frame["source_l"], frame["record_id_l"])]
        right = [person.get(k) for k in zip(frame["source_r"], frame["record_id_r"])]
        found += sum(1 for a, b in zip(left, right, strict=True) if a is not None and a == b)
    return found, total, (found / total if total else 1.0)


def _evaluate(truth_csv: Path, identities: Path) -> dict[str, float]:
    """Pairwise precision, recall, F1 (what ``linkage evaluate`` prints)."""
    from linkage.evaluate import evaluate_files

    pairwise = evaluate_files(truth_csv, identities)["pairwise"]
    return {k: float(pairwise[k]) for k in ("precision", "recall", "f1")}


def run_size(records: float, workdir: Path, seed: int, floor: float, extra: dict | None,
             keep: bool) -> dict:
    """Generate, run, evaluate one size; return its row of figures."""
    folder = workdir / f"ind-{records:g}M"
    gen_s = _generate(folder, records, seed)
    config = _config(folder, floor, extra)
    out = folder / "out"
    if out.exists():
        shutil.rmtree(out)
    time_bin = shutil.which("time") or "/usr/bin/time"
    proc = subprocess.run(
        [time_bin, "-v", sys.executable, "-m", "linkage.cli", "run", str(config),
         "--output", str(out), "--quiet"],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"linkage run failed at {records:g} M (exit {proc.returncode}):\n"
                         + proc.stderr[-3000:])
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    row = {"size_M": records, "records": summary["records"], "generate_s": round(gen_s, 1),
           **_time_v(proc.stderr), "candidate_pairs": summary["candidate_pairs"],
           "pairs_per_rule": summary["pairs_per_rule"], "seconds": summary["seconds"]}
    if "blocking" in summary:
        row["blocking"] = summary["blocking"]
    row.update(_evaluate(folder / "truth.csv", out / "identities.csv"))
    if floor == 0:  # pairs.parquet holds every candidate only without a floor
        found, total, recall = candidate_recall(folder / "truth.csv", out / "pairs.parquet")
        row.update({"true_pairs": total, "true_pairs_in_candidates": found,
                    "candidate_recall": recall})
    if not keep:
        shutil.rmtree(out)
    return row


def format_rows(rows: list[dict]) -> str:
    """The benchmark table (markdown) and pairs per rule below it."""
    stages = list(dict.fromkeys(s for r in rows for s in r["seconds"]))
    head = ["records", "pairs", "wall s", "peak RSS GB", "P", "R", "F1", "cand. recall",
            " / ".join(stages) + " (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            f"{r['records']:,}", f"{r['candidate_pairs'] / 1e6:.1f} M",
            f"{r.get('wall_s', float('nan')):.0f}", f"{r.get('peak_rss_gb', float('nan')):.1f}",
            f"{r.get('precision', float('nan')):.4f}", f"{r.get('recall', float('nan')):.4f}",
            f"{r.get('f1', float('nan')):.4f}",
            f"{r['candidate_recall']:.4f}" if "candidate_recall" in r else "—",
            " / ".join(f"{r['seconds'].get(s, 0):.0f}" for s in stages),
        ]) + " |")
    lines.append("")
    rules = list(dict.fromkeys(k for r in rows for k in r["pairs_per_rule"]))
    lines.append("| rule | " + " | ".join(f"{r['records']:,}" for r in rows) + " |")
    lines.append("|---|" + "---|" * len(rows))
    for rule in rules:
        lines.append(f"| {rule} | "
                     + " | ".join(f"{r['pairs_per_rule'].get(rule, 0):,}" for r in rows) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=list(DEFAULT_SIZES),
                        help="millions of records (default 0.3 1 3)")
    parser.add_argument("--large", action="store_true", help="also 10 and 20 M records")
    parser.add_argument("--workdir", type=Path, default=Path("bench-scale"),
                        help="folder for generated registries and run outputs (reused)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--floor", type=float, default=0.0,
                        help="output.pairs_min_probability for the run (0 = every candidate, "
                             "needed for blocking recall)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a run setting, e.g. blocking.max_block_size=2000")
    parser.add_argument("--keep", action="store_true", help="keep each run's output folder")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    extra: dict = {}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not (section and name and value):
            parser.error(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        extra.setdefault(section, {})[name] = yaml.safe_load(value)
    sizes = list(args.sizes) + (list(LARGE_SIZES) if args.large else [])
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in sizes:
        rows.append(run_size(size, args.workdir, args.seed, args.floor, extra, args.keep))
        print(f"{size:g} M done: {json.dumps(rows[-1], ensure_ascii=False)}", file=sys.stderr,
              flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
