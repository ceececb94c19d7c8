"""The ``Linker``: holds a run config, sequences read → standardize → link, writes outputs.

Thin by design: the work is in the stage functions. Nothing else in the package imports it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from linkage import schema
from linkage.config import RunConfig, load_config
from linkage.io import read_sources
from linkage.model import FellegiSunterModel
from linkage.pipeline import LinkResult, Progress, link_records, write_outputs
from linkage.standardize.combine import standardize

logger = logging.getLogger(__name__)


class Linker:
    """Run a batch merge described by a ``RunConfig``; ``run()`` returns a ``LinkResult``."""

    def __init__(self, config: RunConfig, *, model: FellegiSunterModel | None = None):
        self.config = config
        self.model = model
        self.records_: pd.DataFrame | None = None
        self.result_: LinkResult | None = None

    @classmethod
    def from_yaml(cls, path: str | Path) -> Linker:
        """Build a Linker from a run config YAML file."""
        return cls(load_config(path))

    def standardize(self) -> pd.DataFrame:
        """Read every source and return the standardized records (cached)."""
        if self.records_ is None:
            t = time.perf_counter()
            raw = read_sources(self.config)
            # A canonical row order makes every later stage (random u sample, tie-breaks)
            # independent of the order rows arrive in: same inputs, same identities.
            raw = raw.sort_values([schema.SOURCE, schema.RECORD_ID], kind="stable")
            read_s = time.perf_counter() - t
            self.records_ = standardize(raw, self.config.standardize)
            self.records_.attrs["read_seconds"] = read_s
        return self.records_

    def run(self, progress: Progress | None = None) -> LinkResult:
        """Run the whole batch and return identities, golden records, scored pairs and the model."""
        say = progress or (lambda _msg: None)
        t = time.perf_counter()
        say("reading and standardizing")
        records = self.standardize()
        std_s = time.perf_counter() - t
        result = link_records(records, self.config, model=self.model, progress=progress)
        seconds = {
            "read": round(records.attrs.get("read_seconds", 0.0), 3),
            "standardize": round(std_s - records.attrs.get("read_seconds", 0.0), 3),
        }
        seconds.update(result.summary.get("seconds", {}))
        result.summary["seconds"] = seconds
        self.result_ = result
        return result

    def write(self, output: str | Path) -> dict[str, Path]:
        """Write the last run's outputs to ``output``; runs first if needed.

        Raises InputError before running when ``output`` is a file or cannot be written.
        """
        from linkage.paths import check_output_dir

        check_output_dir(output, what="output")
        result = self.result_ or self.run()
        return write_outputs(result, output, self.config)
