"""Accuracy of a run with known truth: P/R/F1, recall per corruption type, and where the missed
true pairs were lost (never blocked, scored low, split by clustering).

Usage:
    python benchmarks/bench_accuracy.py --data DIR [--output OUT] [--patterns 15] [--json F]
    python benchmarks/bench_accuracy.py --synth PERSONS --seed S [--corruption X] --data DIR

DIR holds ``run.yaml`` and ``truth.csv`` (``source, record_id, person_id`` and optionally
``corruptions``, tags joined by ``|``), as written by ``linkage synth`` or by any other
generator with the same layout. ``--synth`` first generates DIR with the project's generator.
The run uses the config in DIR as it is (no tuning).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from linkage import Linker, schema
from linkage.evaluate import evaluate, recall_by_tag

# Missed true pairs scored below this never had real evidence for them (no agreement at all).
NO_EVIDENCE = 0.01


def true_pairs(person_of_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (row_l, row_r) pairs, row_l < row_r, of rows sharing a person; rows without one skip."""
    rows = np.flatnonzero(person_of_row >= 0)
    order = rows[np.argsort(person_of_row[rows], kind="stable")]
    persons = person_of_row[order]
    starts = np.flatnonzero(np.r_[True, persons[1:] != persons[:-1]])
    ends = np.r_[starts[1:], len(order)]
    left, right = [], []
    for size in np.unique(ends - starts):
        if size < 2:
            continue
        groups = np.flatnonzero(ends - starts == size)
        members = order[starts[groups][:, None] + np.arange(size)]
        i, j = np.triu_indices(size, 1)
        left.append(members[:, i].ravel())
        right.append(members[:, j].ravel())
    if not left:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, b = np.concatenate(left), np.concatenate(right)
    return np.minimum(a, b), np.maximum(a, b)


def missed_breakdown(result, truth: pd.DataFrame, threshold: float) -> dict:
    """Classify every true pair the run did not put in one identity, and every false link."""
    records = result.records
    n = len(records)
    key = records[schema.SOURCE].astype(str) + "\x1f" + records[schema.RECORD_ID].astype(str)
    tkey = truth[schema.SOURCE].astype(str) + "\x1f" + truth[schema.RECORD_ID].astype(str)
    person_codes, _ = pd.factorize(truth[schema.PERSON_ID].astype(str))
    person = pd.Series(person_codes, index=tkey.to_numpy()).reindex(key.to_numpy())
    person_of_row = person.fillna(-1).to_numpy(np.int64)
    ident, _ = pd.factorize(result.identities[schema.IDENTITY_ID])
    left, right = true_pairs(person_of_row)
    pair_key = left * n + right

    pairs = result.pairs
    pl, pr = pairs[schema.ROW_L].to_numpy(np.int64), pairs[schema.ROW_R].to_numpy(np.int64)
    cand_key = np.minimum(pl, pr) * n + np.maximum(pl, pr)
    prob = pairs[schema.MATCH_PROBABILITY].to_numpy(float)
    order = np.argsort(cand_key)
    cand_sorted, prob_sorted = cand_key[order], prob[order]
    pos = np.searchsorted(cand_sorted, pair_key)
    pos_ok = np.minimum(pos, len(cand_sorted) - 1)
    blocked = (len(cand_sorted) > 0) & (cand_sorted[pos_ok] == pair_key) if len(pair_key) else \
        np.zeros(0, bool)
    p = np.where(blocked, prob_sorted[pos_ok], np.nan)
    together = ident[left] == ident[right]
    missed = ~together
    reasons = np.full(len(left), "", dtype=object)
    reasons[missed & ~blocked] = "not blocked"
    reasons[missed & blocked & (p < NO_EVIDENCE)] = f"scored < {NO_EVIDENCE}"
    reasons[missed & blocked & (p >= NO_EVIDENCE) & (p < threshold)] = (
        f"scored {NO_EVIDENCE}-{threshold}"
    )
    reasons[missed & blocked & (p >= threshold)] = "split by clustering"
    counts = pd.Series(reasons[missed]).value_counts().to_dict()

    # tags of missed pairs: a pair carries the tags of both its records
    tags = None
    if schema.CORRUPTIONS in truth.columns:
        tag_of_key = pd.Series(truth[schema.CORRUPTIONS].fillna("").astype(str).to_numpy(),
                               index=tkey.to_numpy())
        tag_of_row = tag_of_key.reindex(key.to_numpy()).fillna("").to_numpy(dtype=object)
        rows = []
        for i in np.flatnonzero(missed):
            both = set(str(tag_of_row[left[i]]).split("|")) | set(
                str(tag_of_row[right[i]]).split("|")
            )
            for t in both - {""} or {"(none)"}:
                rows.append((t, reasons[i]))
        if rows:
            tags = (
                pd.DataFrame(rows, columns=["tag", "reason"])
                .value_counts()
                .unstack(fill_value=0)
                .assign(total=lambda d: d.sum(axis=1))
                .sort_values("total", ascending=False)
            )
    # comparison levels of missed, blocked pairs: which agreement patterns lose them
    gamma_cols = [c for c in pairs.columns if c.startswith("gamma_")]
    patterns = None
    if gamma_cols and (missed & blocked).any():
        idx = order[pos_ok[missed & blocked]]
        g = pairs.iloc[idx][gamma_cols].astype(int).astype(str).agg(" ".join, axis=1)
        patterns = (
            pd.DataFrame({"levels": g.to_numpy(), "p": p[missed & blocked]})
            .groupby("levels")["p"]
            .agg(["size", "median"])
            .sort_values("size", ascending=False)
        )
        patterns.index.name = " ".join(c.removeprefix("gamma_") for c in gamma_cols)
    # false links: pairs put together that belong to different persons, by score
    false = {}
    same_ident = ident[pl] == ident[pr]
    wrong = same_ident & (person_of_row[pl] != person_of_row[pr])
    false["candidate pairs linked wrongly"] = int(wrong.sum())
    false["of them scored >= threshold"] = int((wrong & (prob >= threshold)).sum())
    false_patterns = None
    if gamma_cols and wrong.any():
        g = pairs.loc[wrong, gamma_cols].astype(int).astype(str).agg(" ".join, axis=1)
        false_patterns = (
            pd.DataFrame({"levels": g.to_numpy(), "p": prob[wrong]})
            .groupby("levels")["p"]
            .agg(["size", "median"])
            .sort_values("size", ascending=False)
        )
        false_patterns.index.name = " ".join(c.removeprefix("gamma_") for c in gamma_cols)
    return {
        "true_pairs": int(len(left)),
        "missed": int(missed.sum()),
        "missed_by_reason": counts,
        "missed_by_tag": tags,
        "missed_patterns": patterns,
        "false": false,
        "false_patterns": false_patterns,
    }


def report(data: Path, output: Path | None, n_patterns: int) -> dict:
    """Run DIR/run.yaml and print the accuracy report; return the figures."""
    linker = Linker.from_yaml(data / "run.yaml")
    started = time.perf_counter()
    result = linker.run()
    seconds = time.perf_counter() - started
    if output is not None:
        linker.write(output)
    truth = pd.read_csv(data / "truth.csv", dtype=str, keep_default_na=False)
    scores = evaluate(truth, result.identities)
    threshold = linker.config.clustering.threshold
    pw = scores["pairwise"]
    print(f"{data}: {len(result.records):,} records, {result.summary['candidate_pairs']:,} "
          f"candidate pairs, {seconds:.0f} s")
    print(f"pairwise  P {pw['precision']:.4f}  R {pw['recall']:.4f}  F1 {pw['f1']:.4f}")
    bc = scores["bcubed"]
    print(f"B-cubed   P {bc['precision']:.4f}  R {bc['recall']:.4f}  F1 {bc['f1']:.4f}")
    by_tag = None
    if schema.CORRUPTIONS in truth.columns:
        by_tag = recall_by_tag(truth, result.identities)
        print("\nrecall per corruption type (true pairs touching a tagged record):")
        print(by_tag.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    missed = missed_breakdown(result, truth, threshold)
    print(f"\nmissed true pairs: {missed['missed']:,} of {missed['true_pairs']:,}")
    for reason, count in sorted(missed["missed_by_reason"].items()):
        print(f"  {reason:<22} {count:>8,}")
    if missed["missed_by_tag"] is not None:
        print("\nmissed pairs by tag and reason:")
        print(missed["missed_by_tag"].to_string())
    if missed["missed_patterns"] is not None:
        print(f"\ncommonest comparison levels of missed, blocked pairs (top {n_patterns}):")
        print(missed["missed_patterns"].head(n_patterns).to_string(float_format=lambda x: f"{x:.3g}"))
    print(f"\nfalse links: {missed['false']}")
    if missed["false_patterns"] is not None:
        print(f"commonest comparison levels of wrongly linked pairs (top {n_patterns}):")
        print(missed["false_patterns"].head(n_patterns).to_string(float_format=lambda x: f"{x:.3g}"))
    return {
        "data": str(data),
        "records": len(result.records),
        "pairwise": pw,
        "bcubed": bc,
        "recall_by_tag": None if by_tag is None else by_tag.to_dict(orient="records"),
        "missed_by_reason": missed["missed_by_reason"],
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with run.yaml, truth.csv")
    parser.add_argument("--synth", type=int, help="first generate DIR with the project's generator")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corruption", type=float, default=1.0)
    parser.add_argument("--output", type=Path, help="also write the run's outputs here")
    parser.add_argument("--patterns", type=int, default=15)
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    if args.synth:
        from linkage.synth import generate

        generate(args.synth, seed=args.seed, corruption=args.corruption, output=args.data)
    if not (args.data / "run.yaml").is_file() or not (args.data / "truth.csv").is_file():
        print(f"error: {args.data} needs run.yaml and truth.csv", file=sys.stderr)
        return 2
    figures = report(args.data, args.output, args.patterns)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
