"""Memory of a run: per-stage peak RSS in summary.json, the per-stage column lists and the
spill of the columns no linking stage reads."""

from __future__ import annotations


import numpy as np
import pytest

from linkage.progress import StageMemory

MB = 2**20


def _tracer() -> StageMemory:
    tracer = StageMemory()
    if not tracer.enabled:
        pytest.skip("no resettable peak-RSS counter on this platform")
    return tracer


def test_the_peak_is_booked_to_the_stage_that_made_it():
    seen = []
    tracer = StageMemory(lambda name: seen.append(name))
    if not tracer.enabled:
        pytest.skip("no resettable peak-RSS counter on this platform")
    tracer.stage("small")
    tracer.stage("big")
    block = np.ones(300 * MB // 8)  # 300 MB touched, then freed before the next stage
    del block
    tracer.stage("after")
    peaks = tracer.peaks()
    assert seen == ["small", "big", "after"]  # the wrapped hook still gets every stage
    assert set(peaks) == {"small", "big", "after"}
    assert peaks["big"] >= peaks["small"] + 250 * MB
    assert peaks["big"] >= peaks["after"] + 250 * MB


def test_done_ends_the_last_stage():
    tracer = _tracer()
    tracer.stage("only")
    tracer.stage("done")
    assert set(tracer.peaks()) == {"only"}
