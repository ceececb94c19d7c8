"""How many of the identities flagged by ``review.suspect_clusters`` truly mix persons.

Generates registries (with truth), runs the batch merge and, for the strong signals alone
and with the weak ones (``include_weak``), prints how many identities are flagged, how many of
those hold records of two or more true persons (precision) and how many of all such wrong
identities are flagged (recall).

    python benchmarks/bench_suspects.py --persons 10000 --seeds 1,2
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from linkage import Linker, review, schema, synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=10_000)
    parser.add_argument("--seeds", default="1,2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    totals = {"strong": [0, 0], "strong+weak": [0, 0]}
    wrong_total = 0
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            demo = synth.generate(args.persons, seed=seed, output=Path(tmp))
            result = Linker.from_yaml(demo.paths["config"]).run()
        per = result.identities.merge(demo.truth, on=[schema.SOURCE, schema.RECORD_ID])
        persons = per.groupby(schema.IDENTITY_ID)[schema.PERSON_ID].nunique()
        wrong = set(persons[persons > 1].index)
        wrong_total += len(wrong)
        line = [f"seed {seed}: {result.identities[schema.IDENTITY_ID].nunique():,} identities,"
                f" {len(wrong)} mix persons"]  # fmt: skip
        for name, weak in (("strong", False), ("strong+weak", True)):
            flagged = review.suspect_clusters(
                result.pairs, result.records, result.identities, result.golden,
                comparisons=result.comparisons, include_weak=weak,
            )  # fmt: skip
            hit = int(flagged[schema.IDENTITY_ID].isin(wrong).sum())
            totals[name][0] += len(flagged)
            totals[name][1] += hit
            line.append(f"{name}: {hit} of {len(flagged)} flagged are wrong")
        print("; ".join(line))
    for name, (flagged, hit) in totals.items():
        precision = hit / flagged if flagged else float("nan")
        print(f"{name:12s} flagged {flagged:5d}  wrong among them {hit:3d}  "
              f"precision {precision:.2f}  recall {hit / max(wrong_total, 1):.2f} "
              f"(of {wrong_total} wrong identities)")  # fmt: skip


if __name__ == "__main__":
    main()
