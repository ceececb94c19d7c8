"""Checkpoints of a batch run: each finished stage's output under ``OUTPUT/.work``.

``linkage run --resume`` after a kill continues from the last finished stage. A checkpoint
folder belongs to one fingerprint, a hash of the package version, the whole run config and
the bytes of every input file it names, so a changed config or input starts the run over
instead of mixing old and new stages. Each stage is a folder of Parquet/JSON files and a
``<stage>.done`` marker written last (atomically): a stage killed half-way has no marker and
is run again. The marker holds an HMAC-SHA256 of every file of its stage under a random key
of the run (``OUTPUT/.checkpoint.key``, 0600, outside ``.work``): a checkpoint changed after
it was written does not verify, and that stage and the later ones run again, so a writer of
``.work`` without the key cannot steer a resumed run (merge persons by editing labels).
Imports schema, config, io and model; never the pipeline, Linker or CLI.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from linkage._version import __version__
from linkage.config import RunConfig
from linkage.io import atomic_write, write_parquet

logger = logging.getLogger(__name__)

WORK_DIR = ".work"
KEY_FILE = ".checkpoint.key"  # in OUTPUT beside .work, 0600: the key of the markers' HMACs
_FINGERPRINT = "fingerprint.txt"
_CHUNK = 1 << 20
# the pipeline's stages in run order: a stage that does not verify is run again with every
# later one, which were computed from it
STAGES = ("records", "blocking", "training", "scoring", "clustering")


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


@dataclass
class _Background:
    """A stage being saved in a thread (``Checkpoints.save(..., background=True)``)."""

    stage: str
    thread: threading.Thread | None = None
    error: BaseException | None = None  # what saving raised, raised again by ``wait``
    finished: bool = False
    then: list[Callable[[], None]] = field(default_factory=list)  # ``after_save`` callbacks
    lock: threading.Lock = field(default_factory=threading.Lock)


def part_order(path: Path) -> tuple[int, str]:
    """Sort key of a part file ``part-<number>.<kind>.parquet``: its number, then its name
    (names alone misorder from ``part-100000`` on, past the zero padding)."""
    number = path.name.split(".", 1)[0].removeprefix("part-")
    return (int(number) if number.isdigit() else -1, path.name)


class Checkpoints:
    """Stage outputs of one run under ``folder`` (``OUTPUT/.work``), valid for one fingerprint.

    ``Checkpoints.open`` clears the folder unless it resumes a run of the same fingerprint.
    ``done(stage)`` says whether a stage finished; ``save`` writes a stage's frames and JSON
    document and then its marker (``background=True``: in a thread, while the run goes on;
    ``wait`` joins it); ``frame``/``document`` read them back; ``remove`` deletes the folder
    once the run's outputs are written.
    """

    def __init__(self, folder: Path, fingerprint: str, key: bytes):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.key = key
        self._pending: _Background | None = None  # the save running in a thread

    @classmethod
    def open(
        cls, output: str | Path, config: RunConfig, *, resume: bool, extra: bytes = b""
    ) -> Checkpoints:
        """Checkpoints of a run writing to ``output``; with ``resume``, the finished stages of
        an earlier run of the same config and inputs are kept, otherwise none are. A kept
        stage whose files do not match its marker's HMAC is dropped with the later stages
        (a warning names it)."""
        folder = Path(output) / WORK_DIR
        key_path = Path(output) / KEY_FILE
        stamp = fingerprint(config, extra)
        marker = folder / _FINGERPRINT
        if (
            resume
            and marker.is_file()
            and key_path.is_file()
            and marker.read_text(encoding="ascii").strip() == stamp
        ):
            kept = cls(folder, stamp, bytes.fromhex(key_path.read_text(encoding="ascii")))
            kept._drop_unverified()
            names = [p.stem for p in sorted(folder.glob("*.done"))]
            logger.info("resuming: finished stages %s", ", ".join(names) or "none")
            return kept
        if resume and folder.exists() and not key_path.is_file():
            logger.warning(
                "checkpoints in %s have no key file %s to verify them: starting over",
                folder,
                key_path,
            )
        elif resume and folder.exists():
            logger.warning(
                "checkpoints in %s are of another config or input: starting over", folder
            )
        elif resume:
            logger.warning("no checkpoints in %s: starting from the beginning", folder)
        if folder.exists():
            shutil.rmtree(folder)
        # 0700: stage names and files (standardized personal data) are the operator's only
        folder.mkdir(parents=True, mode=0o700)
        folder.chmod(0o700)
        key = secrets.token_bytes(32)
        # atomic_write's temporary file is created 0600 (mkstemp), so the key never is wider
        atomic_write(key_path, lambda p: p.write_text(key.hex(), encoding="ascii"))
        atomic_write(marker, lambda p: p.write_text(stamp + "\n", encoding="ascii"))
        return cls(folder, stamp, key)

    def _mac(self, stage: str, document_text: str) -> str:
        """HMAC-SHA256 of a stage: its name, the marker's document and every file of its
        folder (relative name and bytes, in name order)."""
        mac = hmac.new(self.key, digestmod=hashlib.sha256)
        mac.update(stage.encode() + b"\0" + document_text.encode("utf-8") + b"\0")
        folder = self.folder / stage
        files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        for path in files:
            mac.update(path.relative_to(folder).as_posix().encode() + b"\0")
            mac.update(str(path.stat().st_size).encode() + b"\0")
            _file_digest(path, mac)
        return mac.hexdigest()

    def _verified(self, stage: str) -> bool:
        try:
            marker = json.loads((self.folder / f"{stage}.done").read_text(encoding="utf-8"))
            text, mac = marker["document"], marker["hmac"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return isinstance(text, str) and hmac.compare_digest(str(mac), self._mac(stage, text))

    def _drop_unverified(self) -> None:
        """Remove from the first stage (in ``STAGES`` order) that does not verify onwards."""
        present = {p.stem for p in self.folder.glob("*.done")}
        order = [s for s in STAGES if s in present] + sorted(present - set(STAGES))
        for i, stage in enumerate(order):
            if self._verified(stage):
                continue
            logger.warning(
                "checkpoint of stage '%s' in %s does not match its HMAC (changed after it was "
                "written): running from '%s' again",
                stage,
                self.folder,
                stage,
            )
            later = order[i:] if stage in STAGES else [stage]
            for name in later:
                (self.folder / f"{name}.done").unlink(missing_ok=True)
                shutil.rmtree(self.folder / name, ignore_errors=True)
            if stage in STAGES:
                return

    def path(self, stage: str) -> Path:
        """The folder of one stage's files (created on demand)."""
        path = self.folder / stage
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def done(self, stage: str) -> bool:
        """Whether ``stage`` finished (its marker exists; a stage saving in the background
        is waited for)."""
        self._wait_for(stage)
        return (self.folder / f"{stage}.done").is_file()

    def save(
        self,
        stage: str,
        frames: dict[str, pd.DataFrame] | None = None,
        document: Any = None,
        *,
        background: bool = False,
    ) -> None:
        """Write ``frames`` as ``<stage>/<name>.parquet``, then the marker holding ``document``.

        With ``background``, the writing runs in a thread and this returns at once: pyarrow
        encodes and compresses without the interpreter lock, so the run's next stage goes on
        meanwhile (a million standardized records take ~7 s to write). The frames must not
        change until it is done. An earlier background save is waited for first, so markers
        are written in stage order (a resumed run never finds a later stage done without
        the earlier one); reading the stage back (``done``, ``frame``, ``document``) and
        ``wait`` wait for it and raise what writing it raised.
        """
        self.wait()
        if not background:
            self._write(stage, frames, document)
            return
        job = _Background(stage)

        def write() -> None:
            try:
                self._write(stage, frames, document)
            except BaseException as exc:  # raised again by wait, in the caller's thread
                job.error = exc
            with job.lock:
                job.finished = True
                then, job.then = job.then, []
            for callback in then if job.error is None else []:
                try:
                    callback()
                except Exception:  # noqa: BLE001 - a hook's failure is not the save's
                    logger.warning("after saving %s", stage, exc_info=True)

        job.thread = threading.Thread(target=write, name=f"linkage-checkpoint-{stage}")
        self._pending = job
        job.thread.start()

    def after_save(self, stage: str, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once ``stage`` is saved: at once when it is done, from the
        saving thread when it saves in the background (an exception it raises is logged);
        never when that save fails or the stage is neither done nor saving."""
        job = self._pending
        if job is not None and job.stage == stage:
            with job.lock:
                if not job.finished:
                    job.then.append(callback)
                    return
            if job.error is not None:
                return
        elif not self.done(stage):
            return
        callback()

    def wait(self) -> None:
        """Wait for a save running in the background; raise what it raised (the exception a
        save in the foreground raises)."""
        job, self._pending = self._pending, None
        if job is None:
            return
        job.thread.join()
        if job.error is not None:
            raise job.error

    def _wait_for(self, stage: str) -> None:
        if self._pending is not None and self._pending.stage == stage:
            self.wait()

    def _write(self, stage: str, frames: dict[str, pd.DataFrame] | None, document: Any) -> None:
        for name, frame in (frames or {}).items():
            write_parquet(frame, self.path(stage) / f"{name}.parquet")
        text = json.dumps(document, ensure_ascii=False)
        marker = json.dumps({"document": text, "hmac": self._mac(stage, text)})
        atomic_write(
            self.folder / f"{stage}.done", lambda p: p.write_text(marker, encoding="utf-8")
        )

    def document(self, stage: str) -> Any:
        """The JSON document saved with ``stage``'s marker."""
        self._wait_for(stage)
        marker = json.loads((self.folder / f"{stage}.done").read_text(encoding="utf-8"))
        return json.loads(marker["document"])

    def frame(self, stage: str, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        """One frame of a finished stage (only ``columns`` of it when given)."""
        self._wait_for(stage)
        return pd.read_parquet(self.folder / stage / f"{name}.parquet", columns=columns)

    def parts(self, stage: str) -> list[Path]:
        """Parquet parts written into ``stage``'s folder (``part-<number>...parquet``), in
        the order of their numbers (``part_order``)."""
        return sorted((self.folder / stage).glob("part-*.parquet"), key=part_order)

    def remove(self) -> None:
        """Delete the checkpoint folder and its key (the run's outputs are written, or it
        failed: a background save is waited for, its error not raised again)."""
        job, self._pending = self._pending, None
        if job is not None:
            job.thread.join()
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(self.folder.parent / KEY_FILE)


__all__ = ["KEY_FILE", "STAGES", "WORK_DIR", "Checkpoints", "fingerprint"]
