"""Write the shipped reference model, ``linkage/data/reference_model.json``.

A run whose training sessions all have too few pairs (a pilot of a few dozen records) takes
the m and u of each default comparison from this model (``training.settle_weak_fit``). It is
the model the default config fits on the independent benchmark registries (50,000 persons,
about 87,000 records, names drawn from national frequencies), so its u are population
figures and its m come from thousands of near-certain matches.

Usage:
    python -m benchmarks.reference_model [--persons 50000] [--seed 7] [--output PATH]

Rerun it whenever a default comparison gains, loses or renames a level: a test checks that
the shipped model's comparisons are the defaults' (tests/test_training_reference.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks.independent.generate import generate
from linkage import Linker
from linkage.training import REFERENCE_MODEL_PATH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=REFERENCE_MODEL_PATH)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        registries = generate(args.persons, args.seed, tmp)
        result = Linker.from_yaml(Path(tmp) / "run.yaml").run()
    model = result.model
    if getattr(model, "weak_fit_", False):
        print("the reference run's own fit is weak: use more persons", file=sys.stderr)
        return 1
    model.save(args.output)  # atomic
    print(
        f"{registries.total_records:,} records, {len(result.pairs):,} kept pairs: "
        f"wrote {args.output} ({', '.join(model.comparisons)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
