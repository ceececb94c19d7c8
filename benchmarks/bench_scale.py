"""Scale benchmark: `linkage run` on independent registries of growing size.

    python -m benchmarks.bench_scale                      # 0.3, 1 and 3 M records
    python -m benchmarks.bench_scale --sizes 0.3 1        # chosen sizes (millions of records)
    python -m benchmarks.bench_scale --large              # adds 10 and 20 M
    python -m benchmarks.bench_scale --blocking-only      # blocking alone: pairs and recall
    python -m benchmarks.bench_scale --registries R --workdir W   # registries in R, runs in W

For each size it generates registries with national name frequencies
(``python -m benchmarks.independent``, ~1.75 records per person; reused when the folder
already holds them), runs ``linkage run`` under ``/usr/bin/time -v`` (peak RSS of the
largest single process), then ``linkage evaluate``, and prints one table: per-stage
seconds from the run's summary.json, candidate pairs per rule, peak RSS, the peak of the
run's process and its worker processes together (summary.json's ``peak_total_mb``: what
the machine gave the run), pairwise precision / recall / F1 and the recall of true pairs
among the candidate pairs (blocking recall), and below it the peak of each stage, the
run's process alone (``peak_rss_mb``) and with its workers, which says where the peak is,
and the CPU seconds of each stage (``cpu_seconds``: the run's processes together) with
the cores it kept busy (``cores_busy``: CPU over the stage's wall time), which says where
the second core idles.

Blocking recall needs every candidate pair in pairs.parquet, so the run's config is
copied with ``output.pairs_min_probability: 0`` (``--floor`` changes it; with a floor
above 0 the recall column shows "—"); writing all pairs adds to the ``write`` seconds, not
to any stage's, and keeps every scored pair in the run's memory.

``--blocking-only`` reads and standardizes one source at a time (keeping only the
columns blocking reads), runs the library's ``block`` and prints, per size, candidate
pairs, pairs per record, the recall of true pairs among the candidates and per rule the
predicted pairs, the pairs credited to it (first rule that finds a pair) and, with
``--unique``, the true pairs each rule finds alone and those no other rule finds, without
comparing, scoring or clustering. ``--against OLD.yaml`` blocks once more with another
blocking section (old rules, a trial) and counts the true pairs only one of the two finds,
writing their records beside the run: what a change of rules gains and loses, pair by pair.
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

import numpy as np
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


def _config(folder: Path, run_dir: Path, floor: float, extra: dict | None) -> Path:
    """Copy ``folder``'s run.yaml into ``run_dir`` with the pairs floor (and any extra
    settings) changed; the sources' files keep pointing into ``folder`` (absolute paths), so
    the registries' folder is only read."""
    config = yaml.safe_load((folder / "run.yaml").read_text(encoding="utf-8"))
    for entry in (config.get("sources") or {}).values():
        for key in ("path", "include"):
            if isinstance(entry, dict) and key in entry:
                entry[key] = str((folder / str(entry[key])).absolute())
    config.setdefault("output", {})["pairs_min_probability"] = floor
    for section, values in (extra or {}).items():
        config.setdefault(section, {}).update(values)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "bench_run.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def _time_v(stderr: str) -> dict[str, float]:
    """Peak RSS (GB), CPU seconds (user + system) and wall seconds from GNU time -v's report."""
    out: dict[str, float] = {}
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    if rss:
        out["peak_rss_gb"] = int(rss.group(1)) / 1024**2
    cpu = re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", stderr)
    if cpu:
        out["cpu_s"] = sum(float(x) for x in cpu)
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
             keep: bool, registries: Path | None = None) -> dict:
    """Generate, run, evaluate one size; return its row of figures.

    Registries live in ``(registries or workdir)/ind-<size>M`` (generated when missing);
    the run's config and outputs in ``workdir/run-<size>M``.
    """
    folder = (registries or workdir) / f"ind-{records:g}M"
    run_dir = workdir / f"run-{records:g}M"
    gen_s = _generate(folder, records, seed)
    config = _config(folder, run_dir, floor, extra)
    out = run_dir / "out"
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
    # per stage, Linux: peak alone and with workers; CPU seconds of all the run's processes
    for key in ("peak_rss_mb", "peak_total_mb", "cpu_seconds", "cores_busy"):
        if key in summary:
            row[key] = summary[key]
    row.update(_evaluate(folder / "truth.csv", out / "identities.csv"))
    if floor == 0:  # pairs.parquet holds every candidate only without a floor
        found, total, recall = candidate_recall(folder / "truth.csv", out / "pairs.parquet")
        row.update({"true_pairs": total, "true_pairs_in_candidates": found,
                    "candidate_recall": recall})
    if not keep:
        shutil.rmtree(out)
    return row


# ----------------------------------------------------------------------------- blocking only


def _blocking_columns(settings) -> list[str]:
    """Standardized columns the blocking rules and refinement keys read."""
    from linkage import schema
    from linkage.blocking import DERIVED_KEYS

    keys = [k for rule in settings.rules for k in rule.keys] + settings.all_refine_keys()
    cols = [schema.ROW, schema.SOURCE, schema.RECORD_ID]
    for key in keys:
        cols += list(DERIVED_KEYS[key][0]) if key in DERIVED_KEYS else [key]
    return list(dict.fromkeys(cols))


def _blocking_records(config, run_dir: Path, reuse: bool,
                      also=None) -> tuple[pd.DataFrame, float, float]:
    """Standardized records, only the columns blocking reads; (records, wall s, CPU s).

    One source at a time, in the canonical (source, record_id) order ``read_records``
    gives, so the peak memory is that of the largest source. ``reuse`` reads the columns
    an earlier call saved in ``run_dir`` (the standardization code must be unchanged).
    """
    from linkage import schema
    from linkage.io import read_records

    cache = run_dir / "blocking_records.parquet"
    cols = _blocking_columns(config.blocking)
    if also is not None:  # a second blocking section's columns too (``--against``)
        cols = list(dict.fromkeys(cols + _blocking_columns(also)))
    if reuse and cache.exists():
        saved = pd.read_parquet(cache)
        if all(c in saved.columns for c in cols if c != schema.ROW):
            return saved, 0.0, 0.0
    t, cpu = time.perf_counter(), time.process_time()
    parts = []
    for name in sorted(config.sources):
        one = config.model_copy(update={"sources": {name: config.sources[name]}})
        std = read_records(one)
        parts.append(std[[c for c in cols if c in std.columns]].copy())
        del std
    records = pd.concat(parts, ignore_index=True)
    records[schema.ROW] = range(len(records))
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    out = records.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].astype("string")
    out.to_parquet(cache.with_suffix(".tmp"), index=False)
    cache.with_suffix(".tmp").replace(cache)
    return records, wall, cpu


def _persons(records: pd.DataFrame, truth_csv: Path) -> tuple[np.ndarray, int]:
    """Per ``rid`` the code of its true person (-1 if truth lacks it) and the true pairs."""
    from linkage import schema

    truth = pd.read_csv(truth_csv, dtype=str, usecols=["source", "record_id", "person_id"])
    keys = pd.DataFrame({"source": records[schema.SOURCE].astype(str).to_numpy(),
                         "record_id": records[schema.RECORD_ID].astype(str).to_numpy()})
    truth["person"] = pd.factorize(truth["person_id"])[0]
    person = keys.merge(truth[["source", "record_id", "person"]], how="left",
                        on=["source", "record_id"])["person"]
    return person.fillna(-1).to_numpy(np.int64), _true_pairs(truth)


def _true_keys(pairs: pd.DataFrame, person: np.ndarray, n: int) -> np.ndarray:
    """``rid_l * n + rid_r`` of the candidate pairs that are true pairs."""
    from linkage import schema

    left = pairs[schema.ROW_L].to_numpy(np.int64)
    right = pairs[schema.ROW_R].to_numpy(np.int64)
    same = (person[left] == person[right]) & (person[left] >= 0)
    return left[same] * n + right[same]


def _baseline(against: Path):
    """The blocking section of the YAML file ``against`` (a run config, or a file holding
    ``blocking:`` alone) as ``BlockingSettings``."""
    from linkage.config import BlockingSettings

    data = yaml.safe_load(against.read_text(encoding="utf-8")) or {}
    return BlockingSettings.model_validate(data.get("blocking") or {})


def _against(table: pd.DataFrame, found: np.ndarray, against: Path, baseline,
             person: np.ndarray, run_dir: Path) -> dict:
    """The true pairs of ``table`` found by the run's blocking (``found``, ``_true_keys``)
    against those found by ``baseline`` (the blocking section of the file ``against``):
    counts, and the records of each pair only one side finds in
    ``run_dir/true_pairs_only_against.csv`` (column ``pair`` ties two rows, ``found_by``
    names the side: ``against`` or ``this``)."""
    from linkage.blocking import block

    pairs = block(table, baseline)
    n = len(table)
    theirs = _true_keys(pairs, person, n)
    out = {"file": str(against), "candidate_pairs": len(pairs),
           "true_pairs_in_candidates": len(theirs)}
    del pairs
    only = {"against": np.setdiff1d(theirs, found), "this": np.setdiff1d(found, theirs)}
    out["only_against"], out["only_this"] = len(only["against"]), len(only["this"])
    rows = []
    for side, keys in only.items():
        for left, right in zip(keys // n, keys % n, strict=True):
            rows.append(table.iloc[[left, right]].assign(pair=f"{left}-{right}", found_by=side))
    if rows:
        path = run_dir / "true_pairs_only_against.csv"
        pd.concat(rows).to_csv(path, index=False)
        out["pairs_file"] = str(path)
    return out


def blocking_size(records: float, workdir: Path, seed: int, extra: dict | None, reuse: bool,
                  unique: bool, registries: Path | None = None,
                  against: Path | None = None) -> dict:
    """Blocking alone on one size: pairs, pairs per rule, candidate recall (and unique true
    pairs per rule with ``unique``; the true pairs only this run's rules or only the blocking
    section in ``against`` find, :func:`_against`); folders as in :func:`run_size`."""
    import resource

    from linkage import schema
    from linkage.blocking import block
    from linkage.config import load_config

    folder = (registries or workdir) / f"ind-{records:g}M"
    run_dir = workdir / f"run-{records:g}M"
    _generate(folder, records, seed)
    config = load_config(_config(folder, run_dir, 0.0, extra))
    baseline = _baseline(against) if against is not None else None
    table, std_s, std_cpu = _blocking_records(config, run_dir, reuse, baseline)
    n = len(table)
    person, total = _persons(table, folder / "truth.csv")
    settings = config.blocking
    report: list[dict] = []
    t, cpu = time.perf_counter(), time.process_time()
    pairs = block(table, settings, report=report)
    block_s, block_cpu = time.perf_counter() - t, time.process_time() - cpu
    found_keys = _true_keys(pairs, person, n)
    found = len(found_keys)
    credited = pairs[schema.RULE].value_counts()
    rules = {r["rule"]: {"predicted": int(r["pairs"]), "credited": int(credited.get(r["rule"], 0)),
                         "largest_block": int(r["largest_block"]),
                         "blocks_refined": int(r["blocks_refined"]),
                         "refined_by": r["refined_by"]} for r in report}
    row = {"size_M": records, "records": n, "candidate_pairs": len(pairs),
           "pairs_per_record": len(pairs) / n, "true_pairs": total,
           "true_pairs_in_candidates": found, "candidate_recall": found / total if total else 1.0,
           "standardize_s": round(std_s, 1), "standardize_cpu_s": round(std_cpu, 1),
           "block_s": round(block_s, 1), "block_cpu_s": round(block_cpu, 1), "rules": rules}
    del pairs
    if against is not None:
        row["against"] = _against(table, found_keys, against, baseline, person, run_dir)
    del found_keys
    if unique:
        per_rule = []
        for rule in settings.rules:
            alone = block(table, settings.model_copy(update={"rules": [rule]}))
            per_rule.append(_true_keys(alone, person, n))
            del alone
        keys, counts = np.unique(np.concatenate(per_rule), return_counts=True)
        once = keys[counts == 1]
        for rule, found_by in zip(settings.rules, per_rule, strict=True):
            rules[rule.name]["true_alone"] = len(found_by)
            rules[rule.name]["true_only_this_rule"] = int(np.isin(found_by, once).sum())
    row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return row


def format_blocking(rows: list[dict]) -> str:
    """The blocking-only tables (markdown): totals per size, then per rule."""
    lines = ["| records | pairs | pairs / record | cand. recall | true pairs missed "
             "| block s (CPU s) | peak RSS GB |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['records']:,} | {r['candidate_pairs']:,} | {r['pairs_per_record']:.2f} "
            f"| {r['candidate_recall']:.5f} | {r['true_pairs'] - r['true_pairs_in_candidates']:,} "
            f"| {r['block_s']:.0f} ({r['block_cpu_s']:.0f}) | {r['peak_rss_gb']:.1f} |")
    lines.append("")
    for r in rows:
        if "against" in r:
            a = r["against"]
            lines.append(
                f"{r['records']:,} records, against {a['file']}: {a['candidate_pairs']:,} "
                f"pairs, {a['true_pairs_in_candidates']:,} true pairs among them; true pairs "
                f"only it finds {a['only_against']:,}, only this run's rules "
                f"{a['only_this']:,}" + (f" ({a['pairs_file']})" if "pairs_file" in a else ""))
            lines.append("")
    names = list(dict.fromkeys(k for r in rows for k in r["rules"]))
    head = " | ".join(f"{r['records']:,}: predicted / credited / true alone / only this rule"
                      for r in rows)
    lines += [f"| rule | {head} |", "|---|" + "---|" * len(rows)]
    for name in names:
        cells = []
        for r in rows:
            x = r["rules"].get(name, {})
            cells.append(" / ".join(f"{x[k]:,}" if k in x else "-" for k in
                                    ("predicted", "credited", "true_alone",
                                     "true_only_this_rule")))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_rows(rows: list[dict]) -> str:
    """The benchmark table (markdown) and pairs per rule below it."""
    stages = list(dict.fromkeys(s for r in rows for s in r["seconds"]))
    head = ["records", "pairs", "wall s", "CPU s", "peak RSS GB", "with workers GB", "P", "R",
            "F1", "cand. recall", " / ".join(stages) + " (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            f"{r['records']:,}", f"{r['candidate_pairs'] / 1e6:.1f} M",
            f"{r.get('wall_s', float('nan')):.0f}", f"{r.get('cpu_s', float('nan')):.0f}",
            f"{r.get('peak_rss_gb', float('nan')):.1f}",
            f"{max(r['peak_total_mb'].values()) / 1024:.1f}" if r.get("peak_total_mb") else "—",
            f"{r.get('precision', float('nan')):.4f}", f"{r.get('recall', float('nan')):.4f}",
            f"{r.get('f1', float('nan')):.4f}",
            f"{r['candidate_recall']:.4f}" if "candidate_recall" in r else "—",
            " / ".join(f"{r['seconds'].get(s, 0):.0f}" for s in stages),
        ]) + " |")
    lines.append("")
    mem_stages = list(dict.fromkeys(s for r in rows for s in r.get("peak_rss_mb", {})))
    if mem_stages:
        lines.append("| records | peak per stage (GB): " + " / ".join(mem_stages) + " |")
        lines.append("|---|---|")
        for r in rows:
            for key, what in (("peak_rss_mb", "run's process"), ("peak_total_mb", "with workers")):
                mb = r.get(key, {})
                if mb:
                    cells = " / ".join(f"{mb[s] / 1024:.2f}" if s in mb else "—"
                                       for s in mem_stages)
                    lines.append(f"| {r['records']:,} ({what}) | {cells} |")
        lines.append("")
    cpu_stages = list(dict.fromkeys(s for r in rows for s in r.get("cpu_seconds", {})))
    if cpu_stages:
        # CPU over the stage's wall time: how many of the machine's cores the stage used
        lines.append("| records | CPU s per stage (cores busy): " + " / ".join(cpu_stages) + " |")
        lines.append("|---|---|")
        for r in rows:
            cpu, cores = r.get("cpu_seconds", {}), r.get("cores_busy", {})
            cells = " / ".join(
                (f"{cpu[s]:.0f}" + (f" ({cores[s]:.1f})" if cores.get(s) is not None else ""))
                if s in cpu else "—"
                for s in cpu_stages
            )
            lines.append(f"| {r['records']:,} | {cells} |")
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
                        help="folder for run outputs (run-<size>M) and, without --registries, "
                             "the generated registries (ind-<size>M, reused)")
    parser.add_argument("--registries", type=Path,
                        help="folder holding (or to receive) the registries ind-<size>M; only "
                             "read once they exist")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--floor", type=float, default=0.0,
                        help="output.pairs_min_probability for the run (0 = every candidate, "
                             "needed for blocking recall)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a run setting, e.g. blocking.max_block_size=2000")
    parser.add_argument("--keep", action="store_true", help="keep each run's output folder")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--blocking-only", action="store_true",
                        help="standardize and block only: pairs per rule, pairs per record and "
                             "candidate recall, no compare / score / cluster")
    parser.add_argument("--unique", action="store_true",
                        help="with --blocking-only: true pairs each rule finds alone and those "
                             "no other rule finds (one more blocking pass per rule)")
    parser.add_argument("--against", type=Path, metavar="YAML",
                        help="with --blocking-only: also block with the blocking section of "
                             "this file (a run config, or blocking: alone) and count the true "
                             "pairs only one of the two finds; their records go to "
                             "run-<size>M/true_pairs_only_against.csv")
    parser.add_argument("--reuse-records", action="store_true",
                        help="with --blocking-only: reuse the standardized columns an earlier "
                             "run saved in the size's folder (standardization unchanged)")
    args = parser.parse_args(argv)
    extra: dict = {}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not (section and name and value):
            parser.error(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        extra.setdefault(section, {})[name] = yaml.safe_load(value)
    if args.against is not None and not (args.blocking_only and args.against.is_file()):
        parser.error("--against needs --blocking-only and an existing YAML file"
                     f" (got {args.against})")
    sizes = list(args.sizes) + (list(LARGE_SIZES) if args.large else [])
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.blocking_only:
        for size in sizes:
            rows.append(blocking_size(size, args.workdir, args.seed, extra, args.reuse_records,
                                      args.unique, registries=args.registries,
                                      against=args.against))
            print(f"{size:g} M done: {json.dumps(rows[-1], ensure_ascii=False)}",
                  file=sys.stderr, flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, ensure_ascii=False, indent=2),
                                     encoding="utf-8")
        print(format_blocking(rows))
        return 0
    for size in sizes:
        rows.append(run_size(size, args.workdir, args.seed, args.floor, extra, args.keep,
                             registries=args.registries))
        print(f"{size:g} M done: {json.dumps(rows[-1], ensure_ascii=False)}", file=sys.stderr,
              flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
