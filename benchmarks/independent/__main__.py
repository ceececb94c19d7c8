"""python -m benchmarks.independent --persons N --seed S --output DIR [--corruption F] [--profile P]"""

from __future__ import annotations

import argparse
import sys

from .generate import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.independent",
        description="Independent synthetic police / civil-affairs / health registries with truth.csv.")
    parser.add_argument("--persons", type=int, required=True, help="persons to generate")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", required=True, help="folder for the CSVs, configs and truth")
    parser.add_argument("--corruption", type=float, default=1.0,
                        help="multiplies every corruption rate (2.0 doubles them)")
    parser.add_argument("--profile", choices=["standard", "household-hard"], default="standard")
    parser.add_argument("--chunk-persons", type=int, default=200_000,
                        help="persons per chunk; peak memory grows with it")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    # bad arguments exit 2 (argparse's convention); anything raised later is a defect
    if args.persons <= 0:
        parser.error(f"--persons must be positive, got {args.persons}")
    if args.corruption < 0:
        parser.error(f"--corruption must be >= 0, got {args.corruption}")
    if args.chunk_persons <= 0:
        parser.error(f"--chunk-persons must be positive, got {args.chunk_persons}")
    result = generate(args.persons, args.seed, args.output, args.corruption, args.profile,
                      args.chunk_persons, log=log)
    per = ", ".join(f"{s} {n:,}" for s, n in result.records.items())
    print(f"{result.persons:,} persons -> {result.total_records:,} records ({per}) "
          f"in {result.seconds:.1f} s; {args.output}/run.yaml, {args.output}/truth.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
