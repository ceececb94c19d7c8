"""Why did a run merge different persons? Classify false merges by household relation.

    python -m benchmarks.independent.explain --data DIR --pred OUT/identities.csv

reads DIR/truth.csv and DIR/persons.csv (written by the generator) and prints, for every
pair of distinct persons that the run put into one identity, how they are related:
twins, siblings with near-identical names, other siblings, parent and child, spouses,
other household members, or strangers (same name / different name).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter
from pathlib import Path

import pandas as pd


def relation(a: pd.Series, b: pd.Series) -> str:
    """The household relation of two persons (rows of persons.csv)."""
    if a.household_id != b.household_id:
        return "strangers, same name" if a["name"] == b["name"] else "strangers"
    roles = {a.role, b.role}
    if roles == {"child"}:
        if a.twin == "1" and b.twin == "1" and a.birth_date == b.birth_date:
            return "twins"
        if "1" in (a.cloned_name, b.cloned_name):
            return "siblings, near-identical names"
        return "siblings"
    if "child" in roles and roles & {"head", "spouse"}:
        return "parent and child"
    if roles == {"head", "spouse"}:
        return "spouses"
    return "other household members"


def false_merges(data: Path, pred: Path) -> tuple[Counter, Counter]:
    """Return (relation -> distinct person pairs, corruption code -> records in false merges)."""
    truth = pd.read_csv(data / "truth.csv", dtype=str, keep_default_na=False)
    persons = pd.read_csv(data / "persons.csv", dtype=str, keep_default_na=False).set_index(
        "person_id")
    ids = pd.read_csv(pred, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    joined = truth.merge(ids, on=["source", "record_id"], how="left")
    relations: Counter = Counter()
    codes: Counter = Counter()
    for _, cluster in joined.groupby("identity_id"):
        people = sorted(set(cluster.person_id))
        if len(people) < 2:
            continue
        for p, q in itertools.combinations(people, 2):
            relations[relation(persons.loc[p], persons.loc[q])] += 1
        for c in cluster.corruptions:
            codes.update(x for x in c.split("|") if x)
    return relations, codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.independent.explain")
    parser.add_argument("--data", required=True, type=Path, help="generated folder (truth.csv, persons.csv)")
    parser.add_argument("--pred", required=True, type=Path, help="identities.csv of a run")
    args = parser.parse_args(argv)
    for path in (args.data / "truth.csv", args.data / "persons.csv", args.pred):
        if not path.exists():
            print(f"error: {path} not found", file=sys.stderr)
            return 2
    relations, codes = false_merges(args.data, args.pred)
    print(f"distinct person pairs merged wrongly: {sum(relations.values())}")
    for rel, n in relations.most_common():
        print(f"  {rel:32s} {n}")
    print("corruption codes on records in wrongly merged identities:")
    for code, n in codes.most_common(12):
        print(f"  {code:32s} {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
