"""Shared fixtures: small synthetic Chinese records only, never real personal data."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import settings

# CI runs the same examples every time (a property failure found locally becomes a
# regression test); no per-example deadline on a loaded 2-core machine.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _restore_linkage_logging():
    """Put the package's loggers back after each test: an in-process ``serve`` or CLI call
    configures logging for a process, and a later test's caplog must still see records."""
    def ours() -> list[str]:
        found = (n for n in logging.root.manager.loggerDict if n.startswith("linkage."))
        return ["", "linkage", *found]  # "": the root logger

    saved = {}
    for name in ours():
        log = logging.getLogger(name or None)
        saved[name] = (log.level, log.propagate, list(log.handlers), log.disabled)
    yield
    for name in ours():
        log = logging.getLogger(name or None)
        # a logger first made during the test goes back to a fresh logger's settings
        level, propagate, handlers, disabled = saved.get(name, (logging.NOTSET, True, [], False))
        log.setLevel(level)
        log.propagate = propagate
        log.handlers[:] = handlers
        log.disabled = disabled


@pytest.fixture
def write_yaml(tmp_path: Path):
    """Write a dict as YAML under tmp_path and return its path."""

    def _write(data: dict, name: str = "run.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return path

    return _write


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole test run: the JVM takes seconds to start.

    Small-data settings: one shuffle partition per core (a task per partition, each a Python
    worker call when a stage runs pandas code); the JVM compiles with its quick C1 compiler
    only and Spark runs queries without whole-stage code generation: a test's queries are
    many and tiny, so compiling them cost more than running them (a first 600-record run
    took about half the time). Query results do not depend on either (Spark's own tests run
    both ways). The JVM flags go in ``defaultJavaOptions``, so ``get_session`` still sets
    its own ``extraJavaOptions`` (the log4j settings) as for a user's run.
    """
    from linkage.spark.session import get_session

    session = get_session(
        "local[2]",
        shuffle_partitions=2,
        conf={
            "spark.driver.memory": "1g",
            "spark.default.parallelism": "2",
            "spark.driver.defaultJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
            "spark.sql.codegen.wholeStage": "false",
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def synth400_config(tmp_path_factory) -> Path:
    """The run config of 400 generated persons' registries (seed 5), made once a session:
    the comparison-preparing tests run the same small batch."""
    from linkage import synth

    out = tmp_path_factory.mktemp("synth400")
    return synth.generate(400, seed=5, output=out / "demo").paths["config"]


@pytest.fixture(scope="session")
def synth400_records(synth400_config):
    """The standardized records of ``synth400_config`` (do not change them in place)."""
    from linkage.config import load_config
    from linkage.io import read_records

    return read_records(load_config(synth400_config))
