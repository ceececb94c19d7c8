"""Checkpoints of a batch run: each finished stage's output under ``OUTPUT/.work``.

``linkage run --resume`` after a kill continues from the last finished stage. A checkpoint
folder belongs to one fingerprint, a hash of the package version, the whole run config and
the bytes of every input file it names, so a changed config or input starts the run over
instead of mixing old and new stages. Each stage is a folder of Parquet/JSON files and a
``<stage>.done`` marker written last (atomically): a stage killed half-way has no marker and
is run again. Imports schema, config, io and model; never the pipeline, Linker or CLI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from linkage._version import __version__
from linkage.config import RunConfig
from linkage.io import atomic_write, write_parquet

logger = logging.getLogger(__name__)

WORK_DIR = ".work"
_FINGERPRINT = "fingerprint.txt"
_CHUNK = 1 << 20


def _file_digest(path: Path, digest: Any) -> None:
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)


def fingerprint(config: RunConfig, extra: bytes = b"") -> str:
    """Hex SHA-256 of the package version, the run config and the bytes of its input files.

    Input files: every source's ``path`` and ``model.load`` / ``model.labels`` when set;
    ``extra`` adds what the caller passes besides the config (a model object's JSON).
    A file that cannot be read is hashed by name only: reading it fails later, clearly.
    """
    digest = hashlib.sha256()
    digest.update(__version__.encode())
    digest.update(config.model_dump_json().encode())
    files = [source.path for source in config.sources.values()]
    files += [p for p in (config.model.load, config.model.labels) if p is not None]
    for path in files:
        digest.update(str(path).encode())
        if Path(path).is_file():
            _file_digest(Path(path), digest)
    digest.update(extra)
    return digest.hexdigest()


class Checkpoints:
    """Stage outputs of one run under ``folder`` (``OUTPUT/.work``), valid for one fingerprint.

    ``Checkpoints.open`` clears the folder unless it resumes a run of the same fingerprint.
    ``done(stage)`` says whether a stage finished; ``save`` writes a stage's frames and JSON
    document and then its marker; ``frame``/``document`` read them back; ``remove`` deletes
    the folder once the run's outputs are written.
    """

    def __init__(self, folder: Path, fingerprint: str):
        self.folder = Path(folder)
        self.fingerprint = fingerprint

    @classmethod
    def open(
        cls, output: str | Path, config: RunConfig, *, resume: bool, extra: bytes = b""
    ) -> Checkpoints:
        """Checkpoints of a run writing to ``output``; with ``resume``, the finished stages of
        an earlier run of the same config and inputs are kept, otherwise none are."""
        folder = Path(output) / WORK_DIR
        stamp = fingerprint(config, extra)
        marker = folder / _FINGERPRINT
        if resume and marker.is_file() and marker.read_text(encoding="ascii").strip() == stamp:
            kept = [p.stem for p in sorted(folder.glob("*.done"))]
            logger.info("resuming: finished stages %s", ", ".join(kept) or "none")
            return cls(folder, stamp)
        if resume and folder.exists():
            logger.warning(
                "checkpoints in %s are of another config or input: starting over", folder
            )
        elif resume:
            logger.warning("no checkpoints in %s: starting from the beginning", folder)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        atomic_write(marker, lambda p: p.write_text(stamp + "\n", encoding="ascii"))
        return cls(folder, stamp)

    def path(self, stage: str) -> Path:
        """The folder of one stage's files (created on demand)."""
        path = self.folder / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def done(self, stage: str) -> bool:
        """Whether ``stage`` finished (its marker exists)."""
        return (self.folder / f"{stage}.done").is_file()

    def save(
        self, stage: str, frames: dict[str, pd.DataFrame] | None = None, document: Any = None
    ) -> None:
        """Write ``frames`` as ``<stage>/<name>.parquet``, then the marker holding ``document``."""
        for name, frame in (frames or {}).items():
            write_parquet(frame, self.path(stage) / f"{name}.parquet")
        text = json.dumps(document, ensure_ascii=False)
        atomic_write(self.folder / f"{stage}.done", lambda p: p.write_text(text, encoding="utf-8"))

    def document(self, stage: str) -> Any:
        """The JSON document saved with ``stage``'s marker."""
        return json.loads((self.folder / f"{stage}.done").read_text(encoding="utf-8"))

    def frame(self, stage: str, name: str) -> pd.DataFrame:
        """One frame of a finished stage."""
        return pd.read_parquet(self.folder / stage / f"{name}.parquet")

    def parts(self, stage: str) -> list[Path]:
        """Parquet parts written into ``stage``'s folder, in name order."""
        return sorted((self.folder / stage).glob("part-*.parquet"))

    def remove(self) -> None:
        """Delete the checkpoint folder (the run's outputs are written)."""
        shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["WORK_DIR", "Checkpoints", "fingerprint"]
