"""Synthetic police, civil-affairs and health registries with ground truth, for tests and demos.

Pure given a seed; imports only the schema, errors and its own submodules, never a stage.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from linkage.errors import InputError
from linkage.synth.corrupt import CORRUPTION_CODES, DEFAULT_RATES, SOURCES
from linkage.synth.population import REFERENCE_DATE, generate_population
from linkage.synth.registries import (
    build_records,
    corrupt_records,
    format_registry,
    truth_table,
    write_configs,
    write_csv,
    write_xlsx,
)

__all__ = [
    "CORRUPTION_CODES",
    "DEFAULT_RATES",
    "REFERENCE_DATE",
    "SynthResult",
    "generate",
    "write_configs",
]

logger = logging.getLogger(__name__)


@dataclass
class SynthResult:
    """Generated registries (as written), ground truth, the persons behind them, file paths."""

    police: pd.DataFrame
    civil_affairs: pd.DataFrame
    health: pd.DataFrame
    truth: pd.DataFrame
    persons: pd.DataFrame
    paths: dict[str, Path] = field(default_factory=dict)
    #: records per source written to ``<source>_new.csv`` (the later batch) instead of
    #: ``<source>.csv``; empty without ``new_batch``
    held_out: dict[str, int] = field(default_factory=dict)

    def registry(self, source: str) -> pd.DataFrame:
        """Return one registry's table by source name."""
        return {"police": self.police, "civil_affairs": self.civil_affairs, "health": self.health}[
            source
        ]


def generate(
    persons: int,
    seed: int = 0,
    corruption: float = 1.0,
    output: str | Path | None = None,
    excel: bool = False,
    new_batch: float = 0.0,
) -> SynthResult:
    """Generate the three registries for ``persons`` people; write them when ``output`` is set.

    ``new_batch`` (0 to below 1) holds that share of every registry's records out as a later
    batch: written as ``<source>_new.csv`` with ``new.yaml``, while ``run.yaml`` names the
    rest, so a store can be built from one and the other ingested. ``truth.csv`` covers both.

    Raises:
        InputError: ``persons`` below 1, a negative ``corruption`` or ``new_batch`` outside [0, 1).
    """
    if persons < 1:
        raise InputError(f"persons must be at least 1, got {persons}")
    if not 0 <= new_batch < 1:
        raise InputError(f"new_batch must be at least 0 and below 1, got {new_batch}")
    if not corruption >= 0:
        raise InputError(f"corruption must be >= 0, got {corruption}")
    started = time.perf_counter()
    people = generate_population(persons, np.random.default_rng([seed, 0, 31]))
    frames: dict[str, pd.DataFrame] = {}
    truths = []
    for source in SOURCES:
        rec = build_records(people, source, seed)
        corrupt_records(rec, seed, corruption)
        frames[source] = format_registry(rec, people, seed, corruption)
        truths.append(truth_table(rec, frames[source], people))
    truth = pd.concat(truths, ignore_index=True)
    result = SynthResult(
        police=frames["police"],
        civil_affairs=frames["civil_affairs"],
        health=frames["health"],
        truth=truth,
        persons=people,
    )
    logger.info(
        "generated %d persons, %d records in %.1f s",
        persons,
        len(truth),
        time.perf_counter() - started,
    )
    if output is not None:
        result.paths = _write(result, Path(output), excel, new_batch, seed)
    return result


def _write(
    result: SynthResult, out: Path, excel: bool, new_batch: float, seed: int
) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    rng = np.random.default_rng([seed, 0, 97])
    new_files: dict[str, str] = {}
    for source in SOURCES:
        frame = result.registry(source)
        held = rng.random(len(frame)) < new_batch
        if held.any():
            result.held_out[source] = int(held.sum())
            new_files[source] = f"{source}_new.csv"
            paths[f"{source}_new"] = out / new_files[source]
            write_csv(frame[held], paths[f"{source}_new"], source)
            frame = frame[~held]
        if source == "health" and excel:
            paths[source] = out / "health.xlsx"
            write_xlsx(frame, paths[source])
        else:
            paths[source] = out / f"{source}.csv"
            write_csv(frame, paths[source], source)
    paths["truth"] = out / "truth.csv"
    result.truth.to_csv(paths["truth"], index=False, encoding="utf-8", lineterminator="\n")
    paths["config"] = write_configs(out, excel=excel)
    if new_files:
        paths["new_config"] = write_configs(out, excel=excel, name="new.yaml", files=new_files)
    return paths
