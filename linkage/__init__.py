"""linkage: link Chinese person records across registries into one identity per person.

The public surface is ``__all__`` here and in the public modules ``linkage.store``,
``linkage.indicators``, ``linkage.synth`` (and ``linkage.review``, ``linkage.share``,
``linkage.pprl``); everything else may change. Names load lazily so that
``import linkage`` and the CLI's ``--help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from linkage._version import __version__ as __version__

_EXPORTS: dict[str, str] = {
    "Linker": "linkage.linker",
    "LinkResult": "linkage.pipeline",
    "RunConfig": "linkage.config",
    "SourceConfig": "linkage.config",
    "load_config": "linkage.config",
    "config_from_dict": "linkage.config",
    "read_sources": "linkage.io",
    "read_records": "linkage.io",
    "standardize": "linkage.standardize.combine",
    "block": "linkage.blocking",
    "BlockingRule": "linkage.config",
    "BlockingSettings": "linkage.config",
    "compare": "linkage.compare",
    "default_comparisons": "linkage.compare",
    "FellegiSunterModel": "linkage.model",
    "cluster_pairs": "linkage.cluster",
    "merge_records": "linkage.merge",
    "link_records": "linkage.pipeline",
    "evaluate": "linkage.evaluate",
    "LinkageError": "linkage.errors",
    "ConfigError": "linkage.errors",
    "InputError": "linkage.errors",
    "NotFittedError": "linkage.errors",
    "StoreError": "linkage.errors",
    "train_model": "linkage.training",
    "STAGES": "linkage.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name on first use."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'linkage' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
