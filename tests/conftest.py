"""Shared fixtures: small synthetic Chinese records only, never real personal data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


@pytest.fixture
def write_yaml(tmp_path: Path):
    """Write a dict as YAML under tmp_path and return its path."""

    def _write(data: dict, name: str = "run.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return path

    return _write
